"""Replay: small synthetic MIMIC files in the exact formats become time-ordered events."""

from __future__ import annotations

import gzip
import itertools
import json
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from notestream.core.settings import Settings
from notestream.stream.errors import ReplayError
from notestream.stream.events import AdmissionEvent, NoteEvent
from notestream.stream.replay import Pacer, ReplayCounts, ReplaySource, iter_events, replay
from tests.fixtures.kafka import read_topic

ADM_III = [
    "ROW_ID",
    "SUBJECT_ID",
    "HADM_ID",
    "ADMITTIME",
    "DISCHTIME",
    "DEATHTIME",
    "ADMISSION_TYPE",
    "ADMISSION_LOCATION",
    "DISCHARGE_LOCATION",
    "INSURANCE",
    "LANGUAGE",
    "RELIGION",
    "MARITAL_STATUS",
    "ETHNICITY",
    "EDREGTIME",
    "EDOUTTIME",
    "DIAGNOSIS",
    "HOSPITAL_EXPIRE_FLAG",
    "HAS_CHARTEVENTS_DATA",
]
NOTES_III = [
    "ROW_ID",
    "SUBJECT_ID",
    "HADM_ID",
    "CHARTDATE",
    "CHARTTIME",
    "STORETIME",
    "CATEGORY",
    "DESCRIPTION",
    "CGID",
    "ISERROR",
    "TEXT",
]
TEXT = 'Admission Date:  [**2150-1-1**]\nHe said ""fine"", then\n\n  slept.'  # CSV-escaped: "" is one quote


def field(value: object) -> str:
    """One CSV field as MIMIC-III writes it: strings quoted, numbers and timestamps bare, NULL empty."""
    if value is None:
        return ""
    if isinstance(value, str) and not value[:4].isdigit():
        return '"' + value + '"'
    return str(value)


def write_csv(path: Path, header: list[str], rows: list[list[object]], *, quoted_header: bool = True) -> Path:
    head = ",".join(f'"{h}"' if quoted_header else h for h in header)
    body = "".join(",".join(field(v) for v in row) + "\n" for row in rows)
    data = (head + "\n" + body).encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def adm_row(
    hadm: int, subject: int, admit: str, disch: str, kind: str, death: str | None = None
) -> list[object]:
    return [
        hadm,
        subject,
        hadm,
        admit,
        disch,
        death,
        kind,
        "EMERGENCY ROOM ADMIT",
        "HOME",
        "Medicare",
        None,
        None,
        None,
        "WHITE",
        None,
        None,
        "CHEST PAIN",
        0,
        1,
    ]


@pytest.fixture
def mimic_iii(tmp_path: Path) -> Path:
    folder = tmp_path / "mimic3"
    folder.mkdir()
    # the public demo subset's style: lower-case, unquoted header
    write_csv(
        folder / "admissions.csv",
        [h.lower() for h in ADM_III],
        [
            adm_row(100, 1, "2150-01-01 08:00:00", "2150-01-05 12:00:00", "EMERGENCY"),
            adm_row(200, 2, "2150-01-02 09:00:00", "2150-01-03 10:00:00", "ELECTIVE", "2150-01-03 10:00:00"),
            adm_row(300, 3, "2151-06-01 00:00:00", "2151-06-02", "URGENT"),
        ],
        quoted_header=False,
    )
    n = [None] * 11
    write_csv(
        folder / "NOTEEVENTS.csv.gz",
        NOTES_III,
        [
            [
                11,
                1,
                100,
                "2150-01-01",
                "2150-01-01 10:00:00",
                "2150-01-01 10:30:00",
                "Nursing",
                "Report",
                17,
                None,
                TEXT,
            ],
            [12, 1, 100, "2150-01-05", None, None, "Discharge summary", "Report", None, None, "Discharge."],
            [
                13,
                1,
                100,
                None,
                None,
                "2150-01-02 00:00:00",
                "Nursing/other",
                "Report",
                5,
                None,
                "Stored only.",
            ],
            [
                14,
                1,
                100,
                "2150-01-03",
                "2150-01-03 03:00:00",
                None,
                "Nursing",
                "Report",
                5,
                "1",
                "Wrong patient.",
            ],
            [
                15,
                1,
                None,
                "2150-01-01",
                "2150-01-01 09:00:00",
                None,
                "Radiology",
                "CHEST",
                None,
                None,
                "No adm.",
            ],
            [
                16,
                9,
                999,
                "2150-01-01",
                "2150-01-01 09:00:00",
                None,
                "ECG",
                "Report",
                None,
                None,
                "Unknown adm.",
            ],
            [
                17,
                2,
                200,
                "2150-01-02",
                "2150-01-02 09:00:00",
                None,
                "Nursing",
                "Report",
                None,
                None,
                "At admit.",
            ],
            [
                18,
                2,
                200,
                "2150-01-04",
                "2150-01-04 08:00:00",
                None,
                "Physician ",
                "Note",
                None,
                None,
                "Late.",
            ],
            [19, 3, 300, *n[:3], "General", "Report", None, None, "No time."],
            [20, 3, 300, "2151-05-31", None, None, "Echo", "Report", None, None, "Before admit."],
        ],
    )
    return folder


def describe(items: Sequence[tuple[datetime, str, bytes, object]]) -> list[tuple[str, int, str]]:
    out = []
    for _, _topic, key, event in items:
        if isinstance(event, NoteEvent):
            out.append(("note", int(key), event.note_id))
        else:
            assert isinstance(event, AdmissionEvent)
            out.append((event.kind, int(key), ""))
    return out


def test_mimic_iii_becomes_events_in_event_time_order(mimic_iii: Path) -> None:
    counts = ReplayCounts()
    items = list(iter_events(ReplaySource.mimic_iii(mimic_iii), counts=counts))
    assert describe(items) == [
        ("admit", 100, ""),
        ("note", 100, "11"),  # CHARTTIME 01-01 10:00
        ("note", 100, "13"),  # STORETIME only, 01-02 00:00
        ("admit", 200, ""),  # 01-02 09:00, before the note charted at the same time
        ("note", 200, "17"),
        ("note", 100, "14"),  # 01-03 03:00, a retraction
        ("discharge", 200, ""),  # 01-03 10:00
        ("note", 200, "18"),  # charted after the discharge
        ("note", 100, "12"),  # CHARTDATE only: 01-05 00:00
        ("discharge", 100, ""),
        ("note", 300, "20"),  # dated the day before its admission
        ("admit", 300, ""),
        ("discharge", 300, ""),
    ]
    times = [t for t, *_ in items]
    assert times == sorted(times)
    notes = {e.note_id: e for _, _, _, e in items if isinstance(e, NoteEvent)}
    first = notes["11"]
    assert first.text == 'Admission Date:  [**2150-1-1**]\nHe said "fine", then\n\n  slept.'
    assert (first.chart_time, first.chart_date, first.admit_time) == (
        datetime(2150, 1, 1, 10, tzinfo=UTC),
        date(2150, 1, 1),
        datetime(2150, 1, 1, 8, tzinfo=UTC),
    )
    assert (first.category, first.subject_id, first.source) == ("Nursing", 1, "mimic-iii")
    assert notes["14"].is_error
    assert not first.is_error
    assert notes["18"].category == "Physician "
    assert notes["12"].chart_time is None
    assert notes["12"].chart_date == date(2150, 1, 5)
    adm = {(e.kind, e.hadm_id): e for _, _, _, e in items if isinstance(e, AdmissionEvent)}
    assert adm[("discharge", 200)].death_time == datetime(2150, 1, 3, 10, tzinfo=UTC)
    assert adm[("discharge", 300)].discharge_time == datetime(2151, 6, 2, tzinfo=UTC)
    assert adm[("admit", 100)].admission_type == "EMERGENCY"
    assert (counts.admits, counts.discharges, counts.notes, counts.retractions) == (3, 3, 7, 1)
    assert (counts.skipped_no_hadm, counts.skipped_unknown_admission, counts.skipped_untimed) == (1, 1, 1)
    assert json.loads(json.dumps(counts.as_dict()))["admission_count"] == 3


def test_naive_source_times_are_read_in_the_source_timezone(mimic_iii: Path) -> None:
    zone = ZoneInfo("America/New_York")
    items = list(iter_events(ReplaySource.mimic_iii(mimic_iii), source_timezone=zone))
    first = next(e for _, _, _, e in items if isinstance(e, NoteEvent) and e.note_id == "11")
    assert first.chart_time == datetime(2150, 1, 1, 10, tzinfo=zone)
    wire = json.loads(first.to_bytes())
    assert wire["chart_time"] == "2150-01-01T10:00:00-05:00"  # every time on the wire has its offset
    assert wire["admit_time"] == "2150-01-01T08:00:00-05:00"
    assert NoteEvent.from_bytes(first.to_bytes()).chart_time == first.chart_time


def test_filters(mimic_iii: Path) -> None:
    source = ReplaySource.mimic_iii(mimic_iii)
    only = describe(list(iter_events(source, hadm_ids=[200])))
    assert only == [("admit", 200, ""), ("note", 200, "17"), ("discharge", 200, ""), ("note", 200, "18")]
    first = describe(list(iter_events(source, limit=1)))
    assert {h for _, h, _ in first} == {100}
    assert len(first) == 6
    window = describe(list(iter_events(source, since=datetime(2150, 1, 2, 12), until=datetime(2150, 1, 5))))
    assert window == [("note", 100, "14"), ("discharge", 200, ""), ("note", 200, "18")]
    assert list(iter_events(source, hadm_ids=[])) == []


def test_mimic_iv_layout(tmp_path: Path) -> None:
    root = tmp_path / "mimic4"
    (root / "hosp").mkdir(parents=True)
    (root / "note").mkdir()
    header = [
        "subject_id",
        "hadm_id",
        "admittime",
        "dischtime",
        "deathtime",
        "admission_type",
        "admit_provider_id",
        "admission_location",
        "discharge_location",
        "insurance",
        "language",
        "marital_status",
        "race",
        "edregtime",
        "edouttime",
        "hospital_expire_flag",
    ]
    row = [
        10015785,
        21000001,
        "2180-05-06 22:23:00",
        "2180-05-07 17:15:00",
        None,
        "EW EMER.",
        "P49AFC",
        "EMERGENCY ROOM",
        "HOME",
        "Medicaid",
        "ENGLISH",
        "WIDOWED",
        "WHITE",
        None,
        None,
        0,
    ]
    write_csv(root / "hosp" / "admissions.csv.gz", header, [row], quoted_header=False)
    note_header = [
        "note_id",
        "subject_id",
        "hadm_id",
        "note_type",
        "note_seq",
        "charttime",
        "storetime",
        "text",
    ]
    write_csv(
        root / "note" / "discharge.csv.gz",
        note_header,
        [
            [
                "10015785-DS-16",
                10015785,
                21000001,
                "DS",
                16,
                "2180-05-07 00:00:00",
                "2180-05-09 15:26:00",
                "Name:  ___   Unit No:   ___\n \nAdmission Date:  ___",
            ]
        ],
        quoted_header=False,
    )
    write_csv(
        root / "note" / "radiology.csv",
        note_header,
        [
            ["10015785-RR-2", 10015785, 21000001, "RR", 2, "2180-05-06 23:00:00", None, "CHEST X-RAY ___"],
            ["10015785-AR-3", 10015785, 21000001, "AR", 3, "2180-05-06 23:00:00", None, "ADDENDUM ___"],
            ["10015785-RR-9", 10015785, None, "RR", 9, "2180-01-01 10:00:00", None, "Outpatient."],
        ],
        quoted_header=False,
    )
    counts = ReplayCounts()
    items = list(iter_events(ReplaySource.mimic_iv(root), counts=counts))
    assert describe(items) == [
        ("admit", 21000001, ""),
        ("note", 21000001, "10015785-RR-2"),
        ("note", 21000001, "10015785-AR-3"),
        ("note", 21000001, "10015785-DS-16"),
        ("discharge", 21000001, ""),
    ]
    notes = [e for *_, e in items if isinstance(e, NoteEvent)]
    assert [(n.category, n.description) for n in notes] == [
        ("Radiology", "Report"),
        ("Radiology", "Addendum"),
        ("Discharge summary", "Report"),
    ]
    assert notes[2].chart_date == date(2180, 5, 7)
    assert notes[2].admit_time == datetime(2180, 5, 6, 22, 23, tzinfo=UTC)
    assert notes[2].text.startswith("Name:  ___")
    assert counts.skipped_no_hadm == 1


def test_missing_and_malformed_files(tmp_path: Path, mimic_iii: Path) -> None:
    with pytest.raises(ReplayError, match="No ADMISSIONS"):
        ReplaySource.mimic_iii(tmp_path)
    (mimic_iii / "NOTEEVENTS.csv.gz").unlink()
    (mimic_iii / "NOTEEVENTS.csv").write_text(
        ",".join(f'"{h}"' for h in NOTES_III) + '\n1,2,3,"unterminated\n'
    )
    with pytest.raises(ReplayError, match="NOTEEVENTS"):
        list(iter_events(ReplaySource.mimic_iii(mimic_iii)))


N_BIG = 6000  # notes of 10 kB: 60 MB of text, replayed in time buckets of about 4 MB


def test_large_sources_are_sorted_in_time_buckets(tmp_path: Path) -> None:
    folder = tmp_path / "big"
    folder.mkdir()
    admissions = [
        adm_row(1000 + i, i, f"2150-01-{1 + i % 28:02d} 00:00:00", "2150-03-01 00:00:00", "URGENT")
        for i in range(50)
    ]
    write_csv(folder / "ADMISSIONS.csv", ADM_III, admissions)
    start = datetime(2150, 1, 1)
    rows: list[list[object]] = []
    for i in range(N_BIG):
        moment = start + timedelta(minutes=(i * 7919) % 80000)  # a shuffled file order, some equal times
        rows.append(
            [
                i + 1,
                i % 50,
                1000 + i % 50,
                moment.strftime("%Y-%m-%d"),
                moment.strftime("%Y-%m-%d %H:%M:%S"),
                None,
                "Nursing",
                "Report",
                None,
                None,
                f"note {i} " + "word " * 2000,
            ]
        )
    write_csv(folder / "NOTEEVENTS.csv", NOTES_III, rows)
    source = ReplaySource.mimic_iii(folder)
    work = tmp_path / "work"
    work.mkdir()
    bucketed = iter_events(
        source, memory_limit="256MB", threads=1, temp_dir=work, sort_budget_bytes=4_000_000
    )
    first = next(bucketed)
    parts = list(work.glob("notestream-replay-*/parts/B=*"))
    rest = list(bucketed)
    assert len(parts) > 10  # really cut into buckets
    assert list(work.iterdir()) == []  # and cleaned up
    single = list(iter_events(source, threads=1))
    assert describe([first, *rest]) == describe(single)
    assert [t for t, *_ in single] == sorted(t for t, *_ in single)
    notes = [e for *_, e in rest if isinstance(e, NoteEvent)]
    assert len(notes) == N_BIG
    assert all(e.text.startswith(f"note {int(e.note_id) - 1} ") for e in notes[:50])


def test_pacer() -> None:
    now = [100.0]
    pacer = Pacer(3600.0, clock=lambda: now[0])
    t0 = datetime(2150, 1, 1)
    assert pacer.delay(t0) == 0.0
    assert pacer.delay(t0 + timedelta(hours=2)) == pytest.approx(2.0)
    now[0] += 1.5
    assert pacer.delay(t0 + timedelta(hours=2)) == pytest.approx(0.5)
    assert pacer.delay(t0 + timedelta(minutes=30)) == 0.0
    assert Pacer(None).delay(t0 + timedelta(days=9)) == 0.0
    with pytest.raises(ReplayError, match="speed"):
        Pacer(0)


def test_pacer_rate_spaces_events() -> None:
    now = [50.0]
    pacer = Pacer(None, clock=lambda: now[0], rate=10.0)
    t0 = datetime(2150, 1, 1)
    waits = []
    for i in range(5):
        waits.append(pacer.delay(t0 + timedelta(hours=i)))
        now[0] += waits[-1]  # the caller sleeps, then sends
        pacer.sent()
    assert waits == pytest.approx([0.0, 0.1, 0.1, 0.1, 0.1])
    now[0] += 3.0  # a stall does not let the feed burst above the rate afterwards
    assert pacer.delay(t0) == 0.0
    pacer.sent()
    assert pacer.delay(t0) == pytest.approx(0.1)
    with pytest.raises(ReplayError, match="rate"):
        Pacer(None, rate=0)


def test_pacer_speed_and_rate_take_the_later() -> None:
    now = [0.0]
    pacer = Pacer(3600.0, clock=lambda: now[0], rate=2.0)
    t0 = datetime(2150, 1, 1)
    assert pacer.delay(t0) == 0.0
    pacer.sent()
    # event time says now, the rate says in half a second
    assert pacer.delay(t0) == pytest.approx(0.5)
    now[0] = 0.5
    pacer.sent()
    # the rate allows it in half a second, event time (3 h at 3600x) only after 3 s
    assert pacer.delay(t0 + timedelta(hours=3)) == pytest.approx(2.5)


def test_pacer_rate_counts_from_the_actual_send() -> None:
    now = [0.0]
    pacer = Pacer(None, clock=lambda: now[0], rate=4.0)
    t0 = datetime(2150, 1, 1)
    sends = []
    for overrun in (0.0, 0.3, 0.0, 0.05, 0.0):  # how much longer than asked each sleep took
        now[0] += pacer.delay(t0) + overrun
        pacer.sent()
        sends.append(now[0])
        now[0] += 0.01  # the send itself
    gaps = [b - a for a, b in itertools.pairwise(sends)]
    assert min(gaps) >= 0.25 - 1e-9  # a late send never lets the next one out sooner
    assert gaps[0] == pytest.approx(0.25 + 0.3)  # the second sleep overran by 0.3 s
    assert gaps[1] == pytest.approx(0.25)  # and the third send still waited a full slot after it


def test_pacer_without_speed_or_rate_never_waits() -> None:
    now = [0.0]
    pacer = Pacer(None, clock=lambda: now[0])
    for hours in (0, 5, 1, 40):
        assert pacer.delay(datetime(2150, 1, 1) + timedelta(hours=hours)) == 0.0
        pacer.sent()


@pytest.mark.slow
async def test_replay_rate_spaces_the_sends(kafka_settings: Settings, mimic_iii: Path) -> None:
    counts = await replay(kafka_settings, ReplaySource.mimic_iii(mimic_iii), rate=20.0)
    events = counts.notes + counts.admits + counts.discharges
    assert events == 13
    notes = read_topic(kafka_settings, "notes", until=lambda m: len(m) >= 7, timeout_s=30)
    admissions = read_topic(kafka_settings, "admissions", until=lambda m: len(m) >= 6, timeout_s=30)
    stamps = sorted(
        [NoteEvent.from_bytes(m.value()).produced_at for m in notes]
        + [AdmissionEvent.from_bytes(m.value()).produced_at for m in admissions]
    )
    assert len(stamps) == events
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(stamps)]
    # each event is stamped as it goes out; the pacer counts 1/rate from that moment (1 ms: the two
    # clocks, monotonic for pacing and UTC for the stamp, are read a few microseconds apart)
    assert min(gaps) >= 1 / 20.0 - 0.001, "never a burst above the rate"
    assert counts.wall_s >= (events - 1) / 20.0


@pytest.mark.slow
async def test_replay_to_kafka(kafka_settings: Settings, mimic_iii: Path) -> None:
    seen: list[int] = []
    counts = await replay(
        kafka_settings, ReplaySource.mimic_iii(mimic_iii), on_event=lambda c: seen.append(c.notes)
    )
    assert (counts.notes, counts.admits, counts.discharges) == (7, 3, 3)
    assert len(seen) == 13
    notes = read_topic(kafka_settings, "notes", until=lambda m: len(m) >= 7, timeout_s=30)
    admissions = read_topic(kafka_settings, "admissions", until=lambda m: len(m) >= 6, timeout_s=30)
    assert len(notes) == 7
    assert len(admissions) == 6
    by_hadm: dict[int, list[NoteEvent]] = {}
    for message in notes:
        event = NoteEvent.from_bytes(message.value())
        assert int(message.key()) == event.hadm_id
        by_hadm.setdefault(event.hadm_id, []).append(event)
    assert [e.note_id for e in by_hadm[100]] == ["11", "13", "14", "12"]  # one partition keeps the order
    assert all(e.produced_at.tzinfo is not None for es in by_hadm.values() for e in es)


@pytest.mark.slow
async def test_replay_speed(kafka_settings: Settings, mimic_iii: Path) -> None:
    # admission 200 spans 2150-01-02 09:00 .. 2150-01-04 08:00: 47 hours of event time
    counts = await replay(
        kafka_settings, ReplaySource.mimic_iii(mimic_iii), hadm_ids=[200], speed=47 * 3600 / 1.0
    )
    assert counts.notes == 2
    assert 0.9 <= counts.wall_s < 10


@pytest.mark.slow
def test_replay_command(kafka_settings: Settings, mimic_iii: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from notestream.stream.cli_data import register_data

    app = typer.Typer()
    register_data(app)
    runner = CliRunner()
    args = [
        "replay",
        "--mimic-iii",
        str(mimic_iii),
        "--broker",
        kafka_settings.broker,
        "--topic-prefix",
        kafka_settings.topic_prefix,
        "--hadm-ids",
        "100,300",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    assert (counts["notes"], counts["admits"], counts["admission_count"]) == (5, 2, 2)
    notes = read_topic(kafka_settings, "notes", until=lambda m: len(m) >= 5, timeout_s=30)
    assert sorted(NoteEvent.from_bytes(m.value()).note_id for m in notes) == ["11", "12", "13", "14", "20"]
    both = runner.invoke(app, ["replay", "--mimic-iii", str(mimic_iii), "--mimic-iv", str(mimic_iii)])
    assert both.exit_code != 0
    assert "exactly one" in str(both.exception)


@pytest.mark.parametrize("kind", ["mimic-iii", "mimic-iv"])
def test_synthetic_cohorts_replay_every_note_once(tmp_path: Path, kind: str) -> None:
    """notestream.training.synth's files (the demo's input) replay completely: sent + skipped = written."""
    from notestream.training.synth import write_mimic_iii, write_mimic_iv

    if kind == "mimic-iii":
        summary = write_mimic_iii(
            tmp_path, n_patients=30, seed=5, notes_scale=0.3, words_scale=0.2, compress=True
        )
        source = ReplaySource.mimic_iii(tmp_path)
    else:
        summary = write_mimic_iv(tmp_path, n_patients=30, seed=5, notes_scale=0.3, words_scale=0.2)
        source = ReplaySource.mimic_iv(tmp_path)
    counts = ReplayCounts()
    items = list(iter_events(source, counts=counts))
    skipped = counts.skipped_no_hadm + counts.skipped_unknown_admission + counts.skipped_untimed
    assert counts.notes + skipped == summary.notes
    assert counts.admits == counts.discharges == summary.admissions
    ids = [e.note_id for *_, e in items if isinstance(e, NoteEvent)]
    assert len(ids) == len(set(ids))
    assert [t for t, *_ in items] == sorted(t for t, *_ in items)
    opened: set[int] = set()
    for _, topic, key, event in items:
        if isinstance(event, AdmissionEvent):
            assert (event.kind == "admit") == (int(key) not in opened)  # admit once, before its discharge
            opened.add(int(key))
        else:
            assert isinstance(event, NoteEvent)
            assert event.admit_time is not None
            assert topic == "notes"
