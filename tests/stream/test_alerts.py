"""Alerts: hysteresis, stale seq, thresholds, sinks (a real local HTTP server), and the Kafka loop."""

from __future__ import annotations

import io
import json
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from notestream.core.errors import ConfigError
from notestream.core.settings import Settings
from notestream.models.policy import AlertPolicyChoice
from notestream.models.spec import ModelSpec
from notestream.stream.alert_sinks import WebhookSink, stdout_sink, topic_sink
from notestream.stream.alerts import AlertPolicy, AlertService, AlertTracker
from notestream.stream.alerts_service import run_alerts
from notestream.stream.errors import AlertSinkError
from notestream.stream.events import RiskAlert, RiskUpdate
from tests.fixtures.kafka import produce, read_topic

POLICY = AlertPolicy(threshold=0.6, hysteresis=0.1)


def update(seq: int, score: float | None, *, hadm: int = 1, task: str = "readmission") -> RiskUpdate:
    return RiskUpdate(
        hadm_id=hadm,
        subject_id=9,
        task=task,
        model="m",
        score=score,
        p_max=score,
        p_mean=score,
        n_chunks=0 if score is None else 1,
        n_notes=1,
        seq=seq,
        c=2.0,
    )


scores = st.one_of(st.none(), st.floats(0, 1))


@given(st.lists(st.tuples(st.integers(0, 30), scores), max_size=60))
def test_alerts_alternate_and_respect_hysteresis(history: list[tuple[int, float | None]]) -> None:
    tracker = AlertTracker(POLICY)
    last_seq = -1
    raised = False
    for seq, score in history:
        alert = tracker.observe(update(seq, score))
        if seq <= last_seq:
            assert alert is None  # a stale or repeated update never reaches an alert
            continue
        last_seq = seq
        if alert is None:
            # no change: either still raised above the clear level, or still below the threshold
            if raised:
                assert score is not None
                assert score >= POLICY.threshold - POLICY.hysteresis
            else:
                assert score is None or score < POLICY.threshold
            continue
        assert alert.seq == seq
        assert alert.score == score, "an alert carries its update's score: null exactly when no chunk is left"
        assert (alert.reason == "no_chunks") == (score is None)
        if alert.state == "raised":
            assert not raised
            assert score is not None
            assert score >= POLICY.threshold
        else:
            assert raised
            assert score is None or score < POLICY.threshold - POLICY.hysteresis
        raised = alert.state == "raised"
    assert tracker.raised() == ([(1, "readmission")] if raised else [])


def test_shuffled_delivery_gives_no_alert_from_stale_updates() -> None:
    in_order = [update(s, p) for s, p in enumerate([0.1, 0.7, 0.65, 0.4, 0.9, 0.2], start=1)]
    rng = random.Random(3)
    delivered = in_order + [rng.choice(in_order) for _ in range(10)]  # redeliveries after the fact
    tracker = AlertTracker(POLICY)
    alerts = [a for u in delivered if (a := tracker.observe(u))]
    assert [(a.state, a.seq) for a in alerts] == [
        ("raised", 2),
        ("cleared", 4),
        ("raised", 5),
        ("cleared", 6),
    ]
    assert tracker.dropped_stale == 10


def test_admissions_and_tasks_are_tracked_apart() -> None:
    tracker = AlertTracker(POLICY)
    assert tracker.observe(update(5, 0.9, hadm=1)) is not None
    assert tracker.observe(update(1, 0.9, hadm=2)) is not None  # seq is per admission
    assert tracker.observe(update(1, 0.9, hadm=1, task="mortality")) is not None
    assert tracker.raised() == [(1, "mortality"), (1, "readmission"), (2, "readmission")]


T0 = datetime(2150, 1, 1, tzinfo=UTC)


def model_update(
    seq: int,
    score: float,
    *,
    fingerprint: str,
    hadm: int = 1,
    final: bool = False,
    hours: float = 0.0,
) -> RiskUpdate:
    """An update of the model ``fingerprint`` (folder name: the part before the @), emitted ``hours`` after T0."""
    return update(seq, score, hadm=hadm).model_copy(
        update={
            "model": fingerprint.split("@")[0],
            "model_fingerprint": fingerprint,
            "final": final,
            "emitted_at": T0 + timedelta(hours=hours),
        }
    )


def test_two_models_side_by_side_keep_their_own_alerts_and_seq() -> None:
    # the upgrade: the old model reached seq 9 and raised; the new one starts at seq 1 and is low
    tracker = AlertTracker(POLICY)
    old, new = "readmission@aaaa", "readmission@bbbb"  # one folder name, other weights
    assert [
        a.state for s in range(1, 10) if (a := tracker.observe(model_update(s, 0.8, fingerprint=old)))
    ] == ["raised"]
    states = [
        a.state if (a := tracker.observe(model_update(s, p, fingerprint=new))) else None
        for s, p in [(1, 0.1), (2, 0.2), (3, 0.7), (4, 0.3), (5, 0.2)]
    ]
    assert states == [None, None, "raised", "cleared", None]  # none of them stale behind the old seq 9
    assert tracker.dropped_stale == 0
    assert tracker.raised_keys() == [(old, 1, "readmission")]  # the new model's low score left it raised


def test_the_model_filter_keeps_one_model_by_fingerprint_or_name() -> None:
    by_fingerprint = AlertTracker(POLICY, model="readmission@bbbb")
    by_name = AlertTracker(POLICY, model="readmission-v2")
    updates = [
        model_update(1, 0.9, fingerprint="readmission@aaaa"),
        model_update(1, 0.9, fingerprint="readmission@bbbb", hadm=2),
        model_update(1, 0.9, fingerprint="readmission-v2@cccc", hadm=3),
    ]
    assert [a.hadm_id for u in updates if (a := by_fingerprint.observe(u))] == [2]
    assert [a.hadm_id for u in updates if (a := by_name.observe(u))] == [3]
    assert by_fingerprint.skipped_model == 2
    restored = AlertTracker(POLICY, model="readmission@bbbb")
    alerts = [
        RiskAlert(
            hadm_id=h,
            task="readmission",
            model="readmission",
            model_fingerprint=f,
            score=0.9,
            threshold=0.6,
            state="raised",
            seq=1,
        )
        for h, f in [(1, "readmission@aaaa"), (2, "readmission@bbbb")]
    ]
    assert restored.restore(alerts) == 1
    assert restored.raised() == [(2, "readmission")]


def test_discharge_clears_the_alert_and_later_updates_raise_nothing() -> None:
    tracker = AlertTracker(POLICY)
    fp = "m@1"
    assert tracker.observe(model_update(1, 0.9, fingerprint=fp)) is not None
    cleared = tracker.observe(model_update(2, 0.9, fingerprint=fp, final=True))
    assert cleared is not None
    assert (cleared.state, cleared.reason, cleared.model_fingerprint) == ("cleared", "discharged", fp)
    assert tracker.observe(model_update(3, 0.95, fingerprint=fp, final=True)) is None  # a late note
    assert tracker.after_discharge == 1
    assert tracker.raised_count() == 0
    # an admission discharged below the threshold: nothing to clear, and nothing raised after
    assert tracker.observe(model_update(1, 0.2, fingerprint=fp, hadm=2, final=True)) is None
    assert tracker.observe(model_update(2, 0.9, fingerprint=fp, hadm=2, final=True)) is None


def test_discharged_states_are_evicted_after_the_retention() -> None:
    tracker = AlertTracker(POLICY, retention=timedelta(hours=72))
    fp = "m@1"
    for hadm in range(10):  # one admission discharged per day
        tracker.observe(model_update(1, 0.9, fingerprint=fp, hadm=hadm, hours=24 * hadm))
        tracker.observe(model_update(2, 0.9, fingerprint=fp, hadm=hadm, final=True, hours=24 * hadm + 1))
    # now 217 h: admission d was discharged at 24 d + 1 h, so days 0-6 (at or before 145 h) are evicted
    assert tracker.tracked() == 3
    assert tracker.evicted == 7
    # a redelivery of an evicted admission's final update opens no alert (it is final)
    assert tracker.observe(model_update(2, 0.9, fingerprint=fp, hadm=0, final=True, hours=24 * 9 + 2)) is None


def test_restore_keeps_a_discharged_admission_closed_then_evicts_it() -> None:
    tracker = AlertTracker(POLICY, retention=timedelta(hours=1))
    discharged = RiskAlert(
        hadm_id=1,
        task="readmission",
        model="m",
        model_fingerprint="m@1",
        score=0.9,
        threshold=0.6,
        state="cleared",
        reason="discharged",
        seq=4,
        at=T0,
    )
    assert tracker.restore([discharged]) == 1
    assert tracker.observe(model_update(5, 0.9, fingerprint="m@1", final=True, hours=0.5)) is None
    assert tracker.after_discharge == 1
    assert tracker.tracked() == 1
    tracker.observe(model_update(1, 0.1, fingerprint="m@1", hadm=2, hours=2))
    assert tracker.tracked() == 1  # admission 1 evicted an hour after its discharge; admission 2 held


def test_threshold_comes_from_the_option_the_settings_or_the_model(tmp_path: Path) -> None:
    ModelSpec(threshold=0.42).write(tmp_path)
    assert AlertPolicy.from_settings(Settings(), model_dir=tmp_path).threshold == 0.42
    assert AlertPolicy.from_settings(Settings(alert_threshold=0.3), model_dir=tmp_path).threshold == 0.3
    assert AlertPolicy.from_settings(Settings(alert_threshold=0.3), threshold=0.8).threshold == 0.8
    assert AlertPolicy.from_settings(Settings(alert_hysteresis=0.2), threshold=0.1).hysteresis == 0.1
    with pytest.raises(ConfigError, match="threshold"):
        AlertPolicy.from_settings(Settings())
    chosen = AlertPolicyChoice(
        kind="budget",
        target=5,
        threshold=0.42,
        precision=0.3,
        recall=0.4,
        alerts_per_100=4.9,
        prevalence=0.07,
        n=900,
    )
    ModelSpec(threshold=0.42, alert_policy=chosen).write(tmp_path)
    source = AlertPolicy.from_settings(Settings(), model_dir=tmp_path).source
    assert "at most 5 alerts per 100 admissions" in source
    assert "precision 0.300" in source
    assert (
        AlertPolicy.from_settings(Settings(), model_dir=tmp_path, threshold=0.5).source == "--threshold 0.5"
    )


async def test_stdout_and_topic_sinks() -> None:
    alert = AlertTracker(POLICY).observe(update(1, 0.95, hadm=77))
    assert alert is not None
    out = io.StringIO()
    await stdout_sink(out)(alert)
    assert RiskAlert.model_validate(json.loads(out.getvalue())) == alert
    sent: list[tuple[str, bytes, bytes]] = []

    async def send(topic: str, *, key: bytes, value: bytes) -> None:
        sent.append((topic, key, value))

    await topic_sink(send, "x.risk-alerts")(alert)
    assert sent == [("x.risk-alerts", b"77", alert.to_bytes())]

    async def broken(topic: str, *, key: bytes, value: bytes) -> None:
        raise OSError("broker gone")

    with pytest.raises(AlertSinkError, match="Check the broker"):
        await topic_sink(broken, "t")(alert)


@pytest.fixture
async def webhook_server() -> AsyncIterator[tuple[str, list[dict[str, object]], list[int]]]:
    """A real HTTP server on 127.0.0.1 that answers with the statuses queued in ``plan`` (then 200)."""
    received: list[dict[str, object]] = []
    plan: list[int] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=plan.pop(0) if plan else 200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/hook", received, plan
    await runner.cleanup()


async def test_webhook_retries_until_accepted(
    webhook_server: tuple[str, list[dict[str, object]], list[int]],
) -> None:
    url, received, plan = webhook_server
    plan.extend([503, 429])
    sink = WebhookSink(url, retries=3, backoff_s=0.01)
    alert = AlertTracker(POLICY).observe(update(1, 0.95))
    assert alert is not None
    await sink(alert)
    await sink.close()
    assert sink.attempts == 3
    assert len(received) == 3
    assert RiskAlert.model_validate(received[-1]) == alert


async def test_webhook_gives_up(webhook_server: tuple[str, list[dict[str, object]], list[int]]) -> None:
    url, _received, plan = webhook_server
    alert = AlertTracker(POLICY).observe(update(1, 0.95))
    assert alert is not None
    plan.extend([400])
    sink = WebhookSink(url, retries=3, backoff_s=0.01)
    with pytest.raises(AlertSinkError, match="HTTP 400"):
        await sink(alert)  # a client error is not retried
    assert sink.attempts == 1
    plan.extend([500] * 5)
    sink2 = WebhookSink(url, retries=2, backoff_s=0.01)
    with pytest.raises(AlertSinkError, match="after 3 attempt"):
        await sink2(alert)
    refused = WebhookSink("http://127.0.0.1:9/hook?token=secret", retries=1, backoff_s=0.01)
    with pytest.raises(AlertSinkError) as info:
        await refused(alert)
    assert "secret" not in str(info.value)
    for s in (sink, sink2, refused):
        await s.close()


async def test_optional_sink_failures_are_counted_not_fatal() -> None:
    async def failing(alert: RiskAlert) -> None:
        raise AlertSinkError("down")

    delivered: list[RiskAlert] = []

    async def keep(alert: RiskAlert) -> None:
        delivered.append(alert)

    service = AlertService(AlertTracker(POLICY), required=[keep], optional=[failing])
    assert await service.handle(update(1, 0.9)) is not None
    assert (len(delivered), service.failed) == (1, 1)
    strict = AlertService(AlertTracker(POLICY), required=[failing])
    with pytest.raises(AlertSinkError):
        await strict.handle(update(1, 0.9))


@pytest.mark.slow
async def test_alerts_command_loop_over_kafka(kafka_settings: Settings) -> None:
    history = [(1, 0.2), (2, 0.8), (2, 0.8), (1, 0.99), (3, 0.3), (4, 0.95)]
    produce(kafka_settings, "risk-updates", [(b"5", update(s, p, hadm=5).to_bytes()) for s, p in history])
    service = await run_alerts(
        kafka_settings,
        policy=POLICY,
        to_stdout=False,
        group_id=None,
        stop_after=len(history),
        idle_timeout_s=30,
    )
    expected = [("raised", 2), ("cleared", 3), ("raised", 4)]
    assert [(a.state, a.seq) for a in service.alerts] == expected
    messages = read_topic(kafka_settings, "risk-alerts", until=lambda m: len(m) >= 3, timeout_s=30)
    alerts = [RiskAlert.from_bytes(m.value()) for m in messages]
    assert [(a.state, a.seq) for a in alerts] == expected
    assert {m.key() for m in messages} == {b"5"}
    assert service.tracker.dropped_stale == 2


@pytest.mark.slow
def test_alerts_command(kafka_settings: Settings) -> None:
    import typer
    from typer.testing import CliRunner

    from notestream.stream.cli_data import register_data

    produce(
        kafka_settings,
        "risk-updates",
        [(b"8", update(s, p, hadm=8).to_bytes()) for s, p in [(1, 0.9), (2, 0.1)]],
    )
    app = typer.Typer()
    register_data(app)
    args = [
        "alerts",
        "--threshold",
        "0.6",
        "--broker",
        kafka_settings.broker,
        "--topic-prefix",
        kafka_settings.topic_prefix,
        "--group",
        "",
        "--max-updates",
        "2",
        "--idle-timeout",
        "30",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    alerts = [RiskAlert.model_validate(x) for x in lines if "state" in x]
    assert [(a.state, a.seq, a.threshold) for a in alerts] == [("raised", 1, 0.6), ("cleared", 2, 0.6)]
