"""The note's path through the worker, from Kafka message to emit, in one module.

The Faust agents of :mod:`notestream.stream.app` call ONE function per batch: :meth:`NotePath.notes` for a batch
of the notes topic, :meth:`NotePath.admission` for an admission event. Read them top to bottom:

1. :class:`Origin` -- each message's provenance (topic, partition, offset, key and raw bytes), which
   travels with the message through every step below, so a failure anywhere finds its message.
2. :func:`receive` -- parse the bytes (:func:`notestream.stream.events.parse_note`). Whatever parsing raises for
   one message (a bad event, a nesting too deep, a number too long) becomes that message's dead letter,
   as the failure table :mod:`notestream.stream.fate` says.
3. :meth:`notestream.stream.pipeline.Pipeline.process` -- window, clean and chunk (in a thread), ONE engine call,
   store writes, risk updates; a note the pipeline rejects comes back with its position in the batch.
   The pipeline runs inside the store healer's guard (:mod:`notestream.stream.store.heal`): a store
   that lost its data is rebuilt from the changelog topic and the batch run again.
4. the changelog -- after the store write and before the emit (and so before the offsets are
   committed), the healer sends the batch's changes (probabilities, never text) to the changelog topic:
   the place for work that must be durable before a batch counts as done. Held notes released by
   an admission are recorded before they leave the store's held list (see ``Pipeline.release``).
5. :meth:`NotePath.emit` -- send the risk updates and dead letters and wait for the broker's acks.
   Only then does the agent's body return, so Faust acks the batch and commits its offsets later.

A dead letter is always sendable (:func:`dead_letter`): it carries the original bytes when the whole
letter fits ``settings.dead_letter_max_bytes`` (the worker's producer accepts that plus 64 KiB), else
the original's SHA-256, size and Kafka coordinates. Dead letters are logged with their coordinates,
reason and detail, never their bytes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo
from functools import partial
from typing import Any, Protocol

from notestream.core.settings import Settings
from notestream.core.topics import NOTES, NOTES_DLQ, RISK_UPDATES, STORE_CHANGELOG
from notestream.stream.errors import EventError
from notestream.stream.events import (
    AdmissionEvent,
    DeadLetter,
    NoteEvent,
    RiskUpdate,
    admission_key,
    check_key,
    parse_event,
    parse_note,
    utcnow,
)
from notestream.stream.fate import event_error
from notestream.stream.metrics import Metrics
from notestream.stream.pipeline import Pipeline
from notestream.stream.store.changelog import Change
from notestream.stream.store.heal import StoreHealer

log = logging.getLogger(__name__)

MAX_DETAIL_CHARS = 2000
"""A dead letter's ``detail`` is cut to this many characters."""
MAX_KEY_BYTES = 1024
"""A dead letter of a message too large to carry keeps the message's key only up to this size."""
PRODUCER_HEADROOM_BYTES = 64 * 1024
"""The worker's producer accepts records up to ``dead_letter_max_bytes`` plus this."""


@dataclass(frozen=True)
class Origin:
    """Where a message came from, and its bytes: travels with the message from receive to emit."""

    topic: str
    partition: int | None
    offset: int | None
    key: bytes | None = field(default=None, repr=False)
    value: bytes = field(default=b"", repr=False)

    @classmethod
    def of(cls, message: Any) -> Origin:
        """The origin of a Kafka message as Faust (``event.message``) or aiokafka gives it."""
        return cls(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=bytes(message.key) if message.key is not None else None,
            value=bytes(message.value or b""),
        )


@dataclass(frozen=True)
class Received:
    """A message of the notes topic after parsing: its note, or the error that dead-letters it."""

    origin: Origin
    note: NoteEvent | None = None
    error: EventError | None = None


def receive(origin: Origin, *, max_text_bytes: int, source_timezone: tzinfo | None = None) -> Received:
    """Parse one message of the notes topic (naive times read in ``source_timezone``) and check its
    key against its admission; any failure of this one message is its dead letter's.

    >>> bad = receive(Origin("notes", 0, 7, value=b"[" * 100_000), max_text_bytes=1000)
    >>> bad.note, bad.error.reason
    (None, 'too_large')
    >>> deep = receive(Origin("notes", 0, 8, value=b"[" * 30_000 + b"]" * 30_000), max_text_bytes=100_000)
    >>> deep.error.reason
    'too_deep'
    """
    try:
        note = parse_note(origin.value, max_text_bytes=max_text_bytes, source_timezone=source_timezone)
        check_key(origin.key, note.hadm_id)
        return Received(origin, note=note)
    except Exception as exc:  # the failure table: re-raises what is not this message's fault
        return Received(origin, error=event_error(exc, step="decode"))


def dead_letter(origin: Origin, error: EventError, *, max_bytes: int) -> DeadLetter:
    """The dead letter of the message at ``origin``, never larger than ``max_bytes`` as JSON.

    >>> origin = Origin("notes", 2, 41, key=b"7", value=b"x" * 5000)
    >>> whole = dead_letter(origin, EventError("schema", "field 'text'"), max_bytes=10_000)
    >>> len(whole.original), whole.original_sha256
    (5000, None)
    >>> small = dead_letter(origin, EventError("schema", "field 'text'"), max_bytes=4096)
    >>> small.original, small.original_size, small.original_sha256[:12], (small.partition, small.offset)
    (b'', 5000, 'c59d3c0480cc', (2, 41))
    """
    detail = error.detail[:MAX_DETAIL_CHARS]
    common: dict[str, Any] = {
        "reason": error.reason,
        "detail": detail,
        "topic": origin.topic,
        "partition": origin.partition,
        "offset": origin.offset,
    }
    whole = DeadLetter(**common, key=origin.key, original=origin.value)
    if len(whole.to_bytes()) + len(origin.key or b"") <= max_bytes:  # the record: key + letter
        return whole
    key = origin.key if origin.key is not None and len(origin.key) <= MAX_KEY_BYTES else None
    return DeadLetter(
        **common,
        key=key,
        original_sha256=hashlib.sha256(origin.value).hexdigest(),
        original_size=len(origin.value),
    )


class Send(Protocol):
    """Send ``value`` to the topic of kind ``topic`` (e.g. ``risk-updates``); the returned awaitable
    completes when the broker has it."""

    async def __call__(self, topic: str, key: bytes | None, value: bytes) -> Awaitable[Any]: ...


@dataclass
class Handled:
    """What one call of the path did (the in-process runner counts these)."""

    messages: int = 0
    updates: int = 0
    dead_letters: int = 0
    dropped: int = 0


class NotePath:
    """The worker's path for a message: receive, pipeline (healer-guarded), changelog, emit (module docstring)."""

    def __init__(
        self,
        settings: Settings,
        pipeline: Callable[[], Awaitable[Pipeline]],
        send: Send,
        *,
        metrics: Metrics | None = None,
        healer: Callable[[], StoreHealer] = StoreHealer.off,
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        """Returns the started pipeline (:meth:`notestream.stream.runtime.Runtime.ready`)."""
        self.send = send
        self.metrics = metrics
        self.healer = healer
        """Returns the store healer (:attr:`notestream.stream.runtime.Runtime.healer`, set once ready)."""
        self.total = Handled()
        """Everything the path handled since the process started."""
        self.last_handled = time.monotonic()
        self.progress = asyncio.Event()
        """Set after each handled batch (the in-process runner waits on it)."""

    async def notes(self, origins: Sequence[Origin]) -> Handled:
        """One batch of the notes topic, from messages to emitted updates and dead letters."""
        pipeline = await self.pipeline()
        zone = self.settings.source_zone
        received = [
            receive(o, max_text_bytes=self.settings.max_note_bytes, source_timezone=zone) for o in origins
        ]
        parsed = [r for r in received if r.note is not None]
        notes = [r.note for r in parsed if r.note is not None]
        refs = [origin_ref(r.origin) for r in parsed]  # kept with a note that waits for its admission
        healer = self.healer()
        result = await healer.guard(partial(pipeline.process, notes, refs, record=self._record))
        await healer.record(self._send_changelog, result.changes)  # after the store, before the commit
        letters = [self.letter(r.origin, r.error) for r in received if r.error is not None]
        letters += [
            self.letter(parsed[rej.index].origin, EventError(rej.reason, rej.detail))
            for rej in result.rejected
        ]
        await self.emit(result.updates, letters)
        if self.metrics is not None:
            self.metrics.notes_in.inc(len(origins))
            for reason, n in result.dropped.items():
                self.metrics.notes_dropped.labels(reason=reason).inc(n)
        return self._handled(len(origins), len(result.updates), len(letters), sum(result.dropped.values()))

    async def admission(self, origin: Origin) -> Handled:
        """One message of the admissions topic: record it; a first discharge emits the final update."""
        pipeline = await self.pipeline()
        try:
            event = parse_event(origin.value, AdmissionEvent, source_timezone=self.settings.source_zone)
            check_key(origin.key, event.hadm_id)
        except Exception as exc:  # the failure table: re-raises what is not this message's fault
            await self.emit([], [self.letter(origin, event_error(exc, step="decode"))])
            return self._handled(1, 0, 1, 0)
        changes: list[Any] = []
        healer = self.healer()
        final = await healer.guard(partial(pipeline.admission, event, changes))
        await healer.record(self._send_changelog, changes)
        # the notes that waited for it: recorded before they leave the held list (Pipeline.release)
        released = await healer.guard(partial(pipeline.release, event.hadm_id, record=self._record))
        updates = [*([final] if final is not None else []), *released.updates]
        await self.emit(updates, [])
        return self._handled(1, len(updates), 0, sum(released.dropped.values()))

    async def expire(self) -> Handled:
        """Dead-letter the held notes whose admission never came within ``admission_wait_s``
        (``admission_unknown``, empty original, coordinates of the note), then forget them."""
        pipeline = await self.pipeline()
        expired = await pipeline.expired()
        letters = []
        for item in expired:
            ref = item.ref
            key = base64.urlsafe_b64decode(ref["key"]) if ref.get("key") else None
            origin = Origin(
                str(ref.get("topic") or self.settings.topic(NOTES)),
                ref.get("partition"),
                ref.get("offset"),
                key=key,
            )
            letter = self.letter(origin, EventError("admission_unknown", item.detail))
            letters.append(letter.model_copy(update={"original": b""}))  # the text was never held
        if letters:
            await self.emit([], letters)
            settled = [item.settled for item in expired]  # then a rebuild does not hold them again
            await self.healer().record(self._send_changelog, settled)
            await pipeline.forget(expired)
        return self._handled(0, 0, len(letters), 0)

    async def _record(self, changes: Sequence[Change]) -> None:
        await self.healer().record(self._send_changelog, changes)

    async def _send_changelog(self, *, key: bytes, value: bytes) -> Awaitable[Any]:
        return await self.send(STORE_CHANGELOG, key, value)

    def letter(self, origin: Origin, error: EventError) -> DeadLetter:
        """The dead letter of one message (logged with its coordinates, never its bytes)."""
        letter = dead_letter(origin, error, max_bytes=self.settings.dead_letter_max_bytes)
        log.warning(
            "Dead letter from %s[%s]@%s: %s (%s)%s.",
            origin.topic,
            origin.partition,
            origin.offset,
            letter.reason,
            letter.detail,
            "" if letter.original_sha256 is None else "; original too large to carry, digest sent",
        )
        return letter

    async def emit(self, updates: Sequence[RiskUpdate], letters: Sequence[DeadLetter]) -> None:
        """Send updates and dead letters and wait until the broker has them all."""
        futures = []
        for update in updates:
            stamped = update.model_copy(update={"emitted_at": utcnow()})
            futures.append(await self.send(RISK_UPDATES, admission_key(update.hadm_id), stamped.to_bytes()))
        for letter in letters:
            futures.append(await self.send(NOTES_DLQ, letter.key, letter.to_bytes()))
        if futures:
            await asyncio.gather(*futures)
        if self.metrics is not None:
            for letter in letters:
                self.metrics.dead_letter(letter.reason)
            if updates:
                self.metrics.updates_out.inc(len(updates))
                now = utcnow()
                for update in updates:
                    if update.change is not None and update.produced_at is not None:
                        self.metrics.observe_note_to_update(now - update.produced_at)

    def _handled(self, messages: int, updates: int, letters: int, dropped: int) -> Handled:
        handled = Handled(messages, updates, letters, dropped)
        self.total.messages += messages
        self.total.updates += updates
        self.total.dead_letters += letters
        self.total.dropped += dropped
        self.last_handled = time.monotonic()
        self.progress.set()
        return handled


def origin_ref(origin: Origin) -> dict[str, Any]:
    """Where a note was read, as JSON (no text): kept with a note while it waits for its admission.

    >>> origin_ref(Origin("notes", 2, 41, key=b"V-1"))
    {'topic': 'notes', 'partition': 2, 'offset': 41, 'key': 'Vi0x'}
    """
    key = base64.urlsafe_b64encode(origin.key).decode("ascii") if origin.key is not None else None
    return {"topic": origin.topic, "partition": origin.partition, "offset": origin.offset, "key": key}
