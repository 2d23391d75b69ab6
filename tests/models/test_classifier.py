"""Golden tests of ChunkClassifier against a direct forward of the same small BERT."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from notestream.models.batching import plan_batches, select_batch
from notestream.models.build import build_small_bert, clinical_corpus
from notestream.models.checkpoint import load_model_folder
from notestream.models.classifier import ChunkClassifier
from notestream.models.prep import note_chunks
from notestream.models.spec import ModelSpec


@pytest.fixture(scope="module")
def classifier(tiny_model_dir: Path) -> ChunkClassifier:
    return ChunkClassifier(load_model_folder(tiny_model_dir), "cpu", max_batch_size=8, max_batch_tokens=2048)


@pytest.fixture(scope="module")
def chunks(tiny_corpus: list[str]) -> list[str]:
    notes = clinical_corpus(12, seed=5, sentences=(5, 150))
    out = [c for note in notes for c in note_chunks(note, ModelSpec())]
    assert len({len(c.split()) for c in out}) > 3  # a mix of full chunks and tails
    return out


def direct(model: torch.nn.Module, tokenizer: object, text: str) -> torch.Tensor:
    """One chunk, no padding, straight through the Hugging Face model."""
    enc = tokenizer(text, truncation=True, max_length=512, return_tensors="pt")  # type: ignore[operator]
    with torch.no_grad():
        return model(**enc).logits[0]


def test_probabilities_equal_sigmoid_of_a_direct_forward(
    classifier: ChunkClassifier, chunks: list[str]
) -> None:
    got = classifier.predict(chunks)
    model, tok = classifier.model, classifier.tokenizer
    expected = np.array([torch.sigmoid(direct(model, tok, t)[0]).item() for t in chunks])
    assert got.shape == (len(chunks),)
    assert np.allclose(got, expected, atol=1e-5, rtol=0)
    assert np.all((got > 0) & (got < 1))


def test_two_label_head_gives_the_positive_softmax(tmp_path: Path, tiny_corpus: list[str]) -> None:
    folder = build_small_bert(
        tmp_path / "two", tiny_corpus, vocab_size=500, hidden=32, layers=1, heads=2, num_labels=2, seed=3
    )
    clf = ChunkClassifier(load_model_folder(folder))
    texts = ["patient denies chest pain", "chf, given lasix 40 mg iv " * 30]
    expected = [torch.softmax(direct(clf.model, clf.tokenizer, t), -1)[1].item() for t in texts]
    assert clf.predict(texts) == pytest.approx(expected, abs=1e-5)


def test_order_and_batching_do_not_change_results(classifier: ChunkClassifier, chunks: list[str]) -> None:
    base = classifier.predict(chunks)
    order = list(range(len(chunks)))
    random.Random(0).shuffle(order)
    shuffled = classifier.predict([chunks[i] for i in order])
    assert np.allclose(shuffled, base[order], atol=1e-6)
    assert np.array_equal(classifier.predict(chunks), base)  # deterministic


def test_long_chunks_are_truncated_to_512_keeping_the_head(classifier: ChunkClassifier) -> None:
    long = "patient was given lasix overnight " * 400
    ids = classifier.encode([long, "x"])
    assert len(ids[0]) == 512
    assert ids[0][0] == classifier.tokenizer.cls_token_id
    assert ids[0][-1] == classifier.tokenizer.sep_token_id
    head = classifier.encode(["patient was given lasix overnight " * 50])[0]
    assert ids[0][:100] == head[:100]
    assert np.isfinite(classifier.predict([long])).all()


def test_unicode_chunks_score_like_a_direct_forward(classifier: ChunkClassifier) -> None:
    texts = ["café naïve ½ tab, 37.5°C, 日本語 notes — ok", "ünïcödé " * 40, "\u200b\ufeff zero width"]
    expected = [torch.sigmoid(direct(classifier.model, classifier.tokenizer, t)[0]).item() for t in texts]
    assert classifier.predict(texts) == pytest.approx(expected, abs=1e-5)


def test_empty_inputs(classifier: ChunkClassifier) -> None:
    assert classifier.predict([]).shape == (0,)
    assert classifier.encode([]) == []
    assert classifier.predict([""]).shape == (1,)  # [CLS] [SEP] still scores


@given(
    st.lists(st.integers(1, 512), max_size=80),
    st.integers(1, 32),
    st.integers(512, 8192),
    st.sampled_from([0.0, 0.5, 0.9]),
)
@settings(max_examples=200)
def test_offline_batches_are_planned_by_the_serving_rule(
    lengths: list[int], size: int, budget: int, efficiency: float
) -> None:
    """plan_batches covers every input within the budget, and each batch is exactly what the engine's
    select_batch takes from the chunks left, queued longest first."""
    batches = plan_batches(lengths, max_batch_size=size, max_batch_tokens=budget, min_efficiency=efficiency)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    queue = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    for batch in batches:
        assert 1 <= len(batch) <= size
        assert len(batch) == 1 or max(lengths[i] for i in batch) * len(batch) <= budget
        chosen = select_batch(
            [lengths[i] for i in queue],
            max_batch_size=size,
            max_batch_tokens=budget,
            min_efficiency=efficiency,
        )
        assert batch == [queue[k] for k in chosen]
        queue = [i for i in queue if i not in batch]


def test_bf16_autocast_stays_close_to_float32(tiny_model_dir: Path, chunks: list[str]) -> None:
    loaded = load_model_folder(tiny_model_dir)
    fp32 = ChunkClassifier(loaded, "cpu", bf16=False).predict(chunks[:6])
    bf16 = ChunkClassifier(loaded, "cpu", bf16=True).predict(chunks[:6])
    assert bf16 == pytest.approx(fp32, abs=0.02)
