"""The risk store: per-admission chunk probabilities and their aggregate, in Redis or in memory.

Both implementations pass the same contract tests (tests/stream/test_store_contract.py)::

    RiskStore (protocol, records.py)
    ├── MemoryRiskStore   memory.py       embedded mode; JSON snapshot / restore
    └── RedisRiskStore    redis_store.py  one Lua script per update (apply_note.lua), `{hadm_id}` hash tag

:func:`open_store` picks one from ``settings.store`` (``memory://``, ``memory:///PATH`` for a
memory store with a crash-safe journal file, ``redis://``, ``rediss://``, ``unix://``,
``redis+sentinel://`` and ``redis+cluster://``: see :mod:`notestream.stream.store.redis_clients`). A Redis store
that loses its data is rebuilt from the store changelog (:mod:`notestream.stream.store.heal`).
"""

from __future__ import annotations

from notestream.core.settings import Settings
from notestream.stream.errors import StoreModelMismatch
from notestream.stream.store.memory import MemoryRiskStore
from notestream.stream.store.records import (
    AdmissionInfo,
    AdmissionState,
    ApplyResult,
    NoteProbs,
    RiskStore,
)
from notestream.stream.store.redis_store import RedisRiskStore, redis_options

__all__ = [
    "AdmissionInfo",
    "AdmissionState",
    "ApplyResult",
    "MemoryRiskStore",
    "NoteProbs",
    "RedisRiskStore",
    "RiskStore",
    "claim_store",
    "open_store",
    "same_model",
]


def open_store(settings: Settings) -> RiskStore:
    """The store ``settings.store`` names, with the TTLs of the settings and, for Redis, a blocking
    pool built from :func:`~notestream.stream.store.redis_store.redis_options` (password, ``redis_username``, timeouts, pool size,
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
        namespace=settings.store_namespace,
        pool_size=settings.redis_pool_size,
        timeout_s=settings.redis_timeout_s,
        options=redis_options(settings),
        min_replicas=settings.redis_min_replicas,
        replica_timeout_s=settings.redis_timeout_s,
    )


def same_model(a: str, b: str) -> bool:
    """Whether two fingerprints (``name@digest``) name the same model: the digests decide, so a copy
    of a model folder under another name is the same model.

    >>> same_model("current@0123abcd", "readmission-v1@0123abcd"), same_model("v1@0123", "v2@4567")
    (True, False)
    """
    return a.rpartition("@")[2] == b.rpartition("@")[2]


async def claim_store(store: RiskStore, fingerprint: str, *, where: str = "the store") -> None:
    """Bind ``store`` to the model ``fingerprint`` names, or raise :class:`StoreModelMismatch` when it
    already holds another model's probabilities (a worker must not mix two models in one admission).
    """
    owner = await store.claim(fingerprint)
    if not same_model(owner, fingerprint):
        raise StoreModelMismatch(
            f"{where} holds the chunk probabilities of model {owner}, not of the model this worker "
            f"serves ({fingerprint}); mixing them would give admissions scores neither model gives. "
            "Serve a new model from its own store: another NOTESTREAM_STORE_NAMESPACE (or Redis "
            "database) and another NOTESTREAM_CONSUMER_GROUP, which rebuilds the admissions from the "
            "notes Kafka retains (docs/operations.md, 'Upgrading a model'). Only once the old model's "
            f"admissions are no longer needed, delete the record (Redis: DEL <namespace>:model)."
        )
