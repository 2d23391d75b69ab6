"""The Redis risk store: one Lua script per note update, keys under a `{hadm_id}` hash tag.

Keys of one admission (``<ns>:{<hadm_id>}:...``, so Redis Cluster keeps them in one slot; the id is
escaped by :func:`notestream.stream.ids.id_key`, so ``{``, ``}`` and ``:`` inside it never break the tag):

- ``a``: hash of the aggregate and the admission record (subject_id, seq, sum, n_chunks, n_notes,
  admit_time, discharge_time, discharged, expire_at, ...);
- ``n``: hash note_id -> ``revision|is_error|top_chunk|p1,p2,...`` (probabilities only, never text);
- ``m``: sorted set note_id -> the note's largest chunk probability, so the maximum is right again
  after a retraction or a replacement.

Every write slides the keys' TTL (``idle_ttl_s``), or after a discharge pins it to discharge (wall
clock) + ``retention_s``. Probabilities travel as ``repr`` strings (exact), and the sum is kept exact in
integer limbs (see :mod:`notestream.stream.store.records`), so this store agrees with :class:`MemoryRiskStore`
bit for bit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import redis.asyncio as aioredis
from pydantic import SecretStr
from redis import exceptions as rex

from notestream.stream.errors import StoreError, StoreUnavailable
from notestream.stream.events import AdmissionEvent
from notestream.stream.ids import Id, id_key, parse_id
from notestream.stream.store.records import (
    MAX_HELD,
    AdmissionInfo,
    AdmissionState,
    ApplyResult,
    NoteProbs,
    check_probs,
    exact_to_float,
)

_HERE = Path(__file__).parent
T = TypeVar("T")

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


_CLAIM = """
local current = redis.call('GET', KEYS[1])
if current then return current end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""


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
    passes ``Settings.redis_kwargs()`` (ACL user, client certificate and key, health checks). The pool
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
        kwargs["decode_responses"] = True  # the scripts' replies are read as str
        try:
            self._pool: Any = aioredis.BlockingConnectionPool.from_url(url, **kwargs)
        except ValueError as exc:
            raise StoreError(f"The Redis store URL is invalid ({exc}); use redis://host:port/db.") from exc
        self._redis: Any = aioredis.Redis(connection_pool=self._pool)  # the types-redis stubs lag redis-py
        self.namespace = namespace
        self.idle_ttl_ms = max(1, round(idle_ttl_s * 1000))
        self.retention_ms = max(0, round(retention_s * 1000))
        self._apply = self._redis.register_script((_HERE / "apply_note.lua").read_text())
        self._admit = self._redis.register_script((_HERE / "record_admission.lua").read_text())
        self._read = self._redis.register_script(_READ_STATE)
        self._claim = self._redis.register_script(_CLAIM)

    def keys(self, hadm_id: Id) -> list[str]:
        """The admission's keys: aggregate hash, notes hash, maxima sorted set. The id is escaped
        (:func:`notestream.stream.ids.id_key`) so that its ``{``, ``}`` and ``:`` never break the hash tag."""
        base = f"{self.namespace}:{{{id_key(parse_id(hadm_id))}}}"
        return [f"{base}:a", f"{base}:n", f"{base}:m"]

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except (rex.ConnectionError, rex.TimeoutError) as exc:
            raise StoreUnavailable(
                f"Redis did not answer while trying to {what} ({exc}); check that it is up and that "
                "the store URL, password and TLS settings are right."
            ) from exc
        except rex.RedisError as exc:
            raise StoreError(f"Redis failed to {what}: {exc}.") from exc

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
    async def record_admission(self, event: AdmissionEvent) -> AdmissionInfo:
        args = [
            event.kind,
            str(event.subject_id),
            _iso(event.admit_time),
            _iso(event.discharge_time),
            event.admission_type or "",
            _iso(event.death_time),
            str(round(time.time() * 1000)),
            str(self.idle_ttl_ms),
            str(self.retention_ms),
        ]
        reply = await self._call(
            f"record admission {event.hadm_id}",
            lambda: self._admit(keys=self.keys(event.hadm_id), args=args),  # type: ignore[arg-type]
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
        fields = ["subject_id", "admit_time", "discharge_time", "admission_type", "death_time", "discharged"]
        values = await self._call(
            f"read admission {hadm_id}",
            lambda: self._redis.hmget(self.keys(hadm_id)[0], fields),  # type: ignore[arg-type]
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
    ) -> ApplyResult:
        probs = "" if is_error else ",".join(repr(p) for p in check_probs(chunk_probs))
        args = [
            str(subject_id),
            note_id,
            str(int(revision)),
            "1" if is_error else "0",
            str(self.idle_ttl_ms),
            probs,
        ]
        reply = await self._call(
            f"apply note {note_id} to admission {hadm_id}",
            lambda: self._apply(keys=self.keys(hadm_id), args=args),  # type: ignore[arg-type]
        )
        return ApplyResult(bool(reply[0]), reply[1], self._state(hadm_id, reply))

    async def state(self, hadm_id: Id) -> AdmissionState | None:
        reply = await self._call(
            f"read the state of admission {hadm_id}",
            lambda: self._read(keys=self.keys(hadm_id), args=[]),  # type: ignore[arg-type]
        )
        return self._state(hadm_id, reply)

    async def note_probs(self, hadm_id: Id) -> dict[str, NoteProbs]:
        records = await self._call(
            f"read the notes of admission {hadm_id}",
            lambda: self._redis.hgetall(self.keys(hadm_id)[1]),  # type: ignore[arg-type]
        )
        out: dict[str, NoteProbs] = {}
        for note_id, record in records.items():
            revision, is_error, _, csv = record.split("|", 3)
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
        await self._pool.disconnect()
