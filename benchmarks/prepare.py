"""Benchmark `notestream train prepare` on a full-size synthetic MIMIC-III NOTEEVENTS.

Writes a synthetic MIMIC-III (2.08M notes by default, about 4 GB; ``--notes N`` scales it down), runs
prepare in a child process (wall seconds, peak RSS), then takes a 1% cohort and runs both prepare and a
plain in-memory pandas implementation of the reference steps (``notestream.training.reference_pandas``) on it, for
the ratio. Prints ONE JSON line of figures. Target: prepare's peak RSS under 4 GB at full size.

    python benchmarks/prepare.py --notes 200000 --task early-3d
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NOTES_PER_PATIENT = 34.5  # synth defaults: about 27 notes per admission, 1.35 admissions per patient

_CHILD = """
import json, resource, sys, time
mode, src, out, notes, limit = sys.argv[1:6]
t = time.perf_counter()
if mode == "duckdb":
    from notestream.training.mimic import Source
    from notestream.training.prepare import PrepareConfig, prepare
    r = prepare(Source.open(mimic_iii=src), out, PrepareConfig(notes=notes, memory_limit=limit), progress=False)
    chunks = r.manifest["counts"]["chunks"]["chunks"]
else:
    from notestream.training.reference_pandas import reference_prepare
    chunks = len(reference_prepare(src, notes)["chunks"])
try:  # VmHWM is this process's own peak; ru_maxrss would carry the parent's across exec
    hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024
except (OSError, StopIteration):
    hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": time.perf_counter() - t, "chunks": chunks, "peak_rss_mb": hwm}))
"""


def _child(mode: str, src: Path, out: Path, notes: str, limit: str) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, str(src), str(out), notes, limit],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--notes", type=int, default=2_083_180, help="Approximate NOTEEVENTS rows.")
    parser.add_argument("--task", default="early-3d", choices=["discharge", "early-2d", "early-3d"])
    parser.add_argument("--memory-limit", default="2GB", help="DuckDB memory limit of prepare.")
    parser.add_argument("--sample", type=float, default=0.01, help="Cohort share for the pandas comparison.")
    parser.add_argument("--work", type=Path, default=None, help="Work folder (default: a temporary one).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from notestream.training.synth import write_mimic_iii

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-prepare-"))
    try:
        patients = max(50, round(args.notes / NOTES_PER_PATIENT))
        t = time.perf_counter()
        full = write_mimic_iii(work / "full", patients, args.seed, progress=False)
        synth_s = time.perf_counter() - t
        size_gb = full.files["NOTEEVENTS"].stat().st_size / 1e9
        big = _child("duckdb", work / "full", work / "out_full", args.task, args.memory_limit)
        shutil.rmtree(work / "out_full", ignore_errors=True)
        shutil.rmtree(work / "full", ignore_errors=True)

        small = write_mimic_iii(
            work / "sample", max(50, round(patients * args.sample)), args.seed, progress=False
        )
        duck = _child("duckdb", work / "sample", work / "out_sample", args.task, args.memory_limit)
        ref = _child("pandas", work / "sample", work / "out_sample", args.task, args.memory_limit)
        figures = {
            "benchmark": "prepare",
            "task": args.task,
            "notes": full.notes,
            "admissions": full.admissions,
            "noteevents_gb": round(size_gb, 3),
            "synth_seconds": round(synth_s, 1),
            "prepare_seconds": round(big["seconds"], 1),
            "prepare_peak_rss_mb": round(big["peak_rss_mb"]),
            "prepare_chunks": big["chunks"],
            "sample_notes": small.notes,
            "sample_prepare_seconds": round(duck["seconds"], 2),
            "sample_prepare_peak_rss_mb": round(duck["peak_rss_mb"]),
            "sample_pandas_seconds": round(ref["seconds"], 2),
            "sample_pandas_peak_rss_mb": round(ref["peak_rss_mb"]),
            "sample_same_chunks": duck["chunks"] == ref["chunks"],
            "pandas_over_prepare_seconds": round(ref["seconds"] / duck["seconds"], 2),
            "pandas_over_prepare_rss": round(ref["peak_rss_mb"] / duck["peak_rss_mb"], 2),
        }
        print(json.dumps(figures))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
