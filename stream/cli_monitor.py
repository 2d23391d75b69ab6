"""The `notestream monitor` command (mounted by ``notestream.stream.cli.register``): outcome monitoring."""

from __future__ import annotations

from pathlib import Path

import typer


def register_monitor(app: typer.Typer) -> None:
    """Add ``monitor`` to the top-level app."""

    @app.command()
    def monitor(
        out: Path = typer.Option(
            Path("notestream-monitor"), help="Folder for report.json, metrics.prom, PNGs."
        ),
        updates: Path = typer.Option(None, help="Risk updates as JSON lines (else the risk-updates topic)."),
        alerts: Path = typer.Option(None, help="Alerts as JSON lines (else the risk-alerts topic)."),
        admissions: Path = typer.Option(
            None, help="Admission events as JSON lines (else the admissions topic)."
        ),
        model: list[Path] = typer.Option(None, help="Model folder(s): drift against their validation data."),
        horizon_days: float = typer.Option(30.0, help="Readmission window after discharge."),
        los_days: float = typer.Option(7.0, help="Prolonged stay: longer than this many days."),
        window_days: float = typer.Option(
            30.0, help="The rolling figures cover the discharges of the last N days."
        ),
        follow: bool = typer.Option(
            False,
            help="Run as a service: keep reading the topics and rewrite the report every --every seconds.",
        ),
        every: float = typer.Option(60.0, help="--follow: seconds between reports."),
        broker: str = typer.Option(None, help="kafka://HOST:PORT[,HOST:PORT] (env NOTESTREAM_BROKER)."),
        topic_prefix: str = typer.Option(None, help="Prefix of every topic name."),
        config: Path = typer.Option(None, help="Settings TOML file (else $NOTESTREAM_CONFIG)."),
    ) -> None:
        """Join risk updates and alerts to outcomes (readmission within 30 days, death, length of stay) and
        report per model fingerprint: AUROC, AUPRC, calibration by decile, alert precision/recall, alerts per
        100 admissions, lead time, drift. Reads the files given, else the topics up to their current end: run
        it after a replay at natural prevalence for a silent-mode backtest of the alert settings."""
        import asyncio
        import json

        from notestream.core.errors import ConfigError
        from notestream.core.settings import load_settings
        from notestream.stream.events import AdmissionEvent, RiskAlert, RiskUpdate
        from notestream.stream.monitor import (
            OutcomeMonitor,
            follow_topics,
            read_jsonl,
            read_topics,
            validation_reference,
            write_report,
        )

        files = {"updates": updates, "alerts": alerts, "admissions": admissions}
        given = [name for name, path in files.items() if path is not None]
        if given and (updates is None or admissions is None):
            raise ConfigError("With files, give at least --updates and --admissions (and --alerts if any).")
        monitor_ = OutcomeMonitor(
            horizon_days=horizon_days,
            los_days=los_days,
            window_days=window_days,
            reference=validation_reference(model or []),
        )
        if given:
            for path, kind in ((updates, RiskUpdate), (alerts, RiskAlert), (admissions, AdmissionEvent)):
                if path is not None:
                    monitor_.observe_all(read_jsonl(path, kind))  # type: ignore[arg-type]
        elif follow:
            settings = load_settings(config, broker=broker, topic_prefix=topic_prefix)
            asyncio.run(follow_topics(settings, monitor_, out, every_s=every))
        else:
            settings = load_settings(config, broker=broker, topic_prefix=topic_prefix)
            monitor_.observe_all(asyncio.run(read_topics(settings)))
        report = write_report(monitor_, out)
        summary = {
            m: {
                "resolved": f["resolved"],
                "auroc": f["all"]["auroc"],
                "prevalence": f["all"]["prevalence"],
                "alerts": f["all"]["alerts"],
            }
            for m, f in report["models"].items()
        }
        typer.echo(json.dumps({"out": str(out), "models": summary}))
