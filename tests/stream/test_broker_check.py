"""The worker's ``broker`` readiness check against the librdkafka mock cluster."""

from __future__ import annotations

from notestream.core.settings import Settings
from notestream.stream.app import create_app
from notestream.stream.faust_transport import producer_client
from notestream.stream.runtime import BrokerCheck


async def test_ready_once_joined_and_the_broker_answers(kafka_settings: Settings) -> None:
    app = create_app(kafka_settings).app
    check = BrokerCheck(app, max_age_s=0.0)  # every call asks the broker
    assert not await check(), "not ready before the consumer joined its group"
    await check.assigned(app, assigned=set())
    assert not await check(), "not ready before the producer is connected"
    assert producer_client(app) is None, "no client before Faust started its producer"
    await app.producer.start()
    try:
        # the private Faust attribute the check reads (notestream.stream.faust_transport): a Faust upgrade that
        # moves it fails here
        assert producer_client(app) is not None
        assert await check()
        assert check.last_ok > float("-inf")
        await check.revoked(app, revoked=set())
        assert not await check(), "a rebalance in progress is not ready"
        await check.assigned(app, assigned=set())
        assert await check()
    finally:
        await app.producer.stop()


async def test_the_worker_app_wires_the_check_to_rebalances() -> None:
    worker = create_app(Settings(broker="kafka://127.0.0.1:9"))
    app, check = worker.app, worker.broker_check
    await app.on_partitions_assigned.send(set())
    assert check.joined
    await app.on_partitions_revoked.send(set())
    assert not check.joined
