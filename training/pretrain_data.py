"""Pre-training examples in bounded memory: stream the corpus, pair sentences, write on-disk shards.

A full MIMIC-III corpus (2M notes, about 4 GB of text) does not fit in memory once tokenized into
Python lists, so, like BERT's ``create_pretraining_data``, examples are built a bounded piece at a time:

1. :func:`iter_documents` streams the corpus file (one sentence per line, a blank line between notes)
   one document at a time; :func:`tokenized_documents` tokenizes them in batches with the fast tokenizer.
2. :func:`stream_examples` keeps a buffer of ``buffer_docs`` consecutive documents and builds the NSP
   pairs of that buffer (:func:`nsp_examples`, ``dupe`` times with different random choices), then moves
   on to the next buffer.
3. :func:`build_shards` writes the token ids of every example to shards: ``shard-NNNNN.bin`` (raw
   little-endian int32, read with ``numpy.memmap``) and ``shard-NNNNN.index.npy`` (int64 rows: offset,
   length of A, length of B, NSP label), described by ``shards.json`` (written last, so a half-built
   folder is never read). No pickles. Memory: the buffer's tokenized notes, 16 MB of ids waiting to be
   written, and the index of the open shard (32 bytes per example, ``shard_examples`` at most).
4. :class:`ShardDataset` reads examples back lazily; MLM masking stays dynamic in the collator.

Deviation from the reference: BERT draws the random segment B of an NSP pair from any document of its
input file (the reference's corpus is one file, so from the whole corpus). Here B comes from another
document of the same buffer of ``buffer_docs`` consecutive notes, so memory is bounded by the buffer
and not by the corpus. With a buffer of thousands of notes from many patients the random B is still a
note of an unrelated patient almost always; a corpus smaller than the buffer gives exactly the examples
of the in-memory construction.

>>> docs = [[[1, 2], [3, 4], [5]], [[6, 7], [8]], [[9], [10, 11]]]
>>> list(stream_examples(docs, 5, buffer_docs=3, seed=0)) == nsp_examples(docs, 5, seed=0)
True
"""

from __future__ import annotations

import json
import random
from array import array
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from notestream.training.errors import TrainRunError

Example = tuple[list[int], list[int], int]
MANIFEST = "shards.json"
FORMAT = 1


def iter_documents(path: str | Path) -> Iterator[list[str]]:
    """The documents (lists of sentences) of a corpus file, one at a time."""
    doc: list[str] = []
    with Path(path).open(encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if line:
                doc.append(line)
            elif doc:
                yield doc
                doc = []
    if doc:
        yield doc


class CorpusSentences:
    """Every sentence of a corpus file, read again from the start each time it is iterated (for
    :func:`notestream.models.build.train_wordpiece`, which reads its texts twice, in bounded memory)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __iter__(self) -> Iterator[str]:
        return (sentence for doc in iter_documents(self.path) for sentence in doc)


def read_corpus(path: str | Path) -> list[list[str]]:
    """Documents (lists of sentences) of a corpus file, all in memory: for small corpora only."""
    return list(iter_documents(path))


def _pairs(docs: list[list[list[int]]], max_tokens: int, rng: random.Random, dupe: int) -> Iterator[Example]:
    for _ in range(dupe):
        for d, doc in enumerate(docs):
            i = 0
            while i < len(doc):
                target = max_tokens if rng.random() > 0.1 else rng.randint(2, max_tokens)
                chunk: list[list[int]] = []
                length = 0
                while i < len(doc) and length < target:
                    chunk.append(doc[i])
                    length += len(doc[i])
                    i += 1
                if len(chunk) < 2 and (len(docs) < 2 or i >= len(doc)):
                    if len(chunk) == 1 and len(chunk[0]) >= 2:
                        half = len(chunk[0]) // 2
                        chunk = [chunk[0][:half], chunk[0][half:]]
                    else:
                        continue
                cut = rng.randint(1, max(1, len(chunk) - 1))
                a = [t for s in chunk[:cut] for t in s]
                random_next = len(docs) > 1 and (rng.random() < 0.5 or len(chunk) < 2)
                if random_next:
                    other = rng.randrange(len(docs) - 1)
                    other += other >= d  # any document of the buffer but this one
                    start = rng.randrange(len(docs[other]))
                    b = [t for s in docs[other][start:] for t in s]
                    i -= len(chunk) - cut  # the unused sentences go back
                else:
                    b = [t for s in chunk[cut:] for t in s]
                while len(a) + len(b) > max_tokens:
                    (a if len(a) > len(b) else b).pop()
                if a and b:
                    yield a, b, int(random_next)


def nsp_examples(
    docs: list[list[list[int]]], max_tokens: int, *, seed: int = 1, dupe: int = 1
) -> list[Example]:
    """(segment A ids, segment B ids, is_random_next) pairs from tokenized documents, as BERT's
    ``create_pretraining_data``: sentences packed up to ``max_tokens``, B random half the time.

    >>> ex = nsp_examples([[[1, 2], [3], [4, 5]], [[6], [7, 8]]], 6, seed=0)
    >>> all(len(a) + len(b) <= 6 and a and b for a, b, _ in ex)
    True
    """
    return list(_pairs(docs, max_tokens, random.Random(seed), dupe))


def stream_examples(
    docs: Iterable[list[list[int]]], max_tokens: int, *, buffer_docs: int = 1000, seed: int = 1, dupe: int = 1
) -> Iterator[Example]:
    """NSP pairs of a stream of tokenized documents, ``buffer_docs`` documents in memory at a time:
    the random B of a pair is another document of the same buffer (see the module docstring)."""
    if buffer_docs < 2:
        raise TrainRunError(f"The document buffer must hold 2 documents or more, not {buffer_docs}.")
    rng = random.Random(seed)
    stream = iter(docs)
    while window := list(islice(stream, buffer_docs)):
        yield from _pairs(window, max_tokens, rng, dupe)


def tokenized_documents(
    docs: Iterable[list[str]], tokenizer: Any, *, batch_docs: int = 64
) -> Iterator[list[list[int]]]:
    """Token ids (no special tokens) of each sentence of each document, tokenized in batches."""
    backend = getattr(tokenizer, "backend_tokenizer", None)  # the Rust tokenizer of a fast one
    if backend is not None and (backend.truncation is not None or backend.padding is not None):
        backend = None
    stream = iter(docs)
    while batch := list(islice(stream, batch_docs)):
        flat = [s for d in batch for s in d]
        if backend is not None:  # skips the per-sentence Python conversion of ``tokenizer(...)``
            ids = [e.ids for e in backend.encode_batch(flat, add_special_tokens=False)]
        else:
            ids = tokenizer(flat, add_special_tokens=False)["input_ids"]
        pos = 0
        for d in batch:
            yield ids[pos : pos + len(d)]
            pos += len(d)


class _Shards:
    """Appends examples to numbered shard files of at most ``shard_examples`` examples each."""

    def __init__(self, folder: Path, shard_examples: int) -> None:
        self.folder, self.limit = folder, shard_examples
        self.shards: list[dict[str, Any]] = []
        self.tokens = array("i")  # buffered ids of the open shard, flushed to disk in blocks
        self.index = array("q")
        self.written = 0  # ids of the open shard already on disk
        self.fh: Any = None

    def add(self, a: list[int], b: list[int], nsp: int) -> None:
        if self.fh is None:
            name = f"shard-{len(self.shards):05d}"
            self.shards.append({"tokens": f"{name}.bin", "index": f"{name}.index.npy"})
            self.fh = (self.folder / f"{name}.bin").open("wb")
        self.index.extend((self.written + len(self.tokens), len(a), len(b), nsp))
        self.tokens.extend(a)
        self.tokens.extend(b)
        if len(self.tokens) >= 1 << 22:
            self._flush()
        if len(self.index) // 4 >= self.limit:
            self.close()

    def _flush(self) -> None:
        self.fh.write(np.frombuffer(self.tokens, dtype=np.int32).astype("<i4", copy=False).tobytes())
        self.written += len(self.tokens)
        self.tokens = array("i")

    def close(self) -> None:
        if self.fh is None:
            return
        self._flush()
        self.fh.close()
        index = np.frombuffer(self.index, dtype=np.int64).reshape(-1, 4)
        np.save(self.folder / self.shards[-1]["index"], index.astype("<i8", copy=False), allow_pickle=False)
        self.shards[-1].update(examples=len(index), token_count=self.written)
        self.fh, self.index, self.written = None, array("q"), 0


def build_shards(
    corpus: str | Path,
    tokenizer: Any,
    out_dir: str | Path,
    *,
    max_length: int = 128,
    dupe: int = 1,
    seed: int = 1,
    buffer_docs: int = 1000,
    shard_examples: int = 1_000_000,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the NSP examples of ``corpus`` (``max_length`` tokens with [CLS] and two [SEP]) to shards
    in ``out_dir``; returns the manifest (also written to ``out_dir/shards.json``)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in [folder / MANIFEST, *folder.glob("shard-*.bin"), *folder.glob("shard-*.index.npy")]:
        stale.unlink(missing_ok=True)
    size = Path(corpus).stat().st_size
    counts = {"documents": 0, "examples": 0, "nsp_random": 0}
    shards = _Shards(folder, shard_examples)
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task("Building pre-training shards", total=size)

        def docs() -> Iterator[list[str]]:
            for doc in iter_documents(corpus):
                counts["documents"] += 1
                bar.advance(task, sum(len(s) + 1 for s in doc) + 1)  # about the bytes read
                yield doc

        tokenized = tokenized_documents(docs(), tokenizer)
        for a, b, nsp in stream_examples(
            tokenized, max_length - 3, buffer_docs=buffer_docs, seed=seed, dupe=dupe
        ):
            shards.add(a, b, nsp)
            counts["examples"] += 1
            counts["nsp_random"] += nsp
        shards.close()
    manifest = {
        "format": FORMAT,
        "max_length": max_length,
        "dupe_factor": dupe,
        "seed": seed,
        "buffer_docs": buffer_docs,
        "vocab_size": len(tokenizer),
        **counts,
        "shards": shards.shards,
    }
    (folder / f"{MANIFEST}.tmp").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    (folder / f"{MANIFEST}.tmp").replace(folder / MANIFEST)
    return manifest


class ShardDataset:
    """The examples of a shard folder, read lazily (memory-mapped) as (A ids, B ids, NSP label)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        try:
            self.manifest = json.loads((self.folder / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise TrainRunError(f"No readable {MANIFEST} in {folder}; build the shards again: {exc}") from exc
        if self.manifest.get("format") != FORMAT:
            raise TrainRunError(f"The shards in {folder} have an unknown format; build them again.")
        shards = [s for s in self.manifest["shards"] if s["examples"]]
        self._index = [np.load(self.folder / s["index"], mmap_mode="r", allow_pickle=False) for s in shards]
        self._paths = [self.folder / s["tokens"] for s in shards]
        self._tokens: list[np.memmap | None] = [None] * len(shards)  # opened on first use (per worker)
        self._ends = np.cumsum([len(i) for i in self._index], dtype=np.int64)

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def __getitem__(self, item: int) -> Example:
        if not -len(self) <= item < len(self):
            raise IndexError(item)
        item %= len(self)
        shard = int(np.searchsorted(self._ends, item, side="right"))
        row = self._index[shard][item - (int(self._ends[shard - 1]) if shard else 0)]
        offset, len_a, len_b, nsp = (int(v) for v in row)
        tokens = self._tokens[shard]
        if tokens is None:
            tokens = self._tokens[shard] = np.memmap(self._paths[shard], dtype="<i4", mode="r")
        ids = tokens[offset : offset + len_a + len_b].tolist()
        return ids[:len_a], ids[len_a:], nsp
