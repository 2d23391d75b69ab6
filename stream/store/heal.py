"""Lost store state, detected and healed exactly: the store epoch and the rebuild from the changelog.

Detection. When the worker binds the Redis store it requires the store *epoch* (a key written when
the store was last built, ``<namespace>:epoch``; in Redis Cluster one per slot): every admission
script checks it first and fails with ``NSLOST`` (:class:`~notestream.stream.errors.StoreLost`) when it is gone,
which is what a Redis restart without persistence, ``FLUSHALL`` or a failover to an empty replica
leave. A store that lost data therefore never takes a write as if it were whole.

Healing. :meth:`StoreHealer.guard` runs a batch; on :class:`~notestream.stream.errors.StoreLost` it rebuilds the
store and runs the batch again (nothing was acked meanwhile). The rebuild, as Kafka Streams restores
a state store: take the rebuild lease (one rebuilder; the others' scripts fail with
:class:`~notestream.stream.errors.StoreRebuilding` and are retried), read the compacted changelog topic
(:mod:`notestream.stream.store.changelog`) from its beginning to its end offsets, leave out the admissions that
expired, write each admission's notes through the same script as live notes (the model does not run
again), its admission events, and raise its ``seq`` to the largest recorded (so updates continue above
every ``seq`` already emitted), claim the model binding again, and mark the epoch ready. The rebuild is
a merge, so a concurrent worker's newer writes stay.

Writing. The worker sends the batch's :attr:`~notestream.stream.pipeline.BatchResult.changes` with
:meth:`StoreHealer.record` after the store write and before the batch's risk updates and its offset
commit, so the changelog holds at least every change a risk update announced.

The memory store has no epoch (it is lost with its process; ``memory:///PATH`` journals instead):
:meth:`StoreHealer.off` runs batches as they are and writes no changelog.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from notestream.core.settings import Settings
from notestream.core.topics import STORE_CHANGELOG
from notestream.stream.errors import BrokerError, StoreLost, StoreRebuilding
from notestream.stream.store.changelog import (
    AdmissionRebuild,
    Change,
    decode_all,
    encode_changes,
    latest,
    plan_rebuild,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

Send = Callable[..., Awaitable[Any]]
"""``send(key=bytes, value=bytes)`` returning a delivery future (a Faust topic's ``send``)."""


class HealableStore(Protocol):
    """What healing needs of a store (:class:`~notestream.stream.store.redis_store.RedisRiskStore`)."""

    def require_epoch(self) -> None: ...

    async def epoch(self) -> str | None: ...

    async def begin_rebuild(self, token: str, lease_ms: int) -> bool: ...

    async def renew_rebuild(self, token: str, lease_ms: int) -> None: ...

    async def finish_rebuild(self, token: str) -> None: ...

    async def rebuild_running(self) -> bool: ...

    async def restore_admissions(
        self, plans: Sequence[AdmissionRebuild], *, now_ms: int | None = None
    ) -> int: ...

    async def claim(self, model: str) -> str: ...


class StoreHealer:
    """Detects a store that lost its data and rebuilds it from the changelog; see the module docstring.

    ``read`` returns the changelog's compacted messages (key -> value), e.g. :func:`read_changelog`.
    """

    def __init__(
        self,
        store: HealableStore | None,
        read: Callable[[], Awaitable[Mapping[bytes, bytes]]] | None,
        *,
        namespace: str = "notestream",
        model: str = "",
        idle_ttl_s: float = 30 * 24 * 3600.0,
        retention_s: float = 72 * 3600.0,
        lease_s: float = 60.0,
        chunk: int = 2000,
        on_rebuild: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.read = read
        self.namespace = namespace
        self.model = model
        self.idle_ttl_ms = round(idle_ttl_s * 1000)
        self.retention_ms = round(retention_s * 1000)
        self.lease_ms = round(lease_s * 1000)
        self.chunk = chunk
        self.rebuilds = 0
        """Rebuilds this process made (and logged)."""
        self.on_rebuild = on_rebuild
        """Called after each rebuild (the worker counts ``notestream_store_rebuilds_total``)."""

    @classmethod
    def off(cls) -> StoreHealer:
        """A healer that runs batches as they are and records nothing (the memory store)."""
        return cls(None, None)

    @property
    def enabled(self) -> bool:
        return self.store is not None

    async def start(self) -> None:
        """Require the epoch from now on and heal a store that lost its data while no worker ran (or
        that was never built: a new store is built from an empty changelog in no time)."""
        if self.store is None:
            return
        self.store.require_epoch()
        state = await self.store.epoch()
        if state is None or (state.startswith("rebuilding:") and not await self.store.rebuild_running()):
            await self.heal()  # lost, or a rebuild whose worker died: (re)build it
        elif state.startswith("rebuilding:"):
            await self._wait_ready()

    async def guard(self, step: Callable[[], Awaitable[T]], *, attempts: int = 3) -> T:
        """``await step()``; when the store turns out to have lost its data, heal it and run it again."""
        for _ in range(attempts - 1):
            try:
                return await step()
            except StoreLost as exc:
                if self.store is None:
                    raise
                log.error("%s Rebuilding it from the changelog topic.", exc)
                await self.heal()
            except StoreRebuilding:
                if self.store is None or await self.store.rebuild_running():
                    raise  # another worker rebuilds: retried (notestream.stream.guard) until it is done
                log.error("A store rebuild was left unfinished (its worker stopped); taking it over.")
                await self.heal()
        return await step()

    async def record(self, send: Send, changes: Sequence[Change]) -> None:
        """Send the changelog records of ``changes`` and wait until the broker has them all."""
        if self.store is None or not changes:
            return
        t_ms = round(time.time() * 1000)
        messages = encode_changes(changes, namespace=self.namespace, model=self.model, t_ms=t_ms)
        futures = [await send(key=key, value=value) for key, value in messages]
        await asyncio.gather(*futures)

    async def heal(self) -> int:
        """Rebuild the store from the changelog (or wait for the worker that does); returns the number
        of admissions this call rebuilt."""
        assert self.store is not None
        assert self.read is not None
        token = uuid.uuid4().hex
        if not await self.store.begin_rebuild(token, self.lease_ms):
            await self._wait_ready()
            return 0
        start = time.perf_counter()
        messages = await self.read()
        records = decode_all(messages, namespace=self.namespace, model=self.model or None)
        plans = plan_rebuild(
            records,
            now_ms=round(time.time() * 1000),
            idle_ttl_ms=self.idle_ttl_ms,
            retention_ms=self.retention_ms,
        )
        notes = 0
        for i in range(0, len(plans), self.chunk):
            notes += await self.store.restore_admissions(plans[i : i + self.chunk])
            await self.store.renew_rebuild(token, self.lease_ms)
            if len(plans) > self.chunk:
                log.info(
                    "Store rebuild: %d of %d admissions written.", min(i + self.chunk, len(plans)), len(plans)
                )
        if self.model:
            from notestream.stream.store import claim_store

            await claim_store(self.store, self.model, where="The rebuilt store")  # type: ignore[arg-type]
        await self.store.finish_rebuild(token)
        self.rebuilds += 1
        if self.on_rebuild is not None:
            self.on_rebuild()
        log.warning(
            "Store rebuilt from the changelog: %d admissions, %d notes, from %d records, in %.2f s.",
            len(plans),
            notes,
            len(records),
            time.perf_counter() - start,
        )
        return len(plans)

    async def _wait_ready(self) -> None:
        """Wait while another worker rebuilds (holds the lease); when the lease ends the next write
        finds the store ready, or lost or left half-built, and :meth:`guard` heals it."""
        assert self.store is not None
        deadline = time.monotonic() + 2 * self.lease_ms / 1000
        while time.monotonic() < deadline:
            if not await self.store.rebuild_running():
                return
            await asyncio.sleep(0.2)
        raise StoreRebuilding("Another worker has been rebuilding the store for too long; retrying.")


async def read_changelog(settings: Settings, *, timeout_s: float = 600.0) -> dict[bytes, bytes]:
    """The changelog topic's compacted content: every partition from its beginning to its end offset
    as of the call, the last value per key (tombstones delete)."""
    from aiokafka import TopicPartition
    from aiokafka.errors import KafkaError

    from notestream.stream.kafka import consumer

    topic = settings.topic(STORE_CHANGELOG)
    client = consumer(settings, group_id=None, enable_auto_commit=False)
    messages: list[tuple[bytes, bytes | None]] = []
    try:
        await client.start()
        metadata = await client._client.fetch_all_metadata()  # the consumer's own view may lack the topic
        partitions = metadata.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return {}
        client.assign(tps)
        await client.seek_to_beginning(*tps)
        ends = await client.end_offsets(tps)
        pending = {tp for tp in tps if ends[tp] > 0}
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise BrokerError(f"Reading the store changelog {topic} took over {timeout_s:g} s.")
            batch = await client.getmany(*pending, timeout_ms=500, max_records=50_000)
            for part in batch.values():
                messages.extend((m.key or b"", m.value) for m in part)
            for tp in list(pending):
                if await client.position(tp) >= ends[tp]:
                    pending.discard(tp)
    except KafkaError as exc:
        raise BrokerError(f"Cannot read the store changelog {topic}: {exc}.") from exc
    finally:
        await client.stop()
    return latest(messages)


async def open_healer(settings: Settings, store: Any, model: str, metrics: Any = None) -> StoreHealer:
    """The worker's healer for ``store`` (off for a store without an epoch), started: a store that lost
    its data while no worker ran is rebuilt now, before the first batch."""
    if not hasattr(store, "require_epoch"):
        return StoreHealer.off()
    healer = StoreHealer(
        store,
        lambda: read_changelog(settings),
        namespace=settings.store_namespace,
        model=model,
        idle_ttl_s=settings.idle_ttl_hours * 3600.0,
        retention_s=settings.retention_hours * 3600.0,
        on_rebuild=metrics.store_rebuilds.inc if metrics is not None else None,
    )
    await healer.start()
    return healer
