"""Create notestream's topics on a Kafka cluster (the one-shot `topics` service of docker-compose.yml).

Run with the same settings as the workers (environment or TOML)::

    NOTESTREAM_BROKER=kafka://kafka:9092 NOTESTREAM_PARTITIONS=12 python deploy/create_topics.py

It creates ``notes``, ``admissions``, ``risk-updates``, ``risk-alerts``, ``notes-dlq`` and
``store-changelog`` (compacted, see ``notestream.stream.store.heal``) (with ``topic_prefix``), each with ``partitions`` partitions and ``replication_factor`` replicas; every message
is keyed by admission id, so one admission always lands on one partition and is scored by one worker
at a time. Topics that already exist are left alone (an existing topic's partition count is reported:
adding partitions later remaps admission ids to partitions, see docs/operations.md). It waits up to
``--wait`` seconds for the broker, uses the settings' TLS and SASL options, prints one JSON line, and
exits 0 when every topic exists afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from notestream.core.settings import Settings, load_settings
from notestream.core.topics import NOTES_DLQ, STORE_CHANGELOG

HOUR_MS = 3_600_000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str] = field(default_factory=dict)


def topic_plan(settings: Settings) -> list[TopicSpec]:
    """The topics notestream needs, as the settings describe them."""
    plan = []
    for short, full in settings.topic_names().items():
        hours = settings.dlq_retention_hours if short == NOTES_DLQ else settings.topic_retention_hours
        configs = {"retention.ms": str(int(hours * HOUR_MS)), "cleanup.policy": "delete"}
        if short == STORE_CHANGELOG:  # kept per key, never by age: a store rebuilds from it
            configs = {"cleanup.policy": "compact"}
        if settings.replication_factor > 1:
            configs["min.insync.replicas"] = str(min(2, settings.replication_factor))
        plan.append(TopicSpec(full, settings.partitions, settings.replication_factor, configs))
    return plan


async def _admin(settings: Settings, wait_s: float) -> AIOKafkaAdminClient:
    deadline = time.monotonic() + wait_s
    while True:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=settings.kafka_bootstrap_servers(), **settings.aiokafka_security_kwargs()
        )
        try:
            await admin.start()
            return admin
        except KafkaError:
            await admin.close()
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(2)


async def create_topics(settings: Settings, wait_s: float = 120.0) -> dict[str, Any]:
    """Create the missing topics; returns {topic: "created" | "exists (N partitions)"}."""
    plan = topic_plan(settings)
    admin = await _admin(settings, wait_s)
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in plan if spec.name not in existing]
        outcome: dict[str, Any] = {}
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=s.configs)
                    for s in missing
                ]
            )
            for topic, code, *rest in response.topic_errors:
                if code == 0:
                    outcome[topic] = "created"
                elif for_code(code) is not TopicAlreadyExistsError:  # a race with another creator is fine
                    message = rest[0] if rest else ""
                    raise for_code(code)(f"Creating topic {topic} failed: {message}")
        described = await admin.describe_topics([spec.name for spec in plan if spec.name not in outcome])
        for entry in described:
            outcome[entry["topic"]] = f"exists ({len(entry['partitions'])} partitions)"
        return outcome
    finally:
        await admin.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wait", type=float, default=120.0, help="Seconds to wait for the broker.")
    args = parser.parse_args(argv)
    settings = load_settings()
    try:
        outcome = asyncio.run(create_topics(settings, args.wait))
    except KafkaError as exc:
        print(
            json.dumps({"error": f"{type(exc).__name__}: {exc}", "broker": settings.masked()["broker"]}),
            file=sys.stderr,
        )
        return 1
    print(json.dumps({"partitions": settings.partitions, "topics": outcome}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
