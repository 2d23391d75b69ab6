"""The `notestream replay` and `notestream alerts` commands (mounted by ``notestream.stream.cli.register``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from notestream.core.errors import ConfigError

if TYPE_CHECKING:
    from notestream.core.settings import Settings
    from notestream.stream.metrics import Metrics
    from notestream.stream.replay import ReplayCounts, ReplaySource


def _hadm_ids(values: list[str] | None) -> list[int] | None:
    """``--hadm-ids 1,2 --hadm-ids 3`` -> [1, 2, 3]."""
    if not values:
        return None
    try:
        return [int(part) for value in values for part in value.replace(" ", ",").split(",") if part]
    except ValueError as exc:
        raise ConfigError(f"--hadm-ids takes admission ids (integers, comma-separated): {exc}.") from exc


def _moment(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise ConfigError(
            f"{option} takes a time like 2150-01-31 or 2150-01-31T08:00, not {value!r}."
        ) from exc


async def replay_with_metrics(
    settings: Settings,
    source: ReplaySource,
    *,
    metrics: Metrics | None = None,
    on_event: Callable[[ReplayCounts], None] | None = None,
    **options: Any,
) -> ReplayCounts:
    """:func:`notestream.stream.replay.replay`, counting its events in ``metrics`` (by kind, and skipped notes by
    reason; ``Metrics(role="replay")`` when ``settings.metrics_port`` is set and none is given) and
    serving /metrics, /healthz and /readyz on ``settings.metrics_port`` while it runs."""
    from notestream.stream.metrics import Metrics, start_http_server
    from notestream.stream.replay import replay

    if metrics is None and settings.metrics_port is not None:
        metrics = Metrics(role="replay")
    meter = metrics

    def observe(counts: ReplayCounts) -> None:
        if meter is not None:
            meter.replay_sent.inc()  # one call per event sent
            meter.observe_replay_counts(counts)
        if on_event is not None:
            on_event(counts)

    server = None
    if meter is not None and settings.metrics_port is not None:
        server = await start_http_server(settings, meter, {})
    try:
        counts = await replay(settings, source, on_event=observe, **options)
        if meter is not None:
            meter.observe_replay_counts(counts)  # skipped notes counted after the last event
        return counts
    finally:
        if server is not None:
            await server.close()


def register_data(app: typer.Typer) -> None:
    """Add ``replay`` and ``alerts`` to the top-level app."""

    @app.command()
    def replay(
        mimic_iii: Path = typer.Option(
            None, help="Folder with MIMIC-III ADMISSIONS and NOTEEVENTS (.csv/.csv.gz)."
        ),
        mimic_iv: Path = typer.Option(
            None, help="MIMIC-IV folder: hosp admissions and note discharge/radiology."
        ),
        speed: float = typer.Option(
            None,
            help="Event time per wall time: 3600 plays an hour per second. Default: as fast as possible.",
        ),
        rate: float = typer.Option(
            None,
            help="At most this many events per second (with --speed: whichever is slower). 0 or unset: "
            "no limit.",
        ),
        limit: int = typer.Option(None, help="Replay only the first N admissions (by admit time)."),
        hadm_ids: list[str] = typer.Option(None, help="Only these admissions (comma-separated, repeatable)."),
        since: str = typer.Option(None, help="Only events at or after this time, e.g. 2150-01-01."),
        until: str = typer.Option(None, help="Only events before this time."),
        broker: str = typer.Option(None, help="kafka://HOST:PORT[,HOST:PORT] (env NOTESTREAM_BROKER)."),
        topic_prefix: str = typer.Option(None, help="Prefix of every topic name."),
        temp_dir: Path = typer.Option(
            None, help="Folder for DuckDB's sort files (default: the system temp)."
        ),
        config: Path = typer.Option(None, help="Settings TOML file (else $NOTESTREAM_CONFIG)."),
    ) -> None:
        """Replay MIMIC notes and admissions as a live feed, in event-time order, to Kafka."""
        import asyncio

        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        from notestream.core.settings import load_settings
        from notestream.stream.replay import ReplaySource

        if (mimic_iii is None) == (mimic_iv is None):
            raise ConfigError("Pass exactly one of --mimic-iii DIR or --mimic-iv DIR.")
        settings = load_settings(config, broker=broker, topic_prefix=topic_prefix)
        source = ReplaySource.mimic_iii(mimic_iii) if mimic_iii else ReplaySource.mimic_iv(mimic_iv)
        columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
        with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
            task = progress.add_task("replaying", total=None)

            def show(counts: ReplayCounts) -> None:
                sent = counts.notes + counts.admits + counts.discharges
                if sent % 200 == 0:
                    progress.update(
                        task,
                        description=f"{counts.notes} notes, {len(counts.admissions)} admissions, "
                        f"event time {counts.last_event_time}",
                    )

            counts = asyncio.run(
                replay_with_metrics(
                    settings,
                    source,
                    speed=speed or None,
                    rate=rate or None,
                    hadm_ids=_hadm_ids(hadm_ids),
                    limit=limit,
                    since=_moment(since, "--since"),
                    until=_moment(until, "--until"),
                    on_event=show,
                    temp_dir=temp_dir,
                )
            )
        typer.echo(json.dumps(counts.as_dict()))

    @app.command()
    def alerts(
        threshold: float = typer.Option(None, help="Alert threshold (default: settings, else the model's)."),
        model_dir: Path = typer.Option(None, help="Model folder whose notestream.json holds the threshold."),
        model: str = typer.Option(
            None,
            help="Only this model's updates and alerts: a model folder (its fingerprint; also the "
            "threshold's folder unless --model-dir is given), a fingerprint NAME@DIGEST, or a folder name.",
        ),
        hysteresis: float = typer.Option(
            None, help="Clear only below threshold - hysteresis (default 0.05)."
        ),
        webhook: str = typer.Option(
            None, help="URL that receives each alert as JSON (env NOTESTREAM_WEBHOOK_URL)."
        ),
        stdout: bool = typer.Option(True, help="Print each alert as a JSON line."),
        broker: str = typer.Option(None, help="kafka://HOST:PORT[,HOST:PORT] (env NOTESTREAM_BROKER)."),
        topic_prefix: str = typer.Option(None, help="Prefix of every topic name."),
        group: str = typer.Option("notestream-alerts", help="Consumer group of the alerts service."),
        retire: bool = typer.Option(
            False,
            help="Clear (reason `retired`) every alert of --model still raised, then exit: the cut-over of "
            "an upgrade, once the old model is out of service.",
        ),
        max_updates: int = typer.Option(None, help="Stop after this many risk updates (scripts, tests)."),
        idle_timeout: float = typer.Option(None, help="Stop after this many seconds without an update."),
        config: Path = typer.Option(None, help="Settings TOML file (else $NOTESTREAM_CONFIG)."),
    ) -> None:
        """Raise and clear alerts from risk-updates; write them to risk-alerts, stdout and a webhook."""
        import asyncio

        from notestream.core.settings import load_settings
        from notestream.stream.alerts import AlertPolicy
        from notestream.stream.alerts_service import retire_alerts, run_alerts

        if retire and model is None:
            raise ConfigError("--retire needs --model: the model whose open alerts to clear.")
        wanted = model
        if model is not None and Path(model).is_dir():
            from notestream.models.fingerprint import model_fingerprint

            wanted = model_fingerprint(model)
            model_dir = model_dir if model_dir is not None else Path(model)
        settings = load_settings(
            config,
            broker=broker,
            topic_prefix=topic_prefix,
            webhook_url=webhook,
            alert_hysteresis=hysteresis,
            model_dir=model_dir,
        )
        if retire:
            assert wanted is not None
            cleared = asyncio.run(retire_alerts(settings, model=wanted, to_stdout=stdout))
            typer.echo(json.dumps({"model": wanted, "retired": len(cleared)}), err=True)
            return
        policy = AlertPolicy.from_settings(settings, threshold=threshold)
        typer.echo(
            json.dumps({"model": wanted, "policy": policy.source, "threshold": policy.threshold}), err=True
        )
        service = asyncio.run(
            run_alerts(
                settings,
                policy=policy,
                to_stdout=stdout,
                group_id=group or None,
                stop_after=max_updates,
                idle_timeout_s=idle_timeout,
                model=wanted,
            )
        )
        summary = {
            "model": wanted,
            "policy": policy.source,
            "threshold": policy.threshold,
            "updates": service.tracker.seen,
            "alerts": len(service.alerts),
            "stale_dropped": service.tracker.dropped_stale,
            "other_model_skipped": service.tracker.skipped_model,
            "after_discharge": service.tracker.after_discharge,
            "evicted": service.tracker.evicted,
            "webhook_failures": service.failed,
        }
        typer.echo(json.dumps(summary), err=True)
