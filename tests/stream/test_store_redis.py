"""What only the Redis store has: key layout, TTLs on every key, errors, the settings factory."""

from __future__ import annotations

import socket
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from notestream.core.settings import Settings
from notestream.stream.errors import StoreUnavailable
from notestream.stream.events import AdmissionEvent
from notestream.stream.store import MemoryRiskStore, RedisRiskStore, open_store


def _client(url: str, **kwargs: Any) -> Any:
    """A plain redis.asyncio client (typed Any: the types-redis stubs lag redis-py)."""
    return aioredis.Redis.from_url(url, **kwargs)


async def test_keys_share_the_hash_tag_and_hold_no_text(redis_url: str) -> None:
    store = RedisRiskStore(redis_url, namespace="ns", idle_ttl_s=600)
    try:
        await store.record_admission(
            AdmissionEvent(kind="admit", subject_id=3, hadm_id=555, admit_time=datetime(2150, 1, 1))
        )
        await store.apply_note(
            hadm_id=555, subject_id=3, note_id="n1", revision=0, is_error=False, chunk_probs=[0.1, 0.7]
        )
        client = _client(redis_url, decode_responses=True)
        keys = sorted(await client.keys("*"))
        assert keys == ["ns:{555}:a", "ns:{555}:m", "ns:{555}:n"]
        for key in keys:
            assert 0 < await client.pttl(key) <= 600_000
        assert await client.hget("ns:{555}:n", "n1") == "0|0|1|0.1,0.7|"
        await client.aclose()
    finally:
        await store.close()


async def test_discharge_pins_the_expiry_to_retention(redis_url: str) -> None:
    store = RedisRiskStore(redis_url, namespace="ns", idle_ttl_s=3600, retention_s=120)
    client = _client(redis_url, decode_responses=True)
    try:
        await store.apply_note(
            hadm_id=9, subject_id=3, note_id="n1", revision=0, is_error=False, chunk_probs=[0.5]
        )
        assert await client.pttl("ns:{9}:a") > 120_000
        await store.record_admission(
            AdmissionEvent(kind="discharge", subject_id=3, hadm_id=9, discharge_time=datetime(2150, 1, 2))
        )
        await store.apply_note(
            hadm_id=9, subject_id=3, note_id="n2", revision=0, is_error=False, chunk_probs=[0.5]
        )
        for key in ("ns:{9}:a", "ns:{9}:n", "ns:{9}:m"):
            assert 0 < await client.pttl(key) <= 120_000
    finally:
        await client.aclose()
        await store.close()


async def test_an_unreachable_redis_raises_store_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        store = RedisRiskStore(f"redis://127.0.0.1:{port}/0", timeout_s=0.5)
        with pytest.raises(StoreUnavailable, match="Redis did not answer") as info:
            await store.state(1)
        assert info.value.__cause__ is not None
        assert not await store.ping()
        await store.close()


async def test_the_password_setting_is_used(redis_url: str) -> None:
    admin = _client(redis_url)
    await admin.config_set("requirepass", "s3cret")
    try:
        wrong = RedisRiskStore(redis_url, password=SecretStr("not-the-password"))
        with pytest.raises(StoreUnavailable, match="password"):
            await wrong.state(1)
        await wrong.close()
        right = RedisRiskStore(redis_url, password=SecretStr("s3cret"))
        assert await right.state(1) is None
        await right.close()
    finally:
        await admin.config_set("requirepass", "")
        await admin.aclose()


def test_open_store_follows_the_settings(redis_url: str) -> None:
    assert isinstance(open_store(Settings(store="memory://")), MemoryRiskStore)
    store = open_store(Settings(store=redis_url, idle_ttl_hours=2, retention_hours=1, redis_pool_size=3))
    assert isinstance(store, RedisRiskStore)
    assert (store.idle_ttl_ms, store.retention_ms) == (7_200_000, 3_600_000)


async def test_tls_store_checks_the_server_certificate(redis_tls: tuple[str, Path]) -> None:
    url, ca = redis_tls
    store = RedisRiskStore(url, ssl_cafile=ca)
    result = await store.apply_note(
        hadm_id=1, subject_id=2, note_id="n", revision=0, is_error=False, chunk_probs=[0.25]
    )
    assert result.applied
    await store.close()
    untrusted = RedisRiskStore(url, timeout_s=1.0)  # the system CAs do not know the test certificate
    with pytest.raises(StoreUnavailable):
        await untrusted.state(1)
    await untrusted.close()
    settings_store = open_store(Settings(store=url, redis_ssl_cafile=ca))
    assert (await settings_store.state(1)) is not None
    await settings_store.close()


async def test_a_write_no_replica_confirmed_is_not_acknowledged(redis_url: str) -> None:
    """redis_min_replicas: WAIT after each write; a server without replicas never confirms one."""
    store = RedisRiskStore(redis_url, min_replicas=1, replica_timeout_s=0.05)
    try:
        with pytest.raises(StoreUnavailable, match="replicas"):
            await store.apply_note(
                hadm_id=1, subject_id=1, note_id="a", revision=0, is_error=False, chunk_probs=[0.5]
            )
    finally:
        await store.close()
    opened: Any = open_store(Settings(store=redis_url, redis_min_replicas=1))
    assert opened.min_replicas == 1
    await opened.close()
