"""The worker process: one Faust worker running :func:`notestream.stream.app.create_app` until SIGTERM/SIGINT.

Run it as ``notestream worker --broker kafka://HOST:PORT --store redis://... --model-dir DIR`` or
``python -m notestream.stream.worker`` with the same ``NOTESTREAM_*`` environment. Each worker is a process of its
own (several workers share the consumer group; in the embedded mode the mock cluster needs one process
per group member).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from pydantic import SecretStr

from notestream.core.settings import Settings, load_settings
from notestream.stream.errors import StreamError

log = logging.getLogger(__name__)

READY_FILE_ENV = "NOTESTREAM_WORKER_READY_FILE"
"""A file the worker writes once it consumes (engine and store up, partitions assigned)."""


def run_worker(settings: Settings) -> None:
    """Run the worker in this process until it is stopped (blocks; exits the process at the end)."""
    from notestream.core.logging import capture_library_logs, quiet_libraries, setup_logging

    quiet_libraries()  # before torch, transformers and faust are imported: JSON logs stay JSON
    import faust

    import notestream.models.engine  # noqa: F401  (torch and transformers load before the worker joins its group)
    from notestream.stream.app import create_app
    from notestream.stream.kafka import bootstrap_servers
    from notestream.stream.runtime import Runtime

    setup_logging(settings)  # level, JSON lines, note-text filter and secret masking from the settings
    capture_library_logs()
    bootstrap_servers(settings)  # fail early, with a clear message, on a bare embedded://
    if settings.embedded:
        # a worker talks to an embedded broker through its printed address, as to any Kafka
        settings = settings.model_copy(update={"broker": "kafka://" + bootstrap_servers(settings)})
    ready = os.environ.get(READY_FILE_ENV)
    # weights are read before the consumer joins its group: a member that took partitions and then
    # spent seconds (a BERT-base on a busy host: tens) loading a model would stall them meanwhile
    runtime = Runtime(settings)
    runtime.preload()
    app = create_app(settings, runtime=runtime, ready_file=Path(ready) if ready else None)
    worker = faust.Worker(
        app,
        loglevel=settings.log_level.lower(),
        quiet=True,
        redirect_stdouts=False,
        override_logging=False,
    )
    worker.spinner = None  # Faust's terminal spinner writes cursor codes to stdout even when not a TTY
    log.info("Starting the notestream worker (group %s).", settings.consumer_group)
    worker.execute_from_commandline()


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

    settings = load_settings()
    setup_logging(settings)
    run_worker(settings)


if __name__ == "__main__":
    main()
