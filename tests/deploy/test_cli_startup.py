"""A lean CLI: assembling the commands imports no heavy library (the roles: tests/deploy/test_packaging.py).

Each check runs in a fresh interpreter (this test process has long since imported torch) and reads
``sys.modules`` there, so a module-level ``import torch`` anywhere on a path fails the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "faust", "pandas", "sklearn", "matplotlib", "spacy", "duckdb", "numpy")


def run_script(script: str) -> dict[str, list[str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, list[str]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def loaded_heavy() -> str:
    return f"sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))"


def test_every_command_help_imports_no_heavy_library() -> None:
    # The whole CLI is assembled (as `notestream --help` does) and every command's --help rendered.
    script = f"""
import json, sys
import typer.main
from typer.testing import CliRunner
import notestream.cli as cli
cli._mount()
group = typer.main.get_command(cli.app)
paths = []
def walk(cmd, prefix):
    paths.append(prefix)
    if hasattr(cmd, "commands"):
        for name, sub in cmd.commands.items():
            walk(sub, [*prefix, name])
walk(group, [])
runner = CliRunner()
failed = []
for path in paths:
    out = runner.invoke(cli.app, [*path, "--help"])
    if out.exit_code != 0:
        failed.append(" ".join(path))
print(json.dumps({{"paths": [" ".join(p) for p in paths], "failed": failed, "heavy": {loaded_heavy()}}}))
"""
    result = run_script(script)
    assert {"worker", "alerts", "replay", "score", "train", "explain", "config show"} <= set(result["paths"])
    assert result["failed"] == []
    assert result["heavy"] == []


def test_console_script_help_imports_no_heavy_library() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "notestream.cli", "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "worker" in done.stdout
    imported = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    assert "typer" in imported  # the trace is there
    assert imported.isdisjoint(HEAVY), sorted(imported & set(HEAVY))
    assert "asyncio" not in imported  # ~40 ms of start-up: the commands that run a loop import it
