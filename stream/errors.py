"""Errors of the streaming service.

::

    NotestreamError
    └── StreamError
        ├── EventError           a message is not a valid event; ``reason`` is the dead-letter reason
        ├── StoreError           the risk store failed or holds something unexpected
        │   ├── StoreUnavailable the store cannot be reached (connection, timeout): retry later
        │   │   └── StoreRebuilding another worker is rebuilding the store from its changelog
        │   ├── StoreLost        the store lost its data (epoch gone): rebuild it from the changelog
        │   └── StoreModelMismatch the store holds the probabilities of another model
        ├── BrokerError          Kafka (or the embedded broker) failed
        ├── ReplayError          MIMIC tables cannot be replayed
        └── AlertSinkError       an alert could not be delivered (webhook, topic)

Library errors are wrapped with ``raise ... from exc`` so the cause stays visible.
"""

from __future__ import annotations

from notestream.core.errors import NotestreamError


class StreamError(NotestreamError):
    """Root of the errors of the ``stream`` package."""


class EventError(StreamError, ValueError):
    """A message is not a valid event.

    ``reason`` is one of the dead-letter reasons of :mod:`notestream.stream.events` (``invalid_json``,
    ``non_utf8``, ``schema``, ``missing_admission_id``, ``text_too_large``, ...) and ``detail`` names
    the offending field. Neither ever contains note text.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"Invalid event ({reason}): {detail}")
        self.reason = reason
        self.detail = detail


class StoreError(StreamError):
    """The risk store failed or returned something it should not have."""


class StoreUnavailable(StoreError):
    """The risk store cannot be reached right now; check the store URL and that Redis is up."""


class StoreRebuilding(StoreUnavailable):
    """Another worker is rebuilding the store from its changelog; retry once it is done."""


class StoreLost(StoreError):
    """The store lost its data (its epoch key is gone: a restart without persistence, ``FLUSHALL``, a
    failover to an empty replica). :mod:`notestream.stream.store.heal` rebuilds it from the changelog topic."""


class StoreModelMismatch(StoreError):
    """The store holds the chunk probabilities of another model: mixing two models' probabilities in
    one admission would give a score neither model gives. Use a fresh namespace or database."""


class BrokerError(StreamError):
    """Kafka (or the embedded broker) failed."""


class ReplayError(StreamError):
    """MIMIC tables cannot be replayed as events."""


class AlertSinkError(StreamError):
    """An alert could not be delivered to one of its sinks."""
