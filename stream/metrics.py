"""Prometheus metrics of one notestream process, and its /metrics, /healthz and /readyz server.

Each process (worker, replay, alerts) makes ONE :class:`Metrics` (its own registry, so tests and
embedded runs never collide) and records what it does::

    metrics = Metrics(role="worker")
    metrics.notes_in.inc(len(batch))
    metrics.dead_letter("invalid_event")
    with metrics.store_timer("apply_note"):
        await store.apply_note(...)
    engine.on_batch = metrics.record_batch   # every engine batch, recorded where the engine cuts it
    metrics.track_queue_depth(lambda: engine.stats()["queue_depth"])
    metrics.observe_note_to_update(update.emitted_at - note.produced_at)
    metrics.updates_out.inc()

and serves them, with readiness checks, when ``settings.metrics_port`` is set::

    server = await start_http_server(settings, metrics, {"broker": broker_ok, "store": store.ping,
                                                         "engine": lambda: engine.started})
    ...
    await server.close()

A readiness check is a callable returning a bool, or an awaitable of one; the mapping is read (not
copied) and each check called on every /readyz request with a 2-second timeout, and an exception or a timeout counts as "not ready".
/healthz answers 200 whenever the process's event loop runs. /readyz answers 200 when every check
passes, else 503; both bodies are JSON naming each check's result.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from notestream import __version__

if TYPE_CHECKING:
    from notestream.models.engine import BatchRecord

from notestream.core.errors import ConfigError
from notestream.core.settings import Settings

ReadinessCheck = Callable[[], bool | Awaitable[bool]]

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5)


ROLES = ("worker", "alerts", "replay", "ingest")
"""Process roles; each exports ``notestream_info``, the standard ``process_*``, ``python_*`` collectors
and its own metrics only (the worker's objects exist in every role, unregistered, so shared code may
record into them)."""


class Metrics:
    """The metric objects of one process, in their own registry (names start with ``notestream_``).

    >>> names = lambda m: {f.name for f in m.registry.collect()}
    >>> sorted(n for n in names(Metrics(role="alerts")) if n.startswith("notestream_"))[:3]
    ['notestream_alert_updates', 'notestream_alert_updates_stale', 'notestream_alerts']
    >>> "notestream_notes_in" in names(Metrics(role="alerts")), "process_cpu_seconds" in names(Metrics())
    (False, True)
    """

    def __init__(self, role: str = "worker", registry: CollectorRegistry | None = None) -> None:
        if role not in ROLES:
            raise ConfigError(f"Unknown metrics role {role!r}; one of {', '.join(ROLES)}.")
        self.role = role
        self.registry = registry if registry is not None else CollectorRegistry()
        own = self.registry
        # the standard collectors, as the default registry has them (CPU, memory, open files, GC)
        ProcessCollector(registry=own)
        PlatformCollector(registry=own)
        GCCollector(registry=own)
        self.info = Gauge(
            "notestream_info",
            "Constant 1, labelled with the process role, the notestream version and the served model "
            "(folder name and fingerprint; empty until the worker has loaded it).",
            ["role", "version", "model", "fingerprint"],
            registry=own,
        )
        self.set_model()
        r = own if role == "worker" else None
        self.notes_in = Counter("notestream_notes_in", "Note events taken from the notes topic.", registry=r)
        self.updates_out = Counter(
            "notestream_updates_out", "Risk updates emitted to the risk-updates topic.", registry=r
        )
        self.dead_letters = Counter(
            "notestream_dead_letters",
            "Messages sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=own if role in ("worker", "ingest") else None,
        )
        self.notes_dropped = Counter(
            "notestream_notes_dropped",
            "Valid notes not scored on purpose (outside the model's window or task), by reason.",
            ["reason"],
            registry=r,
        )
        self.chunks = Counter(
            "notestream_chunks_scored", "Chunks scored by the engine; rate() gives chunks/s.", registry=r
        )
        self.batch_size = Histogram(
            "notestream_batch_size",
            "Chunks (rows) per engine batch.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.batch_tokens = Histogram(
            "notestream_batch_tokens",
            "Padded tokens (rows x padded length) per engine batch.",
            buckets=(512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072),
            registry=r,
        )
        self.padding_efficiency = Histogram(
            "notestream_padding_efficiency",
            "Real tokens / padded tokens per engine batch (1 = no padding).",
            buckets=(0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
            registry=r,
        )
        self.batch_seconds = Histogram(
            "notestream_engine_batch_seconds",
            "Model time per engine batch (tokenization excluded), failed batches included.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.failed_batches = Counter(
            "notestream_engine_failed_batches", "Engine batches that failed their requests.", registry=r
        )
        self.engine_queue_depth = Gauge(
            "notestream_engine_queue_depth", "Chunks waiting in the inference engine's queue.", registry=r
        )
        self.note_to_update = Histogram(
            "notestream_note_to_update_seconds",
            "From a note's produced_at to the emission of the risk update it caused.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.store_latency = Histogram(
            "notestream_store_seconds",
            "Latency of risk-store operations, by operation.",
            ["op"],
            buckets=_STORE_BUCKETS,
            registry=r,
        )
        self.store_errors = Counter(
            "notestream_store_errors",
            "Risk-store operations that raised (the worker retries the batch), by operation.",
            ["op"],
            registry=r,
        )
        self.store_rebuilds = Counter(
            "notestream_store_rebuilds",
            "Rebuilds of a risk store that lost its data, from the store changelog (stream.store.heal).",
            registry=r,
        )
        self.consumer_lag = Gauge(
            "notestream_consumer_lag",
            "Messages behind the end of each partition this worker consumes (high watermark minus the "
            "next offset to process), after its latest batch from that partition.",
            ["topic", "partition"],
            registry=r,
        )
        # alerts (`notestream alerts`)
        r = own if role == "alerts" else None
        self.alerts = Counter("notestream_alerts", "Alerts emitted, by state.", ["state"], registry=r)
        self.alert_updates = Counter(
            "notestream_alert_updates", "Risk updates read by the alerts service.", registry=r
        )
        self.alert_updates_stale = Counter(
            "notestream_alert_updates_stale",
            "Risk updates the alerts service dropped as stale or repeated (seq not above the last seen).",
            registry=r,
        )
        self.webhook_failures = Counter(
            "notestream_webhook_failures", "Alerts the webhook did not accept after its retries.", registry=r
        )
        self.alerts_raised_now = Gauge(
            "notestream_alerts_raised_now",
            "Alerts raised and not cleared, now (rebuilt state included).",
            registry=r,
        )
        self.alerts_restored = Counter(
            "notestream_alerts_restored",
            "Alerts read back from the risk-alerts topic to rebuild the alert state at start.",
            registry=r,
        )
        # replay (`notestream replay`)
        r = own if role == "replay" else None
        self.events_replayed = Counter(
            "notestream_events_replayed", "Events produced by a replay, by topic.", ["topic"], registry=r
        )
        self.replay_sent = Counter(
            "notestream_replay_sent", "Events a replay handed to its Kafka producer (exact).", registry=r
        )
        self.replay_events = Counter(
            "notestream_replay_events",
            "Events a replay took from its source to produce, by kind (admit, discharge, note, retraction); "
            "counted in batches of up to 512 ahead of the sends (notestream_replay_sent is exact).",
            ["kind"],
            registry=r,
        )
        self.replay_skipped = Counter(
            "notestream_replay_notes_skipped",
            "Notes a replay skipped, by reason (no_hadm, unknown_admission, untimed).",
            ["reason"],
            registry=r,
        )
        self._replay_seen: dict[str, int] = {}
        # EHR ingest (`notestream ingest hl7|fhir`; dead letters counted in notestream_dead_letters)
        r = own if role == "ingest" else None
        self.ingest_answers = Counter(
            "notestream_ingest_answers",
            "Source messages ingest answered, by source (hl7, fhir) and answer (AA, AE, AR; 200, 400, "
            "422, 503...). AE/AR and 4xx were dead-lettered; AR 207 and 503 were not kept (resend).",
            ["source", "answer"],
            registry=r,
        )
        self.ingest_events = Counter(
            "notestream_ingest_events",
            "Events ingest produced (Kafka acknowledged), by topic.",
            ["topic"],
            registry=r,
        )

    # --- helpers for the common cases -------------------------------------------------------------
    def set_model(self, model: str = "", fingerprint: str = "") -> None:
        """Label ``notestream_info`` with the served model (one series: the previous one is removed).

        >>> m = Metrics()
        >>> m.set_model("readmission-v3", "ab12")
        >>> m.registry.get_sample_value("notestream_info", {"role": "worker", "version": __version__,
        ...     "model": "readmission-v3", "fingerprint": "ab12"})
        1.0
        """
        self.info.clear()
        self.info.labels(role=self.role, version=__version__, model=model, fingerprint=fingerprint).set(1)

    def observe_consumer_lag(self, topic: str, partition: int, lag: int) -> None:
        """Set one partition's consumer lag (messages; never below 0)."""
        self.consumer_lag.labels(topic=topic, partition=str(partition)).set(max(0, lag))

    def forget_partition(self, topic: str, partition: int) -> None:
        """Drop a partition's lag series (revoked: another worker reports it now)."""
        with contextlib.suppress(KeyError):
            self.consumer_lag.remove(topic, str(partition))

    def dead_letter(self, reason: str) -> None:
        """Count one dead letter with its reason (e.g. ``invalid_event``, ``admission_unknown``)."""
        self.dead_letters.labels(reason=reason).inc()

    def observe_batch(self, rows: int, padded_tokens: int, real_tokens: int) -> None:
        """Record one engine batch: its rows, padded tokens and real (unpadded) tokens.

        The signature fits an engine ``on_batch(rows, padded_tokens, real_tokens)`` callback.
        """
        self.batch_size.observe(rows)
        self.batch_tokens.observe(padded_tokens)
        self.chunks.inc(rows)
        if padded_tokens > 0:
            self.padding_efficiency.observe(min(1.0, real_tokens / padded_tokens))

    def record_batch(self, batch: BatchRecord) -> None:
        """Record one engine batch as the engine cut it (the engine's ``on_batch`` observer).

        >>> from notestream.models.engine import BatchRecord
        >>> m = Metrics()
        >>> m.record_batch(BatchRecord(rows=3, real_tokens=90, padded_tokens=100, seconds=0.02, device="cpu"))
        >>> m.record_batch(BatchRecord(rows=2, real_tokens=10, padded_tokens=20, seconds=0.01, device="cpu",
        ...                            failed=True))
        >>> [m.registry.get_sample_value(name) for name in ("notestream_chunks_scored_total",
        ...     "notestream_batch_size_count", "notestream_engine_batch_seconds_count",
        ...     "notestream_engine_failed_batches_total")]
        [3.0, 1.0, 2.0, 1.0]
        """
        self.batch_seconds.observe(batch.seconds)
        if batch.failed:
            self.failed_batches.inc()
            return
        self.observe_batch(batch.rows, batch.padded_tokens, batch.real_tokens)

    def observe_replay_counts(self, counts: Any) -> None:
        """Bring the replay counters up to a replay's running counts (``notestream.stream.replay.ReplayCounts``:
        ``admits``, ``discharges``, ``notes``, ``retractions`` (a subset of notes), ``skipped_*``).

        Call it as often as convenient (the replay's ``on_event`` hook, and once at the end); only the
        growth since the previous call is counted.

        >>> from types import SimpleNamespace
        >>> m = Metrics(role="replay")
        >>> m.observe_replay_counts(SimpleNamespace(admits=2, discharges=1, notes=5, retractions=1,
        ...     skipped_no_hadm=3, skipped_unknown_admission=0, skipped_untimed=1))
        >>> m.observe_replay_counts(SimpleNamespace(admits=2, discharges=2, notes=6, retractions=1,
        ...     skipped_no_hadm=3, skipped_unknown_admission=0, skipped_untimed=1))
        >>> [m.registry.get_sample_value("notestream_replay_events_total", {"kind": k})
        ...  for k in ("admit", "discharge", "note", "retraction")]
        [2.0, 2.0, 5.0, 1.0]
        >>> m.registry.get_sample_value("notestream_events_replayed_total", {"topic": "notes"})
        6.0
        >>> m.registry.get_sample_value("notestream_replay_notes_skipped_total", {"reason": "no_hadm"})
        3.0
        """
        retractions = int(getattr(counts, "retractions", 0))
        now = {
            "admit": int(getattr(counts, "admits", 0)),
            "discharge": int(getattr(counts, "discharges", 0)),
            "note": int(getattr(counts, "notes", 0)) - retractions,
            "retraction": retractions,
            "skip:no_hadm": int(getattr(counts, "skipped_no_hadm", 0)),
            "skip:unknown_admission": int(getattr(counts, "skipped_unknown_admission", 0)),
            "skip:untimed": int(getattr(counts, "skipped_untimed", 0)),
        }
        topics = {"admit": "admissions", "discharge": "admissions", "note": "notes", "retraction": "notes"}
        for key, value in now.items():
            grown = value - self._replay_seen.get(key, 0)
            if grown <= 0:
                continue
            if key.startswith("skip:"):
                self.replay_skipped.labels(reason=key.removeprefix("skip:")).inc(grown)
            else:
                self.replay_events.labels(kind=key).inc(grown)
                self.events_replayed.labels(topic=topics[key]).inc(grown)
            self._replay_seen[key] = value

    def track_queue_depth(self, depth: Callable[[], float]) -> None:
        """Read the engine queue depth from ``depth()`` at every scrape."""
        self.engine_queue_depth.set_function(depth)

    def observe_note_to_update(self, latency: timedelta | float) -> None:
        """Record the latency from a note's production to its risk update (seconds or timedelta)."""
        seconds = latency.total_seconds() if isinstance(latency, timedelta) else float(latency)
        self.note_to_update.observe(max(0.0, seconds))

    @contextlib.contextmanager
    def store_timer(self, op: str) -> Iterator[None]:
        """Time a store operation (``with metrics.store_timer("apply_note"): ...``), failures included
        (and counted in ``notestream_store_errors_total{op}``)."""
        start = time.perf_counter()
        try:
            yield
        except Exception:  # a cancelled operation is no store error
            self.store_errors.labels(op=op).inc()
            raise
        finally:
            self.store_latency.labels(op=op).observe(time.perf_counter() - start)

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


async def run_checks(checks: Mapping[str, ReadinessCheck], timeout_s: float = 2.0) -> dict[str, bool]:
    """Run every readiness check; a check that raises or times out is False."""

    async def one(check: ReadinessCheck) -> bool:
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await asyncio.wait_for(result, timeout_s)
            return bool(result)
        except Exception:
            return False

    names = list(checks)
    results = await asyncio.gather(*(one(checks[name]) for name in names))
    return dict(zip(names, results, strict=True))


@dataclass
class MetricsServer:
    """A running metrics and health server; ``port`` is the bound port (useful with port 0)."""

    runner: web.AppRunner
    host: str
    port: int

    async def close(self) -> None:
        await self.runner.cleanup()


def make_app(
    metrics: Metrics,
    readiness_checks: Mapping[str, ReadinessCheck] | None = None,
    *,
    check_timeout_s: float = 2.0,
) -> web.Application:
    """The aiohttp application serving /metrics, /healthz and /readyz."""
    # Not copied: the mapping is read at every request, so a process may add checks once it has started.
    checks: Mapping[str, ReadinessCheck] = readiness_checks if readiness_checks is not None else {}

    async def serve_metrics(request: web.Request) -> web.Response:
        body = metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(request: web.Request) -> web.Response:
        results = await run_checks(checks, check_timeout_s)
        ready = all(results.values())
        body: dict[str, Any] = {"status": "ready" if ready else "not ready", "checks": results}
        return web.json_response(body, status=200 if ready else 503)

    app = web.Application()
    app.router.add_get("/metrics", serve_metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def start_http_server(
    settings: Settings,
    metrics: Metrics,
    readiness_checks: Mapping[str, ReadinessCheck] | None = None,
    *,
    port: int | None = None,
    check_timeout_s: float = 2.0,
) -> MetricsServer:
    """Serve /metrics, /healthz and /readyz on ``settings.metrics_host``:``settings.metrics_port``
    (or ``port``; 0 picks a free one) in the running event loop."""
    chosen = settings.metrics_port if port is None else port
    if chosen is None:
        raise ConfigError("No metrics port: set metrics_port (NOTESTREAM_METRICS_PORT) or pass port=.")
    app = make_app(metrics, readiness_checks, check_timeout_s=check_timeout_s)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.metrics_host, chosen)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(
            f"Cannot serve metrics on {settings.metrics_host}:{chosen} ({exc}); choose a free "
            "metrics_port (NOTESTREAM_METRICS_PORT) or 0 for any."
        ) from exc
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else chosen
    return MetricsServer(runner=runner, host=settings.metrics_host, port=int(bound))
