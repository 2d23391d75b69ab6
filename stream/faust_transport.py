"""A Faust app whose Kafka consumer waits at most ``fetch_max_wait_ms`` in a fetch.

Faust 0.15 builds its aiokafka consumer with ``fetch_max_wait_ms=1500`` and no setting to change it. A
real broker answers a waiting fetch as soon as data arrives, but librdkafka's mock cluster (the embedded
mode) holds every fetch for the full wait: measured here, note-to-consumer latency p50 825 ms at 1500
ms, 23 ms at 50 ms. :class:`App` swaps in a consumer thread that sets the wait from the settings before
the consumer starts; everything else is Faust's own code.
"""

from __future__ import annotations

from typing import Any

import aiokafka
import faust
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer, Transport
from faust.types import TransportT

from notestream.stream.errors import BrokerError

WAIT_ATTRIBUTE = "_fetch_max_wait_ms"
"""Where aiokafka's consumer keeps ``fetch_max_wait_ms`` until ``start()`` builds its fetcher."""


class _ConsumerThread(AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Transport) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        wait = getattr(self.app, "fetch_max_wait_ms", None)
        if wait is not None:
            if not hasattr(consumer, WAIT_ATTRIBUTE):  # pinned by tests/stream/test_app_config.py
                raise BrokerError(
                    f"This aiokafka {aiokafka.__version__} consumer has no {WAIT_ATTRIBUTE}; the worker "
                    "cannot bound its fetch wait (aiokafka 0.11 to 0.14 keep it there; tested by the suite)."
                )
            setattr(consumer, WAIT_ATTRIBUTE, int(wait))  # read by the fetcher aiokafka builds in start()
        return consumer


class _Consumer(Consumer):
    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(Transport):
    Consumer = _Consumer


class App(faust.App):
    """``faust.App`` with ``fetch_max_wait_ms`` for its consumer (``kafka://`` brokers)."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int | None = None, **kwargs: Any) -> None:
        self.fetch_max_wait_ms = fetch_max_wait_ms
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> TransportT:
        url = self.conf.broker_consumer[0]
        if url.scheme not in ("kafka", "aiokafka"):
            return super()._new_transport()
        return _Transport(self.conf.broker_consumer, self)
