"""Alert sinks: async callables taking a :class:`RiskAlert` (re-exported by :mod:`notestream.stream.alerts`).

:func:`stdout_sink` writes JSON lines, :func:`topic_sink` produces to the risk-alerts topic through an
injected ``send``, and :class:`WebhookSink` POSTs with retries and exponential backoff.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

import httpx

from notestream.stream.errors import AlertSinkError
from notestream.stream.events import RiskAlert, admission_key

AlertSink = Callable[[RiskAlert], Awaitable[None]]


def stdout_sink(stream: TextIO | None = None) -> AlertSink:
    """A sink writing each alert as one JSON line (to stdout by default)."""

    async def write(alert: RiskAlert) -> None:
        out = stream if stream is not None else sys.stdout
        out.write(alert.model_dump_json() + "\n")
        out.flush()

    return write


def topic_sink(send: Callable[..., Awaitable[Any]], topic: str) -> AlertSink:
    """A sink producing each alert to ``topic`` through ``send(topic, key=..., value=...)`` (e.g. an
    aiokafka producer's ``send_and_wait``), keyed by admission id."""

    async def produce(alert: RiskAlert) -> None:
        try:
            await send(topic, key=admission_key(alert.hadm_id), value=alert.to_bytes())
        except Exception as exc:
            raise AlertSinkError(
                f"Could not produce the alert of admission {alert.hadm_id} to {topic}: {exc}. Check the broker."
            ) from exc

    return produce


class WebhookSink:
    """POST each alert as JSON to ``url``; retry transport errors, 429 and 5xx with exponential backoff.

    Other 4xx answers are not retried (the request itself is wrong). After the last retry the sink
    raises :class:`AlertSinkError`. The URL may carry a token: it never appears in errors or logs.
    """

    def __init__(
        self,
        url: str,
        *,
        retries: int = 3,
        backoff_s: float = 0.5,
        timeout_s: float = 5.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url
        self.retries = retries
        self.backoff_s = backoff_s
        self._client = client if client is not None else httpx.AsyncClient(timeout=timeout_s)
        self._own_client = client is None
        self.attempts = 0

    async def __call__(self, alert: RiskAlert) -> None:
        body = alert.to_bytes()
        headers = {"content-type": "application/json"}
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
            self.attempts += 1
            try:
                response = await self._client.post(self.url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}"
                continue
            if response.status_code < 300:
                return
            problem = f"HTTP {response.status_code}"
            if response.status_code != 429 and response.status_code < 500:
                break
        raise AlertSinkError(
            f"The webhook did not accept the alert of admission {alert.hadm_id} (seq {alert.seq}) after "
            f"{self.attempts} attempt(s): {problem}. Check the webhook URL and the receiving service."
        )

    async def close(self) -> None:
        if self._own_client:
            await self._client.aclose()
