"""`notestream replay`'s metrics: counted by kind and served on /metrics while the replay runs."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
import pytest

from notestream.core.settings import Settings
from notestream.stream.cli_data import replay_with_metrics
from notestream.stream.metrics import Metrics
from notestream.stream.replay import ReplaySource
from tests.stream.test_replay import mimic_iii  # noqa: F401  (the fixture: 3 admissions, 10 notes)

pytestmark = pytest.mark.slow

# event time from the first event of admission 100 (2150-01-01 08:00) to the first of admission 300
# (2151-05-31): the replay idles ~4 s in between, after the 10 events of admissions 100 and 200
GAP_S = (515 * 86400 - 8 * 3600) / (515 * 86400 / 4.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_replay_counts_events_and_serves_metrics_while_it_runs(
    kafka_settings: Settings,
    mimic_iii: Path,  # noqa: F811
) -> None:
    settings = kafka_settings.model_copy(update={"metrics_port": free_port(), "metrics_host": "127.0.0.1"})
    metrics = Metrics(role="replay")
    run = asyncio.create_task(
        replay_with_metrics(
            settings, ReplaySource.mimic_iii(mimic_iii), metrics=metrics, speed=515 * 86400 / 4.0
        )
    )
    sent_mid_replay = None
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.metrics_port}", timeout=2.0) as client:
        while not run.done():  # the replay idles GAP_S after the 10th event; it ends after the gap
            try:
                scraped = (await client.get("/metrics")).text
            except httpx.TransportError:
                scraped = ""
            if "notestream_replay_sent_total 10.0" in scraped:
                sent_mid_replay = 10
                assert (await client.get("/readyz")).status_code == 200
                break
            await asyncio.sleep(0.05)
        counts = await run
        with pytest.raises(httpx.TransportError):
            await client.get("/healthz")  # served only while the replay runs
    assert sent_mid_replay == 10, "the 10 events before the gap were not seen on /metrics during it"

    def value(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    sent = counts.notes + counts.admits + counts.discharges
    assert value("notestream_replay_sent_total") == sent == 13
    kinds = {
        k: value("notestream_replay_events_total", kind=k)
        for k in ("admit", "discharge", "note", "retraction")
    }
    assert kinds == {"admit": 3, "discharge": 3, "note": counts.notes - 1, "retraction": 1}
    assert value("notestream_events_replayed_total", topic="notes") == counts.notes
    assert value("notestream_events_replayed_total", topic="admissions") == 6
    skipped = {
        r: value("notestream_replay_notes_skipped_total", reason=r)
        for r in ("no_hadm", "unknown_admission", "untimed")
    }
    assert skipped == {
        "no_hadm": counts.skipped_no_hadm,
        "unknown_admission": counts.skipped_unknown_admission,
        "untimed": counts.skipped_untimed,
    }
    assert skipped == {"no_hadm": 1, "unknown_admission": 1, "untimed": 1}
