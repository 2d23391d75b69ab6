"""End to end: a worker process against the embedded broker (tansu) and a real redis-server."""

from __future__ import annotations

import json
import socket
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from notestream.core.settings import Settings
from notestream.core.topics import ADMISSIONS, NOTES, NOTES_DLQ, RISK_UPDATES
from notestream.models.prep import note_chunks
from notestream.stream.events import DeadLetter, RiskUpdate, admission_key
from tests.fixtures.kafka import WorkerProcess, produce, read_topic
from tests.stream.feed import OfflineScorer, discharges, feed, final_updates

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def metric(text: str, name: str) -> float:
    """The value of an unlabelled sample in a Prometheus text page."""
    [line] = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(line.split()[1])


def test_replay_streams_offline_scores_and_dead_letters_bad_input(
    kafka_settings: Settings,
    redis_url: str,
    tiny_model_dir: Path,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    settings = kafka_settings.model_copy(
        update={
            "store": redis_url,
            "model_dir": tiny_model_dir,
            "max_note_bytes": 20_000,
            "take_max": 16,
            "metrics_port": free_port(),
            "metrics_host": "127.0.0.1",
        }
    )
    admissions, notes = feed(6, 4, seed=11)
    long_notes = [n for n in notes if len(n.text.split()) > 20]
    # duplicates, a revision and a retraction in the feed
    revised = long_notes[0].model_copy(update={"revision": 2, "text": long_notes[1].text})
    retracted = long_notes[2].model_copy(update={"is_error": True, "text": ""})
    stream = [*notes, notes[0], notes[5], revised, long_notes[0], retracted]
    good = {n.hadm_id for n in stream}
    bad: list[tuple[str, bytes]] = [
        ("invalid_json", b'{"note_id": "x", "hadm_id": 100000,'),
        (
            "schema",
            json.dumps({"note_id": "x", "hadm_id": 100000, "subject_id": " padded ", "text": "t"}).encode(),
        ),
        ("missing_admission_id", json.dumps({"note_id": "x", "subject_id": 1, "text": "t"}).encode()),
        (
            "text_too_large",
            json.dumps({"note_id": "x", "subject_id": 1, "hadm_id": 100001, "text": "w " * 15_000}).encode(),
        ),
        ("non_utf8", b'{"note_id": "x", "subject_id": 1, "hadm_id": 100002, "text": "\xff\xfe"}'),
    ]
    bad_admission = b'{"kind": "admit", "subject_id": 1, "hadm_id": 9}'  # no admit_time
    produce(
        settings,
        ADMISSIONS,
        [(b"9", bad_admission)] + [(admission_key(a.hadm_id), a.to_bytes()) for a in admissions],
    )
    messages = [(admission_key(n.hadm_id), n.to_bytes()) for n in stream[:10]]
    messages += [(b"100000", raw) for _, raw in bad]  # bad input in the middle of the feed
    messages += [(admission_key(n.hadm_id), n.to_bytes()) for n in stream[10:]]
    produce(settings, NOTES, messages)
    produce(settings, ADMISSIONS, [(admission_key(a.hadm_id), a.to_bytes()) for a in discharges(admissions)])

    scorer = OfflineScorer(tiny_model_dir)
    offline = scorer.scores(stream)
    live_notes = {h: 4 - (h == retracted.hadm_id) for h in good}
    worker = start_worker(settings)

    def done(msgs: list[Any]) -> bool:
        last = final_updates(msgs)
        return len(last) == len(good) and all(u.final and u.n_notes == live_notes[h] for h, u in last.items())

    updates = read_topic(
        settings, RISK_UPDATES, until=done, timeout_s=90, alive=lambda: worker.proc.poll() is None
    )
    assert done(updates), worker.output()[-3000:]
    last = final_updates(updates)
    for hadm, score in offline.items():
        assert score is not None
        assert last[hadm].score == pytest.approx(score, abs=1e-6)
    # seq rises by one per applied change (no gaps once notes flow); repeats carry the same state
    by_adm: dict[int | str, dict[int, RiskUpdate]] = {}
    for msg in updates:
        u = RiskUpdate.from_bytes(msg.value())
        seen = by_adm.setdefault(u.hadm_id, {})
        if u.seq in seen:
            assert (seen[u.seq].score, seen[u.seq].n_notes) == (u.score, u.n_notes)
        seen[u.seq] = u
    for seqs in by_adm.values():
        assert sorted(seqs) == list(range(min(seqs), max(seqs) + 1))
    # every update names the model by its fingerprint, not only its folder name (alerts key on it)
    from notestream.models.fingerprint import model_fingerprint

    assert {u.model_fingerprint for seqs in by_adm.values() for u in seqs.values()} == {
        model_fingerprint(tiny_model_dir)
    }
    emitted = b"".join(m.value() for m in updates).decode()
    assert all(n.text[:40] not in emitted for n in long_notes), "note text must never leave the notes topic"

    letters = [
        DeadLetter.from_bytes(m.value())
        for m in read_topic(settings, NOTES_DLQ, until=lambda ms: len(ms) >= len(bad) + 1, timeout_s=30)
    ]
    [admission_letter] = [dl for dl in letters if dl.topic == settings.topic(ADMISSIONS)]
    assert (admission_letter.reason, admission_letter.original) == ("schema", bad_admission)
    assert "admit_time" in admission_letter.detail
    letters.remove(admission_letter)
    assert sorted(dl.reason for dl in letters) == sorted(reason for reason, _ in bad)
    originals = dict(bad)
    for dl in letters:
        assert dl.original == originals[dl.reason]
        assert dl.topic == settings.topic(NOTES)
        assert dl.partition is not None
        assert dl.offset is not None
        assert dl.detail
    # the worker's Prometheus endpoint counted what it did, and it is ready
    base = f"http://127.0.0.1:{settings.metrics_port}"
    deadline = time.monotonic() + 30  # the last batch's counters follow its emit by a moment
    while True:
        metrics = httpx.get(f"{base}/metrics", timeout=5).text
        if (
            metric(metrics, "notestream_notes_in_total") >= len(stream) + len(bad)
            or time.monotonic() > deadline
        ):
            break
        time.sleep(0.2)
    assert metric(metrics, "notestream_notes_in_total") == len(stream) + len(bad)
    assert metric(metrics, "notestream_updates_out_total") >= len(stream) - 1
    dead = Counter(reason for reason, _ in bad) + Counter(["schema"])  # and the bad admission
    for reason, n in dead.items():
        assert metric(metrics, f'notestream_dead_letters_total{{reason="{reason}"}}') == n
    # engine batches, from the engine's stats after each notes batch
    chunks = metric(metrics, "notestream_chunks_scored_total")
    expected_chunks = [
        len(note_chunks(n.text, scorer.spec, scorer.tokenizer)) for n in stream if not n.is_error
    ]
    assert chunks == sum(expected_chunks) > 0  # every scored note's chunks, duplicates included
    batches = metric(metrics, "notestream_batch_size_count")
    assert 0 < batches <= chunks
    assert metric(metrics, "notestream_batch_size_sum") == chunks
    assert metric(metrics, "notestream_batch_tokens_count") == batches
    assert metric(metrics, "notestream_batch_tokens_sum") >= chunks
    assert metric(metrics, "notestream_padding_efficiency_count") == batches
    assert 0 < metric(metrics, "notestream_padding_efficiency_sum") / batches <= 1
    # store latency of every note applied and every admission event recorded
    store_ops = 'notestream_store_seconds_count{{op="{}"}}'
    assert metric(metrics, store_ops.format("apply_note")) >= len(stream)
    assert metric(metrics, store_ops.format("record_admission")) == 2 * len(admissions)
    assert metric(metrics, 'notestream_store_seconds_sum{op="apply_note"}') > 0
    assert metric(metrics, "notestream_note_to_update_seconds_count") >= len(notes)
    assert metric(metrics, "notestream_engine_queue_depth") == 0
    ready = httpx.get(f"{base}/readyz", timeout=5)
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"store": True, "engine": True, "batches": True, "broker": True}
    assert worker.stop() == 0, worker.output()[-3000:]
