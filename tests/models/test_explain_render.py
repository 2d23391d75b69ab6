"""Explanation files: PNG heatmaps and highlighted text, HTML, JSON, and `notestream explain --text`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from notestream.models.checkpoint import LoadedModel, load_model_folder
from notestream.models.explain import ExplainError, explain_text, write_explanation
from notestream.models.explain.render import highlighted_html, plot_attention, plot_highlighted_text
from notestream.stream.cli_explain import register_explain

# generated text (notestream.models.build vocabulary words), never a real note
TEXT = "Patient was started on heparin drip overnight. Family denies chest pain <b>as tolerated</b> & fever."


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path) -> LoadedModel:
    return load_model_folder(tiny_model_dir)


def _png(path: Path) -> tuple[int, int]:
    assert path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()  # decodes the whole file
        return image.size


def test_write_explanation_writes_every_picture(loaded: LoadedModel, tmp_path: Path) -> None:
    result = explain_text(loaded.model, loaded.tokenizer, loaded.spec, TEXT, steps=8)
    out = tmp_path / "explained"
    paths = write_explanation(result, out, layer=0, head=1)
    names = sorted(p.name for p in paths)
    assert names == sorted(
        [
            "attention_layer0_head1.png",
            "attention_layer0_heads.png",
            "attention_layer0_mean.png",
            "attention_rollout.png",
            "importance.png",
            "importance.html",
            "explanation.json",
        ]
    )
    assert sorted(p.name for p in out.iterdir()) == names  # nothing else is written
    for path in paths:
        if path.suffix == ".png":
            width, height = _png(path)
            assert width > 100
            assert height > 50
    saved = json.loads((out / "explanation.json").read_text())
    assert [t for t, _ in saved["importance"]["tokens"]] == result.chunk.tokens
    assert saved["layers"] == loaded.model.config.num_hidden_layers
    assert (saved["layer"], saved["head"]) == (0, 1)
    assert saved["probability"] == pytest.approx(result.maps.probability)


def test_default_layer_is_the_last_and_bad_choices_are_errors(loaded: LoadedModel, tmp_path: Path) -> None:
    result = explain_text(loaded.model, loaded.tokenizer, loaded.spec, TEXT, method="rollout")
    last = loaded.model.config.num_hidden_layers - 1
    paths = write_explanation(result, tmp_path / "a")
    assert f"attention_layer{last}_head0.png" in {p.name for p in paths}
    with pytest.raises(ExplainError, match="Head 9 does not exist"):
        write_explanation(result, tmp_path / "b", head=9)
    target = tmp_path / "file"
    target.write_text("")
    with pytest.raises(ExplainError, match="is a file"):
        write_explanation(result, target)


def test_html_is_escaped_and_merges_pieces() -> None:
    snippet = highlighted_html([("<script>", 1.0), ("a&b", -0.2), ("fever", 0.0)], title="<t>")
    assert "<script>" not in snippet
    assert "&lt;script&gt;" in snippet
    assert "a&amp;b" in snippet
    assert "&lt;t&gt;" in snippet
    assert snippet.count("<span") == 3


def test_highlighted_text_png_wraps_long_texts(tmp_path: Path) -> None:
    words = [(f"word{i}", float(np.sin(i))) for i in range(120)]
    _, short_height = _png(plot_highlighted_text(words[:10], tmp_path / "short.png", title="t"))
    _, long_height = _png(plot_highlighted_text(words, tmp_path / "long.png", title="t"))
    assert long_height > short_height * 2


def test_heatmap_is_darker_where_the_weight_is_larger(tmp_path: Path) -> None:
    matrix = np.array([[1.0, 0.0], [0.0, 1.0]])
    path = plot_attention(matrix, ["a", "b"], tmp_path / "m.png", title="t")
    with Image.open(path) as image:
        assert image.format == "PNG"


def test_explaining_logs_no_text(
    loaded: LoadedModel, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    result = explain_text(loaded.model, loaded.tokenizer, loaded.spec, TEXT, steps=4)
    write_explanation(result, tmp_path / "x")
    logged = caplog.text.lower()
    for word in ("heparin", "overnight", "denies", "fever"):
        assert word not in logged


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def root() -> None:
        """notestream (test)."""

    register_explain(app)
    return app


def test_explain_text_command_writes_only_under_out(tiny_model_dir: Path, tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_text(TEXT, encoding="utf-8")
    before = sorted(tmp_path.iterdir())
    runner = CliRunner()
    printed = runner.invoke(
        _app(), ["explain", "--model", str(tiny_model_dir), "--text", str(note), "--steps", "4"]
    )
    assert printed.exit_code == 0, printed.output
    assert "No files written" in printed.output
    assert sorted(tmp_path.iterdir()) == before

    out = tmp_path / "out"
    args = ["explain", "--model", str(tiny_model_dir), "--text", str(note), "--out", str(out), "--layer", "1"]
    written = runner.invoke(_app(), [*args, "--head", "0", "--json", "--method", "gradient_x_input"])
    assert written.exit_code == 0, written.output
    data = json.loads(written.stdout)
    assert data["importance"]["method"] == "gradient_x_input"
    assert data["n_chunks"] == 1  # 15 words: one reference chunk (more than 10 words)
    assert _png(out / "attention_layer1_head0.png")[0] > 100
    page = (out / "importance.html").read_text()
    assert page.startswith('<div class="notestream-explanation"')
    assert "<b>" not in page.replace("<p><b>", "")  # the text's own tags are escaped
