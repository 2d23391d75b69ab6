"""docs/configuration.md is the one settings reference, generated from the settings model."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from notestream.cli.config import config_app
from notestream.cli.config_docs import render_docs
from notestream.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_committed_reference_is_up_to_date() -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == render_docs(), "docs/configuration.md is stale: run `notestream config docs`"


def test_every_field_has_a_row_with_its_variable_and_description() -> None:
    text = render_docs()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) == len(Settings.model_fields)
    for name, field in Settings.model_fields.items():
        assert field.description, f"setting {name} has no description"
        assert f"| `{name}` | `NOTESTREAM_{name.upper()}` |" in text
    for row in rows:
        assert row.count(" | ") == 4, f"a cell breaks the table: {row}"


def test_docs_command_writes_and_checks(tmp_path: Path) -> None:
    out = tmp_path / "configuration.md"
    runner = CliRunner()
    assert runner.invoke(config_app, ["docs", "--out", str(out), "--check"]).exit_code == 1
    result = runner.invoke(config_app, ["docs", "--out", str(out)])
    assert result.exit_code == 0
    assert "wrote" in result.output
    assert out.read_text(encoding="utf-8") == render_docs()
    assert runner.invoke(config_app, ["docs", "--out", str(out), "--check"]).exit_code == 0
    assert "unchanged" in runner.invoke(config_app, ["docs", "--out", str(out)]).output
