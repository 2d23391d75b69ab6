"""Alert-tracker memory over many admissions: flat, bounded by the admissions in house.

A synthetic hospital admits one admission every ``--spacing-min`` minutes; each stays
``--stay-hours`` hours and gets ``--updates`` risk updates (scores drawn at random, some above the
threshold), the last one final (the discharge). The tracker (retention 72 h, as the store's default)
sees them in event order. Every 10% of the run it records the states it holds and the Python heap
(tracemalloc); the figure is the ratio of the last to the first checkpoint (target: flat, about 1).
With ``--no-evict`` (retention of 100 years) the same run shows the growth eviction prevents.

Prints ONE JSON line and writes ``benchmarks/results/alerts_memory.{json,png}``.

    python benchmarks/alerts.py [--admissions 100000]
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.progress import track

from notestream.stream.alerts import AlertPolicy, AlertTracker
from notestream.stream.events import RiskUpdate

RESULTS = Path(__file__).parent / "results"
START = datetime(2150, 1, 1, tzinfo=UTC)


def run(
    admissions: int, *, updates: int, stay_hours: float, spacing_min: float, retention_h: float
) -> dict[str, Any]:
    rng = random.Random(1)
    tracker = AlertTracker(
        AlertPolicy(threshold=0.7, hysteresis=0.05), retention=timedelta(hours=retention_h)
    )
    # (time, hadm, seq): the next update of each admission in house, in event order
    pending: list[tuple[datetime, int, int]] = []
    checkpoints: list[dict[str, Any]] = []
    every = max(1, admissions // 10)
    alerts = 0
    tracemalloc.start()
    started = time.perf_counter()
    sent = 0

    def drain(until: datetime) -> None:
        nonlocal alerts, sent
        while pending and pending[0][0] <= until:
            at, hadm, seq = heapq.heappop(pending)
            score = rng.random() ** 2
            final = seq == updates
            update = RiskUpdate(
                hadm_id=hadm,
                subject_id=hadm,
                task="readmission",
                model="m",
                model_fingerprint="m@bench",
                score=score,
                p_max=score,
                p_mean=score,
                n_chunks=seq,
                n_notes=seq,
                seq=seq,
                c=2.0,
                final=final,
                emitted_at=at,
            )
            alerts += tracker.observe(update) is not None
            sent += 1
            if not final:
                heapq.heappush(pending, (at + timedelta(hours=stay_hours / (updates - 1)), hadm, seq + 1))

    for i in track(range(admissions), description="admissions", transient=True):
        admit = START + timedelta(minutes=spacing_min * i)
        drain(admit)
        heapq.heappush(pending, (admit, i + 1, 1))
        if (i + 1) % every == 0:
            current, _ = tracemalloc.get_traced_memory()
            checkpoints.append(
                {"admissions": i + 1, "tracked": tracker.tracked(), "heap_mb": round(current / 1e6, 2)}
            )
    drain(datetime.max.replace(tzinfo=UTC))
    seconds = time.perf_counter() - started
    tracemalloc.stop()
    first, last = checkpoints[0], checkpoints[-1]
    return {
        "retention_h": retention_h,
        "updates": sent,
        "alerts": alerts,
        "updates_per_s": round(sent / seconds),
        "tracked_first": first["tracked"],
        "tracked_last": last["tracked"],
        "tracked_ratio": round(last["tracked"] / first["tracked"], 3),
        "heap_ratio": round(last["heap_mb"] / first["heap_mb"], 3),
        "raised_at_end": tracker.raised_count(),
        "evicted": tracker.evicted,
        "checkpoints": checkpoints,
    }


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label in ("evicted", "kept_forever"):
        if label in results:
            points = results[label]["checkpoints"]
            ax.plot(
                [p["admissions"] for p in points], [p["tracked"] for p in points], marker="o", label=label
            )
    ax.set(xlabel="admissions seen", ylabel="alert states held", title="Alert tracker memory")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--admissions", type=int, default=100_000)
    parser.add_argument("--updates", type=int, default=5, help="Risk updates per admission (the last final).")
    parser.add_argument("--stay-hours", type=float, default=96.0)
    parser.add_argument("--spacing-min", type=float, default=10.0, help="Minutes between admissions.")
    parser.add_argument("--no-evict", action="store_true", help="Also run without eviction, for comparison.")
    args = parser.parse_args()
    options = {"updates": args.updates, "stay_hours": args.stay_hours, "spacing_min": args.spacing_min}
    result: dict[str, Any] = {"benchmark": "alerts", "admissions": args.admissions, **options}
    result["evicted"] = run(args.admissions, retention_h=72.0, **options)
    if args.no_evict:
        result["kept_forever"] = run(args.admissions, retention_h=24.0 * 365 * 100, **options)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "alerts_memory.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    plot(result, RESULTS / "alerts_memory.png")
    print(json.dumps(result))
