"""The risk store: per-admission chunk probabilities and their aggregate, in Redis or in memory.

Both implementations pass the same contract tests (tests/stream/test_store_contract.py)::

    RiskStore (protocol, records.py)
    ├── MemoryRiskStore   memory.py       embedded mode; JSON snapshot / restore
    └── RedisRiskStore    redis_store.py  one Lua script per update (apply_note.lua), `{hadm_id}` hash tag

:func:`open_store` picks one from ``settings.store`` (``memory://``, ``memory:///PATH`` for a
memory store with a crash-safe journal file, ``redis://``, ``rediss://``, ``unix://``).
"""

from __future__ import annotations

from notestream.settings import Settings
from stream.store.memory import MemoryRiskStore
from stream.store.records import (
    AdmissionInfo,
    AdmissionState,
    ApplyResult,
    NoteProbs,
    RiskStore,
)
from stream.store.redis_store import RedisRiskStore

__all__ = [
    "AdmissionInfo",
    "AdmissionState",
    "ApplyResult",
    "MemoryRiskStore",
    "NoteProbs",
    "RedisRiskStore",
    "RiskStore",
    "open_store",
]


def open_store(settings: Settings) -> RiskStore:
    """The store ``settings.store`` names, with the TTLs of the settings and, for Redis, a blocking
    pool built from :meth:`Settings.redis_kwargs` (password, ``redis_username``, timeouts, pool size,
    ``redis_ssl_cafile`` / ``redis_ssl_certfile`` / ``redis_ssl_keyfile``).

    >>> type(open_store(Settings(store="memory://"))).__name__
    'MemoryRiskStore'
    """
    idle_ttl_s = settings.idle_ttl_hours * 3600.0
    retention_s = settings.retention_hours * 3600.0
    if settings.store.startswith("memory://"):
        journal = settings.store.removeprefix("memory://") or None  # memory:///var/lib/ns/store.jsonl
        return MemoryRiskStore(idle_ttl_s=idle_ttl_s, retention_s=retention_s, journal=journal)
    # the connection options of every Redis client of the project: password, ACL user, timeouts, pool
    # size, health checks and, for rediss://, the CA, client certificate and key
    return RedisRiskStore(
        settings.store,
        idle_ttl_s=idle_ttl_s,
        retention_s=retention_s,
        pool_size=settings.redis_pool_size,
        timeout_s=settings.redis_timeout_s,
        options=settings.redis_kwargs(),
    )
