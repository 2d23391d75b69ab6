"""The inference engine: asyncio micro-batching over one model replica per device.

Callers ``await engine.score(texts)`` from anywhere in the event loop (the stream's agents, the offline
scorer). Each request is tokenized once, in a thread, and its chunks join one shared queue. One worker
per device takes batches from that queue and runs the forward pass in its own thread, so the event loop
stays responsive while the model runs::

    callers --score(texts)--> tokenize (thread) --> queue (bounded, in chunks)
                                                      |  batch: oldest chunk + the chunks closest
                                                      |  to it in length, within max_batch_tokens
                                                      v  (padded tokens) and max_batch_size rows
                                  worker cuda:0 / cuda:1 / cpu (forward in a thread) --> futures

- A batch is taken when it is full (count or token budget) or when its oldest chunk has waited
  ``max_wait_ms``; which queued chunks join it is planned by :func:`notestream.models.batching.select_batch` (the
  oldest chunk, then those nearest to it in length while ``min_batch_efficiency`` of the computed tokens
  stay real; see :mod:`notestream.models.batching` for the measurements behind the rule).
- One output per input is checked. A failing batch fails each request in it with :class:`BatchFailed`
  (the rest of such a request is dropped) and the worker goes on serving.
- The queue holds at most ``queue_size`` chunks (a single larger request is admitted into an empty
  queue). A caller that finds no room waits, and gets :class:`EngineOverloaded` after
  ``overload_timeout_s``. A caller that is cancelled takes its queued chunks with it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from notestream.models.batching import batch_is_full, has_room, keep_apart, select_batch, token_counts
from notestream.models.classifier import ChunkClassifier
from notestream.models.errors import BatchFailed, EngineClosed, EngineError, EngineOverloaded

if TYPE_CHECKING:
    from notestream.core.settings import Settings
    from notestream.models.spec import ModelSpec

__all__ = ["InferenceEngine", "resolve_devices", "select_batch"]

log = logging.getLogger(__name__)


def resolve_devices(devices: Sequence[str]) -> list[str]:
    """Expand ``auto`` into every visible CUDA device, else ``cpu``.

    >>> resolve_devices(["cpu"])
    ['cpu']
    """
    out: list[str] = []
    for device in devices:
        if device == "auto":
            import torch

            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            out.extend([f"cuda:{i}" for i in range(count)] or ["cpu"])
        else:
            out.append(device)
    if not out:
        raise EngineError("The engine needs at least one device, e.g. ['cpu'] or ['auto'].")
    return out


@dataclass(eq=False)
class _Request:
    future: asyncio.Future[list[float]]
    probs: np.ndarray
    remaining: int
    finished: bool = False
    isolated: bool = False


@dataclass(eq=False)
class _Item:
    request: _Request
    index: int
    ids: Sequence[int]
    arrived: float


@dataclass
class _Counters:
    requests: int = 0
    chunks: int = 0
    batches: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    failed_batches: int = 0
    overloaded: int = 0
    cancelled: int = 0
    busy_s: float = 0.0


@dataclass(frozen=True)
class BatchRecord:
    """One batch the engine ran, as the engine cut it: what a metrics hook records.

    ``real_tokens`` / ``padded_tokens`` is the batch's padding efficiency; ``seconds`` is the model's
    time on it (tokenization excluded); ``failed`` batches failed their requests.
    """

    rows: int
    real_tokens: int
    padded_tokens: int
    seconds: float
    device: str
    failed: bool = False


BatchObserver = Callable[[BatchRecord], None]
"""Called on the event loop once per batch, right after the batch ran; it must not block."""


@dataclass(eq=False)
class _Worker:
    classifier: ChunkClassifier
    executor: ThreadPoolExecutor
    task: asyncio.Task[None] | None = None
    in_flight: list[_Item] = field(default_factory=list)


TEXTS_PER_SLICE = 32
"""Fewest chunk texts a tokenize thread takes from one request: smaller slices cost more in hand-offs
than they gain."""


def usable_cores(limit: int) -> int:
    """CPU cores this process may run on (its affinity, as a container's cpuset sets it), at most ``limit``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(limit, cores))


def default_tokenize_threads(devices: Sequence[str]) -> int:
    """Tokenize threads when the settings say 0: with a replica on a GPU, one per usable core (at most
    8: the model leaves the cores to tokenization); on CPU only, 1 (the model's own threads use them).

    >>> default_tokenize_threads(["cpu"])
    1
    """
    if not any(str(device).startswith("cuda") for device in devices):
        return 1
    return usable_cores(limit=8)


class InferenceEngine:
    """Async micro-batching inference over one :class:`ChunkClassifier` per device.

    ``model``: classifiers already loaded (one worker each; ``devices`` is then ignored), or a model
    folder that :meth:`start` loads once per device. Use ``async with`` or ``start()`` / ``close()``.
    """

    def __init__(
        self,
        model: Sequence[ChunkClassifier] | ChunkClassifier | str | Path,
        *,
        devices: Sequence[str] = ("auto",),
        max_batch_tokens: int = 32768,
        max_batch_size: int = 64,
        max_wait_ms: float = 5.0,
        queue_size: int = 4096,
        overload_timeout_s: float = 60.0,
        min_batch_efficiency: float = 0.9,
        tokenize_threads: int = 0,
        on_batch: BatchObserver | None = None,
    ) -> None:
        if isinstance(model, ChunkClassifier):
            model = [model]
        if isinstance(model, str | Path):
            self._model_dir: Path | None = Path(model)
            self._classifiers: list[ChunkClassifier] = []
        else:
            self._model_dir = None
            self._classifiers = list(model)
            if not self._classifiers:
                raise EngineError("The engine needs at least one classifier.")
        if max_batch_size < 1 or max_batch_tokens < 1 or queue_size < 1:
            raise EngineError("max_batch_size, max_batch_tokens and queue_size must be positive.")
        self.devices = list(devices)
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.queue_size = queue_size
        self.overload_timeout_s = overload_timeout_s
        if not 0.0 <= min_batch_efficiency <= 1.0:
            raise EngineError("min_batch_efficiency must be between 0 and 1.")
        self.min_batch_efficiency = min_batch_efficiency
        if tokenize_threads < 0:
            raise EngineError("tokenize_threads must be 0 (by the devices) or positive.")
        self.tokenize_threads = tokenize_threads
        """Threads that tokenize (:meth:`tokenize`); 0 until :meth:`start` resolves it by the devices
        (:func:`default_tokenize_threads`)."""
        self._pending: list[_Item] = []
        self._pending_tokens = 0
        self._workers: list[_Worker] = []
        self._tokenize_pool: ThreadPoolExecutor | None = None
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._running = False
        self._counters = _Counters()
        self.on_batch = on_batch
        """Observer of every batch (:class:`BatchRecord`), e.g. the worker's metrics; None: none."""

    @classmethod
    def from_settings(cls, settings: Settings, model_dir: str | Path | None = None) -> InferenceEngine:
        """An engine configured by the process settings (model folder: argument, else settings)."""
        folder = model_dir if model_dir is not None else settings.model_dir
        if folder is None:
            raise EngineError("No model folder given: pass one or set NOTESTREAM_MODEL_DIR.")
        return cls(
            folder,
            devices=settings.devices,
            max_batch_tokens=settings.max_batch_tokens,
            max_batch_size=settings.max_batch_size,
            max_wait_ms=settings.max_wait_ms,
            queue_size=settings.queue_size,
            overload_timeout_s=settings.overload_timeout_s,
            min_batch_efficiency=settings.min_batch_efficiency,
            tokenize_threads=settings.tokenize_threads,
        )

    # --- lifecycle --------------------------------------------------------------------------------
    def load(self) -> InferenceEngine:
        """Load the replicas now (when built from a folder), blocking; :meth:`start` then only starts the
        workers. A stream worker loads before it joins its consumer group, so partitions are never
        assigned to a process that is still reading weights."""
        if not self._classifiers:
            assert self._model_dir is not None
            self._classifiers = self._load(self._model_dir)
        return self

    async def start(self) -> InferenceEngine:
        """Load the replicas (when built from a folder and not loaded yet) and start one worker per device."""
        if self._running:
            return self
        if not self._classifiers:
            await asyncio.to_thread(self.load)
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        if not self.tokenize_threads:
            self.tokenize_threads = default_tokenize_threads([str(c.device) for c in self._classifiers])
        self._tokenize_pool = ThreadPoolExecutor(
            max_workers=self.tokenize_threads, thread_name_prefix="engine-tokenize"
        )
        self._workers = []
        loop = asyncio.get_running_loop()
        for clf in self._classifiers:
            worker = _Worker(
                clf, ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"engine-{clf.device}")
            )
            try:  # each worker thread runs one short batch before serving (and proves the model runs)
                await loop.run_in_executor(worker.executor, clf.warm_up)
            except Exception as exc:
                worker.executor.shutdown(wait=False)
                for started in self._workers:
                    assert started.task is not None
                    started.task.cancel()
                    started.executor.shutdown(wait=False)
                self._workers = []
                raise EngineError(
                    f"The model cannot run on {clf.device}: {type(exc).__name__}: {exc}"
                ) from exc
            worker.task = asyncio.create_task(self._serve(worker), name=f"engine-worker-{clf.device}")
            self._workers.append(worker)
        self._running = True
        log.info("Inference engine started on %s.", ", ".join(str(c.device) for c in self._classifiers))
        return self

    def _load(self, folder: Path) -> list[ChunkClassifier]:
        from notestream.models.checkpoint import load_model_folder

        return [
            ChunkClassifier(
                load_model_folder(folder, device),
                device,
                max_batch_size=self.max_batch_size,
                max_batch_tokens=self.max_batch_tokens,
            )
            for device in resolve_devices(self.devices)
        ]

    async def close(self) -> None:
        """Stop the workers; requests still queued or running fail with :class:`EngineClosed`."""
        if not self._running:
            return
        self._running = False
        for worker in self._workers:
            assert worker.task is not None
            worker.task.cancel()
        await asyncio.gather(*(w.task for w in self._workers if w.task), return_exceptions=True)
        closed = EngineClosed("The inference engine was closed before this request was scored.")
        for item in [*self._pending, *(i for w in self._workers for i in w.in_flight)]:
            self._fail(item.request, closed)
        self._pending.clear()
        self._pending_tokens = 0
        for worker in self._workers:
            worker.executor.shutdown(wait=False, cancel_futures=True)
        if self._tokenize_pool is not None:
            self._tokenize_pool.shutdown(wait=False, cancel_futures=True)
        self._room.set()

    async def __aenter__(self) -> InferenceEngine:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- what callers use -------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        """Whether the engine is serving (started and not closed): the readiness probe."""
        return self._running

    @property
    def classifiers(self) -> list[ChunkClassifier]:
        return list(self._classifiers)

    @property
    def spec(self) -> ModelSpec:
        """The served model's description (available once started)."""
        if not self._classifiers:
            raise EngineClosed("The engine has no model yet; call `await engine.start()` first.")
        return self._classifiers[0].spec

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids as the engine computes them (the first replica's tokenizer)."""
        return self._classifiers[0].encode(texts)

    async def score(self, texts: Sequence[str], *, isolated: bool = False) -> list[float]:
        """Probabilities of chunk texts, in order. Tokenized once, off the event loop (:meth:`tokenize`).
        ``isolated``: batch these chunks with no other request's (to retry a request whose shared batch
        failed)."""
        if not texts:
            return []
        self._check_running()
        return await self.score_ids(await self.tokenize(texts), isolated=isolated)

    async def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """:meth:`encode` in the tokenize threads: a long request is cut into one slice per thread (at
        least :data:`TEXTS_PER_SLICE` texts each), tokenized at once (the fast tokenizer releases the
        GIL) and put back in order; each text's ids do not depend on the others'."""
        assert self._tokenize_pool is not None
        loop = asyncio.get_running_loop()
        texts = list(texts)
        slices = max(1, min(self.tokenize_threads, len(texts) // TEXTS_PER_SLICE))
        size = -(-len(texts) // slices)
        parts = await asyncio.gather(
            *(
                loop.run_in_executor(self._tokenize_pool, self.encode, texts[i : i + size])
                for i in range(0, len(texts), size)
            )
        )
        return [ids for part in parts for ids in part]

    async def score_ids(self, ids: Sequence[Sequence[int]], *, isolated: bool = False) -> list[float]:
        """Probabilities of chunks already tokenized by :meth:`encode`, in order."""
        if not ids:
            return []
        self._check_running()
        await self._wait_for_room(len(ids))
        self._check_running()
        future: asyncio.Future[list[float]] = asyncio.get_running_loop().create_future()
        request = _Request(
            future=future, probs=np.full(len(ids), np.nan), remaining=len(ids), isolated=isolated
        )
        now = time.monotonic()
        self._pending.extend(_Item(request, i, chunk, now) for i, chunk in enumerate(ids))
        self._pending_tokens += sum(len(chunk) for chunk in ids)
        self._counters.requests += 1
        self._arrived.set()
        try:
            return await future
        except asyncio.CancelledError:
            if not request.finished:
                self._counters.cancelled += 1
                request.finished = True
                self._drop(request)
            raise

    def stats(self) -> dict[str, Any]:
        """Counters for metrics: chunks, batches, real and padded tokens, queue depth, failures."""
        c = self._counters
        return {
            "requests": c.requests,
            "chunks": c.chunks,
            "batches": c.batches,
            "real_tokens": c.real_tokens,
            "padded_tokens": c.padded_tokens,
            "padding_efficiency": c.real_tokens / c.padded_tokens if c.padded_tokens else None,
            "queue_depth": len(self._pending),
            "in_flight": sum(len(w.in_flight) for w in self._workers),
            "failed_batches": c.failed_batches,
            "overloaded": c.overloaded,
            "cancelled": c.cancelled,
            "busy_s": c.busy_s,
            "workers": len(self._workers),
            "running": self._running,
        }

    # --- internals --------------------------------------------------------------------------------
    def _check_running(self) -> None:
        if not self._running:
            raise EngineClosed("The inference engine is not running; call `await engine.start()` first.")

    def _fits(self, n: int) -> bool:
        return has_room(len(self._pending), n, self.queue_size)

    async def _wait_for_room(self, n: int) -> None:
        deadline = time.monotonic() + self.overload_timeout_s
        while self._running and not self._fits(n):
            self._room.clear()
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                await asyncio.wait_for(self._room.wait(), left)
            except TimeoutError as exc:
                self._counters.overloaded += 1
                raise EngineOverloaded(
                    f"The inference engine queue stayed full ({len(self._pending)} of {self.queue_size} "
                    f"chunks) for {self.overload_timeout_s:g} s; slow the producer down, add devices, or "
                    "raise queue_size / overload_timeout_s."
                ) from exc

    def _drop(self, request: _Request) -> None:
        """Remove a finished request's chunks from the queue."""
        kept = [item for item in self._pending if item.request is not request]
        if len(kept) != len(self._pending):
            self._pending = kept
            self._pending_tokens = sum(len(item.ids) for item in kept)
            self._room.set()

    def _fail(self, request: _Request, error: BaseException) -> None:
        if request.finished:
            return
        request.finished = True
        if not request.future.done():
            request.future.set_exception(error)
        self._drop(request)

    def _batch_ready(self) -> bool:
        return batch_is_full(
            len(self._pending),
            self._pending_tokens,
            max_batch_size=self.max_batch_size,
            max_batch_tokens=self.max_batch_tokens,
        )

    async def _next_batch(self) -> list[_Item]:
        while True:
            while not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
            while self._pending and not self._batch_ready():
                left = self._pending[0].arrived + self.max_wait_s - time.monotonic()
                if left <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except TimeoutError:
                    break
            if not self._pending:
                continue
            chosen = select_batch(
                [len(item.ids) for item in self._pending],
                max_batch_size=self.max_batch_size,
                max_batch_tokens=self.max_batch_tokens,
                min_efficiency=self.min_batch_efficiency,
            )
            chosen = keep_apart(
                chosen, [id(item.request) if item.request.isolated else None for item in self._pending]
            )
            taken = set(chosen)
            batch = [self._pending[i] for i in chosen]
            self._pending = [item for i, item in enumerate(self._pending) if i not in taken]
            self._pending_tokens -= sum(len(item.ids) for item in batch)
            self._room.set()
            return batch

    def _record(
        self, worker: _Worker, rows: Sequence[Sequence[int]], seconds: float, *, failed: bool = False
    ) -> tuple[int, int]:
        """Tell the observer about a batch that ran; returns its (real, padded) token counts."""
        real, padded = token_counts(rows)
        if self.on_batch is not None:
            record = BatchRecord(len(rows), real, padded, seconds, str(worker.classifier.device), failed)
            try:
                self.on_batch(record)
            except Exception:  # an observer must never fail a batch
                log.exception("The engine's batch observer failed; the batch's results stand.")
        return real, padded

    async def _serve(self, worker: _Worker) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            batch = [item for item in batch if not item.request.finished]
            if not batch:
                continue
            worker.in_flight = batch
            rows = [item.ids for item in batch]
            started = time.perf_counter()
            try:
                probs = await loop.run_in_executor(worker.executor, worker.classifier.forward_ids, rows)
                if len(probs) != len(batch):
                    raise EngineError(f"the model returned {len(probs)} outputs for {len(batch)} chunks")
            except asyncio.CancelledError:
                closed = EngineClosed("The inference engine was closed while this request was running.")
                for item in batch:
                    self._fail(item.request, closed)
                raise
            except Exception as exc:
                self._counters.failed_batches += 1
                self._record(worker, rows, time.perf_counter() - started, failed=True)
                log.error(
                    "A batch of %d chunks failed on %s (%s); its requests fail, the engine keeps serving.",
                    len(batch),
                    worker.classifier.device,
                    type(exc).__name__,
                )
                error = BatchFailed(
                    f"The batch of {len(batch)} chunks holding this request failed on "
                    f"{worker.classifier.device}: {type(exc).__name__}: {exc}. Other requests are "
                    "unaffected; retry, or dead-letter the note if it fails again."
                )
                error.__cause__ = exc
                for item in batch:
                    self._fail(item.request, error)
                continue
            finally:
                worker.in_flight = []
                self._counters.busy_s += time.perf_counter() - started
            self._counters.batches += 1
            self._counters.chunks += len(batch)
            real, padded = self._record(worker, rows, time.perf_counter() - started)
            self._counters.real_tokens += real
            self._counters.padded_tokens += padded
            for item, p in zip(batch, probs, strict=True):
                request = item.request
                if request.finished:
                    continue
                request.probs[item.index] = p
                request.remaining -= 1
                if request.remaining == 0:
                    request.finished = True
                    if not request.future.done():
                        request.future.set_result(request.probs.tolist())
