"""Threads that tokenize at once (the engine's encode, the token-window chunker) get the ids and chunks
one thread alone gets: each tokenizes with its own copy (notestream.models.thread_copies)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from notestream.models.build import clinical_corpus
from notestream.models.checkpoint import load_model_folder
from notestream.models.classifier import ChunkClassifier
from notestream.models.prep import note_chunks
from notestream.models.spec import Chunking, ModelSpec


def test_encode_and_token_chunking_in_threads_at_once_agree_with_one_thread(tiny_model_dir: Path) -> None:
    """With one shared fast tokenizer, dozens of these 1,200 calls gave other ids or chunks (one
    thread's truncation setting used by the other's encode); every result must equal the one-thread
    result."""
    clf = ChunkClassifier(load_model_folder(tiny_model_dir), "cpu")
    spec = ModelSpec(chunking=Chunking(kind="tokens", stride=48), max_length=64)
    notes = clinical_corpus(200, seed=3, sentences=(20, 80))
    want_ids = [clf.encode([n]) for n in notes]
    want_chunks = [note_chunks(n, spec, clf.tokenizer) for n in notes]

    def run(i: int) -> bool:
        note = i // 2
        if i % 2:
            return clf.encode([notes[note]]) == want_ids[note]
        return note_chunks(notes[note], spec, clf.tokenizer) == want_chunks[note]

    with ThreadPoolExecutor(8) as pool:
        same = [ok for _ in range(3) for ok in pool.map(run, range(2 * len(notes)))]
    assert same.count(False) == 0, f"{same.count(False)} of {len(same)} calls disagreed with one thread"
