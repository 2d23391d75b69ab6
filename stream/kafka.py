"""Kafka client configuration from the settings, shared by the worker, replay, alerts and the demo.

One place turns :class:`notestream.core.settings.Settings` into the arguments of each Kafka client this
project uses: aiokafka producers and consumers (replay, alerts, the demo's readers) and the Faust app
(the worker), with TLS and SASL from :func:`ssl_context`, :func:`security_kwargs` and
:func:`faust_credentials`: the one place Kafka clients are configured.

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

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from notestream.core.errors import ConfigError
from notestream.core.settings import Settings
from notestream.stream.errors import BrokerError
from notestream.stream.kafka_protocol import install as install_init_producer_id_v3


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for SSL and SASL_SSL brokers, or None for plaintext ones."""
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    from aiokafka.helpers import create_ssl_context

    password = settings.kafka_ssl_keyfile_password
    try:
        context = create_ssl_context(
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
            password=password.get_secret_value() if password else None,
        )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            "Cannot build the Kafka TLS context from kafka_ssl_cafile, kafka_ssl_certfile and "
            f"kafka_ssl_keyfile ({type(exc).__name__}: {exc}); check that the files exist, are PEM "
            "and that the key password is right."
        ) from exc
    context.check_hostname = settings.kafka_ssl_check_hostname
    return context


def security_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for aiokafka's producer, consumer and admin client (TLS and SASL).

    >>> security_kwargs(Settings())
    {'security_protocol': 'PLAINTEXT'}
    >>> kw = security_kwargs(Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="SCRAM-SHA-512",
    ...                      kafka_sasl_username="ns", kafka_sasl_password="pw"))
    >>> kw["sasl_mechanism"], kw["sasl_plain_username"], kw["sasl_plain_password"]
    ('SCRAM-SHA-512', 'ns', 'pw')
    """
    kwargs: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    context = ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL_"):
        assert settings.kafka_sasl_password is not None  # checked by _check_kafka_security
        kwargs["sasl_mechanism"] = settings.kafka_sasl_mechanism
        kwargs["sasl_plain_username"] = settings.kafka_sasl_username
        kwargs["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return kwargs


def faust_credentials(settings: Settings) -> Any:
    """``broker_credentials`` for ``faust.App``: SASL or TLS credentials, or None for plaintext."""
    import faust

    context = ssl_context(settings)
    if settings.kafka_security_protocol.startswith("SASL_"):
        assert settings.kafka_sasl_password is not None
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get_secret_value(),
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def bootstrap_servers(settings: Settings) -> str:
    """``host:port[,host:port]`` of the broker the settings name.

    ``embedded://HOST:PORT`` is the address an embedded broker printed (see :mod:`notestream.stream.embedded`); a
    bare ``embedded://`` has no address, because the embedded broker only lives as long as the process
    that started it (``notestream broker``, ``notestream demo``, the tests).
    """
    if settings.broker.startswith("kafka://"):
        return settings.kafka_bootstrap_servers()
    address = settings.broker.removeprefix("embedded://").strip("/")
    if not address:
        raise BrokerError(
            "The broker is `embedded://` without an address, and the embedded broker only lives as long "
            "as the process that started it. Start one with `notestream broker` and pass the "
            "kafka://HOST:PORT it prints as --broker, or run `notestream demo`."
        )
    return address


def aiokafka_config(settings: Settings) -> dict[str, Any]:
    """Keyword arguments shared by every aiokafka client: bootstrap servers, TLS, SASL (a TLS file
    that cannot be read is a :class:`~notestream.core.errors.ConfigError` from :func:`ssl_context`)."""
    return {"bootstrap_servers": bootstrap_servers(settings), **security_kwargs(settings)}


def faust_broker_options(settings: Settings) -> dict[str, Any]:
    """``broker`` and ``broker_credentials`` for :class:`faust.App` from the same settings."""
    options: dict[str, Any] = {
        "broker": ";".join(f"kafka://{hp}" for hp in bootstrap_servers(settings).split(","))
    }
    credentials = faust_credentials(settings)
    if credentials is not None:
        options["broker_credentials"] = credentials
    return options


def producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    """An (unstarted) aiokafka producer: ``acks=all``, idempotent unless ``kafka_idempotence`` is off."""
    options: dict[str, Any] = {
        "acks": "all",
        "enable_idempotence": settings.kafka_idempotence,
        "linger_ms": 5,
        "max_request_size": 4 * 1024 * 1024,
    }
    options.update(overrides)
    install_init_producer_id_v3()  # idempotence on the embedded broker too (notestream.stream.kafka_protocol)
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


async def read_to_end(
    settings: Settings, *topics: str, timeout_s: float = 120.0, required: bool = True
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every message of ``topics`` (full names) from the beginning of each partition up to its end at
    the time of the call, each partition in its order. The one reader of a topic's whole log (the
    alerts' state, dead letters, the monitor's backtest).

    The end of a partition is the larger of ListOffsets' answer and the high watermark of the first
    fetch: the embedded broker (tansu 0.6) answers ListOffsets with the first offset of a partition's
    last record batch + 1, short of its end when that batch holds several records. ``required``:
    a topic that does not exist is an error (else it is read as empty).
    """
    import time

    from aiokafka import TopicPartition
    from aiokafka.errors import KafkaError

    reader = consumer(settings, *topics, group_id=None, enable_auto_commit=False)
    out: list[ConsumerRecord[bytes, bytes]] = []
    try:
        await reader.start()
        missing = [t for t in topics if not reader.partitions_for_topic(t)]
        if missing and required:
            raise BrokerError(
                f"The topic(s) {', '.join(missing)} do not exist; create the topics first "
                "(`notestream topics`, the compose `topics` service)."
            )
        tps = [TopicPartition(t, p) for t in topics for p in sorted(reader.partitions_for_topic(t) or ())]
        ends = await reader.end_offsets(tps) if tps else {}
        left = {tp: end for tp, end in ends.items() if end > 0}
        fetched: set[TopicPartition] = set()
        deadline = time.monotonic() + timeout_s
        while left:
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"Reading {', '.join(topics)} took over {timeout_s:.0f} s ({len(out)} messages read); "
                    "check the broker."
                )
            batches = await reader.getmany(*left, timeout_ms=200)
            for tp in batches.keys() - fetched:
                fetched.add(tp)
                left[tp] = max(left[tp], reader.highwater(tp) or 0)
            for tp, messages in batches.items():
                out.extend(m for m in messages if m.offset < left.get(tp, 0))
            for tp in list(left):
                if tp in reader.assignment() and await reader.position(tp) >= left[tp]:
                    del left[tp]
    except KafkaError as exc:
        raise BrokerError(f"Could not read {', '.join(topics)}: {exc}. Check the broker.") from exc
    finally:
        await reader.stop()
    return out
