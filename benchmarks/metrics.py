"""Cost of the Prometheus metrics on the worker's hot path, and of one scrape. Prints ONE JSON line.

    python benchmarks/metrics.py [--n 200000]

Figures: nanoseconds per call of what a worker does per note or per batch (counter increment,
labelled dead letter, batch observation, store timer, latency observation), and milliseconds per
/metrics scrape over HTTP with every metric populated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
from collections.abc import Callable

import httpx

from notestream.core.settings import Settings
from notestream.stream.metrics import Metrics, start_http_server


def per_call_ns(fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - start) / n


def store_timed(m: Metrics) -> None:
    with m.store_timer("apply_note"):
        pass


async def scrape_ms(m: Metrics, n: int) -> float:
    server = await start_http_server(Settings(metrics_host="127.0.0.1"), m, {"store": lambda: True}, port=0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            await client.get("/metrics")
            start = time.perf_counter()
            for _ in range(n):
                (await client.get("/metrics")).raise_for_status()
            return (time.perf_counter() - start) * 1000 / n
    finally:
        await server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200_000, help="Calls per measured operation.")
    parser.add_argument("--scrapes", type=int, default=200, help="HTTP scrapes to time.")
    args = parser.parse_args()
    m = Metrics(role="worker")
    m.track_queue_depth(lambda: 12)
    figures = {
        "benchmark": "metrics",
        "calls": args.n,
        "counter_inc_ns": round(per_call_ns(m.notes_in.inc, args.n), 1),
        "dead_letter_ns": round(per_call_ns(lambda: m.dead_letter("invalid_json"), args.n), 1),
        "observe_batch_ns": round(per_call_ns(lambda: m.observe_batch(48, 48 * 256, 9000), args.n), 1),
        "store_timer_ns": round(per_call_ns(lambda: store_timed(m), args.n), 1),
        "note_to_update_ns": round(per_call_ns(lambda: m.observe_note_to_update(0.2), args.n), 1),
        "render_bytes": len(m.render()),
        "scrape_http_ms": round(asyncio.run(scrape_ms(m, args.scrapes)), 3),
        "python": platform.python_version(),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
