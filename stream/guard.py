"""Retry a batch through transient outages, or end the process: never ack a batch that was not done.

Faust's ``stream.take`` acks the events of a batch in a ``finally`` block, so an exception (or a
cancellation) inside the agent's body acks the batch as if it were processed, and Faust's supervisor
restarts the agent without redelivering it. The worker therefore runs each batch through
:func:`until_done`, which asks the failure table (:func:`notestream.stream.fate.decide`, step ``batch``):

- ``retry`` (the store unreachable, the engine queue full, the broker failing a send): retried with
  exponential backoff (0.5 s doubling to 30 s) for as long as it lasts; the partition waits, nothing is
  acked, ``/readyz`` reports the worker not ready meanwhile. A retry re-applies notes the store already
  holds; they are duplicates and change nothing.
- ``exit`` with :data:`~notestream.stream.fate.EXIT_CONFIG` (a store bound to another model, invalid settings): a
  restart cannot fix them.
- ``exit`` with :data:`~notestream.stream.fate.EXIT_CRASH` (anything else, or a cancellation in the middle of a
  batch): the process ends at once (``os._exit``: no ``finally`` acks, no offset commit). The
  orchestrator (compose's restart policy, the demo, the tests) starts the worker again and the
  uncommitted batch is redelivered. Failures of one message never get here: the batch function
  dead-letters them (:mod:`notestream.stream.note_path`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable

from notestream.stream.fate import EXIT_CONFIG, EXIT_CRASH, decide

__all__ = ["crash", "until_done"]

log = logging.getLogger(__name__)


def crash(message: str, *, status: int = EXIT_CRASH) -> None:
    """Log ``message`` with the current exception, flush the logs, and end the process without cleanup."""
    log.critical(message, exc_info=status == EXIT_CRASH and sys.exc_info()[0] is not None)
    logging.shutdown()
    os._exit(status)


async def until_done(
    what: str,
    step: Callable[[], Awaitable[None]],
    *,
    on_state: Callable[[bool], None] | None = None,
    first_delay_s: float = 0.5,
    max_delay_s: float = 30.0,
) -> None:
    """Run ``step`` until it succeeds; see the module docstring. ``on_state(False)`` while retrying."""
    delay = first_delay_s
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            crash(f"Stopped in the middle of {what}; exiting without acking it.")
        except BaseException as exc:
            decision = decide(exc, step="batch")
            if decision.fate == "retry":
                if on_state is not None:
                    on_state(False)
                log.warning("%s failed (%s); retrying in %.1f s, nothing acked.", what, exc, delay)
                try:
                    await asyncio.sleep(delay)
                except asyncio.CancelledError:
                    crash(f"Stopped while {what} waited to be retried; exiting without acking it.")
                delay = min(delay * 2, max_delay_s)
                continue
            if decision.exit_code == EXIT_CONFIG:
                crash(f"{what} cannot work with these settings: {exc}", status=EXIT_CONFIG)
            crash(f"{what} failed unexpectedly; exiting so that its uncommitted messages are redelivered.")
        if on_state is not None:
            on_state(True)
        return
