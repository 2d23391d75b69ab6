"""Each thread tokenizes with its own copy of a tokenizer: threads never share a fast tokenizer's state.

A Hugging Face fast tokenizer keeps truncation and padding as state on its Rust object, and
``transformers`` sets that state on every call before it encodes. When two threads call ONE tokenizer
with different settings (the engine's truncating :meth:`~notestream.models.classifier.ChunkClassifier.encode`
and the token-window chunker's untruncated :func:`~notestream.models.prep.note_chunks`, which the worker
and ``notestream score`` run in threads at the same time), one call can run with the other's settings
and return other ids, silently; or fail with ``RuntimeError: Already borrowed``. With a copy per thread
no state is shared. A copy is made once per thread and tokenizer (a few megabytes for a BERT
vocabulary), and goes with its thread.

>>> class Tok:
...     pass
>>> tok = Tok()
>>> mine = thread_copy(tok)
>>> mine is thread_copy(tok), mine is tok
(True, False)
>>> import threading
>>> theirs = []
>>> worker = threading.Thread(target=lambda: theirs.append(thread_copy(tok)))
>>> worker.start(); worker.join()
>>> theirs[0] is mine
False
"""

from __future__ import annotations

import copy
import threading
import weakref
from typing import Any, TypeVar

T = TypeVar("T")

_local = threading.local()
_copying = threading.Lock()


def thread_copy(tokenizer: T) -> T:
    """The calling thread's own copy of ``tokenizer`` (made on first use; the original is only read)."""
    copies: weakref.WeakKeyDictionary[Any, Any] | None = getattr(_local, "copies", None)
    if copies is None:
        copies = _local.copies = weakref.WeakKeyDictionary()
    mine = copies.get(tokenizer)
    if mine is None:
        with _copying:  # copies are made one at a time, so the original is never read by two at once
            mine = copy.deepcopy(tokenizer)
        copies[tokenizer] = mine
    return mine  # type: ignore[no-any-return]
