"""The whole flow on real Kafka and Redis containers (testcontainers), where a Docker engine answers.

Kafka: the testcontainers ``KafkaContainer`` in KRaft mode on Confluent Platform 7.7 (Apache Kafka 3.7,
the same 3.x protocol line as docker-compose.yml's pinned apache/kafka 3.8.1): it rewrites the advertised
listener to the mapped port, which the plain apache/kafka image cannot do on a random port. Redis: the
image docker-compose.yml pins, with a password. Topics come from deploy/create_topics.py (real
CreateTopics, which the mock cluster lacks); two workers share the consumer group; a synthetic MIMIC-III
cohort is replayed; every admission's final risk update and its Redis state must equal the offline
score. Without a Docker engine every test here is skipped, quickly, with the reason.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from notestream.core.settings import Settings
from notestream.core.topics import TOPICS
from tests.deploy.flow import (
    assert_matches_offline,
    await_final_scores,
    create_topics_module,
    expected_scores,
    run_replay,
    synthetic_cohort,
)
from tests.fixtures.kafka import WorkerProcess

ROOT = Path(__file__).resolve().parents[2]
REDIS_IMAGE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["redis"]["image"]
KAFKA_IMAGE = "confluentinc/cp-kafka:7.7.1"
REDIS_PASSWORD = "container-test-secret"


def docker_unavailable() -> str | None:
    """Why no Docker engine can be used (None when one answers). Takes milliseconds without one."""
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        return (
            f"No Docker engine answers ({type(exc).__name__}: {exc}); the testcontainers integration "
            "tests need one (a running dockerd, or DOCKER_HOST)."
        )
    return None


NO_DOCKER = docker_unavailable()  # at collection, so a skip costs no fixture (the tiny model is session-wide)
pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.skipif(NO_DOCKER is not None, reason=NO_DOCKER or ""),
]


@pytest.fixture(scope="module")
def docker_engine() -> None:
    if NO_DOCKER is not None:
        pytest.skip(NO_DOCKER)


@pytest.fixture(scope="module")
def kafka_bootstrap(docker_engine: None) -> Iterator[str]:
    from testcontainers.community.kafka import KafkaContainer

    with KafkaContainer(KAFKA_IMAGE).with_kraft() as kafka:
        yield kafka.get_bootstrap_server()


@pytest.fixture(scope="module")
def redis_url(docker_engine: None) -> Iterator[str]:
    from testcontainers.community.redis import RedisContainer

    with RedisContainer(REDIS_IMAGE, password=REDIS_PASSWORD) as redis:
        yield f"redis://{redis.get_container_host_ip()}:{redis.get_exposed_port(6379)}/0"


def test_whole_flow_on_kafka_and_redis_containers(
    kafka_bootstrap: str,
    redis_url: str,
    tiny_model_dir: Path,
    start_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    settings = Settings(
        broker=f"kafka://{kafka_bootstrap}",
        store=redis_url,
        redis_password=REDIS_PASSWORD,
        model_dir=tiny_model_dir,
        topic_prefix=f"it{os.getpid()}.",
        consumer_group=f"notestream-it-{os.getpid()}",
        partitions=4,
        session_timeout_s=6.0,
        commit_interval_s=0.2,
        devices=["cpu"],
    )
    created = asyncio.run(create_topics_module().create_topics(settings, wait_s=60))
    assert created == {settings.topic(name): "created" for name in TOPICS}
    again = asyncio.run(create_topics_module().create_topics(settings, wait_s=60))
    assert set(again.values()) == {"exists (4 partitions)"}

    source = synthetic_cohort(tmp_path / "mimic")
    expected = expected_scores(source, tiny_model_dir)
    assert expected, "the synthetic cohort has no scorable admission"
    password = {
        "NOTESTREAM_REDIS_PASSWORD": REDIS_PASSWORD
    }  # secrets never travel in model_dump(mode="json")
    workers = [
        start_worker(settings, **password),
        start_worker(settings, **password),
    ]  # one group, two members
    counts = run_replay(settings, source)
    assert counts.notes > 0

    last = await_final_scores(
        settings, expected, timeout_s=240, alive=lambda: all(w.proc.poll() is None for w in workers)
    )
    logs = "\n".join(w.output()[-2000:] for w in workers)
    assert_matches_offline(last, expected)
    assert all(w.proc.poll() is None for w in workers), logs
    assert asyncio.run(_store_scores(settings, list(expected))) == pytest.approx(expected, abs=1e-6)
    for worker in workers:
        assert worker.stop() == 0, worker.output()[-3000:]


async def _store_scores(settings: Settings, hadm_ids: list[int]) -> dict[int, Any]:
    """Each admission's score as Redis holds it."""
    from notestream.models.spec import ModelSpec
    from notestream.stream.store import open_store

    assert settings.model_dir is not None
    c = ModelSpec.read(settings.model_dir).c
    store = open_store(settings)
    try:
        out = {}
        for hadm in hadm_ids:
            state = await store.state(hadm)
            out[hadm] = None if state is None else state.score(c)
        return out
    finally:
        await store.close()
