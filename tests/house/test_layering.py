"""The layering is a test: the import-linter contracts in pyproject.toml hold, and fail when broken."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("lint-imports")
    if exe is None:  # pragma: no cover - the dev extras install it
        pytest.fail("lint-imports is missing: install the dev extras (bash scripts/setup.sh)")
    return subprocess.run(
        [exe, "--no-cache"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(cwd)},
    )


def test_the_layers_hold() -> None:
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_an_import_against_the_layers_is_caught(tmp_path: Path) -> None:
    """A copy of the tree where the models import the stream breaks the contract."""
    copy = tmp_path / "repo"
    copy.mkdir()
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    for name in ("notestream", "models", "stream", "training"):
        shutil.copytree(ROOT / name, copy / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    aggregate = copy / "models" / "aggregate.py"
    aggregate.write_text(aggregate.read_text() + "\nfrom notestream.stream import events  # noqa\n")
    done = lint_imports(copy)
    assert done.returncode != 0
    assert "notestream.models.aggregate -> notestream.stream.events" in done.stdout
