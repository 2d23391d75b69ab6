"""The dead-letter topic for people: list what is there, put chosen originals back.

``notestream dlq list`` shows each dead letter's reason, time, key and where it came from, never its
original bytes (they may hold note text): only their size. ``notestream dlq redrive`` puts the chosen
originals back on the topic they came from (``notes`` or ``admissions``), keyed as they were; that is
safe because the store dedupes by (note_id, revision). A held note that waited in vain for its
admission (``admission_unknown``) has no original in its dead letter (its text was never held): its
note is re-read from the ``notes`` topic at the partition and offset the letter names, while Kafka
still retains it.

>>> letter = DeadLetter(reason="schema", detail="field 'x'", topic="notes", original=b"{}")
>>> chosen([(0, 0, letter)], reason="schema", since=None) == [(0, 0, letter)]
True
>>> chosen([(0, 0, letter)], reason="too_deep", since=None)
[]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from notestream.core.settings import Settings
from notestream.core.topics import ADMISSIONS, NOTES, NOTES_DLQ
from notestream.stream.errors import BrokerError, EventError
from notestream.stream.events import DeadLetter

Letter = tuple[int, int, DeadLetter]
"""A dead letter with its own partition and offset on the dead-letter topic."""


def chosen(letters: Sequence[Letter], *, reason: str | None, since: datetime | None) -> list[Letter]:
    """The letters of ``reason`` (None: any) dead-lettered at or after ``since`` (None: any time)."""
    return [
        item
        for item in letters
        if (reason is None or item[2].reason == reason) and (since is None or item[2].at >= since)
    ]


async def read_dead_letters(settings: Settings, *, timeout_s: float = 60.0) -> tuple[list[Letter], int]:
    """Every dead letter on the topic up to its end at the time of the call, and how many messages
    there could not be read as dead letters."""
    from notestream.stream.kafka import read_to_end

    letters: list[Letter] = []
    unreadable = 0
    for message in await read_to_end(settings, settings.topic(NOTES_DLQ), timeout_s=timeout_s):
        try:
            letters.append((message.partition, message.offset, DeadLetter.from_bytes(message.value)))
        except EventError:
            unreadable += 1
    letters.sort(key=lambda item: (item[2].at, item[0], item[1]))
    return letters, unreadable


@dataclass
class Redrive:
    """What a redrive did (or, with ``dry_run``, would do)."""

    sent: Counter[str] = field(default_factory=Counter)
    """Messages put back, by target topic."""
    reasons: Counter[str] = field(default_factory=Counter)
    """Messages put back, by dead-letter reason."""
    skipped: Counter[str] = field(default_factory=Counter)
    """Letters not put back, by why."""
    dry_run: bool = False

    def summary(self) -> str:
        verb = "would put back" if self.dry_run else "put back"
        total = sum(self.sent.values())
        parts = [f"{verb} {total} message{'s' * (total != 1)}"]
        if self.sent:
            parts.append("(" + ", ".join(f"{n} on {t}" for t, n in sorted(self.sent.items())) + ")")
        if self.reasons:
            parts.append("of reasons " + ", ".join(f"{r} {n}" for r, n in sorted(self.reasons.items())))
        if self.skipped:
            parts.append("; skipped " + ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items())))
        return " ".join(parts) + "."


async def redrive(settings: Settings, letters: Sequence[Letter], *, dry_run: bool = False) -> Redrive:
    """Put the originals of ``letters`` back on their topics (see the module docstring)."""
    from aiokafka.errors import KafkaError

    from notestream.stream.kafka import consumer as make_consumer
    from notestream.stream.kafka import producer as make_producer

    allowed = {settings.topic(NOTES), settings.topic(ADMISSIONS)}
    report = Redrive(dry_run=dry_run)
    plan: list[tuple[str, bytes | None, bytes | None, DeadLetter]] = []
    for _, _, letter in letters:
        if letter.topic not in allowed:
            report.skipped[f"from another topic ({letter.topic})"] += 1
            continue
        rereads = not letter.original and letter.partition is not None and letter.offset is not None
        plan.append((letter.topic, letter.key, None if rereads else letter.original, letter))
    missing = [item for item in plan if item[2] is None]
    if missing:
        from aiokafka import TopicPartition

        reader = make_consumer(settings, group_id=None, enable_auto_commit=False)
        try:
            await reader.start()
            for i, (topic, key, value, letter) in enumerate(plan):
                if value is not None or letter.partition is None or letter.offset is None:
                    continue
                tp = TopicPartition(topic, letter.partition)
                reader.assign([tp])
                reader.seek(tp, letter.offset)
                batch = await reader.getmany(tp, timeout_ms=5000, max_records=1)
                found = [m for m in batch.get(tp, []) if m.offset == letter.offset]
                plan[i] = (topic, key, found[0].value if found else b"", letter)
        except KafkaError as exc:
            raise BrokerError(f"Could not re-read dead-lettered notes: {exc}. Check the broker.") from exc
        finally:
            await reader.stop()
    todo = []
    for topic, key, value, letter in plan:
        if not value:
            report.skipped["no longer on their topic (past its retention)"] += 1
            continue
        todo.append((topic, key, value))
        report.sent[topic] += 1
        report.reasons[letter.reason] += 1
    if dry_run or not todo:
        return report
    producer = make_producer(settings)
    try:
        await producer.start()
        futures = [await producer.send(topic, value=value, key=key) for topic, key, value in todo]
        for future in futures:
            await future
        await producer.flush()
    except KafkaError as exc:
        raise BrokerError(f"Could not put dead letters back: {exc}. Nothing is lost; run it again.") from exc
    finally:
        await producer.stop()
    return report
