"""Every private Faust and aiokafka API the worker uses, in this one module, each pinned by a test.

1. Faust 0.15 builds its aiokafka consumer with ``fetch_max_wait_ms=1500`` and no setting to change it.
   A real broker answers a waiting fetch as soon as data arrives, but librdkafka's mock cluster (the
   embedded mode) holds every fetch for the full wait. :class:`App` swaps in a consumer thread that sets
   the wait from the settings (aiokafka's private ``_fetch_max_wait_ms``) before the consumer starts;
   everything else is Faust's own code. Pinned by ``tests/stream/test_app_config.py``.
2. :func:`producer_client`: the aiokafka client inside Faust's producer (Faust keeps its aiokafka
   producer in the private ``_producer``), used by the broker readiness check to ask for metadata.
   Pinned by ``tests/stream/test_broker_check.py``.

Nothing else in the worker touches a name with a leading underscore of Faust, mode or aiokafka.
"""

from __future__ import annotations

import logging
from typing import Any

import aiokafka
import faust
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer, Transport
from faust.types import TransportT

from notestream.stream.errors import BrokerError

WAIT_ATTRIBUTE = "_fetch_max_wait_ms"
"""Where aiokafka's consumer keeps ``fetch_max_wait_ms`` until ``start()`` builds its fetcher."""


# Faust's services log under their class's module; these subclasses log under "faust.notestream", so the
# level cap on the "faust" loggers (notestream.core.logging.PAYLOAD_LOGGERS) covers them too.
_FAUST_LOG = logging.getLogger("faust.notestream")


class _ConsumerThread(AIOKafkaConsumerThread):
    logger = _FAUST_LOG

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
    logger = _FAUST_LOG

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(Transport):
    Consumer = _Consumer


class App(faust.App):
    """``faust.App`` with ``fetch_max_wait_ms`` for its consumer (``kafka://`` brokers)."""

    logger = _FAUST_LOG

    def __init__(self, *args: Any, fetch_max_wait_ms: int | None = None, **kwargs: Any) -> None:
        self.fetch_max_wait_ms = fetch_max_wait_ms
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> TransportT:
        url = self.conf.broker_consumer[0]
        if url.scheme not in ("kafka", "aiokafka"):
            return super()._new_transport()
        return _Transport(self.conf.broker_consumer, self)


PRODUCER_ATTRIBUTE = "_producer"
"""Where Faust's aiokafka producer driver keeps its started ``AIOKafkaProducer``."""


def producer_client(app: faust.App) -> Any | None:
    """The aiokafka client of the app's started producer (``None`` before Faust started it)."""
    producer = getattr(app.producer, PRODUCER_ATTRIBUTE, None)
    return getattr(producer, "client", None)
