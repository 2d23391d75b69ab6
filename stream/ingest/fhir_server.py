"""The FHIR endpoint of ``notestream ingest fhir --listen HOST:PORT`` (aiohttp).

``POST /fhir`` takes one resource or a Bundle (transaction, batch, collection, searchset, or a
subscription notification: point an R4B/R5 ``rest-hook`` Subscription, or the R4 backport's, at this
URL with full-resource content). ``POST /fhir/Encounter``, ``POST /fhir/DocumentReference`` and ``PUT
/fhir/{type}/{id}`` take single resources as a FHIR server's create and update would.

Answers, each with an OperationOutcome (``application/fhir+json``):

- 200: Kafka holds every event of the body (``diagnostics`` says how many);
- 400: not JSON or not valid FHIR; 415: not JSON at all (XML is not read); 422: valid FHIR that
  cannot become events (no encounter, no text attachment, unsupported type); 413: a note over
  ``max_note_bytes``. A 4xx body is filed on the dead-letter topic before the answer;
- 503 (``Retry-After``): Kafka did not take the events or the dead letter; nothing was kept, resend.

Bodies are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from typing import Any

from aiohttp import web

from notestream.core.settings import Settings
from notestream.stream.errors import BrokerError
from notestream.stream.ingest.errors import FhirReject
from notestream.stream.ingest.fhir_map import SUPPORTED, FhirOptions, map_body
from notestream.stream.ingest.producer import EventSink, serve_ingest_metrics
from notestream.stream.ingest.tls import server_ssl_context

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
ACCEPTED_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")


def outcome(severity: str, code: str, text: str, expression: str = "") -> dict[str, Any]:
    """An OperationOutcome with one issue.

    >>> outcome("error", "required", "no encounter", "DocumentReference.context")["issue"][0]["expression"]
    ['DocumentReference.context']
    """
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": text}
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def response_bundle(kind: str, entries: list[int]) -> dict[str, Any]:
    """The ``transaction-response`` / ``batch-response`` Bundle of an accepted Bundle: an entry per
    request entry, ``200 OK`` with an OperationOutcome saying how many events it gave (or that its
    resource type is not read and was skipped).

    >>> response_bundle("batch", [1, -1])["entry"][1]["response"]["outcome"]["issue"][0]["diagnostics"]
    'resource type not read here: skipped'
    """
    out = []
    for n in entries:
        text = "resource type not read here: skipped" if n < 0 else f"{n} events written"
        out.append(
            {"response": {"status": "200 OK", "outcome": outcome("information", "informational", text)}}
        )
    return {"resourceType": "Bundle", "type": f"{kind}-response", "entry": out}


def _respond(status: int, body: dict[str, Any], **headers: str) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type=FHIR_JSON, headers=headers or None)


class FhirEndpoint:
    """The request handlers around one :class:`EventSink`."""

    def __init__(self, sink: EventSink, options: FhirOptions) -> None:
        self.sink = sink
        self.options = options

    async def receive(self, request: web.Request) -> web.Response:
        response = await self._receive(request)
        self.sink.answered("fhir", str(response.status))
        return response

    async def _receive(self, request: web.Request) -> web.Response:
        kind = request.match_info.get("type")
        if kind is not None and kind not in SUPPORTED:
            return _respond(
                404, outcome("error", "not-supported", f"{kind} is not read here", "resourceType")
            )
        media = request.content_type.lower()
        if media not in ACCEPTED_TYPES:
            return _respond(
                415,
                outcome("error", "not-supported", f"Content-Type {media} is not read here; send {FHIR_JSON}"),
            )
        raw = await request.read()
        self.sink.counts.received += 1
        try:
            obj = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            reject = FhirReject(
                400, "structure", f"the body is not JSON ({type(exc).__name__})", reason="invalid_json"
            )
            return await self._reject(raw, reject)
        try:
            if kind is not None and (not isinstance(obj, dict) or obj.get("resourceType") != kind):
                raise FhirReject(
                    400, "invalid", f"the body is not a {kind} resource", expression="resourceType"
                )
            rid = request.match_info.get("id")
            if rid is not None and obj.get("id") != rid:
                raise FhirReject(
                    400, "invalid", "the resource id differs from the id in the URL", expression=f"{kind}.id"
                )
            mapped = map_body(obj, self.options)
        except FhirReject as reject:
            return await self._reject(raw, reject)
        except Exception as exc:  # a mapping bug must not lose the body: keep it, tell the sender
            log.error("FHIR body could not be mapped (%s); dead-lettered", type(exc).__name__)
            internal = FhirReject(
                500,
                "exception",
                "notestream could not map this body (internal error); it is kept on the dead-letter topic",
                reason="processing_error",
            )
            return await self._reject(raw, internal)
        try:
            await self.sink.deliver(mapped.events)
        except BrokerError as exc:
            self.sink.counts.failed += 1
            log.warning("FHIR body not stored: %s", exc)
            return _respond(
                503,
                outcome("error", "transient", "Kafka did not take the events; resend"),
                **{"Retry-After": "5"},
            )
        self.sink.counts.skipped += mapped.skipped
        text = f"{len(mapped.events)} events written"
        if mapped.skipped:
            text += f"; {mapped.skipped} resources of other types skipped"
        if mapped.bundle_type in ("transaction", "batch"):
            return _respond(200, response_bundle(mapped.bundle_type, mapped.entries))
        return _respond(200, outcome("information", "informational", text))

    async def _reject(self, raw: bytes, reject: FhirReject) -> web.Response:
        try:
            await self.sink.dead_letter(raw, reject, source="fhir")
        except BrokerError as exc:
            self.sink.counts.failed += 1
            log.warning("FHIR body rejected but not dead-lettered: %s", exc)
            return _respond(
                503,
                outcome("error", "transient", "Kafka did not take the body; resend"),
                **{"Retry-After": "5"},
            )
        log.info("FHIR body rejected (%s): %s", reject.status, reject.detail)
        return _respond(reject.status, outcome("error", reject.issue, reject.detail, reject.expression))

    async def metadata(self, request: web.Request) -> web.Response:
        """A minimal CapabilityStatement: what a subscription manager or client checks first."""
        body = {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": "2026-01-01",
            "kind": "instance",
            "fhirVersion": "4.0.1",
            "format": ["json"],
            "rest": [
                {
                    "mode": "server",
                    "resource": [
                        {"type": kind, "interaction": [{"code": "create"}, {"code": "update"}]}
                        for kind in SUPPORTED
                    ],
                    "interaction": [{"code": "transaction"}, {"code": "batch"}],
                }
            ],
        }
        return _respond(200, body)


def bearer_guard(token: str) -> Any:
    """Middleware: 401 for a request without ``Authorization: Bearer <token>`` (metadata stays open)."""
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        given = request.headers.get("Authorization", "").encode()
        if request.path != "/fhir/metadata" and not hmac.compare_digest(given, expected):
            body = outcome("error", "login", "a valid bearer token is required (Authorization: Bearer ...)")
            return _respond(401, body, **{"WWW-Authenticate": 'Bearer realm="notestream"'})
        response: web.StreamResponse = await handler(request)
        return response

    return guard


def make_app(
    sink: EventSink, options: FhirOptions, *, max_body_bytes: int, bearer_token: str | None = None
) -> web.Application:
    """The aiohttp application of the FHIR endpoint under ``/fhir`` (bearer token: see :func:`bearer_guard`)."""
    endpoint = FhirEndpoint(sink, options)
    middlewares = [bearer_guard(bearer_token)] if bearer_token else []
    app = web.Application(client_max_size=max_body_bytes, middlewares=middlewares)
    app.router.add_post("/fhir", endpoint.receive)
    app.router.add_post("/fhir/{type}", endpoint.receive)
    app.router.add_put("/fhir/{type}/{id}", endpoint.receive)
    app.router.add_get("/fhir/metadata", endpoint.metadata)
    return app


def body_limit(settings: Settings) -> int:
    """Largest body read: a note as base64 (4/3) with room for its resource around it."""
    return settings.max_note_bytes * 4 // 3 + 256 * 1024


async def start_fhir(settings: Settings, sink: EventSink, host: str, port: int) -> tuple[web.AppRunner, str]:
    """Start the endpoint; returns the runner (``await runner.cleanup()`` stops it) and its base URL."""
    token = settings.fhir_bearer_token.get_secret_value() if settings.fhir_bearer_token else None
    app = make_app(
        sink, FhirOptions.from_settings(settings), max_body_bytes=body_limit(settings), bearer_token=token
    )
    context = server_ssl_context(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=context)
    await site.start()
    server = site._server
    assert server is not None
    bound = server.sockets[0].getsockname()  # type: ignore[attr-defined]
    return runner, f"{'https' if context else 'http'}://{bound[0]}:{bound[1]}/fhir"


async def serve_fhir(
    settings: Settings, host: str, port: int, *, announce: Any = print, stop: asyncio.Event | None = None
) -> dict[str, Any]:
    """Serve until ``stop`` is set (or SIGTERM/SIGINT); ``announce`` gets the base URL. Returns counts."""
    import signal

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    metrics, server = await serve_ingest_metrics(settings, "ingest")
    async with EventSink(settings, metrics=metrics) as sink:
        runner, url = await start_fhir(settings, sink, host, port)
        announce(url)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
            if server is not None:
                await server.close()
        return sink.counts.as_dict()
