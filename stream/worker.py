"""The worker process: one Faust worker running :func:`stream.app.create_app` until SIGTERM/SIGINT.

Run it as ``notestream worker --broker kafka://HOST:PORT --store redis://... --model-dir DIR`` or
``python -m stream.worker`` with the same ``NOTESTREAM_*`` environment. Each worker is a process of its
own (several workers share the consumer group; in the embedded mode the mock cluster needs one process
per group member).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from notestream.settings import Settings, load_settings

log = logging.getLogger(__name__)


def run_worker(settings: Settings) -> None:
    """Run the worker in this process until it is stopped (blocks; exits the process at the end)."""
    import faust

    from stream.app import create_app
    from stream.kafka import bootstrap_servers

    bootstrap_servers(settings)  # fail early, with a clear message, on a bare embedded://
    if settings.embedded:
        # a worker talks to an embedded broker through its printed address, as to any Kafka
        settings = settings.model_copy(update={"broker": "kafka://" + bootstrap_servers(settings)})
    app = create_app(settings)
    worker = faust.Worker(
        app,
        loglevel=settings.log_level.lower(),
        quiet=True,
        redirect_stdouts=False,
        override_logging=False,
    )
    log.info("Starting the notestream worker (group %s).", settings.consumer_group)
    worker.execute_from_commandline()


def worker_command(argv: list[str] | None = None, **overrides: Any) -> list[str]:
    """The command line that starts a worker process with ``python`` (tests, demo, benchmarks)."""
    return [sys.executable, "-m", "stream.worker", *(argv or [])]


def main() -> None:
    """``python -m stream.worker``: settings from the environment / NOTESTREAM_CONFIG."""
    logging.basicConfig(
        level=os.environ.get("NOTESTREAM_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    run_worker(load_settings())


if __name__ == "__main__":
    main()
