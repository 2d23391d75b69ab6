"""The one table that decides what happens to the worker after a failure: dead letter, retry or exit.

Every place of the worker that catches an exception asks :func:`decide` (the batch function for one
message, :func:`notestream.stream.guard.until_done` for a batch, the pipeline for one note's cleaning, chunking or
inference, the start-up checks). The rows, first match wins:

========================================  ====================  ===================================
failure                                   one message's step    the batch / the process
========================================  ====================  ===================================
:class:`~notestream.stream.errors.EventError`        dead letter (reason)  dead letter (reason)
store bound to another model, settings    exit 78 (config)      exit 78 (config)
store, broker unreachable; engine full    retry                 retry
engine closed (the device is gone)        exit 70               exit 70
anything else                             dead letter           exit 70
========================================  ====================  ===================================

"One message's step" is work whose input is one message alone: decoding and validating its bytes
(``decode``: reason ``invalid_json`` unless the parser named one), cleaning, chunking, tokenizing and
scoring that note alone (``process``: reason ``processing_error``). Such a failure is the message's
own, so that message is dead-lettered and its partition moves on; retrying it would fail again forever.
Infrastructure failures (the store, the broker, the device) are nobody's message: they are retried
(the partition waits, nothing is acked) or end the process so that a restart redelivers the batch.

>>> decide(RecursionError(), step="decode")
Decision(fate='dead_letter', reason='invalid_json', exit_code=None)
>>> decide(ValueError("Exceeds the limit (4300 digits)"), step="process").reason
'processing_error'
>>> decide(ValueError("a bug"), step="batch")
Decision(fate='exit', reason=None, exit_code=70)
>>> from notestream.stream.errors import StoreUnavailable
>>> decide(StoreUnavailable("down"), step="process").fate
'retry'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aiokafka.errors import KafkaError

from notestream.core.errors import ConfigError, NotestreamError
from notestream.models.errors import EngineClosed, EngineOverloaded
from notestream.stream.errors import BrokerError, EventError, StoreModelMismatch, StoreUnavailable

EXIT_CRASH = 70
"""Exit status of a worker that stopped in the middle of a batch (EX_SOFTWARE); a restart redelivers."""
EXIT_UNAVAILABLE = 69
"""Exit status of a worker that could not reach a service it needs at start (EX_UNAVAILABLE)."""
EXIT_CONFIG = 78
"""Exit status of a worker whose settings or store cannot work, however often it restarts (EX_CONFIG)."""

Fate = Literal["dead_letter", "retry", "exit"]
Step = Literal["decode", "process", "batch"]
"""``decode``, ``process``: work on one message alone; ``batch``: work on a whole batch or the process."""

TRANSIENT: tuple[type[BaseException], ...] = (StoreUnavailable, EngineOverloaded, BrokerError, KafkaError)
"""Infrastructure that may come back: retried with backoff, nothing acked meanwhile."""
FATAL_CONFIG: tuple[type[BaseException], ...] = (ConfigError, StoreModelMismatch)
"""No restart fixes these: the process ends with :data:`EXIT_CONFIG`."""
FATAL: tuple[type[BaseException], ...] = (EngineClosed, MemoryError)
"""The engine (its device) or the process is gone: end with :data:`EXIT_CRASH`, a restart redelivers."""

_DEFAULT_REASON: dict[Step, str] = {"decode": "invalid_json", "process": "processing_error"}


@dataclass(frozen=True)
class Decision:
    """What to do after a failure: ``reason`` for a dead letter, ``exit_code`` for an exit."""

    fate: Fate
    reason: str | None = None
    exit_code: int | None = None


def decide(exc: BaseException, *, step: Step) -> Decision:
    """The fate of a failure of ``step`` (see the module's table)."""
    if isinstance(exc, EventError):
        return Decision("dead_letter", reason=exc.reason)
    if isinstance(exc, FATAL_CONFIG):
        return Decision("exit", exit_code=EXIT_CONFIG)
    if isinstance(exc, TRANSIENT):
        return Decision("retry")
    if isinstance(exc, FATAL) or not isinstance(exc, Exception) or step == "batch":
        return Decision("exit", exit_code=EXIT_CRASH)
    return Decision("dead_letter", reason=_DEFAULT_REASON[step])


def failure_detail(exc: BaseException, *, step: Step) -> str:
    """A dead letter's ``detail`` for a failure that is not an :class:`EventError`: the step and the
    exception's type; the message only of notestream's own errors (sentences it wrote, never note
    text), never of a foreign one (a parser or tokenizer may quote the note's text).

    >>> failure_detail(RecursionError("maximum recursion depth exceeded"), step="decode")
    'decoding the message failed (RecursionError)'
    >>> from notestream.models.errors import BatchFailed
    >>> failure_detail(BatchFailed("the batch failed on cpu"), step="process")
    'processing the note failed (BatchFailed: the batch failed on cpu)'
    """
    if isinstance(exc, EventError):
        return exc.detail
    what = "decoding the message" if step == "decode" else "processing the note"
    if isinstance(exc, NotestreamError):
        return f"{what} failed ({type(exc).__name__}: {exc})"
    return f"{what} failed ({type(exc).__name__})"


def event_error(exc: BaseException, *, step: Step) -> EventError:
    """``exc`` as the :class:`EventError` of a dead letter, or ``exc`` itself re-raised when its fate
    is not a dead letter (retry, exit: the caller's caller decides how)."""
    decision = decide(exc, step=step)
    if decision.fate != "dead_letter":
        raise exc
    if isinstance(exc, EventError):
        return exc
    assert decision.reason is not None
    return EventError(decision.reason, failure_detail(exc, step=step))
