"""notestream.training.pretrain_data: streamed NSP pairs in a bounded buffer, on-disk shards, training from them."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from notestream.training.errors import TrainRunError
from notestream.training.pretrain import _PretrainCollator, pretrain, write_corpus
from notestream.training.pretrain_data import (
    ShardDataset,
    build_shards,
    iter_documents,
    nsp_examples,
    read_corpus,
    stream_examples,
)
from notestream.training.run_config import PretrainConfig

_WORDS = [
    "patient",
    "admitted",
    "chest",
    "pain",
    "aspirin",
    "given",
    "stable",
    "discharged",
    "home",
    "fever",
    "cough",
    "breath",
    "heart",
    "rate",
]


def _notes(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(
            " ".join(rng.choice(_WORDS) for _ in range(rng.randint(5, 14))).capitalize() + "."
            for _ in range(rng.randint(2, 9))
        )
        for _ in range(n)
    ]


def _int_docs(n: int, sentences: int = 6) -> list[list[list[int]]]:
    """Document d's tokens are d * 1000 + position, so every token names its document."""
    return [[[d * 1000 + s * 10 + t for t in range(3)] for s in range(sentences)] for d in range(n)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    from transformers import BertTokenizer

    from notestream.models.build import train_wordpiece

    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    assert write_corpus(_notes(40, seed=3), path) >= 30
    vocab = train_wordpiece((s for d in iter_documents(path) for s in d), vocab_size=200)
    return path, BertTokenizer(vocab=vocab, do_lower_case=True)


def test_streaming_equals_in_memory_when_the_buffer_holds_the_corpus() -> None:
    docs = _int_docs(9)
    for dupe in (1, 3):
        streamed = list(stream_examples(iter(docs), 11, buffer_docs=9, seed=5, dupe=dupe))
        assert streamed == nsp_examples(docs, 11, seed=5, dupe=dupe)
    assert len(nsp_examples(docs, 11, seed=5, dupe=3)) > 2 * len(nsp_examples(docs, 11, seed=5))
    with pytest.raises(TrainRunError):
        list(stream_examples(docs, 11, buffer_docs=1))


def test_random_b_comes_only_from_the_buffer() -> None:
    docs = _int_docs(20)
    examples = list(stream_examples(docs, 12, buffer_docs=4, seed=1))
    random_next = [(a, b) for a, b, nsp in examples if nsp]
    assert len(random_next) > 10
    for a, b, nsp in examples:
        doc_a, doc_b = a[0] // 1000, b[0] // 1000
        assert all(t // 1000 == doc_a for t in a)
        assert all(t // 1000 == doc_b for t in b)
        if nsp:
            assert doc_a != doc_b
            assert doc_a // 4 == doc_b // 4  # same buffer of 4 consecutive documents
        else:
            assert doc_a == doc_b
            assert b[0] > a[-1]
    # Every buffer pairs across its own documents, later buffers included.
    assert {a[0] // 1000 // 4 for a, _ in random_next} == set(range(5))


def test_shards_read_back_the_in_memory_examples(corpus: tuple[Path, Any], tmp_path: Path) -> None:
    path, tokenizer = corpus
    docs = read_corpus(path)
    tokenized = [[tokenizer(s, add_special_tokens=False)["input_ids"] for s in d] for d in docs]
    expected = nsp_examples(tokenized, 32 - 3, seed=7, dupe=2)
    manifest = build_shards(
        path,
        tokenizer,
        tmp_path / "shards",
        max_length=32,
        dupe=2,
        seed=7,
        buffer_docs=len(docs),
        shard_examples=25,
        progress=False,
    )
    assert manifest["documents"] == len(docs)
    assert manifest["examples"] == len(expected)
    assert len(manifest["shards"]) == -(-len(expected) // 25)  # several shard files
    data = ShardDataset(tmp_path / "shards")
    assert [data[i] for i in range(len(data))] == expected
    assert data[-1] == expected[-1]
    with pytest.raises(IndexError):
        data[len(data)]
    index = np.load(tmp_path / "shards" / manifest["shards"][0]["index"], allow_pickle=False)
    assert index.dtype == np.int64
    assert index.shape == (25, 4)
    assert not list((tmp_path / "shards").glob("*.pkl"))


def test_shard_examples_are_bert_pairs(corpus: tuple[Path, Any], tmp_path: Path) -> None:
    path, tokenizer = corpus
    build_shards(path, tokenizer, tmp_path, max_length=24, buffer_docs=5, seed=2, progress=False)
    data = ShardDataset(tmp_path)
    items = [data[i] for i in range(len(data))]
    labels = [nsp for _, _, nsp in items]
    assert 0 < sum(labels) < len(labels)
    torch.manual_seed(0)
    batch = _PretrainCollator(tokenizer, mlm_probability=0.0)(items)
    ids, types = batch["input_ids"], batch["token_type_ids"]
    assert ids.shape[1] <= 24
    assert batch["next_sentence_label"].tolist() == labels
    for row, (a, b, _) in enumerate(items):
        n = len(a) + len(b) + 3
        expected = [tokenizer.cls_token_id, *a, tokenizer.sep_token_id, *b, tokenizer.sep_token_id]
        assert ids[row, :n].tolist() == expected
        assert types[row, :n].tolist() == [0] * (len(a) + 2) + [1] * (len(b) + 1)
        assert (ids[row, n:] == tokenizer.pad_token_id).all()


def test_rebuilding_replaces_old_shards_and_a_missing_manifest_is_an_error(
    corpus: tuple[Path, Any], tmp_path: Path
) -> None:
    path, tokenizer = corpus
    build_shards(path, tokenizer, tmp_path, max_length=24, shard_examples=5, progress=False)
    many = len(list(tmp_path.glob("shard-*.bin")))
    manifest = build_shards(path, tokenizer, tmp_path, max_length=24, shard_examples=10**6, progress=False)
    assert many > 1
    assert len(list(tmp_path.glob("shard-*.bin"))) == 1
    assert len(ShardDataset(tmp_path)) == manifest["examples"]
    with pytest.raises(TrainRunError):
        ShardDataset(tmp_path / "nothing")


def test_a_few_training_steps_from_shards(corpus: tuple[Path, Any], tmp_path: Path) -> None:
    path, _ = corpus
    out = pretrain(
        path,
        tmp_path / "pre",
        config=PretrainConfig(
            max_steps=2,
            batch_size=4,
            vocab_size=200,
            hidden=32,
            layers=1,
            heads=2,
            max_length=32,
            buffer_docs=6,
            shard_examples=20,
            progress=False,
        ),
    )
    report = json.loads((out / "pretrain.json").read_text())
    assert report["steps"] == 2
    assert report["train_loss"] > 0
    assert report["examples"] == len(ShardDataset(out / "shards")) > 20
    assert (out / "model.safetensors").is_file()
