"""The worker app's wiring without a broker: topic names, Faust settings, Kafka client options."""

from __future__ import annotations

import os
from pathlib import Path

import faust
import pytest

from notestream.core.settings import Settings, load_settings
from notestream.stream.app import create_app
from notestream.stream.errors import BrokerError, StreamError
from notestream.stream.kafka import aiokafka_config, bootstrap_servers, faust_broker_options
from notestream.stream.runtime import Runtime
from notestream.stream.worker import worker_env


def test_app_topics_carry_the_prefix_and_are_never_declared() -> None:
    settings = Settings(
        broker="kafka://k1:9092", topic_prefix="ward7.", consumer_group="g7", fetch_max_wait_ms=42
    )
    app = create_app(settings).app
    assert app.conf.id == "g7"
    assert app.conf.topic_allow_declare is False
    assert app.fetch_max_wait_ms == 42  # type: ignore[attr-defined]
    subscribed = {topic for agent in app.agents.values() for topic in agent.channel.topics}  # type: ignore[attr-defined]
    assert subscribed == {"ward7.notes", "ward7.admissions"}
    assert app.conf.broker_session_timeout == settings.session_timeout_s
    assert app.conf.broker_commit_interval == settings.commit_interval_s
    # every dead letter the path builds fits what the producer accepts
    assert app.conf.producer_max_request_size > settings.dead_letter_max_bytes


def test_sasl_settings_reach_both_kafka_clients() -> None:
    settings = Settings(
        broker="kafka://k1:9093,k2:9093",
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="worker",
        kafka_sasl_password="s3cret",
    )
    config = aiokafka_config(settings)
    assert config["bootstrap_servers"] == "k1:9093,k2:9093"
    assert (config["sasl_mechanism"], config["sasl_plain_username"], config["sasl_plain_password"]) == (
        "SCRAM-SHA-256",
        "worker",
        "s3cret",
    )
    options = faust_broker_options(settings)
    assert options["broker"] == "kafka://k1:9093;kafka://k2:9093"
    assert isinstance(options["broker_credentials"], faust.SASLCredentials)


def test_bare_embedded_broker_has_no_address() -> None:
    with pytest.raises(BrokerError, match="kafka://HOST:PORT"):
        bootstrap_servers(Settings(broker="embedded://"))


async def test_runtime_without_a_model_says_what_to_do() -> None:
    with pytest.raises(StreamError, match="--model-dir"):
        await Runtime(Settings(broker="kafka://k:9092")).ready()


def test_worker_env_gives_the_child_the_same_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(
        broker="kafka://k1:9092",
        store="redis://:urlpw@redis:6379/0",
        redis_password="s3cret",
        model_dir=Path("/models/m1"),
        devices=["cpu"],
        topic_prefix="ward7.",
        take_max=7,
        log_json=True,
    )
    for key in list(os.environ):
        if key.startswith("NOTESTREAM_"):
            monkeypatch.delenv(key)
    for key, value in worker_env(settings).items():
        if key.startswith("NOTESTREAM_"):
            monkeypatch.setenv(key, value)
    assert load_settings() == settings


async def test_aiokafka_keeps_the_fetch_wait_where_the_worker_sets_it() -> None:
    import aiokafka

    from notestream.stream.faust_transport import WAIT_ATTRIBUTE

    consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1", fetch_max_wait_ms=1234)
    assert getattr(consumer, WAIT_ATTRIBUTE) == 1234  # an aiokafka upgrade that moves it fails here


def test_the_worker_app_builds_its_consumer_through_the_fetch_wait_transport() -> None:
    """faust_transport overrides Faust's private App._new_transport: a Faust upgrade that stops calling
    it (the fetch wait would silently fall back to 1500 ms) fails here."""
    from notestream.stream.faust_transport import _Consumer, _Transport

    app = create_app(Settings(broker="kafka://127.0.0.1:9", fetch_max_wait_ms=42)).app
    assert isinstance(app.transport, _Transport)
    assert app.transport.Consumer is _Consumer
