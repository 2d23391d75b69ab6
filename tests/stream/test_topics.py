"""`notestream topics` (stream/topics.py): the topics the settings describe, created or found on the
embedded broker (tansu, a real CreateTopics), and every topic the worker subscribes to among them."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from notestream.cli import _mount, app
from notestream.core.settings import Settings
from notestream.core.topics import TOPICS
from notestream.stream.topics import create_topics, run_topics, topic_plan
from tests.fixtures.kafka import WorkerProcess


def test_plan_names_every_topic_with_prefix_partitions_and_retention() -> None:
    settings = Settings(topic_prefix="ward7.", partitions=12, replication_factor=3, topic_retention_hours=2)
    plan = {spec.name: spec for spec in topic_plan(settings)}
    assert sorted(plan) == sorted(f"ward7.{name}" for name in TOPICS)
    assert {(s.partitions, s.replication_factor) for s in plan.values()} == {(12, 3)}
    assert plan["ward7.notes"].configs["retention.ms"] == str(2 * 3_600_000)
    dlq_ms = int(plan["ward7.notes-dlq"].configs["retention.ms"])
    assert dlq_ms == settings.dlq_retention_hours * 3_600_000
    assert plan["ward7.notes"].configs["min.insync.replicas"] == "2"
    changelog = plan[
        "ward7.store-changelog"
    ].configs  # kept per key, never by age: the store rebuilds from it
    assert (changelog["cleanup.policy"], "retention.ms" in changelog) == ("compact", False)
    assert "min.insync.replicas" not in topic_plan(Settings())[0].configs


def test_cli_creates_the_topics_then_reports_them_existing(kafka_settings: Settings) -> None:
    _mount()
    fresh = kafka_settings.model_copy(update={"topic_prefix": kafka_settings.topic_prefix + "cli."})
    args = ["topics", "--broker", fresh.broker, "--topic-prefix", fresh.topic_prefix, "--partitions", "6"]
    first = CliRunner().invoke(app, [*args, "--wait", "10"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout) == {
        "partitions": 6,
        "topics": {fresh.topic(name): "created" for name in TOPICS},
    }
    again = CliRunner().invoke(app, [*args, "--wait", "10"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["topics"] == {
        fresh.topic(name): "exists (6 partitions)" for name in TOPICS
    }


def test_existing_topics_keep_their_partition_count(kafka_settings: Settings) -> None:
    # the fixture created them with the settings' 4; asking for 8 later changes nothing
    outcome = asyncio.run(create_topics(kafka_settings.model_copy(update={"partitions": 8}), wait_s=10))
    assert outcome == {kafka_settings.topic(name): "exists (4 partitions)" for name in TOPICS}


def test_an_unreachable_broker_is_one_json_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_topics(Settings(broker="kafka://127.0.0.1:9"), wait_s=0) == 1
    error = json.loads(capsys.readouterr().err)
    assert error["broker"] == "kafka://127.0.0.1:9"
    assert "Error" in error["error"]


SUBSCRIBED = re.compile(r"Subscribed to topic\(s\): \{(.*?)\}")


async def test_the_worker_subscribes_only_to_topics_the_topics_step_creates(
    kafka_settings: Settings,
    tiny_model_dir: Path,
    start_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    # Faust's `<group>-__assignor-__leader` topic would be one more, which a cluster with topic
    # auto-creation off (compose) lacks.
    settings = kafka_settings.model_copy(update={"model_dir": tiny_model_dir})
    worker = start_worker(settings)
    for _ in range(600):
        found = SUBSCRIBED.findall(worker.output())
        if found or worker.proc.poll() is not None:
            break
        await asyncio.sleep(0.1)
    assert found, worker.output()[-3000:]
    subscribed = {name.strip().strip("'") for name in found[-1].split(",")}
    created = {spec.name for spec in topic_plan(settings)}
    assert subscribed <= created, subscribed - created
    assert worker.stop() == 0
