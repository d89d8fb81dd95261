"""The physical floor, measured in the same run: what no sync design over Redis and pycrdt can beat.

* Redis: PUBLISH from one client -> message received by a subscribed client (redis-py asyncio,
  same process), one message in flight at a time.
* pycrdt: `apply_update` of a one-line append into a document holding the lines before it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import pycrdt
from redis.asyncio import Redis

from bench.report import Figure, distribution
from bench.server import BenchRedis


@dataclass(frozen=True)
class Floor:
    publish_ms: float  # p50 PUBLISH -> receive
    apply_us: float  # p50 pycrdt apply_update


async def _publish_rtt(url: str, samples: int) -> list[float]:
    publisher: Redis = Redis.from_url(url)
    subscriber: Redis = Redis.from_url(url)
    pubsub = subscriber.pubsub()
    await pubsub.subscribe("floor")
    await pubsub.get_message(timeout=1.0)  # the subscribe confirmation
    out: list[float] = []
    try:
        for i in range(samples + 50):
            payload = b"x" * 150
            started = time.perf_counter_ns()
            await publisher.publish("floor", payload)
            while True:
                message = await pubsub.get_message(timeout=5.0)
                if message is not None and message["type"] == "message":
                    break
            if i >= 50:  # warm-up
                out.append((time.perf_counter_ns() - started) / 1e6)
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await publisher.aclose()
        await subscriber.aclose()
    return out


def _apply_times(samples: int) -> list[float]:
    source: pycrdt.Doc[Any] = pycrdt.Doc()
    text = source.get("text", type=pycrdt.Text)
    updates: list[bytes] = []
    source.observe(lambda event: updates.append(event.update))
    for i in range(samples):
        line = f"- <0.{i}> the user prefers short answers and metric units\n"
        text.insert(len(str(text).encode()), line)
    target: pycrdt.Doc[Any] = pycrdt.Doc()
    target.get("text", type=pycrdt.Text)
    out: list[float] = []
    for update in updates:
        started = time.perf_counter_ns()
        target.apply_update(update)
        out.append((time.perf_counter_ns() - started) / 1e3)
    return out


def measure(server: BenchRedis, samples: int) -> tuple[Floor, list[Figure]]:
    rtt = asyncio.run(_publish_rtt(server.url, samples))
    apply = _apply_times(samples)
    figures = [
        distribution("floor", "Redis PUBLISH -> subscriber", "ms", rtt),
        distribution("floor", "pycrdt apply_update, 1 line", "µs", apply),
    ]
    return Floor(publish_ms=figures[0].p50 or 0.0, apply_us=figures[1].p50 or 0.0), figures
