"""The worker: a process running :func:`notestream.stream.app.create_app` until SIGTERM/SIGINT, or in-process.

Run it as ``notestream worker --broker kafka://HOST:PORT --store redis://... --model-dir DIR`` or
``python -m notestream.stream.worker`` with the same ``NOTESTREAM_*`` environment. Each worker is a process of its
own (several workers share the consumer group; in the embedded mode the mock cluster needs one process
per group member). Before it loads the model and joins its group, the process runs the start-up checks
of :mod:`notestream.stream.preflight`: a problem is one line on stderr naming the setting, and exit status 78
(configuration) or 69 (a service unreachable after ``startup_timeout_s`` of retries).

:func:`run` runs the same worker inside the caller's event loop until it handled ``stop_after``
messages or was idle for ``idle_timeout_s``, then stops it cleanly (offsets committed): end-to-end
tests use it instead of polling a subprocess. The failure table's ``exit`` fates still end the
process (``os._exit``, see :mod:`notestream.stream.guard`), so tests of crashes run a worker process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr

from notestream.core.errors import ConfigError
from notestream.core.settings import Settings, load_settings
from notestream.stream.errors import StreamError
from notestream.stream.fate import EXIT_CONFIG

if TYPE_CHECKING:
    from notestream.stream.runtime import Runtime

log = logging.getLogger(__name__)

READY_FILE_ENV = "NOTESTREAM_WORKER_READY_FILE"
"""A file the worker writes once it consumes (engine and store up, partitions assigned)."""


def preflight_or_exit(settings: Settings) -> None:
    """Run the start-up checks; on a problem print one line per failed check and exit 78 or 69."""
    from notestream.stream.preflight import exit_code, run_checks

    checks = asyncio.run(run_checks(settings, stop_early=True))
    code = exit_code(checks)
    if code:
        for check in checks:
            if not check.ok:
                print(f"notestream worker cannot start: {check.line()}", file=sys.stderr, flush=True)
        raise SystemExit(code)


def run_worker(settings: Settings) -> None:
    """Run the worker in this process until it is stopped (blocks; exits the process at the end)."""
    from notestream.core.logging import capture_library_logs, quiet_libraries, setup_logging

    quiet_libraries()  # before torch, transformers and faust are imported: JSON logs stay JSON
    import faust

    from notestream.stream.app import create_app
    from notestream.stream.kafka import bootstrap_servers
    from notestream.stream.runtime import Runtime

    setup_logging(settings)  # level, JSON lines, note-text filter and secret masking from the settings
    capture_library_logs()
    preflight_or_exit(settings)  # one line and exit 78 / 69 on a problem, before joining the group
    import notestream.models.engine  # noqa: F401  (torch and transformers load before the worker joins its group)

    if settings.embedded:
        # a worker talks to an embedded broker through its printed address, as to any Kafka
        settings = settings.model_copy(update={"broker": "kafka://" + bootstrap_servers(settings)})
    ready = os.environ.get(READY_FILE_ENV)
    # weights are read before the consumer joins its group: a member that took partitions and then
    # spent seconds (a BERT-base on a busy host: tens) loading a model would stall them meanwhile
    runtime = Runtime(settings)
    runtime.preload()
    worker_app = create_app(settings, runtime=runtime, ready_file=Path(ready) if ready else None)
    worker = faust.Worker(
        worker_app.app,
        loglevel=settings.log_level.lower(),
        quiet=True,
        redirect_stdouts=False,
        override_logging=False,
    )
    worker.spinner = None  # Faust's terminal spinner writes cursor codes to stdout even when not a TTY
    log.info("Starting the notestream worker (group %s).", settings.consumer_group)
    worker.execute_from_commandline()


@dataclass(frozen=True)
class RunSummary:
    """What an in-process :func:`run` handled before it stopped, and why it stopped."""

    messages: int
    updates: int
    dead_letters: int
    dropped: int
    stopped: str
    """``stop_after`` (enough messages handled) or ``idle`` (no message for ``idle_timeout_s``)."""


async def run(
    settings: Settings,
    *,
    stop_after: int | None = None,
    idle_timeout_s: float | None = None,
    start_timeout_s: float = 120.0,
    runtime: Runtime | None = None,
) -> RunSummary:
    """Run the worker in this event loop until ``stop_after`` messages (notes and admission events) are
    handled, or no message was handled for ``idle_timeout_s`` once it consumes; then stop it cleanly.

    ``start_timeout_s`` bounds the wait for the worker to consume (model, store, group join);
    ``runtime`` may bring a :class:`notestream.stream.runtime.Runtime` with its own engine or store.
    """
    from notestream.stream.app import create_app
    from notestream.stream.kafka import bootstrap_servers
    from notestream.stream.runtime import Runtime

    if stop_after is None and idle_timeout_s is None:
        raise ConfigError("run() needs stop_after, idle_timeout_s or both, else it never returns.")
    if settings.embedded:
        settings = settings.model_copy(update={"broker": "kafka://" + bootstrap_servers(settings)})
    own = runtime if runtime is not None else Runtime(settings)
    worker_app = create_app(settings, runtime=own)
    path = worker_app.path
    await worker_app.app.start()
    try:
        try:
            await asyncio.wait_for(worker_app.consuming.wait(), timeout=start_timeout_s)
        except TimeoutError as exc:
            raise StreamError(f"The in-process worker did not consume within {start_timeout_s:g} s.") from exc
        path.last_handled = time.monotonic()
        while True:
            path.progress.clear()  # before the tests below: a batch handled after them sets it again
            if stop_after is not None and path.total.messages >= stop_after:
                stopped = "stop_after"
                break
            wait = None
            if idle_timeout_s is not None:
                wait = path.last_handled + idle_timeout_s - time.monotonic()
                if wait <= 0:
                    stopped = "idle"
                    break
            try:
                await asyncio.wait_for(path.progress.wait(), timeout=wait)
            except TimeoutError:
                continue
    finally:
        await worker_app.app.stop()
    total = path.total
    return RunSummary(total.messages, total.updates, total.dead_letters, total.dropped, stopped)


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that gives a child worker process these settings (``NOTESTREAM_*`` variables).

    Secrets travel as environment variables too (never on the command line, where ``ps`` shows them).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTESTREAM_")}
    for name in type(settings).model_fields:
        value = getattr(settings, name)  # the real values: dumps mask URLs and secrets
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, list | dict):
            text = json.dumps(value)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        env[f"NOTESTREAM_{name.upper()}"] = text
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


def spawn_worker(
    settings: Settings,
    log_path: Path,
    *,
    ready_file: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``python -m notestream.stream.worker`` with these settings; its output goes to ``log_path``.

    With ``ready_file`` the worker writes that file once it consumes (see :func:`wait_ready`).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    extra = dict(env or {})
    if ready_file is not None:
        ready_file.unlink(missing_ok=True)
        extra[READY_FILE_ENV] = str(ready_file)
    with log_path.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "notestream.stream.worker"],
            env=worker_env(settings, **extra),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_ready(proc: subprocess.Popen[bytes], ready_file: Path, *, timeout_s: float = 120.0) -> None:
    """Block until the worker wrote ``ready_file``; raise if it exits or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while not ready_file.exists():
        if proc.poll() is not None:
            raise StreamError(
                f"The worker exited with code {proc.returncode} before it was ready; see its log."
            )
        if time.monotonic() > deadline:
            raise StreamError(f"The worker was not ready after {timeout_s:g} s; see its log.")
        time.sleep(0.1)


def main() -> None:
    """``python -m notestream.stream.worker``: settings from the environment / NOTESTREAM_CONFIG."""
    from notestream.core.logging import setup_logging

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"notestream worker cannot start: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_CONFIG) from None
    setup_logging(settings)
    run_worker(settings)


if __name__ == "__main__":
    main()
