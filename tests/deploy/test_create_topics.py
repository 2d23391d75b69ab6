"""deploy/create_topics.py: the topics the settings describe, created or found on a broker."""

from __future__ import annotations

import asyncio
import json

import pytest

from notestream.core.settings import Settings
from notestream.core.topics import TOPICS
from tests.deploy.flow import create_topics_module

topics = create_topics_module()


def test_plan_names_every_topic_with_prefix_partitions_and_retention() -> None:
    settings = Settings(topic_prefix="ward7.", partitions=12, replication_factor=3, topic_retention_hours=2)
    plan = {spec.name: spec for spec in topics.topic_plan(settings)}
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
    assert "min.insync.replicas" not in topics.topic_plan(Settings())[0].configs


def test_existing_topics_are_reported_not_recreated(kafka_settings: Settings) -> None:
    # The mock cluster has no CreateTopics; the fixture made the topics, so this is the "exists" path.
    outcome = asyncio.run(topics.create_topics(kafka_settings, wait_s=10))
    assert outcome == {kafka_settings.topic(name): "exists (4 partitions)" for name in TOPICS}


def test_script_reports_an_unreachable_broker(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTESTREAM_BROKER", "kafka://127.0.0.1:9")
    assert topics.main(["--wait", "0"]) == 1
    error = json.loads(capsys.readouterr().err)
    assert error["broker"] == "kafka://127.0.0.1:9"
    assert "Error" in error["error"]
