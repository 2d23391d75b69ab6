"""Prometheus metrics per process, and the /metrics, /healthz and /readyz server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from notestream.core.errors import ConfigError
from notestream.core.settings import Settings
from notestream.stream.metrics import Metrics, MetricsServer, ReadinessCheck, start_http_server
from notestream.stream.store.redis_store import redis_options
from tests.fixtures.deploy import RedisProcess


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_record_what_the_worker_does() -> None:
    m = Metrics(role="worker")
    m.notes_in.inc(5)
    m.updates_out.inc(4)
    m.dead_letter("invalid_event")
    m.dead_letter("invalid_event")
    m.dead_letter("admission_unknown")
    m.observe_batch(rows=8, padded_tokens=8 * 100, real_tokens=600)
    m.observe_batch(rows=2, padded_tokens=2 * 50, real_tokens=100)
    depth = [17]
    m.track_queue_depth(lambda: depth[0])
    m.observe_note_to_update(timedelta(milliseconds=250))
    m.observe_note_to_update(-1.0)  # clock skew never gives a negative latency
    with m.store_timer("apply_note"):
        pass
    with pytest.raises(RuntimeError), m.store_timer("apply_note"):
        raise RuntimeError("store down")
    s = samples(m.render().decode())
    assert s[("notestream_notes_in_total", ())] == 5
    assert s[("notestream_updates_out_total", ())] == 4
    assert s[("notestream_dead_letters_total", (("reason", "invalid_event"),))] == 2
    assert s[("notestream_dead_letters_total", (("reason", "admission_unknown"),))] == 1
    assert s[("notestream_chunks_scored_total", ())] == 10
    assert s[("notestream_batch_size_count", ())] == 2
    assert s[("notestream_batch_size_sum", ())] == 10
    assert s[("notestream_batch_tokens_sum", ())] == 900
    assert s[("notestream_padding_efficiency_sum", ())] == pytest.approx(0.75 + 1.0)
    assert s[("notestream_engine_queue_depth", ())] == 17
    depth[0] = 3
    assert samples(m.render().decode())[("notestream_engine_queue_depth", ())] == 3
    assert s[("notestream_note_to_update_seconds_sum", ())] == pytest.approx(0.25)
    assert s[("notestream_store_seconds_count", (("op", "apply_note"),))] == 2
    assert s[("notestream_store_errors_total", (("op", "apply_note"),))] == 1
    from notestream import __version__

    info = (("fingerprint", ""), ("model", ""), ("role", "worker"), ("version", __version__))
    assert s[("notestream_info", info)] == 1
    assert s[("process_cpu_seconds_total", ())] > 0  # the standard process collector
    assert any(name == "python_info" for name, _ in s)  # the platform collector


def test_each_role_exports_only_its_own_metrics() -> None:
    worker, alerts, replay = Metrics(role="worker"), Metrics(role="alerts"), Metrics(role="replay")
    names = {m.role: {f.name for f in m.registry.collect()} for m in (worker, alerts, replay)}
    assert {"notestream_notes_in", "notestream_consumer_lag", "notestream_engine_batch_seconds"} <= names[
        "worker"
    ]
    assert "notestream_alerts_raised_now" not in names["worker"]
    assert "notestream_replay_sent" not in names["worker"]
    assert "notestream_alerts_raised_now" in names["alerts"]
    assert "notestream_notes_in" not in names["alerts"]
    assert "notestream_replay_sent" in names["replay"]
    assert "notestream_store_seconds" not in names["replay"]
    for role in names.values():
        assert {"notestream_info", "process_resident_memory_bytes", "python_gc_objects_collected"} <= role
    alerts.notes_in.inc()  # shared code may still record into another role's metric: it is not exported
    assert b"notestream_notes_in" not in alerts.render()
    with pytest.raises(ConfigError):
        Metrics(role="monitor")


def test_consumer_lag_per_partition_and_revoked_partitions_vanish() -> None:
    m = Metrics(role="worker")
    m.observe_consumer_lag("notes", 0, 12)
    m.observe_consumer_lag("notes", 3, -1)  # a watermark read before the last fetch: never negative
    s = samples(m.render().decode())
    assert s[("notestream_consumer_lag", (("partition", "0"), ("topic", "notes")))] == 12
    assert s[("notestream_consumer_lag", (("partition", "3"), ("topic", "notes")))] == 0
    m.forget_partition("notes", 0)
    m.forget_partition("notes", 7)  # never seen: nothing to drop
    s = samples(m.render().decode())
    assert ("notestream_consumer_lag", (("partition", "0"), ("topic", "notes"))) not in s


def test_each_process_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()
    a.notes_in.inc()
    assert samples(b.render().decode())[("notestream_notes_in_total", ())] == 0


@pytest.fixture
async def server_with_checks() -> AsyncIterator[tuple[MetricsServer, Metrics, dict[str, bool]]]:
    state = {"broker": True, "engine": True}

    async def broker_ok() -> bool:
        return state["broker"]

    def engine_started() -> bool:
        return state["engine"]

    metrics = Metrics(role="worker")
    server = await start_http_server(
        Settings(metrics_host="127.0.0.1"), metrics, {"broker": broker_ok, "engine": engine_started}, port=0
    )
    try:
        yield server, metrics, state
    finally:
        await server.close()


async def test_http_endpoints(server_with_checks: tuple[MetricsServer, Metrics, dict[str, bool]]) -> None:
    server, metrics, state = server_with_checks
    metrics.notes_in.inc(3)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
        scraped = await client.get("/metrics")
        assert scraped.status_code == 200
        assert scraped.headers["content-type"].startswith("text/plain")
        assert samples(scraped.text)[("notestream_notes_in_total", ())] == 3
        assert (await client.get("/healthz")).json() == {"status": "alive"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"broker": True, "engine": True}
        state["broker"] = False
        not_ready = await client.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json() == {"status": "not ready", "checks": {"broker": False, "engine": True}}
        assert (await client.get("/healthz")).status_code == 200  # alive even when not ready


async def test_failing_or_hanging_checks_mean_not_ready(redis_process: RedisProcess) -> None:
    settings = Settings(
        store=redis_process.url, redis_password=redis_process.password, metrics_host="127.0.0.1"
    )
    store = aioredis.Redis.from_url(settings.store, **redis_options(settings))

    async def store_reachable() -> bool:
        return bool(await store.ping())

    async def hangs() -> bool:
        await asyncio.sleep(30)
        return True

    def raises() -> bool:
        raise ConnectionError("broker gone")

    checks: dict[str, ReadinessCheck] = {"store": store_reachable}
    server = await start_http_server(settings, Metrics(), checks, port=0, check_timeout_s=0.2)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            assert (await client.get("/readyz")).status_code == 200
            redis_process.stop()
            down = await client.get("/readyz")
            assert down.status_code == 503
            assert down.json()["checks"] == {"store": False}
            redis_process.start()
            assert (await client.get("/readyz")).status_code == 200
            checks.update(hangs=hangs, raises=raises)
            body = (await client.get("/readyz")).json()
            assert body["checks"] == {"store": True, "hangs": False, "raises": False}
    finally:
        await server.close()
        await store.aclose()  # type: ignore[attr-defined]


async def test_port_in_use_is_a_clear_error() -> None:
    from notestream.core.errors import ConfigError

    settings = Settings(metrics_host="127.0.0.1")
    first = await start_http_server(settings, Metrics(), port=0)
    try:
        with pytest.raises(ConfigError, match="free metrics_port"):
            await start_http_server(settings, Metrics(), port=first.port)
    finally:
        await first.close()
