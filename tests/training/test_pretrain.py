"""notestream.training.pretrain: the corpus (evaluation admissions held out), NSP pairs and MLM masking."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from notestream.training.pretrain import (
    _PretrainCollator,
    corpus_from_dataset,
    nsp_examples,
    pretraining_text,
    read_corpus,
    write_corpus,
)


def test_pretraining_text_drops_digits_and_collapses_space() -> None:
    assert (
        pretraining_text("Dr. Smith gave 40 mg\n\n  at 10:30.") == "doctor smith gave mg at :"
    )  # "30." goes with the [0-9]+\. rule
    assert pretraining_text(None) == ""


def test_corpus_format_and_held_out_admissions(tmp_path: Path) -> None:
    text = "The patient was admitted with chest pain overnight. She was given aspirin in the emergency room."
    chunks = pd.DataFrame(
        {"ID": [1, 1, 2, 3], "TEXT": [text, text, text.replace("chest", "belly"), text], "Label": 0}
    )
    chunks.to_csv(tmp_path / "chunks.csv", index=False)
    chunks[chunks["ID"] == 2].to_csv(tmp_path / "test.csv", index=False)
    chunks[chunks["ID"] == 3].to_csv(tmp_path / "val.csv", index=False)
    assert corpus_from_dataset(tmp_path, tmp_path / "corpus.txt") == 1
    raw = (tmp_path / "corpus.txt").read_text()
    assert "belly" not in raw
    docs = read_corpus(tmp_path / "corpus.txt")
    assert len(docs) == 1
    assert len(docs[0]) == 4  # two sentences per chunk text, one per line
    assert raw.endswith("\n\n")
    assert write_corpus(["one sentence only."], tmp_path / "c2.txt") == 0  # NSP needs two


def test_nsp_pairs_fit_and_mix_random_next() -> None:
    docs = [[[d * 100 + s * 10 + t for t in range(3)] for s in range(6)] for d in range(8)]
    examples = nsp_examples(docs, 10, seed=2)
    assert examples
    assert all(len(a) >= 1 and len(b) >= 1 and len(a) + len(b) <= 10 for a, b, _ in examples)
    labels = [nsp for _, _, nsp in examples]
    assert 0 < sum(labels) < len(labels)
    for a, b, nsp in examples:
        same_doc = a[0] // 100 == b[0] // 100
        if not nsp:
            assert same_doc
            assert b[0] > a[-1]  # B continues A


class _Tok:
    cls_token_id, sep_token_id, pad_token_id, mask_token_id = 2, 3, 0, 4

    def __len__(self) -> int:
        return 50


def test_mlm_masking_spares_special_tokens_and_sets_segments() -> None:
    torch.manual_seed(0)
    items = [([10 + i for i in range(20)], [30 + i for i in range(15)], 1), ([11, 12], [13], 0)]
    batch = _PretrainCollator(_Tok(), mlm_probability=0.5)(items)
    ids, labels = batch["input_ids"], batch["labels"]
    assert ids.shape == (2, 38)
    assert batch["token_type_ids"][0, :22].sum() == 0
    assert batch["token_type_ids"][0, 22:38].sum() == 16
    assert batch["next_sentence_label"].tolist() == [1, 0]
    assert (labels[:, 0] == -100).all()  # [CLS] never predicted
    assert (labels[1, 6:] == -100).all()  # padding never predicted
    chosen = labels != -100
    assert chosen.any()
    assert ((ids == 4) & ~chosen).sum() == 0  # [MASK] only where a label is
    assert pytest.approx(0.5, abs=0.2) == chosen[0, 1:21].float().mean().item()


def test_corpus_from_mimic_leaves_out_named_admissions(tmp_path: Path) -> None:
    from notestream.mimic.tables import connect, fetch_df, table_sql
    from notestream.training.mimic import Source
    from notestream.training.pretrain import corpus_from_mimic
    from notestream.training.synth import write_mimic_iii

    write_mimic_iii(tmp_path / "m", 12, seed=9, notes_scale=0.1, words_scale=0.2)
    source = Source.open(mimic_iii=tmp_path / "m")
    notes = fetch_df(connect(), table_sql(source.notes[0], ["HADM_ID", "TEXT"]))
    held = set(notes["HADM_ID"].dropna().astype(int))
    everything = corpus_from_mimic(source, tmp_path / "all.txt", exclude_hadm=set())
    only_outpatient = corpus_from_mimic(source, tmp_path / "some.txt", exclude_hadm=held)
    assert 0 < only_outpatient < everything  # notes without HADM_ID are never excluded
    assert corpus_from_mimic(source, tmp_path / "two.txt", exclude_hadm=set(), max_notes=2) <= 2
