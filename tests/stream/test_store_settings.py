"""open_store builds its Redis pool from redis_options(settings): ACL user, client certificate, timeouts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import SSLConnection

from notestream.core.settings import Settings
from notestream.stream.errors import StoreError, StoreUnavailable
from notestream.stream.store import RedisRiskStore, open_store


def _pool(store: Any) -> Any:
    assert isinstance(store, RedisRiskStore)
    return store._redis.connection_pool


async def test_open_store_passes_user_password_and_client_certificate(tmp_path: Path) -> None:
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    for path in files.values():
        path.write_text("not read until a connection is made\n")
    settings = Settings(
        store="rediss://redis.example:6380/2",
        redis_username="scorer",
        redis_password="pw-1",
        redis_ssl_cafile=files["ca"],
        redis_ssl_certfile=files["cert"],
        redis_ssl_keyfile=files["key"],
        redis_timeout_s=1.5,
        redis_pool_size=7,
    )
    store = open_store(settings)
    pool = _pool(store)
    try:
        assert isinstance(pool, aioredis.BlockingConnectionPool)
        assert pool.connection_class is SSLConnection
        kwargs = pool.connection_kwargs
        assert (kwargs["username"], kwargs["password"]) == ("scorer", "pw-1")
        assert kwargs["ssl_ca_certs"] == str(files["ca"])
        assert kwargs["ssl_certfile"] == str(files["cert"])
        assert kwargs["ssl_keyfile"] == str(files["key"])
        assert kwargs["ssl_check_hostname"] is True
        assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (1.5, 1.5)
        assert kwargs["decode_responses"] is True
        assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("redis.example", 6380, 2)
        assert (pool.max_connections, pool.timeout) == (7, 1.5)  # blocking pool: waits for a connection
    finally:
        await store.close()


async def test_plain_redis_gets_no_tls_options(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    store = open_store(Settings(store="redis://127.0.0.1:6379/0", redis_ssl_certfile=cert))
    try:
        kwargs = _pool(store).connection_kwargs
        assert not {key for key in kwargs if key.startswith("ssl")}
        assert "username" not in kwargs
        assert "password" not in kwargs
    finally:
        await store.close()


async def test_the_acl_user_setting_is_used(redis_url: str) -> None:
    admin: Any = aioredis.Redis.from_url(redis_url)
    await admin.acl_setuser("scorer", enabled=True, passwords=["+user-pw"], keys=["*"], commands=["+@all"])
    try:
        right = open_store(Settings(store=redis_url, redis_username="scorer", redis_password="user-pw"))
        assert await right.state(1) is None
        clients = await admin.client_list()
        assert any(c.get("user") == "scorer" for c in clients), "no connection authenticated as scorer"
        await right.close()
        # the same password for the default user is wrong: the user name made the difference
        wrong = open_store(
            Settings(store=redis_url, redis_username="nobody", redis_password="user-pw", redis_timeout_s=1.0)
        )
        with pytest.raises(StoreUnavailable):
            await wrong.state(1)
        await wrong.close()
    finally:
        await admin.acl_deluser("scorer")
        await admin.aclose()


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://s1:26379",
        "redis+sentinel://s1:26379/svc/x",
        "redis+cluster://n1:7000/0",
        "redis+cluster://n1:port",
    ],
)
def test_sentinel_and_cluster_urls_are_checked(url: str) -> None:
    with pytest.raises(StoreError, match="store URL"):
        RedisRiskStore(url)


def test_the_settings_accept_sentinel_and_cluster_stores() -> None:
    for url in ("redis+sentinel://:pw@s1:26379,s2:26379/notestream/1", "redis+cluster://n1:7000,n2:7001"):
        settings = Settings(store=url)
        assert settings.store == url
        assert ":pw@" not in repr(settings)
