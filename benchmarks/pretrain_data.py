"""Benchmark the pre-training shard builder: peak memory must not grow with the corpus.

Writes a synthetic MIMIC-III (``notestream.training.synth``), turns its notes into a pre-training corpus
(``notestream.training.pretrain.corpus_from_mimic`` / ``write_corpus``: one sentence per line), takes its first half
as a second corpus, trains one WordPiece vocabulary on a sample, then builds shards from each corpus in
a child process (wall seconds, examples, shard bytes, peak RSS read from VmHWM of the child). With
``--compare`` it also runs the former in-memory construction (read every note, tokenize into lists,
build every pair) on the half corpus. Prints ONE JSON line of figures.

    python benchmarks/pretrain_data.py --notes 100000
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NOTES_PER_PATIENT = 35.0  # synth defaults: about 26 notes per admission, 1.35 admissions per patient

_CHILD = """
import json, sys, time
mode, corpus, tok_dir, out, max_length, dupe, buffer_docs = sys.argv[1:8]
from transformers import AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
t = time.perf_counter()
if mode == "shards":
    from notestream.training.pretrain_data import build_shards
    m = build_shards(corpus, tokenizer, out, max_length=int(max_length), dupe=int(dupe),
                     buffer_docs=int(buffer_docs), progress=False)
    figures = {"documents": m["documents"], "examples": m["examples"], "nsp_random": m["nsp_random"],
               "shards": len(m["shards"]), "shard_bytes": sum(p.stat().st_size for p in __import__("pathlib").Path(out).iterdir())}
else:
    from notestream.training.pretrain_data import nsp_examples, read_corpus
    docs = read_corpus(corpus)
    tokenized = [[tokenizer(s, add_special_tokens=False)["input_ids"] for s in d] for d in docs]
    examples = nsp_examples(tokenized, int(max_length) - 3, dupe=int(dupe))
    figures = {"documents": len(docs), "examples": len(examples)}
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024
print(json.dumps({**figures, "seconds": round(time.perf_counter() - t, 2), "peak_rss_mb": round(hwm, 1)}))
"""


def _child(mode: str, corpus: Path, tok_dir: Path, out: Path, args: argparse.Namespace) -> dict[str, float]:
    argv = [mode, corpus, tok_dir, out, args.max_length, args.dupe, args.buffer_docs]
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, *map(str, argv)], check=True, capture_output=True, text=True
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _head(corpus: Path, out: Path, documents: int) -> None:
    """Copy the first ``documents`` notes of ``corpus`` to ``out`` (streamed)."""
    with corpus.open(encoding="utf-8") as src, out.open("w", encoding="utf-8") as dst:
        for line in src:
            if line == "\n":
                documents -= 1
            dst.write(line)
            if documents == 0:
                return


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--notes", type=int, default=100_000, help="Notes of the larger corpus (half: the other)."
    )
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--dupe", type=int, default=1, help="Duplication factor (the reference: 3).")
    parser.add_argument("--buffer-docs", type=int, default=1000)
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument(
        "--compare",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Also run the in-memory construction on the half corpus.",
    )
    parser.add_argument("--work", type=Path, default=None, help="Work folder (default: a temporary one).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from transformers import BertTokenizer

    from notestream.models.build import train_wordpiece
    from notestream.training.mimic import Source
    from notestream.training.pretrain import corpus_from_mimic
    from notestream.training.pretrain_data import iter_documents
    from notestream.training.synth import write_mimic_iii

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-pretrain-"))
    try:
        t = time.perf_counter()
        write_mimic_iii(work / "mimic", max(20, round(args.notes * 1.05 / NOTES_PER_PATIENT)), args.seed)
        full = work / "full.txt"
        notes = corpus_from_mimic(
            Source.open(mimic_iii=work / "mimic"), full, exclude_hadm=set(), max_notes=args.notes
        )
        corpus_s = time.perf_counter() - t
        shutil.rmtree(work / "mimic", ignore_errors=True)
        half = work / "half.txt"
        _head(full, half, notes // 2)
        sample = (s for i, d in enumerate(iter_documents(full)) if i < 5000 for s in d)
        BertTokenizer(
            vocab=train_wordpiece(sample, vocab_size=args.vocab_size), do_lower_case=True
        ).save_pretrained(work / "tokenizer")
        runs = {
            name: {
                "notes": n,
                "corpus_bytes": path.stat().st_size,
                **_child("shards", path, work / "tokenizer", work / f"shards_{name}", args),
            }
            for name, path, n in (("half", half, notes // 2), ("full", full, notes))
        }
        figures = {
            "notes": [runs["half"]["notes"], runs["full"]["notes"]],
            "examples": [runs["half"]["examples"], runs["full"]["examples"]],
            "seconds": [runs["half"]["seconds"], runs["full"]["seconds"]],
            "peak_rss_mb": [runs["half"]["peak_rss_mb"], runs["full"]["peak_rss_mb"]],
            "peak_rss_ratio_full_over_half": round(
                runs["full"]["peak_rss_mb"] / runs["half"]["peak_rss_mb"], 3
            ),
            "shard_bytes": [runs["half"]["shard_bytes"], runs["full"]["shard_bytes"]],
            "corpus_bytes": [runs["half"]["corpus_bytes"], runs["full"]["corpus_bytes"]],
            "notes_per_s": round(runs["full"]["notes"] / runs["full"]["seconds"], 1),
            "corpus_build_seconds": round(corpus_s, 1),
            "max_length": args.max_length,
            "dupe": args.dupe,
            "buffer_docs": args.buffer_docs,
        }
        if args.compare:
            mem = _child("inmemory", half, work / "tokenizer", work / "unused", args)
            figures["in_memory_half"] = {k: mem[k] for k in ("examples", "seconds", "peak_rss_mb")}
        print(json.dumps(figures))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
