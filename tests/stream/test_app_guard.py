"""A batch is retried through transient outages and never acked after any other failure."""

from __future__ import annotations

import subprocess
import sys

from notestream.stream.errors import StoreUnavailable
from notestream.stream.fate import EXIT_CRASH
from notestream.stream.guard import until_done


async def test_transient_failures_are_retried_until_the_batch_is_done() -> None:
    calls: list[int] = []
    states: list[bool] = []

    async def step() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise StoreUnavailable("Redis is down.")

    await until_done("a batch", step, on_state=states.append, first_delay_s=0.01)
    assert len(calls) == 3
    assert states == [False, False, True]


def test_any_other_failure_ends_the_process_without_returning() -> None:
    script = (
        "import asyncio\n"
        "from notestream.stream.guard import until_done\n"
        "async def step():\n"
        "    raise ValueError('bug')\n"
        "asyncio.run(until_done('a batch', step))\n"
        "print('returned')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == EXIT_CRASH
    assert "returned" not in done.stdout
    assert "a batch failed unexpectedly" in done.stderr
