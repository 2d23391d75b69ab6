"""Text handling on ordinary and adversarial notes: seconds per MB. One JSON line.

Operations: ``clean`` in both modes (``huang2019``, ``clinical``), ``chunk`` (the reference path: clean
with huang2019 then 318-word chunks, :func:`notestream.models.prep.note_chunks`), ``windows`` (clinical cleaning
then 510-token windows with a WordPiece tokenizer trained here) and ``sentences`` (spaCy's sentencizer as
the pre-training data uses it). Inputs, ``--mb`` MB each (``--sentences-mb`` for sentences, spaCy being
the slowest step by far):

- ``ordinary``: generated clinical notes (:func:`notestream.models.build.clinical_corpus`);
- ``brackets``: runs of ``[`` (1 to 20,000 long) between ordinary words, never closed;
- ``digits``: runs of digits (1 to 20,000 long) between ordinary words, no dot after them;
- ``placeholders``: runs of ``[**`` never closed by ``**]``;
- ``no_spaces``: random letters, digits and punctuation with no whitespace at all.

Before the linear rewrite, cleaning an unclosed 100 kB run took about a minute and grew 4x per doubling.
Keys: ``s_per_mb[op][input]``, ``worst_adversarial_vs_ordinary[op]`` (target <= 3 for ``clean_*``,
``chunk`` and ``windows``). Figures and a plot go to ``benchmarks/results/text.{json,png}``.

    python benchmarks/text.py [--mb 1] [--sentences-mb 0.1]
"""

from __future__ import annotations

import argparse
import json
import random
import string
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from notestream.models.build import clinical_corpus, train_wordpiece  # noqa: E402
from notestream.models.prep import note_chunks  # noqa: E402
from notestream.models.spec import Chunking, ModelSpec  # noqa: E402
from notestream.models.text import clean, sentences  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
MB = 1024 * 1024
_WORDS = [
    "the",
    "patient",
    "was",
    "given",
    "lasix",
    "40",
    "mg",
    "iv",
    "overnight",
    "and",
    "remained",
    "stable",
]


def ordinary(size: int, rng: random.Random) -> str:
    parts: list[str] = []
    total = 0
    while total < size:
        note = clinical_corpus(1, seed=rng.randrange(1 << 30), sentences=(20, 120))[0]
        parts.append(note)
        total += len(note) + 1
    return "\n".join(parts)[:size]


def runs_of(unit: str, size: int, rng: random.Random) -> str:
    parts: list[str] = []
    total = 0
    while total < size:
        run = unit * max(1, rng.randint(1, 20_000) // len(unit))
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 30)))
        parts.append(f"{run} {words} ")
        total += len(parts[-1])
    return "".join(parts)[:size]


def digit_runs(size: int, rng: random.Random) -> str:
    parts: list[str] = []
    total = 0
    while total < size:
        run = "".join(rng.choices(string.digits, k=rng.randint(1, 20_000)))
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 30)))
        parts.append(f"{run} {words} ")
        total += len(parts[-1])
    return "".join(parts)[:size]


def no_spaces(size: int, rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits + string.punctuation, k=size))


INPUTS: dict[str, Callable[[int, random.Random], str]] = {
    "ordinary": ordinary,
    "brackets": lambda size, rng: runs_of("[", size, rng),
    "digits": digit_runs,
    "placeholders": lambda size, rng: runs_of("[**", size, rng),
    "no_spaces": no_spaces,
}


def seconds_per_mb(fn: Callable[[str], Any], text: str, repeats: int = 2) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(text)
        best = min(best, time.perf_counter() - start)
    return best / (len(text) / MB)


def windows_tokenizer(work: Path) -> Any:
    from transformers import BertTokenizer

    vocab = train_wordpiece(clinical_corpus(200, seed=1), vocab_size=2000)
    path = work / "vocab.txt"
    path.write_text("\n".join(sorted(vocab, key=vocab.__getitem__)) + "\n")
    return BertTokenizer(vocab_file=str(path), do_lower_case=True)


def main(mb: float, sentences_mb: float) -> dict[str, Any]:
    reference = ModelSpec()
    windows_spec = ModelSpec(
        cleaning="clinical", chunking=Chunking(kind="tokens", stride=384), max_length=512
    )
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = windows_tokenizer(Path(tmp))
        ops: dict[str, tuple[Callable[[str], Any], float]] = {
            "clean_huang2019": (lambda t: clean(t, "huang2019"), mb),
            "clean_clinical": (lambda t: clean(t, "clinical"), mb),
            "chunk": (lambda t: note_chunks(t, reference), mb),
            "windows": (lambda t: note_chunks(t, windows_spec, tokenizer), mb),
            "sentences": (sentences, sentences_mb),
        }
        sentences("Warm up. The sentencizer loads once.")
        table: dict[str, dict[str, float]] = {}
        for op, (fn, size_mb) in ops.items():
            table[op] = {}
            for name, make in INPUTS.items():
                text = make(int(size_mb * MB), random.Random(f"{op}-{name}"))
                table[op][name] = round(seconds_per_mb(fn, text), 4)
                print(f"{op:16s} {name:13s} {table[op][name]:9.4f} s/MB", file=sys.stderr)
    worst = {
        op: round(max(v for k, v in row.items() if k != "ordinary") / row["ordinary"], 2)
        for op, row in table.items()
    }
    return {
        "benchmark": "text",
        "mb": mb,
        "sentences_mb": sentences_mb,
        "s_per_mb": table,
        "worst_adversarial_vs_ordinary": worst,
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = result["s_per_mb"]
    ops = list(table)
    inputs = list(next(iter(table.values())))
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(inputs)
    for i, name in enumerate(inputs):
        ax.bar([j + i * width for j in range(len(ops))], [table[op][name] for op in ops], width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(ops))], ops)
    ax.set_yscale("log")
    ax.set_ylabel("seconds per MB (log)")
    ax.set_title("Text handling: ordinary vs adversarial notes")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=float, default=1.0)
    parser.add_argument("--sentences-mb", type=float, default=0.1)
    parser.add_argument(
        "--no-save", action="store_true", help="Print only; write nothing to benchmarks/results."
    )
    args = parser.parse_args()
    out = main(args.mb, args.sentences_mb)
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "text.json").write_text(json.dumps(out, indent=2) + "\n")
        plot(out, RESULTS / "text.png")
    print(json.dumps(out))
