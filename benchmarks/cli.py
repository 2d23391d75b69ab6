"""Start-up seconds of the `notestream` CLI: `--help`, `version` and `config show`.

Each command runs ``--runs`` times in a fresh interpreter (``python -m notestream.cli ...``, the same
code the console script runs); the line reports the fastest and the median wall time of each, the bare
interpreter's start (``python -c pass``) measured the same way, and which heavy libraries each command
imported (from ``-X importtime``; the target is none: commands import them when they run). With
``--baseline DIR`` (another checkout, e.g. ``git archive <commit> | tar -x -C DIR``) the same commands
run from there too, interleaved with this checkout's runs, and the line adds the speed-up of each
(baseline median / this median: a ratio measured within one run, as a shared machine is noisy). ONE
JSON line on stdout; ``--out FILE`` also writes it there (benchmarks/results/cli.json).

    python benchmarks/cli.py [--runs 7] [--baseline DIR] [--out benchmarks/results/cli.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

COMMANDS: dict[str, list[str]] = {
    "help": ["--help"],
    "version": ["version"],
    "config_show": ["config", "show"],
}
HEAVY = ("torch", "transformers", "faust", "pandas", "sklearn", "matplotlib", "spacy", "duckdb", "numpy")


ROOT = Path(__file__).resolve().parents[1]


def _seconds(argv: list[str], env: dict[str, str]) -> float:
    # run from the checkout itself: `python -m` puts the working directory first on sys.path
    start = time.perf_counter()
    subprocess.run(
        argv, env=env, cwd=env["PYTHONPATH"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return time.perf_counter() - start


def heavy_imports(importtime_stderr: str) -> list[str]:
    """Top-level names of the heavy libraries a ``-X importtime`` trace shows imported.

    >>> heavy_imports("import time: 10 | 20 | typer\\nimport time: 5 | 900 |   torch._C\\n")
    ['torch']
    """
    found = set()
    for line in importtime_stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip().split(".")[0]
            if name in HEAVY:
                found.add(name)
    return sorted(found)


def _env(root: Path) -> dict[str, str]:
    env = {**os.environ, "NOTESTREAM_LOG_JSON": "false", "PYTHONPATH": str(root)}
    env.pop("NOTESTREAM_CONFIG", None)
    return env


def measure(runs: int, baseline: Path | None = None) -> dict[str, Any]:
    roots = {"this": ROOT} if baseline is None else {"this": ROOT, "baseline": baseline.resolve()}
    base = [sys.executable, "-m", "notestream.cli"]
    bare = [_seconds([sys.executable, "-c", "pass"], _env(ROOT)) for _ in range(runs)]
    line: dict[str, Any] = {
        "runs": runs,
        "python_start_s": {"min": round(min(bare), 3), "median": round(statistics.median(bare), 3)},
    }
    for name, args in COMMANDS.items():
        times: dict[str, list[float]] = {label: [] for label in roots}
        for _ in range(runs):
            for label, root in roots.items():
                times[label].append(_seconds([*base, *args], _env(root)))
        trace = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "notestream.cli", *args],
            env=_env(ROOT),
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        )
        line[name] = {
            "min_s": round(min(times["this"]), 3),
            "median_s": round(statistics.median(times["this"]), 3),
            "heavy_imports": heavy_imports(trace.stderr),
        }
        if baseline is not None:
            line[name]["baseline_median_s"] = round(statistics.median(times["baseline"]), 3)
            line[name]["speedup"] = round(
                statistics.median(times["baseline"]) / statistics.median(times["this"]), 2
            )
    line["help_under_0_5_s"] = line["help"]["min_s"] < 0.5
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="Runs per command (min and median reported).")
    parser.add_argument("--out", type=Path, default=None, help="Also write the JSON line to this file.")
    parser.add_argument("--baseline", type=Path, default=None, help="Another checkout to compare with.")
    args = parser.parse_args()
    line = measure(args.runs, args.baseline)
    print(json.dumps(line))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(line, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
