"""The worker's start-up checks: each problem as one line naming its setting, and an exit status.

:func:`run_checks` runs before the worker loads its model weights and joins its consumer group (and,
with ``--connect``, for ``notestream config check``). Each check returns a :class:`Check`:

- ``model``: ``model_dir`` is set, the folder exists and holds a model (config.json, weights) and a
  valid ``notestream.json`` -- else exit 78 (EX_CONFIG);
- ``metrics_port``: the metrics/health port is free -- else exit 78;
- ``broker``: a Kafka broker answers at ``broker`` -- retried for ``startup_timeout_s``, then exit 69
  (EX_UNAVAILABLE);
- ``store``: Redis answers PING at ``store`` -- a refused password or user is exit 78 at once, an
  unreachable server is retried for ``startup_timeout_s``, then exit 69. ``memory://`` needs no check.

The lines never hold a secret (URLs are masked) and never a traceback.

>>> Check("model", "NOTESTREAM_MODEL_DIR", "not set", 78).line()
'model: NOTESTREAM_MODEL_DIR: not set'
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from notestream.core.settings import Settings
from notestream.stream.fate import EXIT_CONFIG, EXIT_UNAVAILABLE

RETRY_EVERY_S = 1.0
"""Pause between two attempts to reach the broker or Redis at start."""


@dataclass(frozen=True)
class Check:
    """One start-up check: ``code`` 0 when it passed, else the exit status it asks for."""

    name: str
    setting: str
    message: str
    code: int = 0

    @property
    def ok(self) -> bool:
        return self.code == 0

    def line(self) -> str:
        """The check as one line: ``name: SETTING[=value]: message``."""
        return f"{self.name}: {self.setting}: {self.message}"


def exit_code(checks: list[Check]) -> int:
    """The status a process exits with after ``checks``: 78 before 69, 0 when all passed.

    >>> exit_code([Check("a", "X", "ok"), Check("b", "Y", "down", 69), Check("c", "Z", "bad", 78)])
    78
    """
    codes = {c.code for c in checks if not c.ok}
    return EXIT_CONFIG if EXIT_CONFIG in codes else max(codes, default=0)


def check_model(settings: Settings) -> Check:
    """The model folder: set, present, a model, with a valid description."""
    from notestream.models.checkpoint import check_model_folder
    from notestream.models.spec import ModelSpec

    setting = "NOTESTREAM_MODEL_DIR"
    if settings.model_dir is None:
        return Check("model", setting, "not set; pass --model-dir or set it to a model folder", EXIT_CONFIG)
    try:
        check_model_folder(settings.model_dir)
        spec = ModelSpec.read(settings.model_dir)
    except Exception as exc:  # CheckpointError, ConfigError: their messages name the folder
        return Check("model", f"{setting}={settings.model_dir}", first_line(exc), EXIT_CONFIG)
    return Check("model", f"{setting}={settings.model_dir}", f"ok (task {spec.task})")


def check_port(settings: Settings) -> Check:
    """The metrics/health port is free on ``metrics_host`` (or not used at all)."""
    setting = "NOTESTREAM_METRICS_PORT"
    port = settings.metrics_port
    if port is None or port == 0:
        return Check("metrics_port", setting, "unset, no metrics server")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((settings.metrics_host, port))
        except OSError as exc:
            why = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc.strerror})"
            return Check(
                "metrics_port",
                f"{setting}={port}",
                f"port {port} on {settings.metrics_host} {why}; choose a free port",
                EXIT_CONFIG,
            )
    return Check("metrics_port", f"{setting}={port}", "free")


async def check_broker(settings: Settings, *, timeout_s: float) -> Check:
    """A broker answers a metadata request, within ``timeout_s`` of retries."""
    from aiokafka import AIOKafkaProducer

    from notestream.stream.kafka import aiokafka_config

    setting = f"NOTESTREAM_BROKER={settings.masked()['broker']}"
    try:
        config = aiokafka_config(settings)
    except Exception as exc:  # BrokerError: a bare embedded://, a bad TLS file
        return Check("broker", setting, first_line(exc), EXIT_CONFIG)

    async def attempt() -> None:
        producer = AIOKafkaProducer(**config, request_timeout_ms=max(1000, int(timeout_s * 1000)))
        try:
            await producer.start()
        finally:
            await producer.stop()

    quiet = logging.getLogger("aiokafka")  # it logs an ERROR per failed attempt: the check says it once
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        error = await _retry(attempt, timeout_s=timeout_s)
    finally:
        quiet.setLevel(level)
    if error is None:
        return Check("broker", setting, "reachable")
    return Check(
        "broker",
        setting,
        f"no broker answered within {timeout_s:g} s ({type(error).__name__}); check the address and "
        "that Kafka is up",
        EXIT_UNAVAILABLE,
    )


async def check_store(settings: Settings, *, timeout_s: float) -> Check:
    """Redis answers PING with these credentials, within ``timeout_s`` of retries."""
    setting = f"NOTESTREAM_STORE={settings.masked()['store']}"
    if not settings.store.startswith(("redis://", "rediss://")):
        return Check("store", setting, "in-process store, nothing to reach")
    from redis import exceptions as rex
    from redis.asyncio import Redis

    async def attempt() -> None:
        from notestream.stream.store.redis_store import redis_options

        client: Any = Redis.from_url(settings.store, **redis_options(settings))
        try:
            await client.ping()
        finally:
            await client.aclose()

    refused = (rex.AuthenticationError, rex.AuthorizationError, rex.ResponseError)
    error = await _retry(attempt, timeout_s=timeout_s, give_up=refused)
    if error is None:
        return Check("store", setting, "reachable")
    if isinstance(error, refused):
        return Check(
            "store",
            setting,
            f"Redis refused the credentials ({type(error).__name__}); check the password in the URL, "
            "NOTESTREAM_REDIS_PASSWORD and NOTESTREAM_REDIS_USERNAME",
            EXIT_CONFIG,
        )
    return Check(
        "store",
        setting,
        f"Redis did not answer within {timeout_s:g} s ({type(error).__name__}); check the address "
        "and that Redis is up",
        EXIT_UNAVAILABLE,
    )


async def _retry(
    attempt: Callable[[], Awaitable[None]],
    *,
    timeout_s: float,
    give_up: tuple[type[BaseException], ...] = (),
) -> Exception | None:
    """Call ``attempt`` until it succeeds (None), fails with ``give_up``, or ``timeout_s`` passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await asyncio.wait_for(attempt(), timeout=max(0.5, deadline - time.monotonic()))
            return None
        except give_up as exc:
            return exc if isinstance(exc, Exception) else None
        except Exception as exc:  # unreachable, refused, timed out: try again until the deadline
            if time.monotonic() + RETRY_EVERY_S >= deadline:
                return exc
        await asyncio.sleep(RETRY_EVERY_S)


async def run_checks(
    settings: Settings,
    *,
    connect: bool = True,
    timeout_s: float | None = None,
    stop_early: bool = False,
) -> list[Check]:
    """Every start-up check; ``connect`` also reaches the broker and Redis (concurrently), unless
    ``stop_early`` and a local check (model, port) failed already."""
    checks = [check_model(settings), check_port(settings)]
    if stop_early and exit_code(checks):
        return checks
    if connect:
        wait = settings.startup_timeout_s if timeout_s is None else timeout_s
        checks += await asyncio.gather(
            check_broker(settings, timeout_s=wait), check_store(settings, timeout_s=wait)
        )
    return checks


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (never its traceback)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
