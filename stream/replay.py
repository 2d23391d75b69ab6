"""Replay MIMIC tables as a live feed: admit, note and discharge events in event-time order.

:class:`ReplaySource` names the files (MIMIC-III ``NOTEEVENTS`` + ``ADMISSIONS``, or MIMIC-IV-Note
``discharge`` / ``radiology`` + hosp ``admissions``); :func:`iter_events` yields
``(event_time, topic_kind, key, event)`` from one out-of-core DuckDB query (see
:mod:`notestream.stream.replay_sql`) fetched in batches, so a full-size NOTEEVENTS replays in bounded memory;
:func:`replay` produces them to Kafka (key = admission id) at a speed factor and returns counts.

- Notes: ``note_id`` is MIMIC-III ROW_ID (as a string) or MIMIC-IV note_id; ISERROR='1' becomes
  ``is_error`` (a retraction); ``admit_time`` is filled from the admission, so a worker can place the
  note before it has seen the admit event. Notes without HADM_ID, of admissions not in the admissions
  table, or without any time are skipped and counted.
- Order: by event time; at equal times admit, then notes, then discharge. Notes dated after DISCHTIME
  follow the discharge, as they would in a live feed.
- Filters: ``hadm_ids``; ``limit`` = the first N admissions by admit time (their events complete);
  ``since``/``until`` keep events in [since, until) of admissions overlapping that range.
- Pacing: ``speed=3600`` plays one hour of event time per second; ``rate=20`` sends at most 20 events
  per second (with ``speed`` too: whichever is slower); ``None`` for both is as fast as possible.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Collection, Generator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from pathlib import Path
from typing import Any, Literal

from aiokafka.errors import KafkaError

from notestream.core.settings import Settings
from notestream.core.topics import ADMISSIONS, NOTES
from notestream.mimic.tables import TableError, connect, find_table, translate_errors
from notestream.stream.errors import BrokerError, ReplayError
from notestream.stream.events import AdmissionEvent, Event, NoteEvent, admission_key, utcnow
from notestream.stream.replay_sql import (
    COLUMNS,
    bounds_sql,
    bucket_sql,
    events_sql,
    partition_sql,
    skipped_sql,
)

ReplayItem = tuple[datetime, str, bytes, Event]


@dataclass(frozen=True)
class ReplaySource:
    """The MIMIC files of one replay."""

    kind: Literal["mimic-iii", "mimic-iv"]
    admissions: Path
    notes: tuple[Path, ...]

    @classmethod
    def mimic_iii(cls, folder: str | Path) -> ReplaySource:
        """``ADMISSIONS`` and ``NOTEEVENTS`` (``.csv`` or ``.csv.gz``, any case) in ``folder``."""
        try:
            adm, notes = find_table(folder, "ADMISSIONS"), find_table(folder, "NOTEEVENTS")
        except TableError as exc:
            raise ReplayError(str(exc)) from exc
        assert adm is not None
        assert notes is not None
        return cls("mimic-iii", adm, (notes,))

    @classmethod
    def mimic_iv(cls, folder: str | Path) -> ReplaySource:
        """hosp ``admissions`` and note ``discharge`` and/or ``radiology`` under ``folder``."""
        try:
            adm = find_table(folder, "admissions")
            notes = tuple(
                p for n in ("discharge", "radiology") if (p := find_table(folder, n, required=False))
            )
        except TableError as exc:
            raise ReplayError(str(exc)) from exc
        if not notes:
            raise ReplayError(
                f"No discharge or radiology notes (.csv or .csv.gz) under {folder}; point at "
                "the MIMIC-IV-Note folder (or one holding hosp/ and note/)."
            )
        assert adm is not None
        return cls("mimic-iv", adm, notes)


@dataclass
class ReplayCounts:
    """What a replay sent and skipped."""

    admits: int = 0
    discharges: int = 0
    notes: int = 0
    retractions: int = 0
    skipped_no_hadm: int = 0
    skipped_unknown_admission: int = 0
    skipped_untimed: int = 0
    first_event_time: datetime | None = None
    last_event_time: datetime | None = None
    wall_s: float = 0.0
    admissions: set[int] = field(default_factory=set, repr=False)

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "admissions"}
        out["admission_count"] = len(self.admissions)
        for key in ("first_event_time", "last_event_time"):
            out[key] = out[key].isoformat() if out[key] else None
        return out


def _day(value: Any) -> date | None:
    if value is None:
        return None
    return value.date() if isinstance(value, datetime) else value


def _event(row: tuple[Any, ...], source: str, zone: tzinfo = UTC) -> tuple[str, Event]:
    """The event of one row; naive source times are read in ``zone`` (``settings.source_timezone``)."""
    r = {
        k: v.replace(tzinfo=zone) if isinstance(v, datetime) and v.tzinfo is None else v
        for k, v in zip(COLUMNS, row, strict=True)
    }
    if r["K"] == 1:
        return NOTES, NoteEvent(
            note_id=r["NOTE_ID"],
            subject_id=r["SUBJECT_ID"],
            hadm_id=r["HADM_ID"],
            category=r["CATEGORY"] or "",
            description=r["DESCRIPTION"] or "",
            chart_time=r["CHARTTIME"],
            chart_date=_day(r["CHARTDATE"]),
            store_time=r["STORETIME"],
            is_error=bool(r["ISERROR"]),
            text=r["TEXT"] or "",
            source=source,
            admit_time=r["ADMITTIME"],
        )
    return ADMISSIONS, AdmissionEvent(
        kind="admit" if r["K"] == 0 else "discharge",
        subject_id=r["SUBJECT_ID"],
        hadm_id=r["HADM_ID"],
        admit_time=r["ADMITTIME"],
        discharge_time=r["DISCHTIME"],
        admission_type=r["ADMISSION_TYPE"],
        death_time=r["DEATHTIME"],
        source=source,
    )


def parse_size(text: str) -> int:
    """Bytes of a DuckDB-style size such as ``1GB``, ``512MiB``, ``64MB``.

    >>> parse_size("1GB"), parse_size("512 MiB")
    (1000000000, 536870912)
    """
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
    value = text.strip().upper().replace(" ", "")
    for unit, factor in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if value.endswith(unit):
            return int(float(value[: -len(unit)]) * factor)
    return int(value)


def estimate_bytes(source: ReplaySource) -> int:
    """About how many bytes the notes take once read (gzip files count five times their size)."""
    return sum(p.stat().st_size * (5 if p.name.lower().endswith(".gz") else 1) for p in source.notes)


def iter_events(
    source: ReplaySource,
    *,
    hadm_ids: Collection[int] | None = None,
    limit: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    counts: ReplayCounts | None = None,
    count_skipped: bool = True,
    batch_rows: int = 2048,
    memory_limit: str = "1GB",
    temp_dir: str | Path | None = None,
    threads: int | None = None,
    sort_budget_bytes: int | None = None,
    source_timezone: tzinfo = UTC,
) -> Generator[ReplayItem, None, None]:
    """``(event_time, topic_kind, key, event)`` in event-time order; ``counts`` is filled as it goes.

    Notes that fit in ``sort_budget_bytes`` (default: a quarter of ``memory_limit``) are sorted by one
    query. Larger sources are cut into time buckets of about that size (event-time quantiles), written
    once to partitioned Parquet files in a work folder under ``temp_dir``, and each bucket is sorted on
    its own: memory stays bounded however large NOTEEVENTS is (DuckDB's sort does not spill rows with
    long texts well). ``count_skipped`` scans the notes once more to count what cannot be replayed
    (without an admission filter only: with one, other admissions' notes are not "skipped").
    """
    counts = counts if counts is not None else ReplayCounts()
    budget = sort_budget_bytes or parse_size(memory_limit) // 4
    work = Path(tempfile.mkdtemp(prefix="notestream-replay-", dir=temp_dir))
    con = connect(memory_limit=memory_limit, temp_dir=work / "duckdb", threads=threads)
    try:
        with translate_errors():
            if count_skipped and hadm_ids is None and limit is None:
                row = con.execute(skipped_sql(source.kind, source.admissions, source.notes)).fetchone()
                assert row is not None
                counts.skipped_no_hadm, counts.skipped_unknown_admission, counts.skipped_untimed = row
            filters: dict[str, Any] = {"hadm_ids": hadm_ids, "limit": limit, "since": since, "until": until}
            size = estimate_bytes(source)
            if size <= budget:
                queries = [events_sql(source.kind, source.admissions, source.notes, **filters)]
            else:
                unordered = events_sql(source.kind, source.admissions, source.notes, ordered=False, **filters)
                buckets = min(1024, max(2, 2 * math.ceil(size / budget)))
                found = con.execute(bounds_sql(unordered, buckets)).fetchone()
                bounds = sorted({b for b in (found[0] if found and found[0] else []) if b is not None})
                parts = work / "parts"
                # rows a bucket holds before writing them out: the default (524,288) holds everything
                con.execute("SET partitioned_write_flush_threshold = 256")
                con.execute(partition_sql(unordered, bounds, parts))
                queries = [
                    bucket_sql(parts, i) for i in range(len(bounds) + 1) if (parts / f"B={i}").is_dir()
                ]
        for sql in queries:
            with translate_errors():
                result = con.execute(sql)
            while True:
                with translate_errors():
                    rows = result.fetchmany(batch_rows)
                if not rows:
                    break
                for row in rows:
                    yield _count(counts, row, source.kind, source_timezone)
    except TableError as exc:
        raise ReplayError(f"Cannot replay {source.kind} from {source.admissions.parent}: {exc}") from exc
    finally:
        con.close()
        shutil.rmtree(work, ignore_errors=True)


def _count(counts: ReplayCounts, row: tuple[Any, ...], kind: str, zone: tzinfo = UTC) -> ReplayItem:
    topic, event = _event(row, kind, zone)
    moment: datetime = row[0]
    if isinstance(event, NoteEvent):
        counts.notes += 1
        counts.retractions += event.is_error
    elif isinstance(event, AdmissionEvent) and event.kind == "admit":
        counts.admits += 1
    else:
        counts.discharges += 1
    hadm = int(row[3])
    counts.admissions.add(hadm)
    counts.first_event_time = counts.first_event_time or moment
    counts.last_event_time = moment
    return moment, topic, admission_key(hadm), event


class Pacer:
    """Sleeps so that event time advances ``speed`` times faster than wall time, and so that at most
    ``rate`` events are sent per second (each None: no such limit; both: the later of the two).

    ``rate`` spaces sends at least ``1/rate`` s apart, so the feed never bursts above it, even to catch
    up with event time after a slow stretch. Call :meth:`delay` just before each send, sleep for the
    seconds it returns, then call :meth:`sent` as the event goes out: a sleep that overran moves the
    next slot on, so a late send is never followed by one sooner than ``1/rate`` s.

    >>> now = [0.0]
    >>> pacer = Pacer(None, clock=lambda: now[0], rate=10.0)
    >>> pacer.delay(datetime(2150, 1, 1)); now[0] = 0.25; pacer.sent()  # slept 0.25 s too long
    0.0
    >>> round(pacer.delay(datetime(2150, 1, 1)), 6)  # a full slot after the late send, not at once
    0.1
    """

    def __init__(
        self, speed: float | None, clock: Callable[[], float] = time.monotonic, *, rate: float | None = None
    ) -> None:
        if speed is not None and speed <= 0:
            raise ReplayError(
                f"The replay speed must be positive (or none for as fast as possible), not {speed}."
            )
        if rate is not None and not rate > 0:
            raise ReplayError(
                f"The replay rate must be a positive number of events per second (or none for no limit), "
                f"not {rate}."
            )
        self.speed = speed
        self.rate = rate
        self._clock = clock
        self._start: tuple[datetime, float] | None = None
        self._next_slot: float | None = None

    def delay(self, moment: datetime) -> float:
        """Seconds to wait before sending an event of time ``moment`` (the caller then sends it)."""
        if self.speed is None and self.rate is None:
            return 0.0
        now = self._clock()
        wait = 0.0
        if self.speed is not None:
            if self._start is None:
                self._start = (moment, now)
            first, wall = self._start
            wait = max(wait, wall + (moment - first).total_seconds() / self.speed - now)
        if self._next_slot is not None:
            wait = max(wait, self._next_slot - now)
        return wait

    def sent(self) -> None:
        """Record that the event paced by the last :meth:`delay` goes out now: the next may go
        ``1/rate`` s from this moment."""
        if self.rate is not None:
            self._next_slot = self._clock() + 1.0 / self.rate


async def replay(
    settings: Settings,
    source: ReplaySource,
    *,
    speed: float | None = None,
    rate: float | None = None,
    hadm_ids: Collection[int] | None = None,
    limit: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    on_event: Callable[[ReplayCounts], None] | None = None,
    temp_dir: str | Path | None = None,
) -> ReplayCounts:
    """Produce the events of ``source`` to the notes and admissions topics (aiokafka, key = admission
    id) and return the counts. Each event gets ``produced_at`` when it is sent. ``speed`` paces by
    event time, ``rate`` caps the events sent per second (:class:`Pacer`); None: as fast as possible."""
    from notestream.stream.kafka import producer as make_producer

    counts = ReplayCounts()
    events = iter_events(
        source,
        hadm_ids=hadm_ids,
        limit=limit,
        since=since,
        until=until,
        counts=counts,
        temp_dir=temp_dir,
        source_timezone=settings.source_zone,
    )
    pacer = Pacer(speed, rate=rate)
    producer = make_producer(settings)
    started = time.monotonic()
    pending: list[asyncio.Future[Any]] = []
    try:
        await producer.start()
        while True:
            batch = await asyncio.to_thread(_take, events, 512)
            for moment, topic, key, event in batch:
                wait = pacer.delay(moment)
                if wait > 0:
                    await asyncio.sleep(wait)
                pacer.sent()
                stamped = event.model_copy(update={"produced_at": utcnow()})
                pending.append(await producer.send(settings.topic(topic), value=stamped.to_bytes(), key=key))
                if on_event is not None:
                    on_event(counts)
            if len(pending) >= 1024 or not batch:
                await asyncio.gather(*pending)
                pending.clear()
            if not batch:
                break
        await producer.flush()
    except (KafkaError, OSError) as exc:
        raise BrokerError(f"Replay could not produce to {settings.broker}: {exc}. Check the broker.") from exc
    finally:
        await asyncio.to_thread(events.close)  # closes the DuckDB connection
        await producer.stop()
        counts.wall_s = time.monotonic() - started
    return counts


def _take(events: Iterator[ReplayItem], n: int) -> list[ReplayItem]:
    out: list[ReplayItem] = []
    for item in events:
        out.append(item)
        if len(out) >= n:
            break
    return out
