"""Replay throughput and memory: events per second out of ``iter_events`` over a synthetic MIMIC-III
cohort (notestream.training.synth), in one sorted query and in time buckets, and the process's peak RSS.

Prints ONE JSON line.    python benchmarks/replay.py [--patients 300]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from notestream.stream.replay import ReplayCounts, ReplaySource, iter_events
from notestream.training.synth import write_mimic_iii


def run(patients: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        summary = write_mimic_iii(Path(tmp) / "m3", n_patients=patients, seed=1, compress=True)
        source = ReplaySource.mimic_iii(Path(tmp) / "m3")
        size = sum(p.stat().st_size for p in source.notes)
        result: dict[str, Any] = {
            "benchmark": "replay",
            "patients": patients,
            "notes_written": summary.notes,
            "noteevents_gz_mb": round(size / 1e6, 1),
        }
        for label, budget in (("single_sort", None), ("time_buckets", max(1, size // 4))):
            counts = ReplayCounts()
            start = time.perf_counter()
            n = sum(1 for _ in iter_events(source, counts=counts, sort_budget_bytes=budget, temp_dir=tmp))
            seconds = time.perf_counter() - start
            result[label] = {"events": n, "seconds": round(seconds, 2), "events_per_s": round(n / seconds)}
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=300)
    print(json.dumps(run(parser.parse_args().patients)))
