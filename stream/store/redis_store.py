"""The Redis risk store: one Lua script per note update, keys under a `{hadm_id}` hash tag.

Keys of one admission (``<ns>:{<hadm_id>}:...``, so Redis Cluster keeps them in one slot; the id is
escaped by :func:`notestream.stream.ids.id_key`, so ``{``, ``}`` and ``:`` inside it never break the tag):

- ``a``: hash of the aggregate and the admission record (subject_id, seq, sum, n_chunks, n_notes,
  admit_time, discharge_time, discharged, expire_at, ...);
- ``n``: hash note_id -> ``revision|is_error|top_chunk|p1,p2,...|sha256`` (probabilities and the content
  hash only, never text; revisions are decimal strings compared exactly at any size);
- ``m``: sorted set note_id -> the note's largest chunk probability, so the maximum is right again
  after a retraction or a replacement.

Every write slides the keys' TTL (``idle_ttl_s``), or after a discharge pins it to discharge (wall
clock) + ``retention_s``. Probabilities travel as ``repr`` strings (exact), and the sum is kept exact in
integer limbs (see :mod:`notestream.stream.store.records`), so this store agrees with :class:`MemoryRiskStore`
bit for bit.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from pydantic import SecretStr
from redis import exceptions as rex
from redis.asyncio import BlockingConnectionPool
from redis.crc import REDIS_CLUSTER_HASH_SLOTS as SLOTS
from redis.crc import key_slot

from notestream.core.settings import Settings
from notestream.stream.errors import StoreError, StoreLost, StoreRebuilding, StoreUnavailable
from notestream.stream.events import AdmissionEvent
from notestream.stream.ids import Id, id_key, parse_id
from notestream.stream.store.changelog import AdmissionRebuild
from notestream.stream.store.records import (
    MAX_HELD,
    AdmissionInfo,
    AdmissionState,
    ApplyResult,
    NoteProbs,
    check_digest,
    check_probs,
    check_revision,
    exact_add,
    exact_to_float,
)
from notestream.stream.store.redis_clients import connect

_HERE = Path(__file__).parent
FAILOVER_ERRORS: tuple[type[Exception], ...] = (
    rex.ReadOnlyError,  # a primary demoted to replica (Sentinel) still answers the old connections
    rex.ClusterDownError,
    rex.TryAgainError,
    rex.MasterDownError,
)
"""Replies of a Redis in the middle of a failover: transient, retried like an unreachable Redis."""
T = TypeVar("T")

EPOCH_CHECK = """
if #KEYS > 3 then
  local epoch = redis.call('GET', KEYS[#KEYS])
  if not epoch then return redis.error_reply('NSLOST the store epoch key is gone') end
  if string.sub(epoch, 1, 11) == 'rebuilding:' then
    return redis.error_reply('NSREBUILDING the store is being rebuilt from its changelog')
  end
end
"""
"""The prefix of every admission script: with the epoch key as the last of more than three keys, fail
with ``NSLOST`` when it is gone (the store lost its data) and ``NSREBUILDING`` during a rebuild."""

_READ_STATE = """
local s = redis.call('HMGET', KEYS[1], 'subject_id', 'sum', 'n_chunks', 'n_notes', 'seq', 'discharged')
local top = redis.call('ZREVRANGE', KEYS[3], 0, 0, 'WITHSCORES')
local top_note, top_max, top_chunk = '', '', ''
if #top > 0 then
  top_note, top_max = top[1], top[2]
  top_chunk = string.match(redis.call('HGET', KEYS[2], top_note), '^%d+|%d|(%d+)|')
end
return {0, '', s[1] or '', s[2] or '', s[3] or '', s[4] or '', s[5] or '', s[6] or '',
        top_note, top_max, top_chunk}
"""


_READ_ADMISSION = """
return redis.call('HMGET', KEYS[1], 'subject_id', 'admit_time', 'discharge_time', 'admission_type',
                  'death_time', 'discharged')
"""

_RAISE_SEQ = """
if redis.call('EXISTS', KEYS[1]) == 1 and tonumber(redis.call('HGET', KEYS[1], 'seq') or '0') < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'seq', ARGV[1])
end
return 1
"""

_CLAIM = """
local current = redis.call('GET', KEYS[1])
if current then return current end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""


@functools.cache
def slot_tags() -> tuple[str, ...]:
    """For each Redis Cluster slot, a short hash tag whose keys land in it (found once, by search).

    >>> tags = slot_tags()
    >>> len(tags), key_slot(tags[5].encode())
    (16384, 5)
    """
    tags: list[str | None] = [None] * SLOTS
    missing, n = SLOTS, 0
    while missing:
        tag = format(n, "x")
        slot = key_slot(tag.encode())
        if tags[slot] is None:
            tags[slot] = tag
            missing -= 1
        n += 1
    return tuple(t for t in tags if t is not None)


def redis_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``redis.asyncio.Redis.from_url(settings.store, **kwargs)`` (or a pool's
    ``from_url``): password, ACL user, timeouts, pool size and, for ``rediss://``, TLS files.

    >>> kw = redis_options(Settings(store="rediss://redis:6380/0", redis_password="pw"))
    >>> kw["password"], kw["max_connections"], kw["ssl_check_hostname"]
    ('pw', 32, True)
    """
    kwargs: dict[str, Any] = {
        "socket_timeout": settings.redis_timeout_s,
        "socket_connect_timeout": settings.redis_timeout_s,
        "max_connections": settings.redis_pool_size,
        "health_check_interval": 30,
    }
    if settings.redis_password is not None:
        kwargs["password"] = settings.redis_password.get_secret_value()
    if settings.redis_username is not None:
        kwargs["username"] = settings.redis_username
    if settings.store.startswith("rediss://"):
        files = {
            "ssl_ca_certs": settings.redis_ssl_cafile,
            "ssl_certfile": settings.redis_ssl_certfile,
            "ssl_keyfile": settings.redis_ssl_keyfile,
        }
        kwargs.update({key: str(path) for key, path in files.items() if path is not None})
        kwargs["ssl_check_hostname"] = True
    return kwargs


def exact_to_limbs(total: int) -> str:
    """The Lua scripts' ``index:value`` limbs of 24 bits of a non-negative exact sum.

    >>> exact_to_limbs((1 << 48) + 5), limbs_to_exact(exact_to_limbs(12345678901234567890))
    ('0:5,2:1', 12345678901234567890)
    """
    parts, index = [], 0
    while total:
        total, digit = divmod(total, 1 << 24)
        if digit:
            parts.append(f"{index}:{digit}")
        index += 1
    return ",".join(parts)


def bulk_args(plan: AdmissionRebuild, idle_ms: str) -> list[str]:
    """ARGV of restore_admission.lua: the admission's aggregate, computed exactly, and its notes'
    records as apply_note.lua writes them (top chunk: the first largest)."""
    total, n_chunks, n_notes, subject = 0, 0, 0, ""
    groups: list[str] = []
    for n in plan.notes:
        revision = str(check_revision(n.revision))
        if n.is_error:
            groups += [n.note_id, f"{revision}|1|0||", ""]
            continue
        probs = check_probs(n.probs)
        top = max(range(len(probs)), key=lambda i: (probs[i], -i), default=0)
        for p in probs:
            total = exact_add(total, p)
        n_chunks += len(probs)
        n_notes += 1
        subject = subject or str(n.subject_id)
        csv = ",".join(repr(p) for p in probs)
        groups += [n.note_id, f"{revision}|0|{top}|{csv}|{n.digest}", f"{probs[top]:.17g}" if probs else ""]
    return [subject, exact_to_limbs(total), str(n_chunks), str(n_notes), idle_ms, *groups]


def limbs_to_exact(text: str) -> int:
    """The exact sum (units of 2**-1200) of the Lua script's ``index:value`` limbs of 24 bits.

    >>> limbs_to_exact("2:1,0:5") == (1 << 48) + 5
    True
    """
    total = 0
    for part in filter(None, text.split(",")):
        index, value = part.split(":")
        total += int(value) << (24 * int(index))
    return total


def limbs_to_float(text: str) -> float:
    """The correctly rounded float of the Lua limbs (0.0 when empty)."""
    return exact_to_float(limbs_to_exact(text))


def _time(value: str) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value is not None else ""


class RedisRiskStore:
    """:class:`~notestream.stream.store.records.RiskStore` in Redis (``redis.asyncio``, blocking pool).

    ``options`` are connection keyword arguments for the pool's ``from_url`` that override the ones
    built from ``pool_size``, ``timeout_s``, ``password`` and ``ssl_cafile``: :func:`notestream.stream.store.open_store`
    passes :func:`redis_options` (ACL user, client certificate and key, health checks). The pool
    always decodes replies and waits up to ``timeout_s`` for a free connection.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "notestream",
        idle_ttl_s: float = 30 * 24 * 3600.0,
        retention_s: float = 72 * 3600.0,
        pool_size: int = 32,
        timeout_s: float = 5.0,
        password: SecretStr | None = None,
        ssl_cafile: Path | None = None,
        options: Mapping[str, Any] | None = None,
        min_replicas: int = 0,
        replica_timeout_s: float = 1.0,
    ) -> None:
        kwargs: dict[str, Any] = {
            "max_connections": pool_size,
            "timeout": timeout_s,
            "socket_timeout": timeout_s,
            "socket_connect_timeout": timeout_s,
        }
        if password is not None:
            kwargs["password"] = password.get_secret_value()
        if url.startswith("rediss://") and ssl_cafile is not None:
            kwargs["ssl_ca_certs"] = str(ssl_cafile)
        kwargs.update(options or {})
        self._redis: Any  # the types-redis stubs lag redis-py
        self._redis, self.cluster = connect(url, kwargs)
        pool = getattr(self._redis, "connection_pool", None)
        self._limit = (
            None
            if isinstance(pool, BlockingConnectionPool)
            else asyncio.Semaphore(int(kwargs.get("max_connections", pool_size)))
        )
        """Sentinel and Cluster pools refuse a connection over their size instead of waiting: calls wait
        here for a free one, as they do in the standalone store's blocking pool."""
        self.min_replicas = 0 if self.cluster else min_replicas
        """Replicas that must hold each write before it returns (``WAIT``; not in a Redis Cluster)."""
        self.replica_timeout_ms = max(1, round(replica_timeout_s * 1000))
        self.namespace = namespace
        self.idle_ttl_ms = max(1, round(idle_ttl_s * 1000))
        self.retention_ms = max(0, round(retention_s * 1000))
        self.epoch_required = False
        """Set by :meth:`require_epoch`: every admission script then checks the store epoch first."""
        self._apply = self._redis.register_script(EPOCH_CHECK + (_HERE / "apply_note.lua").read_text())
        self._admit = self._redis.register_script(EPOCH_CHECK + (_HERE / "record_admission.lua").read_text())
        self._read = self._redis.register_script(EPOCH_CHECK + _READ_STATE)
        self._read_admission = self._redis.register_script(EPOCH_CHECK + _READ_ADMISSION)
        self._raise_seq = self._redis.register_script(_RAISE_SEQ)
        self._restore = self._redis.register_script((_HERE / "restore_admission.lua").read_text())
        self._claim = self._redis.register_script(_CLAIM)

    def keys(self, hadm_id: Id) -> list[str]:
        """The admission's keys: aggregate hash, notes hash, maxima sorted set. The id is escaped
        (:func:`notestream.stream.ids.id_key`) so that its ``{``, ``}`` and ``:`` never break the hash tag."""
        base = f"{self.namespace}:{{{id_key(parse_id(hadm_id))}}}"
        return [f"{base}:a", f"{base}:n", f"{base}:m"]

    def _checked_keys(self, hadm_id: Id) -> list[str]:
        """The admission's keys, and its epoch key once :meth:`require_epoch` was called."""
        keys = self.keys(hadm_id)
        return [*keys, self.epoch_key(hadm_id)] if self.epoch_required else keys

    # --- the store epoch (lost-data detection, notestream.stream.store.heal) -----------------------------------
    def epoch_key(self, hadm_id: Id) -> str:
        """The epoch key an admission's scripts check: one for the whole store, or in a Redis Cluster
        one per slot, in the slot of the admission's keys (a script touches one slot)."""
        if not self.cluster:
            return f"{self.namespace}:epoch"
        return f"{self.namespace}:epoch:{{{slot_tags()[key_slot(id_key(parse_id(hadm_id)).encode())]}}}"

    def epoch_keys(self) -> list[str]:
        """Every epoch key of the store (16,384 in a Redis Cluster: one per slot)."""
        if not self.cluster:
            return [f"{self.namespace}:epoch"]
        return [f"{self.namespace}:epoch:{{{tag}}}" for tag in slot_tags()]

    def require_epoch(self) -> None:
        """From now on every admission script fails with :class:`StoreLost` when the epoch is gone."""
        self.epoch_required = True

    async def epoch(self) -> str | None:
        """``ready:<token>``, ``rebuilding:<token>``, or None when an epoch key is gone."""
        keys = self.epoch_keys()
        read = self._redis.mget_nonatomic if self.cluster else self._redis.mget
        values = await self._call("read the store epoch", lambda: read(keys))
        if any(v is None for v in values):
            return None
        return str(min(values, key=lambda v: not v.startswith("rebuilding:")))

    async def begin_rebuild(self, token: str, lease_ms: int) -> bool:
        """Take the rebuild lease (one rebuilder at a time) and mark the store as being rebuilt (admission
        scripts then fail with :class:`StoreRebuilding`); False when another worker holds the lease."""
        taken = await self._call(
            "take the store rebuild lease", lambda: self._redis.set(self._lease, token, nx=True, px=lease_ms)
        )
        if not taken:
            return False
        await self._set_epoch(f"rebuilding:{token}")
        return True

    async def renew_rebuild(self, token: str, lease_ms: int) -> None:
        """Extend the rebuild lease. A rebuilder that died lets its lease lapse: the next worker that meets
        the store being rebuilt without a lease takes the rebuild over (:mod:`notestream.stream.store.heal`)."""
        await self._call(
            "renew the store rebuild lease", lambda: self._redis.set(self._lease, token, px=lease_ms)
        )

    async def rebuild_running(self) -> bool:
        """Whether a worker holds the rebuild lease now."""
        return bool(await self._call("read the store rebuild lease", lambda: self._redis.exists(self._lease)))

    async def finish_rebuild(self, token: str) -> None:
        """Mark the store whole again (epoch ``ready:<token>``) and drop the lease."""
        await self._set_epoch(f"ready:{token}")
        await self._call("drop the store rebuild lease", lambda: self._redis.delete(self._lease))

    @property
    def _lease(self) -> str:
        return f"{self.namespace}:rebuild-lease"

    async def _set_epoch(self, value: str) -> None:
        keys = self.epoch_keys()
        if self.cluster:
            await self._call(
                "write the store epoch", lambda: self._redis.mset_nonatomic(dict.fromkeys(keys, value))
            )
        else:
            await self._call("write the store epoch", lambda: self._redis.set(keys[0], value))

    async def restore_admissions(
        self, plans: Sequence[AdmissionRebuild], *, now_ms: int | None = None
    ) -> int:
        """Write the admissions a changelog rebuild planned (:func:`notestream.stream.store.changelog.plan_rebuild`):
        notes through the same script as live notes, admission events, then the ``seq`` floor. Idempotent
        and a merge: a note the store holds at a higher revision stays; held notes are held again (those
        the store holds already are left as they are). Returns the notes written (held ones not counted)."""
        now = round(time.time() * 1000) if now_ms is None else now_ms
        held = [p for p in plans if p.held]
        plans = [p for p in plans if p.notes or p.events or p.seq]  # not an admission of held notes only

        def idle_ms(plan: AdmissionRebuild) -> str:
            expires = plan.expire_ms if plan.expire_ms is not None else plan.last_ms + self.idle_ttl_ms
            return str(max(1, expires - now))

        async def queue(pipe: Any, plan: AdmissionRebuild, *, notes: bool = True) -> None:
            client = pipe if pipe is not self._redis else None
            keys = self.keys(plan.hadm_id)  # no epoch check: the epoch says "rebuilding" meanwhile
            idle = idle_ms(plan)
            for n in plan.notes if notes else ():
                probs = "" if n.is_error else ",".join(repr(p) for p in check_probs(n.probs))
                args = [
                    str(n.subject_id),
                    n.note_id,
                    str(check_revision(n.revision)),
                    "1" if n.is_error else "0",
                    idle,
                    probs,
                    "" if n.is_error else n.digest,
                    "quiet",
                ]
                await self._apply(keys=keys, args=args, client=client)
            for record in plan.events:
                args = self._admission_args(record.change.event, t_ms=record.t_ms, idle_ms=idle)
                await self._admit(keys=keys, args=args, client=client)
            await self._raise_seq(keys=keys[:1], args=[str(plan.seq)], client=client)

        limit = asyncio.Semaphore(8)  # cluster: 4 chunks x 8 admissions in flight, under the pool size

        async def queue_limited(plan: AdmissionRebuild) -> None:
            async with limit:
                await queue(self._redis, plan)

        async def write(chunk: Sequence[AdmissionRebuild]) -> None:
            # one pipeline per chunk (commands of one connection run in order): first each admission's
            # notes in one script where the store holds nothing of it, then, in a second pipeline, the
            # others note by note (a merge), and every admission's events and seq floor. A cluster
            # client routes each script call itself: the admissions of a chunk run concurrently.
            if self.cluster:
                await asyncio.gather(*(queue_limited(plan) for plan in chunk))
                return
            pipe = self._redis.pipeline(transaction=False)
            for plan in chunk:
                await self._restore(
                    keys=self.keys(plan.hadm_id), args=bulk_args(plan, idle_ms(plan)), client=pipe
                )
            written = await pipe.execute()
            pipe = self._redis.pipeline(transaction=False)
            for plan, bulk in zip(chunk, written, strict=True):
                await queue(pipe, plan, notes=not bulk)
            await pipe.execute()

        step = 200
        chunks = [plans[i : i + step] for i in range(0, len(plans), step)]
        for i in range(0, len(chunks), 4):
            group = chunks[i : i + 4]
            await self._call(
                "restore admissions from the changelog",
                partial(asyncio.gather, *(write(c) for c in group)),
            )
        for plan in held:
            present = await self._call(
                f"read the held notes of admission {plan.hadm_id}",
                partial(self._redis.lrange, self._held_key(plan.hadm_id), 0, -1),
            )
            for h in plan.held:
                if f"{h.deadline!r}|{h.record}" not in present:
                    await self.hold_note(plan.hadm_id, h.record, h.deadline)
        return sum(len(p.notes) for p in plans)

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        try:
            if self._limit is None:
                return await call()
            async with self._limit:
                return await call()
        except FAILOVER_ERRORS as exc:
            raise StoreUnavailable(
                f"Redis is failing over while trying to {what} ({type(exc).__name__}); retrying until "
                "the new primary answers."
            ) from exc
        except (rex.ConnectionError, rex.TimeoutError) as exc:
            raise StoreUnavailable(
                f"Redis did not answer while trying to {what} ({exc}); check that it is up and that "
                "the store URL, password and TLS settings are right."
            ) from exc
        except rex.ResponseError as exc:
            if str(exc).startswith("NSLOST"):
                raise StoreLost(
                    f"The store lost its data (its epoch key is gone) while trying to {what}: Redis was "
                    "restarted without persistence, flushed, or failed over to an empty replica."
                ) from exc
            if str(exc).startswith("NSREBUILDING"):
                raise StoreRebuilding(
                    f"The store is being rebuilt from its changelog; cannot {what} yet."
                ) from exc
            raise StoreError(f"Redis failed to {what}: {exc}.") from exc
        except rex.RedisError as exc:
            raise StoreError(f"Redis failed to {what}: {exc}.") from exc

    async def _write(self, script: Any, keys: list[str], args: list[str]) -> Any:
        """Run a write script; with ``min_replicas``, on the same connection ``WAIT`` until that many
        replicas hold it, else raise :class:`StoreUnavailable` (the batch is retried, nothing acked): a
        Sentinel failover then never loses a write the worker acknowledged."""
        if not self.min_replicas:
            return await script(keys=keys, args=args)
        pipe = self._redis.pipeline(transaction=False)
        await script(keys=keys, args=args, client=pipe)
        pipe.wait(self.min_replicas, self.replica_timeout_ms)
        reply, acked = await pipe.execute()
        if acked < self.min_replicas:
            raise StoreUnavailable(
                f"Only {acked} of the {self.min_replicas} replicas required (redis_min_replicas) confirmed "
                f"a store write within {self.replica_timeout_ms} ms; retrying."
            )
        return reply

    @staticmethod
    def _state(hadm_id: Id, reply: list[Any]) -> AdmissionState | None:
        _, _, subject, limbs, n_chunks, n_notes, seq, discharged, top_note, top_max, top_chunk = reply
        if seq == "":
            return None
        return AdmissionState(
            hadm_id=hadm_id,
            subject_id=parse_id(subject) if subject else None,
            p_max=float(top_max) if top_note else None,
            p_sum=limbs_to_float(limbs),
            n_chunks=int(n_chunks or 0),
            n_notes=int(n_notes or 0),
            seq=int(seq),
            top_note_id=top_note or None,
            top_chunk=int(top_chunk) if top_note else None,
            discharged=discharged == "1",
        )

    # --- RiskStore ---------------------------------------------------------------------------------
    def _admission_args(self, event: AdmissionEvent, *, t_ms: int, idle_ms: int | str) -> list[str]:
        """The admission script's arguments for ``event`` written at ``t_ms`` with idle TTL ``idle_ms``."""
        return [
            event.kind,
            str(event.subject_id),
            _iso(event.admit_time),
            _iso(event.discharge_time),
            event.admission_type or "",
            _iso(event.death_time),
            str(t_ms),
            str(idle_ms),
            str(self.retention_ms),
        ]

    async def record_admission(self, event: AdmissionEvent) -> AdmissionInfo:
        args = self._admission_args(event, t_ms=round(time.time() * 1000), idle_ms=self.idle_ttl_ms)
        reply = await self._call(
            f"record admission {event.hadm_id}",
            lambda: self._write(self._admit, self._checked_keys(event.hadm_id), args),
        )
        applied, subject, admit, discharge, kind, death, discharged = reply
        return AdmissionInfo(
            hadm_id=event.hadm_id,
            subject_id=parse_id(subject) if subject else None,
            admit_time=_time(admit),
            discharge_time=_time(discharge),
            admission_type=kind or None,
            death_time=_time(death),
            discharged=discharged == "1",
            applied=bool(applied),
        )

    async def admission(self, hadm_id: Id) -> AdmissionInfo | None:
        values = await self._call(
            f"read admission {hadm_id}",
            lambda: self._read_admission(keys=self._checked_keys(hadm_id), args=[]),  # type: ignore[arg-type]
        )
        subject, admit, discharge, kind, death, discharged = values
        if not admit and discharged != "1":
            return None
        return AdmissionInfo(
            hadm_id=hadm_id,
            subject_id=parse_id(subject) if subject else None,
            admit_time=_time(admit or ""),
            discharge_time=_time(discharge or ""),
            admission_type=kind or None,
            death_time=_time(death or ""),
            discharged=discharged == "1",
        )

    async def apply_note(
        self,
        *,
        hadm_id: Id,
        subject_id: Id,
        note_id: str,
        revision: int,
        is_error: bool,
        chunk_probs: Sequence[float],
        note_time: datetime | None = None,
        content_hash: str | None = None,
    ) -> ApplyResult:
        probs = "" if is_error else ",".join(repr(p) for p in check_probs(chunk_probs))
        args = [
            str(subject_id),
            note_id,
            str(check_revision(revision)),
            "1" if is_error else "0",
            str(self.idle_ttl_ms),
            probs,
            "" if is_error else check_digest(content_hash),
        ]
        reply = await self._call(
            f"apply note {note_id} to admission {hadm_id}",
            lambda: self._write(self._apply, self._checked_keys(hadm_id), args),
        )
        return ApplyResult(bool(reply[0]), reply[1], self._state(hadm_id, reply))

    async def state(self, hadm_id: Id) -> AdmissionState | None:
        reply = await self._call(
            f"read the state of admission {hadm_id}",
            lambda: self._read(keys=self._checked_keys(hadm_id), args=[]),  # type: ignore[arg-type]
        )
        return self._state(hadm_id, reply)

    async def note_probs(self, hadm_id: Id) -> dict[str, NoteProbs]:
        records = await self._call(
            f"read the notes of admission {hadm_id}",
            lambda: self._redis.hgetall(self.keys(hadm_id)[1]),  # type: ignore[arg-type]
        )
        out: dict[str, NoteProbs] = {}
        for note_id, record in records.items():
            revision, is_error, _, csv = record.split("|")[:4]
            if is_error == "0":
                out[note_id] = NoteProbs(int(revision), tuple(float(p) for p in filter(None, csv.split(","))))
        return out

    def _held_key(self, hadm_id: Id) -> str:
        return f"{self.namespace}:{{{id_key(parse_id(hadm_id))}}}:h"

    async def _reindex(self, hadm_id: Id) -> list[str]:
        """Point the held-notes index at the admission's earliest deadline (or drop it when none is
        held); returns the held entries. Run after every change, so a race between two changes ends
        with the index right once the later one has run."""
        key, member = self._held_key(hadm_id), json.dumps(hadm_id)
        entries: list[str] = await self._redis.lrange(key, 0, -1)  # type: ignore[misc]
        if entries:
            earliest = min(float(e.split("|", 1)[0]) for e in entries)
            await self._redis.zadd(f"{self.namespace}:held", {member: earliest})
        else:
            await self._redis.zrem(f"{self.namespace}:held", member)
        return entries

    async def hold_note(self, hadm_id: Id, record: str, deadline: float) -> int:
        key = self._held_key(hadm_id)

        async def hold() -> int:
            async with self._redis.pipeline(transaction=True) as tx:
                tx.rpush(key, f"{deadline!r}|{record}")
                # kept an idle TTL past the later of now and the deadline: never lost before it is due
                tx.pexpireat(key, round(max(deadline, time.time()) * 1000) + self.idle_ttl_ms)
                size, _ = await tx.execute()
            if int(size) > MAX_HELD:
                await self._redis.lrem(key, -1, f"{deadline!r}|{record}")
                raise StoreError(f"admission {hadm_id} already holds {MAX_HELD} notes waiting for it")
            await self._reindex(hadm_id)
            return int(size)

        return await self._call(f"hold a note of admission {hadm_id}", hold)

    async def held_notes(self, hadm_id: Id) -> list[str]:
        async def read() -> list[str]:
            entries = await self._redis.lrange(self._held_key(hadm_id), 0, -1)
            return [entry.split("|", 1)[1] for entry in entries]

        return await self._call(f"read the held notes of admission {hadm_id}", read)

    async def drop_held(self, hadm_id: Id, records: Sequence[str]) -> None:
        key = self._held_key(hadm_id)

        async def drop() -> None:
            wanted = list(records)
            for entry in await self._redis.lrange(key, 0, -1):
                record = entry.split("|", 1)[1]
                if record in wanted:
                    wanted.remove(record)
                    await self._redis.lrem(key, 1, entry)
            await self._reindex(hadm_id)

        await self._call(f"drop held notes of admission {hadm_id}", drop)

    async def due_held(self, now: float, limit: int = 100) -> list[tuple[Id, str]]:
        async def due() -> list[tuple[Id, str]]:
            index = f"{self.namespace}:held"
            members = await self._redis.zrangebyscore(index, "-inf", now, start=0, num=limit)
            out: list[tuple[Id, str]] = []
            for member in members:
                hadm_id = parse_id(json.loads(member))
                entries = await self._reindex(hadm_id)  # also heals an index left stale by a race
                for entry in entries:
                    deadline, record = entry.split("|", 1)
                    if float(deadline) <= now:
                        out.append((hadm_id, record))
            return out[:limit]

        return await self._call("read the held notes that are due", due)

    async def claim(self, model: str) -> str:
        key = f"{self.namespace}:model"
        reply = await self._call(
            "record which model the store belongs to",
            lambda: self._claim(keys=[key], args=[model]),  # type: ignore[arg-type]
        )
        return str(reply)

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())  # type: ignore[misc]
        except rex.RedisError:
            return False

    async def close(self) -> None:
        await self._redis.aclose()
        if not self.cluster:
            await self._redis.connection_pool.disconnect()
