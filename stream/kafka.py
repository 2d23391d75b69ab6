"""Kafka client configuration from the settings, shared by the worker, replay, alerts and the demo.

One place turns :class:`notestream.core.settings.Settings` into the arguments of each Kafka client this
project uses: aiokafka producers and consumers (replay, alerts, the demo's readers) and the Faust app
(the worker). TLS and SASL come from the settings' own helpers
(:meth:`Settings.aiokafka_security_kwargs`, :meth:`Settings.faust_broker_credentials`).

>>> from notestream.core.settings import Settings
>>> bootstrap_servers(Settings(broker="kafka://k1:9092,k2:9092"))
'k1:9092,k2:9092'
>>> bootstrap_servers(Settings(broker="embedded://127.0.0.1:39001"))
'127.0.0.1:39001'
>>> sorted(aiokafka_config(Settings(broker="kafka://k1:9092")))
['bootstrap_servers', 'security_protocol']
"""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from notestream.core.settings import Settings
from notestream.stream.errors import BrokerError


def bootstrap_servers(settings: Settings) -> str:
    """``host:port[,host:port]`` of the broker the settings name.

    ``embedded://HOST:PORT`` is the address an embedded broker printed (see :mod:`notestream.stream.embedded`); a
    bare ``embedded://`` has no address, because the embedded broker only lives inside the process that
    started it (``notestream demo``, the tests).
    """
    if settings.broker.startswith("kafka://"):
        return settings.kafka_bootstrap_servers()
    address = settings.broker.removeprefix("embedded://").strip("/")
    if not address:
        raise BrokerError(
            "The broker is `embedded://` without an address, and the embedded broker only lives inside "
            "the process that started it. Pass --broker kafka://HOST:PORT (the address `notestream "
            "demo` or `python -m notestream.stream.embedded` prints), or run `notestream demo`."
        )
    return address


def aiokafka_config(settings: Settings) -> dict[str, Any]:
    """Keyword arguments shared by every aiokafka client: bootstrap servers, TLS, SASL."""
    try:
        security = settings.aiokafka_security_kwargs()
    except (OSError, ssl.SSLError) as exc:
        raise BrokerError(
            f"Cannot build the Kafka TLS context from the kafka_ssl_* settings: {exc}. Check the CA, "
            "certificate and key paths."
        ) from exc
    return {"bootstrap_servers": bootstrap_servers(settings), **security}


def faust_broker_options(settings: Settings) -> dict[str, Any]:
    """``broker`` and ``broker_credentials`` for :class:`faust.App` from the same settings."""
    options: dict[str, Any] = {
        "broker": ";".join(f"kafka://{hp}" for hp in bootstrap_servers(settings).split(","))
    }
    try:
        credentials = settings.faust_broker_credentials()
    except (OSError, ssl.SSLError) as exc:
        raise BrokerError(
            f"Cannot build the Kafka TLS context from the kafka_ssl_* settings: {exc}."
        ) from exc
    if credentials is not None:
        options["broker_credentials"] = credentials
    return options


def producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    """An (unstarted) aiokafka producer: ``acks=all``, idempotence off (the mock cluster lacks it)."""
    options: dict[str, Any] = {"acks": "all", "linger_ms": 5, "max_request_size": 4 * 1024 * 1024}
    options.update(overrides)
    return AIOKafkaProducer(**aiokafka_config(settings), **options)


def consumer(
    settings: Settings, *topics: str, group_id: str | None = None, **overrides: Any
) -> AIOKafkaConsumer:
    """An (unstarted) aiokafka consumer of ``topics`` (full names), from the earliest offset by default.

    Without ``group_id`` it reads without a consumer group (no commits), as readers of
    ``risk-updates`` in tests and the demo do.
    """
    options: dict[str, Any] = {
        "group_id": group_id,
        "auto_offset_reset": "earliest",
        "enable_auto_commit": group_id is not None,
        "session_timeout_ms": 10_000,
        "heartbeat_interval_ms": 1_000,
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **aiokafka_config(settings), **options)
