"""Alerts across restarts (state rebuilt from risk-alerts, commits after the write) and their metrics.

Every test runs ``run_alerts`` against the embedded broker (tansu) and reads back the risk-alerts topic.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence

import httpx
import pytest

from notestream.core.settings import Settings
from notestream.stream.alerts import AlertPolicy, AlertService
from notestream.stream.alerts_service import read_alert_log, run_alerts
from notestream.stream.errors import AlertSinkError
from notestream.stream.events import RiskAlert, RiskUpdate
from notestream.stream.metrics import Metrics
from tests.fixtures.kafka import produce, read_topic

pytestmark = pytest.mark.slow

POLICY = AlertPolicy(threshold=0.6, hysteresis=0.1)  # raise at >= 0.6, clear below 0.5
HADM = 5


def update(seq: int, score: float | None, *, hadm: int = HADM) -> RiskUpdate:
    return RiskUpdate(
        hadm_id=hadm,
        subject_id=9,
        task="readmission",
        model="m",
        score=score,
        p_max=score,
        p_mean=score,
        n_chunks=1,
        n_notes=1,
        seq=seq,
        c=2.0,
    )


def send(settings: Settings, history: Sequence[tuple[int, float | None]], *, hadm: int = HADM) -> None:
    produce(
        settings,
        "risk-updates",
        [(str(hadm).encode(), update(s, p, hadm=hadm).to_bytes()) for s, p in history],
    )


async def run(settings: Settings, n: int, **kwargs: object) -> AlertService:
    """The alerts loop until it has read ``n`` updates (30 s of idleness is a failure to deliver)."""
    options: dict[str, object] = {"to_stdout": False, "group_id": f"{settings.consumer_group}-alerts"}
    options.update(kwargs)
    service = await run_alerts(settings, policy=POLICY, stop_after=n, idle_timeout_s=30, **options)  # type: ignore[arg-type]
    assert service.tracker.seen == n, "the loop stopped idle before reading every update"
    return service


def on_topic(settings: Settings, n: int) -> list[tuple[int | str, str, int]]:
    """(hadm_id, state, seq) of the alerts on risk-alerts, once there are at least ``n`` (and a little
    more time to show that no extra one follows)."""
    messages = read_topic(settings, "risk-alerts", until=lambda m: len(m) >= n, timeout_s=30)
    messages += read_topic(settings, "risk-alerts", until=lambda m: False, timeout_s=1.0)[len(messages) :]
    alerts = [RiskAlert.from_bytes(m.value()) for m in messages]
    return [(a.hadm_id, a.state, a.seq) for a in alerts]


async def test_restart_with_the_same_group_neither_raises_again_nor_forgets_to_clear(
    kafka_settings: Settings,
) -> None:
    send(kafka_settings, [(1, 0.2), (2, 0.8), (3, 0.85)])
    first = await run(kafka_settings, 3)
    assert [(a.state, a.seq) for a in first.alerts] == [("raised", 2)]

    # still above the threshold after the restart, then inside the hysteresis band, then below it
    send(kafka_settings, [(4, 0.9), (5, 0.55), (6, 0.4), (7, 0.45)])
    second = await run(kafka_settings, 4)
    assert [(a.state, a.seq) for a in second.alerts] == [("cleared", 6)]
    assert second.tracker.dropped_stale == 0  # the first run's commits hold: nothing was redelivered
    assert on_topic(kafka_settings, 2) == [(HADM, "raised", 2), (HADM, "cleared", 6)]


async def test_uncommitted_updates_redelivered_to_a_restart_raise_no_duplicate(
    kafka_settings: Settings,
) -> None:
    # the first run commits nothing (no group): a restart reads every update again
    send(kafka_settings, [(1, 0.2), (2, 0.8), (1, 0.2), (3, 0.7)], hadm=HADM)
    send(kafka_settings, [(1, 0.9)], hadm=6)
    first = await run(kafka_settings, 5, group_id=None)
    assert sorted((a.hadm_id, a.state, a.seq) for a in first.alerts) == [(5, "raised", 2), (6, "raised", 1)]

    send(kafka_settings, [(4, 0.95), (5, 0.3)], hadm=HADM)
    second = await run(kafka_settings, 7, group_id=f"{kafka_settings.consumer_group}-fresh")
    assert [(a.hadm_id, a.state, a.seq) for a in second.alerts] == [(5, "cleared", 5)]
    # the rebuilt state holds seq 2 for admission 5 and 1 for admission 6: seq 1, 2, 1 of 5 and 1 of 6
    # are stale; seq 3 (0.7, already seen by the first run) is read again and changes nothing
    assert second.tracker.dropped_stale == 4
    assert second.tracker.raised() == [(6, "readmission")]  # admission 6 stays raised, silently
    assert sorted(on_topic(kafka_settings, 3)) == [(5, "cleared", 5), (5, "raised", 2), (6, "raised", 1)]


async def test_a_crash_after_the_write_and_before_the_commit_raises_no_duplicate(
    kafka_settings: Settings,
) -> None:
    async def crash(alert: RiskAlert) -> None:  # a required sink failing after the topic write
        raise AlertSinkError("the process dies here")

    send(kafka_settings, [(1, 0.9)])
    with pytest.raises(AlertSinkError):
        await run_alerts(
            kafka_settings,
            policy=POLICY,
            to_stdout=False,
            sinks=[crash],
            idle_timeout_s=30,
            group_id=f"{kafka_settings.consumer_group}-alerts",
        )
    assert on_topic(kafka_settings, 1) == [(HADM, "raised", 1)]  # written before the crash

    send(kafka_settings, [(2, 0.95), (3, 0.3)])
    second = await run(kafka_settings, 3)
    assert second.tracker.dropped_stale == 1  # seq 1 was redelivered: its offset was never committed
    assert [(a.state, a.seq) for a in second.alerts] == [("cleared", 3)]
    assert on_topic(kafka_settings, 2) == [(HADM, "raised", 1), (HADM, "cleared", 3)]


async def test_read_alert_log_stops_at_the_end_offsets_of_start_up(kafka_settings: Settings) -> None:
    assert await read_alert_log(kafka_settings) == []
    alerts = [
        RiskAlert(hadm_id=h, task="readmission", score=0.7, threshold=0.6, state="raised", seq=1)
        for h in range(1, 31)
    ]
    produce(kafka_settings, "risk-alerts", [(str(a.hadm_id).encode(), a.to_bytes()) for a in alerts])
    read = await read_alert_log(kafka_settings, timeout_s=30)
    assert sorted(a.hadm_id for a in read) == list(range(1, 31))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_alerts_serve_metrics_and_readiness(kafka_settings: Settings) -> None:
    settings = kafka_settings.model_copy(update={"metrics_port": free_port(), "metrics_host": "127.0.0.1"})
    restored = RiskAlert(
        hadm_id=HADM, task="readmission", model="m", score=0.7, threshold=0.6, state="raised", seq=2
    )
    produce(settings, "risk-alerts", [(b"5", restored.to_bytes())])
    send(settings, [(1, 0.9), (3, 0.9), (4, 0.2), (1, 0.95)], hadm=HADM)
    send(settings, [(1, 0.7)], hadm=7)
    metrics = Metrics(role="alerts")
    task = asyncio.create_task(run(settings, 6, metrics=metrics))  # the 6th update is sent below
    base = f"http://127.0.0.1:{settings.metrics_port}"
    async with httpx.AsyncClient(base_url=base, timeout=2.0) as client:
        for _ in range(600):
            try:
                if (await client.get("/readyz")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
        else:
            pytest.fail("/readyz never answered 200")
        assert (await client.get("/healthz")).status_code == 200
        for _ in range(1200):  # ready = state rebuilt and partitions held; the 5 updates follow
            scraped = (await client.get("/metrics")).text
            if "notestream_alert_updates_total 5.0" in scraped:
                break
            await asyncio.sleep(0.05)
        assert 'notestream_alerts_total{state="cleared"} 1.0' in scraped
        assert "notestream_alerts_restored_total 1.0" in scraped
        await asyncio.to_thread(send, settings, [(2, 0.8)], hadm=7)
        service = await task
        with pytest.raises(httpx.TransportError):
            await client.get("/healthz")  # the server stopped with the loop
    alerts = sorted((a.hadm_id, a.state, a.seq) for a in service.alerts)
    assert alerts == [(HADM, "cleared", 4), (7, "raised", 1)]

    def value(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    assert value("notestream_alert_updates_total") == 6
    assert value("notestream_alert_updates_stale_total") == 2  # seq 1 twice: the rebuilt state holds seq 2
    assert value("notestream_alerts_total", state="raised") == 1
    assert value("notestream_alerts_total", state="cleared") == 1
    assert value("notestream_alerts_restored_total") == 1
    assert value("notestream_alerts_raised_now") == 1  # admission 7
    assert value("notestream_webhook_failures_total") == 0
