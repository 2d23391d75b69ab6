"""Fresh small BERT classifiers with their own WordPiece vocabulary, built from text on this machine.

Nothing can be downloaded from a model hub here, so tests, benchmarks and training runs that start from
scratch build their models with :func:`build_small_bert`: a WordPiece vocabulary trained with
``tokenizers`` on the given texts, a randomly initialised ``BertForSequenceClassification`` and a
``notestream.json``, saved as an ordinary Hugging Face folder.

>>> texts = clinical_corpus(3, seed=1)
>>> len(texts), all(isinstance(t, str) and t for t in texts)
(3, True)
>>> clinical_corpus(2, seed=7) == clinical_corpus(2, seed=7)
True
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path

from notestream.models.spec import ModelSpec

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

_SUBJECTS = [
    "patient",
    "pt",
    "the patient",
    "he",
    "she",
    "family",
    "nursing",
    "the team",
    "cardiology",
    "neurology",
    "renal",
    "social work",
    "pharmacy",
    "resident",
    "attending",
]
_VERBS = [
    "reports",
    "denies",
    "was given",
    "was started on",
    "tolerated",
    "remains on",
    "was weaned from",
    "complains of",
    "was transferred for",
    "was noted to have",
    "will continue",
    "refused",
]
_OBJECTS = [
    "chest pain",
    "shortness of breath",
    "lasix 40 mg iv",
    "metoprolol 25 mg po bid",
    "heparin drip",
    "nausea",
    "abdominal pain",
    "fever of 101.2",
    "hypotension",
    "sepsis",
    "pneumonia",
    "a foley",
    "insulin sliding scale",
    "vancomycin",
    "a chest x-ray",
    "atrial fibrillation",
    "copd exacerbation",
    "chf",
    "acute kidney injury",
    "diuresis",
    "oxygen 2l nc",
    "intubation",
    "extubation",
    "a pressor",
    "ct of the head",
    "blood cultures",
    "potassium repletion",
    "tylenol 650 mg",
    "a bowel regimen",
    "physical therapy",
    "the rehab facility",
    "hospice",
    "dialysis",
    "lactate 2.4",
    "troponin",
]
_TAILS = [
    "overnight",
    "this morning",
    "without complication",
    "as tolerated",
    "per protocol",
    "at home",
    "on admission",
    "prior to discharge",
    "with good effect",
    "and will follow up",
    "in the unit",
]
_HEADERS = [
    "admission date: [**2150-1-1**] discharge date: [**2150-1-9**]",
    "history of present illness:",
    "past medical history:",
    "medications on admission:",
    "discharge medications:",
    "assessment and plan:",
    "dr. [**last name (stitle) 123**] m.d.",
    "vitals: t 98.6 hr 88 bp 120/80 rr 18 o2 sat 97% ra",
    "___",
]


def clinical_corpus(n: int, *, seed: int = 0, sentences: tuple[int, int] = (4, 30)) -> list[str]:
    """``n`` generated clinical-sounding notes (no real patient data), deterministic for a seed."""
    rng = random.Random(seed)
    notes = []
    for _ in range(n):
        parts = [rng.choice(_HEADERS)]
        for _ in range(rng.randint(*sentences)):
            sentence = (
                f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TAILS)}."
            )
            parts.append(sentence.capitalize() if rng.random() < 0.5 else sentence)
            if rng.random() < 0.15:
                parts.append("\n" + rng.choice(_HEADERS) + "\n")
        notes.append(" ".join(parts))
    return notes


def train_wordpiece(
    texts: Iterable[str], *, vocab_size: int = 2000, lowercase: bool = True
) -> dict[str, int]:
    """Train an uncased BERT WordPiece vocabulary on ``texts``; returns token -> id (specials first).

    The same texts give the same vocabulary in every process. The Hugging Face trainer on its own does
    not promise that: it numbers the word-continuing pieces (``##e``) in hash-map order, and those
    numbers break ties between merges of equal count (huggingface/tokenizers#1794), so two runs could
    learn different pieces and two test processes different models. Here those pieces are numbered
    first, in sorted order, from one pass over the texts, so the ties break the same way every time.
    ``texts`` is therefore read twice: pass a list, or an object whose ``__iter__`` starts over (a
    one-shot iterator is read into memory first).

    >>> a = train_wordpiece(["the patient rested", "patients rest"], vocab_size=40)
    >>> a == train_wordpiece(["the patient rested", "patients rest"], vocab_size=40), list(a)[:2]
    (True, ['[PAD]', '[UNK]'])
    """
    from tokenizers import BertWordPieceTokenizer

    if iter(texts) is texts:
        texts = list(texts)
    tokenizer = BertWordPieceTokenizer(lowercase=lowercase, strip_accents=lowercase)
    normalizer, pre_tokenizer = tokenizer.normalizer, tokenizer.pre_tokenizer
    assert normalizer is not None
    assert pre_tokenizer is not None
    continuing: set[str] = set()
    for text in texts:
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)):
            continuing.update(word[1:])
    tokenizer.train_from_iterator(
        texts,
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS + sorted(f"##{c}" for c in continuing),
        show_progress=False,
    )
    vocab: dict[str, int] = tokenizer.get_vocab()
    return dict(sorted(vocab.items(), key=lambda item: item[1]))


def build_small_bert(
    out_dir: str | Path,
    corpus_texts: Iterable[str],
    *,
    vocab_size: int = 2000,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 2,
    intermediate: int | None = None,
    max_length: int = 512,
    num_labels: int = 1,
    seed: int = 0,
    spec: ModelSpec | None = None,
) -> Path:
    """Write a randomly initialised BERT sequence classifier with a freshly trained vocabulary.

    The folder holds ``config.json``, ``model.safetensors``, the tokenizer files and ``notestream.json``
    (``spec``, default: the reference ModelSpec with ``max_length``). Returns the folder.
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    from notestream.models.checkpoint import save_model_folder

    vocab = train_wordpiece(corpus_texts, vocab_size=vocab_size)
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True)
    tokenizer.model_max_length = max_length
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate if intermediate is not None else 2 * hidden,
        max_position_embeddings=max_length,
        num_labels=num_labels,  # type: ignore[call-arg]  # a PretrainedConfig keyword
        pad_token_id=vocab["[PAD]"],
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config).eval()
    if spec is None:
        spec = ModelSpec(
            max_length=max_length, provenance={"built_by": "notestream.models.build.build_small_bert"}
        )
    return save_model_folder(model, tokenizer, spec, out_dir)
