"""The Redis client a store URL names: standalone, Sentinel-managed primary, or Redis Cluster.

- ``redis://[user:password@]host:port/db``, ``rediss://...`` (TLS), ``unix://path``: one server, a
  blocking connection pool;
- ``redis+sentinel://[user:password@]host:port[,host:port...]/SERVICE[/DB]``: the primary the Sentinels
  name for ``SERVICE`` (redis-py's :class:`~redis.asyncio.sentinel.Sentinel`); after a failover the next
  connection asks the Sentinels again, so the store follows the new primary. The password is the
  data nodes'; Sentinels are asked without one;
- ``redis+cluster://[user:password@]host:port[,host:port...]``: a Redis Cluster
  (:class:`~redis.asyncio.cluster.RedisCluster`, which follows ``MOVED`` and failovers). Every key of
  an admission shares its ``{hadm_id}`` hash tag, so each script touches one slot.

>>> sentinel_parts("redis+sentinel://:pw@s1:26379,s2:26380/mymaster/2")
([('s1', 26379), ('s2', 26380)], 'mymaster', 2)
>>> cluster_nodes("redis+cluster://n1:7000,n2:7001")
[('n1', 7000), ('n2', 7001)]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel

from notestream.stream.errors import StoreError

SENTINEL = "redis+sentinel://"
CLUSTER = "redis+cluster://"


def _hosts(netloc: str, default_port: int) -> list[tuple[str, int]]:
    hosts = []
    for part in netloc.rpartition("@")[2].split(","):
        host, _, port = part.strip().rpartition(":")
        if not host:
            host, port = port, str(default_port)
        try:
            hosts.append((host.strip("[]"), int(port)))
        except ValueError as exc:
            raise StoreError(f"The store URL names a host with an invalid port ({part!r}).") from exc
    return hosts


def _credentials(netloc: str) -> dict[str, str]:
    userinfo = netloc.rpartition("@")[0]
    if not userinfo:
        return {}
    user, _, password = userinfo.partition(":")
    out = {}
    if user:
        out["username"] = unquote(user)
    if password:
        out["password"] = unquote(password)
    return out


def sentinel_parts(url: str) -> tuple[list[tuple[str, int]], str, int]:
    """The Sentinels, the service name and the database of a ``redis+sentinel://`` URL."""
    parts = urlsplit(url)
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise StoreError(
            "A Sentinel store URL is redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB], e.g. "
            "redis+sentinel://sentinel-1:26379,sentinel-2:26379/notestream/0."
        )
    return _hosts(parts.netloc, 26379), path[0], int(path[1]) if len(path) == 2 else 0


def cluster_nodes(url: str) -> list[tuple[str, int]]:
    """The startup nodes of a ``redis+cluster://`` URL."""
    parts = urlsplit(url)
    if parts.path.strip("/"):
        raise StoreError(
            "A Redis Cluster has one database: the store URL is redis+cluster://HOST:PORT[,...]."
        )
    return _hosts(parts.netloc, 6379)


def connect(url: str, options: Mapping[str, Any]) -> tuple[Any, bool]:
    """``(client, is_cluster)`` for ``url``; ``options`` are connection keyword arguments (password,
    timeouts, ``max_connections``, TLS files, ``timeout`` for the blocking pool's wait)."""
    kwargs = dict(options)
    kwargs["decode_responses"] = True  # the scripts' replies are read as str
    try:
        if url.startswith(SENTINEL):
            hosts, service, db = sentinel_parts(url)
            kwargs.pop("timeout", None)
            kwargs = {**_credentials(urlsplit(url).netloc), **kwargs}
            probe: dict[str, Any] = {
                k: kwargs[k] for k in ("socket_timeout", "socket_connect_timeout") if k in kwargs
            }
            sentinel = Sentinel(hosts, sentinel_kwargs=probe, **probe)
            return sentinel.master_for(service, db=db, **kwargs), False
        if url.startswith(CLUSTER):
            nodes = [ClusterNode(host, port) for host, port in cluster_nodes(url)]
            kwargs.pop("timeout", None)
            kwargs = {**_credentials(urlsplit(url).netloc), **kwargs}
            return RedisCluster(startup_nodes=nodes, **kwargs), True
        pool: Any = aioredis.BlockingConnectionPool.from_url(url, **kwargs)
        return aioredis.Redis(connection_pool=pool), False
    except ValueError as exc:
        raise StoreError(
            f"The Redis store URL is invalid ({exc}); use redis://host:port/db, "
            "redis+sentinel://HOST:PORT[,...]/SERVICE[/DB] or redis+cluster://HOST:PORT[,...]."
        ) from exc
