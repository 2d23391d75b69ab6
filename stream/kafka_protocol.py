"""InitProducerId v3 for aiokafka, so that its idempotent producers start on every broker we run.

aiokafka 0.14 knows only InitProducerId v0 (the request an idempotent or transactional producer sends
first to get its producer id). Apache Kafka answers v0 to v5 alike for a new producer, but tansu, the
embedded broker (:mod:`notestream.stream.embedded`), reads the producer id and epoch fields that v3 added and
answers a v0 request, which lacks them, with UNKNOWN_SERVER_ERROR: no aiokafka producer with
``enable_idempotence`` could start on it. :func:`install` teaches aiokafka's sender v3 as well (the
flexible encoding aiokafka already has for other APIs), with producer id and epoch -1, which is what
v0 means ("a new producer"); aiokafka then picks v3 from any broker that lists it (Kafka >= 2.5,
tansu) and v0 from older ones, as it negotiates every other request. Tested against tansu by the
suite (tests/stream/test_idempotence.py).
"""

from __future__ import annotations

from typing import TypeAlias

from aiokafka.producer import sender
from aiokafka.protocol import transaction
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import CompactString, Int16, Int32, Int64, Schema, TaggedFields

NEW_PRODUCER = -1
"""Producer id and epoch of a producer that has none yet."""


class InitProducerIdResponseV3(Response):
    API_KEY = 22
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("tags", TaggedFields),
    )


class InitProducerIdRequestV3(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 22
    API_VERSION = 3
    RESPONSE_TYPE = InitProducerIdResponseV3
    SCHEMA = Schema(
        ("transactional_id", CompactString("utf-8")),
        ("transaction_timeout_ms", Int32),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("tags", TaggedFields),
    )


InitProducerIdStruct: TypeAlias = transaction.InitProducerIdRequest_v0 | InitProducerIdRequestV3


class InitProducerIdRequest(Request[InitProducerIdStruct]):
    """aiokafka's InitProducerId request with v3 beside v0 (the highest both sides know is sent)."""

    API_KEY = 22

    def __init__(self, transactional_id: str | None, transaction_timeout_ms: int) -> None:
        self._transactional_id = transactional_id
        self._transaction_timeout_ms = transaction_timeout_ms

    def build(self, request_struct_class: type[InitProducerIdStruct]) -> InitProducerIdStruct:
        if request_struct_class is InitProducerIdRequestV3:
            return InitProducerIdRequestV3(
                self._transactional_id, self._transaction_timeout_ms, NEW_PRODUCER, NEW_PRODUCER, {}
            )
        return transaction.InitProducerIdRequest_v0(self._transactional_id, self._transaction_timeout_ms)


def install() -> None:
    """Make aiokafka's producers send InitProducerId v3 where the broker lists it (idempotent)."""
    sender.InitProducerIdRequest = InitProducerIdRequest  # type: ignore[attr-defined,misc]
