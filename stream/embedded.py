"""The one-machine broker: librdkafka's mock cluster, which speaks the Kafka wire protocol.

``confluent_kafka`` starts an in-process mock cluster when a client is created with
``test.mock.num.brokers``; the cluster lives in librdkafka's own threads for as long as that client
lives, and any Kafka client (aiokafka, Faust, confluent-kafka) in any process on the machine can
connect to the address it reports. What it does and does not do (seen on this machine):

- no CreateTopics: topics are created by a metadata request (:meth:`EmbeddedBroker.ensure_topics`) or
  on first use, always with 4 partitions, so the embedded mode uses ``partitions = 4``;
- two members of one consumer group inside ONE process break its SyncGroup: every worker runs in its
  own process (``notestream worker --broker kafka://ADDRESS``);
- a rebalance waits the session timeout; at most ~5 MiB are kept per partition; no transactions.

Use it as a context manager in the process that owns the cluster (the demo, the test fixture)::

    with EmbeddedBroker() as broker:
        broker.ensure_topics(["notes", "admissions"])
        run_worker(f"kafka://{broker.address}")

or as a process of its own: ``python -m notestream.stream.embedded`` prints ``kafka://HOST:PORT`` and serves until
it is stopped (SIGTERM, SIGINT or end of stdin).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterable
from types import TracebackType

from notestream.stream.errors import BrokerError

MOCK_PARTITIONS = 4
"""Partitions of every topic the mock cluster creates (fixed by librdkafka)."""


class EmbeddedBroker:
    """An in-process Kafka mock cluster with one broker; ``address`` is its ``host:port``."""

    def __init__(self, *, timeout_s: float = 10.0) -> None:
        self._timeout_s = timeout_s
        self._client: object | None = None
        self.address = ""

    def start(self) -> EmbeddedBroker:
        """Start the cluster and learn its address."""
        import confluent_kafka

        try:
            client = confluent_kafka.Producer(
                {
                    "test.mock.num.brokers": 1,
                    # ignored by the mock, but librdkafka wants one
                    "bootstrap.servers": "127.0.0.1:1",
                    "log_level": 3,
                    "allow.auto.create.topics": True,
                }
            )
            meta = client.list_topics(timeout=self._timeout_s)
        except confluent_kafka.KafkaException as exc:
            raise BrokerError(
                f"The embedded Kafka mock cluster did not start: {exc}. Check that confluent-kafka "
                "(librdkafka >= 2.0) is installed."
            ) from exc
        broker = next(iter(meta.brokers.values()))
        self._client = client
        self.address = f"{broker.host}:{broker.port}"
        return self

    @property
    def url(self) -> str:
        """The broker as a settings value: ``kafka://HOST:PORT``."""
        return f"kafka://{self.address}"

    def ensure_topics(self, names: Iterable[str]) -> dict[str, int]:
        """Create the topics (by asking for their metadata) and return their partition counts."""
        import confluent_kafka

        if self._client is None:
            raise BrokerError("The embedded broker is not started; call start() first.")
        counts: dict[str, int] = {}
        for name in names:
            try:
                meta = self._client.list_topics(topic=name, timeout=self._timeout_s)  # type: ignore[attr-defined]
            except confluent_kafka.KafkaException as exc:
                raise BrokerError(f"The embedded broker could not create topic {name!r}: {exc}.") from exc
            topic = meta.topics[name]
            if topic.error is not None:
                raise BrokerError(f"The embedded broker could not create topic {name!r}: {topic.error}.")
            counts[name] = len(topic.partitions)
        return counts

    def close(self) -> None:
        """Stop the cluster (all its data is lost)."""
        client, self._client = self._client, None
        if client is not None:
            client.flush(1.0)  # type: ignore[attr-defined]
            del client

    def __enter__(self) -> EmbeddedBroker:
        return self.start() if self._client is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def main() -> None:
    """Serve an embedded broker until stopped; print its address as the first line of stdout."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with EmbeddedBroker() as broker:
        print(broker.url, flush=True)

        def watch_stdin() -> None:
            sys.stdin.read()
            stop.set()

        if not sys.stdin.isatty():
            threading.Thread(target=watch_stdin, daemon=True).start()
        while not stop.wait(0.5):
            pass


if __name__ == "__main__":
    main()
