"""The worker's runtime: the engine, the store and the pipeline of one process, and its readiness.

:class:`Runtime` creates the engine and the store when the first agent starts (so a model loads once per
process and is shared by both agents of :func:`notestream.stream.app.create_app`), serves /metrics, /healthz and
/readyz when ``settings.metrics_port`` is set, and closes what it created at shutdown. Its readiness
checks are ``store`` (ping), ``engine`` (running), ``batches`` (no batch waiting for a retry) and
``broker`` (:class:`BrokerCheck`, added by :func:`notestream.stream.app.create_app` with :meth:`Runtime.add_check`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import faust

from notestream.core.settings import Settings
from notestream.models.spec import ModelSpec, serving_warning
from notestream.stream.errors import StreamError
from notestream.stream.faust_transport import producer_client
from notestream.stream.metrics import Metrics
from notestream.stream.pipeline import Pipeline
from notestream.stream.store.heal import StoreHealer

__all__ = ["BrokerCheck", "Runtime"]

log = logging.getLogger(__name__)


class BrokerCheck:
    """The worker's broker readiness check (``broker`` in /readyz): True when the consumer has joined
    its group (partitions assigned and not revoked since; an assignment may be empty when the group has
    more members than partitions) and a metadata request through the app's producer succeeded within
    the last ``max_age_s`` (made again, at most that often, by the check itself)."""

    def __init__(self, app: faust.App, *, max_age_s: float = 5.0) -> None:
        self.app = app
        self.max_age_s = max_age_s
        self.joined = False
        self.last_ok = float("-inf")

    async def assigned(self, sender: Any, assigned: Any = (), **kwargs: Any) -> None:
        self.joined = True

    async def revoked(self, sender: Any, revoked: Any = (), **kwargs: Any) -> None:
        self.joined = False  # a rebalance: ready again once it assigns partitions

    async def __call__(self) -> bool:
        if not self.joined:
            return False
        if time.monotonic() - self.last_ok < self.max_age_s:
            return True
        client = producer_client(self.app)
        if client is None:
            return False
        await client.fetch_all_metadata()  # raises when no broker answers (run_checks: not ready)
        self.last_ok = time.monotonic()
        return True


class Runtime:
    """The engine, the store and the pipeline of one worker process, started once, shared by agents."""

    def __init__(self, settings: Settings, *, engine: Any = None, store: Any = None) -> None:
        self.settings = settings
        self.engine = engine
        self.store = store
        self.pipeline: Pipeline | None = None
        self.metrics: Metrics | None = Metrics(role="worker") if settings.metrics_port is not None else None
        self.healthy = False
        self._checks: dict[str, Callable[[], Awaitable[bool] | bool]] = {}
        self._ready = asyncio.Event()
        self._lock = asyncio.Lock()
        self._owns: list[Any] = []
        self._fingerprint: str | None = None
        self.healer = StoreHealer.off()
        """Lost-store detection and the changelog (stream/store/heal.py); set by :meth:`ready`."""

    def preload(self) -> None:
        """Load the model replicas and fingerprint the model folder now (blocking, before the event loop
        runs): a worker that joins its consumer group afterwards is ready for partitions at once."""
        model_dir = self.settings.model_dir
        if model_dir is None:
            return  # ready() says what to do
        from notestream.models.engine import InferenceEngine
        from notestream.models.fingerprint import model_fingerprint

        self._fingerprint = model_fingerprint(model_dir)
        if self.engine is None:
            self.engine = InferenceEngine.from_settings(self.settings, Path(model_dir)).load()

    def add_check(self, name: str, check: Callable[[], Awaitable[bool] | bool]) -> None:
        """Serve ``check`` in /readyz under ``name`` (add before the worker starts)."""
        self._checks[name] = check

    async def wait_ready(self) -> Pipeline:
        """Wait until :meth:`ready` succeeded (never raises: the agents retry the start-up)."""
        await self._ready.wait()
        assert self.pipeline is not None
        return self.pipeline

    def set_healthy(self, healthy: bool) -> None:
        """False while a batch waits for a retry (``/readyz`` reports it)."""
        self.healthy = healthy

    async def ready_step(self) -> None:
        await self.ready()

    async def ready(self) -> Pipeline:
        """Start the engine and open the store (first call only); return the pipeline."""
        async with self._lock:
            if self.pipeline is not None:
                return self.pipeline
            model_dir = self.settings.model_dir
            if model_dir is None:
                raise StreamError(
                    "The worker needs a model: pass --model-dir or set NOTESTREAM_MODEL_DIR to a model "
                    "folder (Hugging Face format + notestream.json)."
                )
            spec = ModelSpec.read(model_dir)
            if (warning := serving_warning(spec)) is not None:
                log.warning("%s: %s", Path(model_dir).name, warning)
            if self.store is None:
                from notestream.stream.store import open_store

                self.store = open_store(self.settings)
                self._owns.append(self.store)
            await self._claim_store(Path(model_dir))
            # --- store healing (stream/store/heal.py): epoch check on every write, rebuild from the changelog
            from notestream.stream.store.heal import open_healer

            self.healer = await open_healer(self.settings, self.store, self._fingerprint or "", self.metrics)
            if self.engine is None:
                from notestream.models.engine import InferenceEngine

                self.engine = InferenceEngine.from_settings(self.settings, Path(model_dir))
            if not getattr(self.engine, "started", True):  # built (or preloaded) here: start and own it
                await self.engine.start()
                self._owns.append(self.engine)
            tokenizer = self.engine.classifiers[0].tokenizer if spec.chunking.kind == "tokens" else None
            self.pipeline = Pipeline(
                self.engine,
                self.store,
                spec,
                model=Path(model_dir).name,
                admission_wait_s=self.settings.admission_wait_s,
                source_timezone=self.settings.source_zone,
                tokenizer=tokenizer,
                metrics=self.metrics,
                fingerprint=self._fingerprint,
            )
            if self.metrics is not None:
                await self._serve_metrics()
            self._ready.set()
            log.info(
                "Worker ready: model %s, task %s, window %s.",
                Path(model_dir).name,
                spec.task,
                spec.window.kind,
            )
            return self.pipeline

    async def _claim_store(self, model_dir: Path) -> None:
        """Bind the store to this model, or stop: one store never mixes two models' probabilities."""
        from notestream.models.fingerprint import model_fingerprint
        from notestream.stream.store import claim_store

        fingerprint = self._fingerprint
        if fingerprint is None:
            fingerprint = self._fingerprint = await asyncio.to_thread(model_fingerprint, model_dir)
        store_url = self.settings.masked()["store"]
        where = f"The store {store_url} (namespace {self.settings.store_namespace})"
        await claim_store(self.store, fingerprint, where=where)
        log.info("Store bound to model %s.", fingerprint)
        if self.metrics is not None:
            self.metrics.set_model(model=model_dir.name, fingerprint=fingerprint)

    async def _serve_metrics(self) -> None:
        from notestream.stream.metrics import start_http_server

        assert self.metrics is not None
        engine = self.engine
        stats = getattr(engine, "stats", None)
        if callable(stats):
            self.metrics.track_queue_depth(lambda: float(stats()["queue_depth"]))
        if hasattr(engine, "on_batch"):
            engine.on_batch = self.metrics.record_batch
        checks = {
            "store": self.store.ping,
            "engine": lambda: bool(stats()["running"]) if callable(stats) else True,
            "batches": lambda: self.healthy,
        }
        checks.update(self._checks)
        self._owns.append(await start_http_server(self.settings, self.metrics, checks))

    async def close(self) -> None:
        """Close what :meth:`ready` created (engine first: it may hold work for the store)."""
        for thing in self._owns:
            try:
                await thing.close()
            except Exception:  # closing must not hide the shutdown of the rest
                log.exception("Closing %s failed.", type(thing).__name__)
        if self._owns:
            log.info(
                "Worker stopped; engine and store closed. Counters: %s",
                dict(self.pipeline.counters if self.pipeline else {}),
            )
        self._owns.clear()
