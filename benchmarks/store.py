"""Risk store update latency: an admission holding 1 note vs 1,000 notes (Redis and memory).

Starts its own redis-server on a free port (like tests/fixtures/redis.py) and prints ONE JSON line:
p50/p99 microseconds of ``apply_note`` (3 chunks) on a fresh admission and on one already holding
1,000 notes, their ratio (target: flat, within 2x), and updates per second with 64 concurrent callers.

    python benchmarks/store.py [--updates 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from typing import Any

from local_redis import local_redis  # benchmarks/ (the script's folder)

from notestream.stream.store import MemoryRiskStore, RedisRiskStore, RiskStore


async def _latencies(store: RiskStore, hadm: int, n: int, rng: random.Random) -> list[float]:
    out = []
    for i in range(n):
        probs = [rng.random() for _ in range(3)]
        start = time.perf_counter()
        await store.apply_note(
            hadm_id=hadm, subject_id=1, note_id=f"b{i}", revision=0, is_error=False, chunk_probs=probs
        )
        out.append((time.perf_counter() - start) * 1e6)
    return out


def _p(values: list[float], q: float) -> float:
    return round(statistics.quantiles(values, n=100)[int(q) - 1], 1)


async def measure(store: RiskStore, updates: int) -> dict[str, Any]:
    rng = random.Random(0)
    for i in range(1000):
        await store.apply_note(
            hadm_id=2,
            subject_id=1,
            note_id=f"pre{i}",
            revision=0,
            is_error=False,
            chunk_probs=[rng.random() for _ in range(3)],
        )
    one: list[float] = []
    for k in range(updates):  # a fresh admission each time: it holds 1 note after the update
        one += await _latencies(store, 1_000_000 + k, 1, rng)
    many = await _latencies(store, 2, updates, rng)
    start = time.perf_counter()
    await asyncio.gather(*(_latencies(store, 3 + c, updates // 64, rng) for c in range(64)))
    rate = 64 * (updates // 64) / (time.perf_counter() - start)
    return {
        "p50_us_1_note": _p(one, 50),
        "p99_us_1_note": _p(one, 99),
        "p50_us_1000_notes": _p(many, 50),
        "p99_us_1000_notes": _p(many, 99),
        "p50_ratio_1000_vs_1": round(_p(many, 50) / _p(one, 50), 2),
        "updates_per_s_64_concurrent": round(rate),
    }


async def main(updates: int) -> dict[str, Any]:
    result: dict[str, Any] = {"benchmark": "store", "updates": updates}
    memory = MemoryRiskStore()
    result["memory"] = await measure(memory, updates)
    with local_redis() as url:
        if url is None:
            result["redis"] = "redis-server not installed"
            return result
        store = RedisRiskStore(url, pool_size=64)
        result["redis"] = await measure(store, updates)
        await store.close()
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--updates", type=int, default=2000)
    print(json.dumps(asyncio.run(main(parser.parse_args().updates))))
