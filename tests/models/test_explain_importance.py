"""Token importances on a tiny model trained in the test so that one planted word decides the label."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from notestream.models.build import build_small_bert, clinical_corpus
from notestream.models.checkpoint import LoadedModel, load_model_folder
from notestream.models.explain import ExplainError, merge_wordpieces, token_importance

PLANT = "relapse"  # the one word that makes a text positive


def planted_texts(n: int, seed: int) -> tuple[list[str], list[int]]:
    """Texts of 12-24 filler words from the generated corpus; every other one holds PLANT (label 1)."""
    rng = random.Random(seed)
    filler = [
        w for w in " ".join(clinical_corpus(60, seed=seed)).lower().split() if w.isalpha() and w != PLANT
    ]
    texts, labels = [], []
    for i in range(n):
        words = [rng.choice(filler) for _ in range(rng.randint(12, 24))]
        if i % 2:
            words.insert(rng.randrange(len(words) + 1), PLANT)
        texts.append(" ".join(words))
        labels.append(i % 2)
    return texts, labels


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread for this module: with several, CPU backward passes accumulate in an order
    that varies from run to run, and the planted model and its gradients with it; the checks below are
    about the method, so they run on one fixed model."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    """A 2-layer, 32-wide BERT trained for 80 steps (about a second on one core) on planted texts."""
    texts, labels = planted_texts(256, seed=0)
    folder = build_small_bert(
        tmp_path_factory.mktemp("planted"),
        clinical_corpus(100, seed=0) + texts,
        vocab_size=400,
        hidden=32,
        layers=2,
        heads=2,
        intermediate=64,
        max_length=64,
        seed=0,
    )
    loaded = load_model_folder(folder)
    model, tokenizer = loaded.model, loaded.tokenizer
    assert PLANT in tokenizer.get_vocab()
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(80):
        batch = torch.randint(0, len(texts), (32,)).tolist()
        encoded = tokenizer([texts[i] for i in batch], padding=True, return_tensors="pt")
        target = torch.tensor([float(labels[i]) for i in batch])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(**encoded).logits[:, 0], target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return loaded


def _encode(loaded: LoadedModel, text: str, max_length: int = 64) -> tuple[list[int], list[str]]:
    ids = list(loaded.tokenizer(text, truncation=True, max_length=max_length)["input_ids"])
    return ids, list(loaded.tokenizer.convert_ids_to_tokens(ids))


def test_planted_model_learned_the_rule(planted: LoadedModel) -> None:
    texts, labels = planted_texts(64, seed=1)
    with torch.no_grad():
        encoded = planted.tokenizer(texts, padding=True, return_tensors="pt")
        p = torch.sigmoid(planted.model(**encoded).logits[:, 0])
    accuracy = ((p > 0.5).long() == torch.tensor(labels)).float().mean().item()
    assert accuracy > 0.9, "the planted-word model did not learn its rule; the importance tests mean nothing"


@pytest.mark.parametrize("method", ["integrated_gradients", "gradient_x_input", "rollout"])
def test_planted_word_ranks_near_the_top(planted: LoadedModel, method: str) -> None:
    texts, labels = planted_texts(24, seed=2)
    ranks = []
    for text, label in zip(texts, labels, strict=True):
        if not label:
            continue
        ids, tokens = _encode(planted, text)
        importance = token_importance(planted.model, ids, tokens, method=method)
        ranked = [word for word, _ in importance.top(k=len(tokens))]
        ranks.append(ranked.index(PLANT))
    assert len(ranks) == 12
    assert max(ranks) <= 2, f"{method}: planted word ranks {ranks} among ~20 words"
    assert sorted(ranks)[len(ranks) // 2] == 0


def test_integrated_gradients_say_the_planted_word_raised_the_score(planted: LoadedModel) -> None:
    texts, labels = planted_texts(8, seed=3)
    for text, label in zip(texts, labels, strict=True):
        if label:
            ids, tokens = _encode(planted, text)
            words = dict(token_importance(planted.model, ids, tokens).words())
            assert words[PLANT] > 0
            assert words[PLANT] == max(words.values())


def test_integrated_gradients_add_up_on_a_model_that_jumps(planted: LoadedModel) -> None:
    """The planted model switches within a sliver of the path; the refined path still adds up."""
    texts, labels = planted_texts(12, seed=5)
    for text, label in zip(texts, labels, strict=True):
        if label:
            ids, tokens = _encode(planted, text)
            importance = token_importance(planted.model, ids, tokens)
            assert importance.delta is not None
            gap = sum(importance.weights) - importance.delta
            assert abs(gap) > 1.0
            assert abs(importance.delta) < 0.2 * abs(gap)


def _logit(model: Any, ids: list[int]) -> float:
    with torch.no_grad():
        return float(model(input_ids=torch.tensor([ids])).logits[0, 0])


def test_integrated_gradients_add_up_to_the_logit_difference(
    tiny_model_dir: Path, tiny_corpus: list[str]
) -> None:
    """Completeness, on a smooth model: the random tiny BERT with its output scaled up so that the
    logit moves by whole units (a trained tiny model is a step function along the path; see delta)."""
    loaded = load_model_folder(tiny_model_dir)
    pad = loaded.tokenizer.pad_token_id
    head: Any = loaded.model.classifier
    with torch.no_grad():
        head.weight.mul_(3e5)
        first = loaded.tokenizer(tiny_corpus[0], truncation=True, max_length=48)["input_ids"]
        head.bias.sub_(_logit(loaded.model, first))  # logits near 0, not saturated
    checked = 0
    for text in tiny_corpus[:6]:
        ids, tokens = _encode(loaded, text, max_length=48)
        baseline = [i if t in ("[CLS]", "[SEP]") else pad for i, t in zip(ids, tokens, strict=True)]
        gap = _logit(loaded.model, ids) - _logit(loaded.model, baseline)
        if abs(gap) < 0.1:
            continue
        checked += 1
        importance = token_importance(loaded.model, ids, tokens, steps=32)
        assert sum(importance.weights) == pytest.approx(gap, rel=1e-2)
        assert importance.delta is not None
        assert abs(importance.delta) < 1e-2 * abs(gap)
        assert importance.weights[0] == 0.0  # [CLS] is kept in the baseline
        expected = float(torch.sigmoid(torch.tensor(_logit(loaded.model, ids))))
        assert importance.probability == pytest.approx(expected, abs=1e-6)
    assert checked >= 3


def test_unknown_method_is_a_clear_error(tiny_model_dir: Path) -> None:
    loaded = load_model_folder(tiny_model_dir)
    ids, tokens = _encode(loaded, "patient denies chest pain")
    with pytest.raises(ExplainError, match="integrated_gradients, gradient_x_input, rollout"):
        token_importance(loaded.model, ids, tokens, method="lime")


def test_importance_json_pairs_tokens_and_words(tiny_model_dir: Path) -> None:
    loaded = load_model_folder(tiny_model_dir)
    ids, tokens = _encode(loaded, "patient was started on metoprolol overnight")
    result = token_importance(loaded.model, ids, tokens, method="gradient_x_input").to_json()
    assert [t for t, _ in result["tokens"]] == tokens
    assert " ".join(w for w, _ in result["words"]) == "patient was started on metoprolol overnight"
    assert result["signed"] is False


pieces = st.lists(
    st.tuples(st.sampled_from(["[CLS]", "[SEP]", "fever", "##ish", "##ly", "cough", "a"]), st.floats(-5, 5)),
    max_size=30,
)


@given(pieces)
def test_merging_pieces_keeps_the_total_weight(items: list[tuple[str, float]]) -> None:
    tokens = [t for t, _ in items]
    weights = [w for _, w in items]
    words = merge_wordpieces(tokens, weights)
    kept = [w for t, w in items if t not in ("[CLS]", "[SEP]")]
    assert sum(w for _, w in words) == pytest.approx(sum(kept), abs=1e-9)
    body = [t for t in tokens if t not in ("[CLS]", "[SEP]")]
    starts = [i for i, t in enumerate(body) if i == 0 or not t.startswith("##")]
    assert len(words) == len(starts)
    assert "".join(w for w, _ in words) == "".join(t if i in starts else t[2:] for i, t in enumerate(body))
