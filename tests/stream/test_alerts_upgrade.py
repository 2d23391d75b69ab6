"""The documented model upgrade (docs/operations.md), alerts included, over the mock Kafka cluster.

Two model folders (``readmission-v1`` and a differently trained ``readmission-v2``) score one feed
through the worker's pipeline (:class:`notestream.stream.pipeline.Pipeline`: engine, store, updates), each in its
own store; their risk updates go to one risk-updates topic as the two worker groups would send them.
One alerts service per model (``--model``, its own consumer group and threshold) runs beside them,
is restarted in the middle of the overlap (its state rebuilt from risk-alerts, which holds the other
model's alerts too), and the old model is retired at the cut-over. Every alert on risk-alerts must be
what that model's own scores give under its own threshold, in one uninterrupted tracker.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from notestream.core.settings import Settings
from notestream.models.build import build_small_bert
from notestream.models.engine import InferenceEngine
from notestream.models.fingerprint import model_fingerprint
from notestream.models.spec import ModelSpec
from notestream.stream.alerts import AlertPolicy, AlertService, AlertTracker
from notestream.stream.alerts_service import retire_alerts, run_alerts
from notestream.stream.events import AdmissionEvent, NoteEvent, RiskAlert, RiskUpdate, admission_key
from notestream.stream.pipeline import Pipeline
from notestream.stream.store import MemoryRiskStore
from tests.fixtures.kafka import produce, read_topic
from tests.stream.feed import discharges, feed

pytestmark = pytest.mark.slow


class Worker:
    """One model's worker path: its engine, its own store (namespace) and pipeline."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.fingerprint = model_fingerprint(folder)
        self.engine = InferenceEngine(folder, devices=["cpu"], max_wait_ms=1.0)
        self.pipeline: Pipeline | None = None

    async def start(self) -> None:
        await self.engine.start()
        self.pipeline = Pipeline(
            self.engine,
            MemoryRiskStore(),
            self.engine.spec,
            model=self.folder.name,
            fingerprint=self.fingerprint,
        )

    async def events(self, events: Sequence[AdmissionEvent | NoteEvent]) -> list[RiskUpdate]:
        """The risk updates of these events, in the order the worker emits them (notes in batches of 4)."""
        assert self.pipeline is not None
        out: list[RiskUpdate] = []
        notes: list[NoteEvent] = []
        for event in [*events, None]:
            if isinstance(event, NoteEvent):
                notes.append(event)
                if len(notes) < 4:
                    continue
            if notes:
                out += (await self.pipeline.process(notes)).updates
                notes = []
            if isinstance(event, AdmissionEvent):
                final = await self.pipeline.admission(event)
                out += [final] if final is not None else []
        return out


def policy_of(folder: Path) -> AlertPolicy:
    """The model folder's threshold (written by `train evaluate`), hysteresis from the settings."""
    return AlertPolicy.from_settings(Settings(alert_hysteresis=0.002), model_dir=folder)


def signature(alerts: Sequence[RiskAlert]) -> list[tuple[int | str, str, str | None, int]]:
    return sorted((a.hadm_id, a.state, a.reason, a.seq) for a in alerts)


async def test_upgrade_side_by_side_with_an_alerts_restart(
    kafka_settings: Settings, tiny_model_dir: Path, tiny_corpus: list[str], tmp_path: Path
) -> None:
    old_dir = Path(shutil.copytree(tiny_model_dir, tmp_path / "readmission-v1"))
    new_dir = build_small_bert(
        tmp_path / "readmission-v2",
        tiny_corpus,
        vocab_size=1000,
        hidden=64,
        layers=2,
        heads=2,
        intermediate=128,
        seed=7,
    )
    old, new = Worker(old_dir), Worker(new_dir)
    await old.start()
    await new.start()
    try:
        admissions, notes = feed(10, 6, seed=21)
        notes.sort(key=lambda n: (n.chart_time, n.hadm_id))
        early, late = notes[: len(notes) // 2], notes[len(notes) // 2 :]
        # before the upgrade: the old model alone
        phase_a = await old.events([*admissions, *early])
        # step 2: the new model starts beside it and rebuilds every retained admission from the topic
        rebuild = await new.events([*admissions, *early])
        overlap_1 = [u for n in late[:10] for w in (old, new) for u in await w.events([n])]
        overlap_2 = [u for n in late[10:] for w in (old, new) for u in await w.events([n])]
        # step 3: cut over; the old workers are stopped, the new ones see the discharges
        phase_c = await new.events(discharges(admissions))
    finally:
        await old.engine.close()
        await new.engine.close()
    everything = [*phase_a, *rebuild, *overlap_1, *overlap_2, *phase_c]
    by_model = {
        w.fingerprint: [u for u in everything if u.model_fingerprint == w.fingerprint] for w in (old, new)
    }
    assert old.fingerprint.startswith("readmission-v1@")
    assert new.fingerprint.startswith("readmission-v2@")
    # each model's threshold: the median of its scores, written into its folder as `train evaluate` does
    for w in (old, new):
        scores = sorted(u.score for u in by_model[w.fingerprint] if u.score)
        spec = ModelSpec.read(w.folder)
        spec.model_copy(update={"threshold": round(scores[len(scores) // 2], 4)}).write(w.folder)
        assert model_fingerprint(w.folder) == w.fingerprint  # a threshold does not make another model

    def send(updates: Sequence[RiskUpdate]) -> None:
        produce(kafka_settings, "risk-updates", [(admission_key(u.hadm_id), u.to_bytes()) for u in updates])

    async def alerts(w: Worker, n: int) -> AlertService:
        """(Re)start the alerts service of model ``w`` until it has read ``n`` more updates."""
        service = await run_alerts(
            kafka_settings,
            policy=policy_of(w.folder),
            model=w.fingerprint,
            to_stdout=False,
            group_id=f"alerts-{w.folder.name}",
            stop_after=n,
            idle_timeout_s=30,
        )
        assert service.tracker.seen == n
        assert service.tracker.dropped_stale == 0  # the other model's seq never makes these stale
        return service

    send(phase_a)
    await alerts(old, len(phase_a))
    send([*rebuild, *overlap_1])
    new_first = await alerts(new, len(phase_a) + len(rebuild) + len(overlap_1))  # a new group: from the start
    assert new_first.tracker.skipped_model == len(phase_a) + len(overlap_1) // 2
    await alerts(old, len(rebuild) + len(overlap_1))  # restarted: state rebuilt from risk-alerts
    send(overlap_2)
    await alerts(new, len(overlap_2))  # restarted: its state holds v2's alerts only
    await alerts(old, len(overlap_2))
    retired = await retire_alerts(kafka_settings, model=old.fingerprint, to_stdout=False)
    send(phase_c)
    await alerts(new, len(phase_c))
    assert await retire_alerts(kafka_settings, model=old.fingerprint, to_stdout=False) == []  # done once

    expected: dict[str, list[RiskAlert]] = {}
    for w in (old, new):
        tracker = AlertTracker(policy_of(w.folder))  # one tracker that saw this model's updates, no restart
        expected[w.fingerprint] = [a for u in by_model[w.fingerprint] if (a := tracker.observe(u))]
        expected[w.fingerprint] += tracker.retire() if w is old else []
        assert tracker.raised_count() == 0
    total = sum(map(len, expected.values()))
    messages = read_topic(kafka_settings, "risk-alerts", until=lambda m: len(m) >= total, timeout_s=30)
    messages += read_topic(kafka_settings, "risk-alerts", until=lambda m: False, timeout_s=1.0)[
        len(messages) :
    ]
    on_topic = [RiskAlert.from_bytes(m.value()) for m in messages]
    for fingerprint, wanted in expected.items():
        got = [a for a in on_topic if a.model_fingerprint == fingerprint]
        assert signature(got) == signature(wanted), fingerprint
    assert len(on_topic) == total
    # the run exercised what it is about: both models raised, the new one cleared by score and by the
    # discharge, the old one's open alerts retired at the cut-over
    reasons = {(a.model_fingerprint, a.state, a.reason) for a in on_topic}
    assert {(old.fingerprint, "raised", "score"), (new.fingerprint, "raised", "score")} <= reasons
    assert {(new.fingerprint, "cleared", "discharged"), (old.fingerprint, "cleared", "retired")} <= reasons
    assert signature(retired) == signature([a for a in expected[old.fingerprint] if a.reason == "retired"])
