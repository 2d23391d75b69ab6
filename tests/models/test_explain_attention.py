"""Attention maps and rollout on the tiny BERT fixture (tests/fixtures/models.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from notestream.models.checkpoint import LoadedModel, load_model_folder
from notestream.models.classifier import ChunkClassifier
from notestream.models.explain import ExplainError, attention_maps, eager_copy, prepare_chunk, rollout
from notestream.models.prep import note_chunks


@pytest.fixture(scope="module")
def served(tiny_model_dir: Path) -> LoadedModel:
    """The tiny model as the worker serves it: fused (sdpa) attention."""
    return load_model_folder(tiny_model_dir)


def test_served_model_uses_fused_attention(served: LoadedModel) -> None:
    assert served.model.config._attn_implementation == "sdpa"


def test_attention_rows_sum_to_one_with_the_models_shape(served: LoadedModel, tiny_corpus: list[str]) -> None:
    chunk = prepare_chunk(tiny_corpus[3], served.spec, served.tokenizer)
    maps = attention_maps(served.model, chunk.input_ids, chunk.tokens)
    config = served.model.config
    size = len(chunk.input_ids)
    assert maps.weights.shape == (config.num_hidden_layers, config.num_attention_heads, size, size)
    assert maps.tokens == chunk.tokens
    assert (maps.weights >= 0).all()
    np.testing.assert_allclose(maps.weights.sum(axis=-1), 1.0, atol=1e-5)
    for layer in range(maps.n_layers):
        assert maps.mean(layer).shape == (size, size)
        np.testing.assert_allclose(maps.mean(layer).sum(axis=-1), 1.0, atol=1e-5)
    assert not np.allclose(maps.weights[0, 0], 1.0 / size)  # a real map, not uniform


def test_eager_copy_gives_the_served_probability_and_leaves_the_served_model(
    served: LoadedModel, tiny_corpus: list[str]
) -> None:
    twin = eager_copy(served.model)
    assert twin is not served.model
    assert twin.config._attn_implementation == "eager"
    assert served.model.config._attn_implementation == "sdpa"
    chunk_text = note_chunks(tiny_corpus[5], served.spec)[0]
    served_p = float(ChunkClassifier(served, "cpu").predict([chunk_text])[0])
    chunk = prepare_chunk(tiny_corpus[5], served.spec, served.tokenizer)
    maps = attention_maps(served.model, chunk.input_ids, chunk.tokens)
    assert maps.probability == pytest.approx(served_p, abs=1e-5)


def test_eager_loaded_model_gives_the_same_maps_as_the_copy(
    served: LoadedModel, tiny_model_dir: Path, tiny_corpus: list[str]
) -> None:
    eager = load_model_folder(tiny_model_dir, attn_implementation="eager")
    assert eager_copy(eager.model) is eager.model
    chunk = prepare_chunk(tiny_corpus[1], served.spec, served.tokenizer)
    a = attention_maps(served.model, chunk.input_ids, chunk.tokens)
    b = attention_maps(eager.model, chunk.input_ids, chunk.tokens)
    np.testing.assert_allclose(a.weights, b.weights, atol=1e-6)


def test_prepared_chunk_is_what_the_classifier_scores(served: LoadedModel, tiny_corpus: list[str]) -> None:
    text = " ".join(tiny_corpus[:6])
    chunks = note_chunks(text, served.spec)
    assert len(chunks) >= 2
    last = len(chunks) - 1
    prepared = prepare_chunk(text, served.spec, served.tokenizer, chunk=last)
    assert prepared.n_chunks == len(chunks)
    assert prepared.input_ids == ChunkClassifier(served, "cpu").encode([chunks[last]])[0]
    with pytest.raises(ExplainError, match="chunk index from 0"):
        prepare_chunk(text, served.spec, served.tokenizer, chunk=len(chunks))


def test_long_chunk_is_cut_like_the_classifier_cuts_it(served: LoadedModel, tiny_corpus: list[str]) -> None:
    prepared = prepare_chunk(tiny_corpus[0], served.spec, served.tokenizer, max_length=16)
    assert prepared.truncated
    assert len(prepared.input_ids) == 16
    assert prepared.tokens[0] == "[CLS]"
    assert prepared.tokens[-1] == "[SEP]"
    assert "cut to the model's maximum length" in prepared.describe()


def test_short_text_is_explained_whole(served: LoadedModel) -> None:
    prepared = prepare_chunk("Patient denies chest pain.", served.spec, served.tokenizer)
    assert prepared.n_chunks == 0
    assert "too short" in prepared.describe()
    assert prepared.tokens[0] == "[CLS]"
    assert len(prepared.tokens) > 3


def test_unknown_layer_or_head_is_a_clear_error(served: LoadedModel) -> None:
    prepared = prepare_chunk("Patient denies chest pain.", served.spec, served.tokenizer)
    maps = attention_maps(served.model, prepared.input_ids, prepared.tokens)
    with pytest.raises(ExplainError, match="layers 0 to 1"):
        maps.head(2, 0)
    with pytest.raises(ExplainError, match="heads 0 to 1"):
        maps.head(0, 5)


def test_rollout_of_the_model_is_row_stochastic(served: LoadedModel, tiny_corpus: list[str]) -> None:
    chunk = prepare_chunk(tiny_corpus[2], served.spec, served.tokenizer)
    result = attention_maps(served.model, chunk.input_ids, chunk.tokens).rollout()
    size = len(chunk.input_ids)
    assert result.shape == (size, size)
    np.testing.assert_allclose(result.sum(axis=-1), 1.0, atol=1e-6)


@settings(max_examples=30)
@given(
    arrays(
        np.float64,
        st.tuples(st.integers(1, 3), st.integers(1, 3), st.just(5), st.just(5)),
        elements=st.floats(0.01, 1.0),
    ),
    st.floats(0.0, 1.0),
)
def test_rollout_keeps_rows_stochastic(raw: np.ndarray, residual: float) -> None:
    weights = raw / raw.sum(axis=-1, keepdims=True)
    result = rollout(weights, residual=residual)
    assert (result >= 0).all()
    np.testing.assert_allclose(result.sum(axis=-1), 1.0, atol=1e-9)


def test_rollout_with_full_residual_is_the_identity() -> None:
    weights = torch.softmax(torch.randn(2, 2, 4, 4), dim=-1).numpy()
    np.testing.assert_allclose(rollout(weights, residual=1.0), np.eye(4), atol=1e-12)
