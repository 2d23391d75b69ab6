"""`notestream demo`: the whole system on one machine with no services, start to finish.

1. synthesize a MIMIC-III-format cohort (:mod:`notestream.training.synth`);
2. prepare the early-notes readmission task in event-time mode (every note chunked alone, as the
   stream scores it) and fine-tune a small BERT on it (:mod:`notestream.training.prepare`, :mod:`notestream.training.finetune`);
3. start the embedded Kafka-protocol broker (:mod:`notestream.stream.embedded`) unless ``--broker`` names a real
   one, and the worker in its own process, with the in-memory store unless ``--store`` names Redis;
4. replay the held-out admissions (every cohort admission not used for training or validation) as a
   live feed (:func:`notestream.stream.replay.replay`) at ``rate`` events per second (default
   :data:`DEFAULT_RATE`, well below what the worker can score, so the latencies in the summary are
   the service's and not time spent queueing behind a backlog; ``rate=0`` sends as fast as possible)
   while a reader shows a live table of risk updates and alerts (on a terminal; in a log, one line
   every few seconds and the final table);
5. score the same notes offline with the same model, and write ``DIR/summary.json`` (+ ``summary.png``):
   streamed vs offline scores, the spread of the scores (``score_p10/p50/p90`` of admissions,
   ``chunk_prob_p10/p50/p90`` of chunks), alerts with their precision and recall, latencies at the
   replay rate used, and ``engine_load``: the in-window chunks' arrival rate over the engine's batched
   offline rate (chunks/s), a lower bound of the worker's load since it scores note by note (measured
   figures: README, "What the demo shows").

The worker's in-memory store lives in the worker process, so the demo reads final states from the
``risk-updates`` topic: the update with the highest ``seq`` per admission. The store journals every
change to ``DIR/store.jsonl`` (chunk probabilities only, never note text), which
``notestream explain --model DIR/model --admission HADM_ID --snapshot DIR/store.jsonl`` reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console
from rich.live import Live
from rich.table import Table

from notestream.core.errors import NotestreamError
from notestream.core.settings import Settings
from notestream.stream.events import NoteEvent, RiskAlert, RiskUpdate
from notestream.stream.pipeline import latency_ms

if TYPE_CHECKING:
    from notestream.models.ledger import AdmissionLedger
    from notestream.models.spec import ModelSpec

console = Console(stderr=True)

DEFAULT_RATE = 20.0
"""Events per second the demo replays at by default (admits, notes and discharges; about a quarter are
notes inside the window): a small part of the worker's capacity, so latencies are the service's."""
LOG_EVERY_S = 5.0
"""Seconds between the one-line progress reports when stderr is not a terminal."""


class DemoError(NotestreamError):
    """The demo could not finish: the worker or the replay failed, or the stream did not complete."""


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo; the defaults take a few minutes on 2 CPU cores."""

    out: Path = Path("notestream-demo")
    broker: str | None = None
    store: str | None = None
    patients: int = 600
    seed: int = 0
    hours: float = 72.0
    hidden: int = 64
    max_length: int = 96
    steps: int = 400
    """Fine-tuning steps of the small BERT (fewer and it stays near the base rate: every score ~0.29)."""
    batch_size: int = 32
    lr: float = 2e-3
    """Peak learning rate of the fine-tuning (10% linear warm-up, then linear decay)."""
    speed: float = 0.0
    """Replay speed factor (3600 = one hour of event time per second); 0: no event-time pacing."""
    rate: float = DEFAULT_RATE
    """At most this many replayed events per second (with ``speed``: whichever is slower); 0: no limit."""
    live: bool = True
    timeout_s: float = 600.0


@dataclass
class Feed:
    """What the replay sends for the held-out admissions, and what the worker must end up with."""

    labels: dict[int, int]
    notes: list[NoteEvent] = field(default_factory=list)
    expected_notes: dict[int, int] = field(default_factory=dict)
    """Live in-window notes per admission (what the final update's n_notes must be)."""


# --- 1-2: data and model ---------------------------------------------------------------------------
def build_model(cfg: DemoConfig) -> tuple[Path, Path, Path]:
    """Synthesize, prepare, fine-tune (:func:`notestream.training.quickstart.quick_model`); returns the mimic, data
    and model folders."""
    from notestream.training.quickstart import quick_model

    console.log(
        f"Synthesizing {cfg.patients} patients, preparing the {cfg.hours:g}-hour early-notes readmission task "
        f"and fine-tuning a small BERT ({cfg.steps} steps of {cfg.batch_size}, lr {cfg.lr:g}) in {cfg.out} ..."
    )
    result = quick_model(
        cfg.out,
        n_patients=cfg.patients,
        seed=cfg.seed,
        hours=cfg.hours,
        hidden=cfg.hidden,
        max_length=cfg.max_length,
        max_steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
    )
    console.log(f"Model: {result.model_dir} (validation metrics {result.metrics.get('val', {})}).")
    return result.mimic_dir, result.data_dir, result.model_dir


def held_out(data: Path) -> dict[int, int]:
    """Labels of the cohort admissions that training and validation did not use."""
    import pandas as pd

    cohort = pd.read_csv(data / "cohort.csv")
    used: set[int] = set()
    for name in ("train.csv", "val.csv"):
        used |= set(pd.read_csv(data / name, usecols=["ID"])["ID"].astype(int))
    rest = cohort[~cohort["HADM_ID"].isin(used)]
    return dict(zip(rest["HADM_ID"].astype(int), rest["OUTPUT_LABEL"].astype(int), strict=True))


def plan_feed(mimic: Path, model: Path, labels: dict[int, int]) -> Feed:
    """The notes the replay will send, and each admission's live in-window note count."""
    from notestream.models.spec import ModelSpec
    from notestream.stream.replay import ReplaySource, iter_events

    spec = ModelSpec.read(model)
    feed = Feed(labels)
    for _, _, _, event in iter_events(ReplaySource.mimic_iii(mimic), hadm_ids=list(labels)):
        if isinstance(event, NoteEvent):
            feed.notes.append(event)
    ledger = live_notes(feed.notes, spec)
    counts = {h: len(ledger.live(h)) for h in ledger.admissions()}
    feed.expected_notes = {h: n for h, n in counts.items() if n}
    return feed


def live_notes(notes: list[NoteEvent], spec: ModelSpec) -> AdmissionLedger[int, NoteEvent]:
    """The notes a worker keeps of this feed: in the model's window, latest revision, not retracted."""
    from notestream.models.ledger import AdmissionLedger
    from notestream.stream.pipeline import in_window

    ledger = AdmissionLedger[int, NoteEvent]()
    for note in notes:
        if note.is_error or in_window(note, spec):
            ledger.apply(int(note.hadm_id), note.note_id, note.revision, note.is_error, note)
    return ledger


@dataclass
class Offline:
    """Offline scores of the held-out admissions, their chunk probabilities, and the engine's pace."""

    scores: dict[int, float | None]
    chunk_probs: list[float]
    score_s: float
    """Seconds the engine took to score every chunk (one request per admission)."""

    @property
    def chunks_per_s(self) -> float | None:
        return len(self.chunk_probs) / self.score_s if self.score_s > 0 else None


async def offline_scores(model: Path, feed: Feed) -> Offline:
    """Offline scores of the same notes with the same model (engine, note_chunks, aggregate)."""
    from notestream.models.aggregate import admission_score
    from notestream.models.engine import InferenceEngine
    from notestream.models.prep import note_chunks

    engine = InferenceEngine(model, devices=["cpu"])
    await engine.start()
    try:
        spec, tokenizer = engine.spec, engine.classifiers[0].tokenizer
        ledger = live_notes(feed.notes, spec)
        result = Offline({}, [], 0.0)
        for hadm in ledger.admissions():
            held = ledger.live(hadm)
            chunks = [c for note in held.values() for c in note_chunks(note.text, spec, tokenizer)]
            started = time.perf_counter()
            probs = await engine.score(chunks) if chunks else []
            result.score_s += time.perf_counter() - started
            result.chunk_probs.extend(probs)
            result.scores[hadm] = admission_score(probs, spec.c) if chunks else None
        return result
    finally:
        await engine.close()


# --- 3-4: the live stream --------------------------------------------------------------------------
@dataclass
class Watch:
    """Everything the reader saw on risk-updates, and the alerts it derived from it."""

    updates: list[RiskUpdate] = field(default_factory=list)
    last: dict[int, RiskUpdate] = field(default_factory=dict)
    alerts: list[RiskAlert] = field(default_factory=list)
    recent: deque[tuple[RiskUpdate, RiskAlert | None]] = field(default_factory=lambda: deque(maxlen=14))
    replay_s: float = 0.0
    sent: int = 0
    """Events the replay has sent so far."""

    def finished(self, expected: dict[int, int]) -> int:
        """Admissions whose final update holds all their in-window notes."""
        return sum(1 for h, n in expected.items() if (u := self.last.get(h)) and u.final and u.n_notes == n)

    def done(self, expected: dict[int, int]) -> bool:
        return self.finished(expected) == len(expected)

    def status(self, expected: dict[int, int]) -> str:
        """One line for logs: events sent, risk updates, alerts, admissions done."""
        return (
            f"events sent {self.sent}  risk updates {len(self.updates)}  alerts {len(self.alerts)}  "
            f"admissions done {self.finished(expected)}/{len(expected)}"
        )

    def table(self, expected: dict[int, int]) -> Table:
        table = Table(title=self.status(expected))
        for col in ("hadm_id", "seq", "notes", "chunks", "score", "change", "alert"):
            table.add_column(col, justify="right")
        for u, alert in self.recent:
            mark = f"[red]{alert.state}[/red]" if alert else ""
            table.add_row(
                str(u.hadm_id),
                str(u.seq),
                str(u.n_notes),
                str(u.n_chunks),
                f"{u.score:.3f}" if u.score is not None else "-",
                u.change or "repeat",
                mark,
            )
        return table


async def watch_updates(settings: Settings, watch: Watch, threshold: float, stop: asyncio.Event) -> None:
    """Read risk-updates from the start, track the last update per admission, derive alerts."""
    from notestream.core.topics import RISK_UPDATES
    from notestream.stream.alerts import AlertPolicy, AlertTracker
    from notestream.stream.kafka import consumer

    tracker = AlertTracker(
        AlertPolicy(threshold=threshold, hysteresis=min(settings.alert_hysteresis, threshold))
    )
    reader = consumer(settings, settings.topic(RISK_UPDATES))
    await reader.start()
    try:
        while not stop.is_set():
            batches = await reader.getmany(timeout_ms=200, max_records=1000)
            for records in batches.values():
                for record in records:
                    update = RiskUpdate.from_bytes(record.value)
                    watch.updates.append(update)
                    if (hadm := int(update.hadm_id)) not in watch.last or update.seq >= watch.last[hadm].seq:
                        watch.last[hadm] = update
                    alert = tracker.observe(update)
                    if alert is not None:
                        watch.alerts.append(alert)
                    watch.recent.append((update, alert))
    finally:
        await reader.stop()


async def stream_feed(
    cfg: DemoConfig, settings: Settings, mimic: Path, feed: Feed, threshold: float
) -> Watch:
    """Worker process + replay + reader until every held-out admission has its final update."""
    from notestream.stream.replay import ReplaySource, replay
    from notestream.stream.worker import spawn_worker, wait_ready

    watch, stop = Watch(), asyncio.Event()
    ready, log = cfg.out / "worker.ready", cfg.out / "worker.log"
    worker = spawn_worker(settings, log, ready_file=ready)
    reader = asyncio.create_task(watch_updates(settings, watch, threshold, stop))
    feeding: asyncio.Task[Any] | None = None
    try:
        console.log(f"Starting the worker (its log: {log}) ...")
        await asyncio.to_thread(wait_ready, worker, ready)
        source = ReplaySource.mimic_iii(mimic)
        console.log(
            f"Replaying {f'at most {cfg.rate:g} events/s' if cfg.rate else 'as fast as possible'}"
            f"{f', {cfg.speed:g}x event time' if cfg.speed else ''} ..."
        )

        def sent(_: object) -> None:
            watch.sent += 1

        feeding = asyncio.create_task(
            replay(
                settings,
                source,
                speed=cfg.speed or None,
                rate=cfg.rate or None,
                hadm_ids=list(feed.labels),
                on_event=sent,
            )
        )
        deadline = time.monotonic() + cfg.timeout_s
        # A live table redraws in place on a terminal; in a log file it would be printed over and over,
        # so there the demo writes one status line every LOG_EVERY_S and the final table once.
        live = (
            Live(watch.table(feed.expected_notes), console=console, refresh_per_second=4)
            if cfg.live and console.is_terminal
            else None
        )
        next_log = time.monotonic() + LOG_EVERY_S
        with live if live is not None else contextlib.nullcontext():
            while not (feeding.done() and watch.done(feed.expected_notes)):
                if worker.poll() is not None:
                    raise DemoError(f"The worker exited with code {worker.returncode}; see {log}.")
                if feeding.done() and feeding.exception() is not None:
                    raise DemoError(f"The replay failed: {feeding.exception()}") from feeding.exception()
                if time.monotonic() > deadline or reader.done():
                    break
                if live is not None:
                    live.update(watch.table(feed.expected_notes))
                elif time.monotonic() >= next_log:
                    console.log(watch.status(feed.expected_notes))
                    next_log = time.monotonic() + LOG_EVERY_S
                await asyncio.sleep(0.25)
            if live is not None:
                live.update(watch.table(feed.expected_notes))
        if live is None and cfg.live:
            console.print(watch.table(feed.expected_notes))
        counts = await feeding
        watch.replay_s = counts.wall_s
        console.log(
            f"Replayed {watch.sent} events ({counts.notes} notes) of {len(counts.admissions)} admissions "
            f"in {counts.wall_s:.1f} s."
        )
    finally:
        if feeding is not None and not feeding.done():
            feeding.cancel()
        stop.set()
        await asyncio.gather(reader, *([feeding] if feeding else []), return_exceptions=True)
        worker.terminate()
        try:
            await asyncio.to_thread(worker.wait, 30)
        except Exception:
            worker.kill()
    missing = [
        h
        for h, n in feed.expected_notes.items()
        if not ((u := watch.last.get(h)) and u.final and u.n_notes == n)
    ]
    if missing:
        raise DemoError(
            f"{len(missing)} admissions have no final update after {cfg.timeout_s:g} s; see {log}."
        )
    return watch


# --- 5: summary ------------------------------------------------------------------------------------
def quantiles(values: list[float] | np.ndarray, name: str) -> dict[str, float | None]:
    """``{name}_p10``, ``_p50``, ``_p90`` of ``values`` (None when empty).

    >>> quantiles([0.1, 0.2, 0.3, 0.4, 0.5], "score")
    {'score_p10': 0.14, 'score_p50': 0.3, 'score_p90': 0.46}
    >>> quantiles([], "x")["x_p50"] is None
    True
    """
    arr = np.asarray(values, dtype=float)
    return {
        f"{name}_p{q}": round(float(np.percentile(arr, q)), 6) if arr.size else None for q in (10, 50, 90)
    }


def summarize(feed: Feed, watch: Watch, offline: Offline, *, threshold: float, rate: float) -> dict[str, Any]:
    """The figures of the run (summary.json)."""
    from notestream.training.metrics import admission_metrics, calibration_metrics

    scores = offline.scores
    both = [h for h in feed.expected_notes if scores.get(h) is not None]
    streamed = np.array([watch.last[h].score for h in both], dtype=float)
    reference = np.array([scores[h] for h in both], dtype=float)
    labels = [feed.labels[h] for h in both]
    changes = [u for u in watch.updates if u.change in ("new", "revision", "retracted") and u.produced_at]
    latency = np.array([ms for u in changes if (ms := latency_ms(u)) is not None], dtype=float)
    notes = [n for n in feed.notes if n.hadm_id in feed.expected_notes]
    first = min(n.produced_at for n in notes) if notes else None
    span = (
        (max(u.emitted_at for u in watch.updates) - first).total_seconds() if first and watch.updates else 0.0
    )
    flagged, truth = streamed >= threshold, np.array(labels, dtype=int) == 1
    risks = [r for h in both if (r := watch.last[h].risk) is not None]
    calibrated = calibration_metrics(labels, risks) if both and len(risks) == len(both) else None
    chunks = len(offline.chunk_probs)
    capacity = offline.chunks_per_s
    arrival = chunks / watch.replay_s if watch.replay_s > 0 else None
    return {
        "admissions": len(feed.expected_notes),
        "notes": sum(feed.expected_notes.values()),
        "notes_replayed": len(feed.notes),
        "risk_updates": len(watch.updates),
        "alerts": len(watch.alerts),
        "alerted_admissions": len({a.hadm_id for a in watch.alerts if a.state == "raised"}),
        # at the final scores: how many admissions stand above the model's threshold (RP80 on
        # validation: the lowest threshold with precision > 0.8 there), and how right they are
        "above_threshold_at_end": int(np.sum(flagged)),
        "positives": int(np.sum(truth)),
        # the held-out admissions are replayed at the cohort's own prevalence (prepare's default for
        # streaming models), so these are the figures a hospital would see
        "prevalence": float(np.mean(truth)) if both else None,
        "brier": calibrated["brier"] if calibrated else None,
        "ece": calibrated["ece"] if calibrated else None,
        "alerts_per_100_admissions": 100.0 * float(np.mean(flagged)) if both else None,
        "alert_precision": float(np.sum(flagged & truth) / np.sum(flagged)) if np.any(flagged) else None,
        "alert_recall": float(np.sum(flagged & truth) / np.sum(truth)) if np.any(truth) else None,
        "streamed_auroc": admission_metrics(labels, streamed)["auroc"] if both else None,
        "offline_auroc": admission_metrics(labels, reference)["auroc"] if both else None,
        "max_abs_score_diff": float(np.max(np.abs(streamed - reference))) if both else 0.0,
        "scored_admissions": len(both),
        **quantiles(streamed, "score"),
        **quantiles(offline.chunk_probs, "chunk_prob"),
        "chunks": chunks,
        "chunks_per_s": chunks / span if span > 0 else None,
        # the latencies hold for this replay rate (0: as fast as possible, where the worker works
        # through a backlog and the latencies include queueing); `engine_load` is the in-window chunks'
        # arrival rate over what the engine scores offline per second (batched: a lower bound)
        "replay_rate_per_s": rate,
        "latency_p50_ms": float(np.percentile(latency, 50)) if len(latency) else None,
        "latency_p99_ms": float(np.percentile(latency, 99)) if len(latency) else None,
        "offline_chunks_per_s": capacity,
        "engine_load": arrival / capacity if arrival is not None and capacity else None,
        "replay_s": round(watch.replay_s, 3),
    }


def plot(path: Path, watch: Watch, offline: dict[int, float | None], summary: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    both = [h for h, s in offline.items() if s is not None and h in watch.last]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.scatter([offline[h] for h in both], [watch.last[h].score for h in both], s=8)
    left.set(
        xlabel="offline score",
        ylabel="final streamed score",
        title=f"max |diff| = {summary['max_abs_score_diff']:.2e}",
    )
    lat = [ms for u in watch.updates if u.change and (ms := latency_ms(u)) is not None]
    right.hist(lat, bins=40)
    right.set(
        xlabel="note produced -> update emitted (ms)",
        ylabel="updates",
        title=f"p50 {summary['latency_p50_ms'] or 0:.0f} ms, p99 {summary['latency_p99_ms'] or 0:.0f} ms "
        f"at {summary['replay_rate_per_s'] or 'unlimited'} events/s",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run the demo; returns the summary (also written to ``cfg.out/summary.json``)."""
    from notestream.models.spec import ModelSpec
    from notestream.stream.embedded import EmbeddedBroker
    from notestream.stream.topics import create_topics

    cfg.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    mimic, data, model = build_model(cfg)
    spec = ModelSpec.read(model)
    feed = plan_feed(mimic, model, held_out(data))
    console.log(
        f"Held out {len(feed.labels)} admissions, {len(feed.expected_notes)} with notes in the window."
    )
    run_id = uuid.uuid4().hex[:8]
    # The in-memory store keeps a journal in the output folder, so that `notestream explain
    # --snapshot DIR/store.jsonl` can inspect the run afterwards. A journal of an earlier run with the
    # same cohort would make every note a duplicate: start from an empty one.
    journal = (cfg.out / "store.jsonl").resolve()
    journal.unlink(missing_ok=True)
    broker = None if cfg.broker else EmbeddedBroker().start()
    try:
        settings = Settings(
            broker=cfg.broker or (broker.url if broker else ""),
            store=cfg.store or f"memory://{journal}",
            # a Redis given with --store holds each run in its own namespace (each run trains a model)
            store_namespace=f"notestream-demo-{run_id}",
            model_dir=model,
            topic_prefix=f"demo-{run_id}.",
            consumer_group=f"notestream-demo-{run_id}",
            devices=["cpu"],
            session_timeout_s=10.0,
        )
        if broker is not None:
            asyncio.run(create_topics(settings, wait_s=30))
        threshold = spec.threshold if spec.threshold is not None else 0.5
        watch = asyncio.run(stream_feed(cfg, settings, mimic, feed, threshold))
    finally:
        if broker is not None:
            broker.close()
    offline = asyncio.run(offline_scores(model, feed))
    summary = summarize(feed, watch, offline, threshold=threshold, rate=cfg.rate)
    summary.update(
        threshold=threshold,
        wall_s=time.monotonic() - started,
        store_namespace=settings.store_namespace,
        config={k: str(v) for k, v in asdict(cfg).items()},
    )
    (cfg.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    plot(cfg.out / "summary.png", watch, offline.scores, summary)
    table = Table(title="notestream demo")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if key != "config":
            table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)
    console.log(f"Summary: {cfg.out / 'summary.json'} and {cfg.out / 'summary.png'}")
    return summary
