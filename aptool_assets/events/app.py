"""The webhook receiver (contract §5): an ASGI app that verifies, validates and durably stores.

``POST /webhooks/aeries`` answers only after the event is in the inbox
(:mod:`aptool_assets.storage.inbox`); applying it to the published tables is a Dagster sensor's job,
later. ``GET /healthz`` answers 200 ``{"status": "ok"}`` when the inbox store is reachable, 503
otherwise.

Check order, cheapest and least trusting first -- each step only runs if the previous passed:

1. **size** -- ``Content-Length`` over 64 KiB → 413 without reading the body; the body is then
   read in chunks and abandoned (413) as soon as it passes 64 KiB, so a missing or lying
   ``Content-Length`` cannot make us buffer more. A malformed ``Content-Length`` → 400.
2. **signature** -- HMAC-SHA256 of the *raw* bytes, constant-time compare → 401. Nothing in an
   unauthenticated body is parsed or logged.
3. **JSON** -- not UTF-8 JSON, not an object, or NaN/Infinity → 400.
4. **fields** -- ``eventId`` non-empty string (≤ 256 chars, no control characters),
   ``eventType`` non-empty string, ``timestamp`` ISO-8601 *with* an offset, ``data`` an object;
   for the supported types, the required ``data`` keys and their contract types
   (:func:`.validation.data_problem`) → 400. Steps 3-5 are :func:`.validation.parse_event`; every
   failing check raises a :class:`.validation.Rejection`, counted, logged and answered in one place.
5. **timestamp** -- older than 5 minutes or more than 1 minute ahead of our clock → 401 (replay).
6. **duplicate** -- an ``eventId`` already stored, whatever its type or status (a dead letter
   included) → 200 ``{"status": "duplicate"}``. This is decided by the store's own atomic insert
   (``ON CONFLICT DO NOTHING``) in steps 7–8, so two concurrent deliveries of one event get
   exactly one ``accepted``.
7. **type** -- an unsupported ``eventType`` is stored as a dead letter, then → 422.
8. **store** -- committed and fsynced → 200 ``{"status": "accepted", "eventId": …}``. If the
   store is unreachable → 503 (the sender retries; nothing was acknowledged).

Error bodies are ``{"error": "..."}`` and never echo the payload. Logs carry event IDs, types
and outcomes only -- never payload contents, never the secret. Rejections are logged one line
each (WARNING); accepted and duplicate deliveries are DEBUG lines plus a periodic INFO summary
of counts per outcome -- their durable record is the inbox row itself, and a log line per event
costs about a fifth of the receiver's throughput.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
from collections import Counter
from collections.abc import Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aptool_assets.events.signatures import verify
from aptool_assets.events.validation import UNSUPPORTED_TYPE_REASON, Event, Rejection, for_log, parse_event
from aptool_assets.redaction import scrub_logs
from aptool_assets.storage.inbox import Inbox, open_inbox

logger = logging.getLogger("aptool_assets.events.receiver")

WEBHOOK_PATH = "/webhooks/aeries"
MAX_BODY = 65536
SECRET_ENV = "APTOOL_WEBHOOK_SECRET"


def _json(status: int, body: dict) -> Response:
    return Response(json.dumps(body, separators=(",", ":")).encode(), status_code=status, media_type="application/json")


def _error(status: int, message: str) -> Response:
    return _json(status, {"error": message})


async def _read_body(request: Request, max_body: int) -> bytes:
    """1. size: a declared length over ``max_body`` is refused unread; the body is read in chunks
    and abandoned as soon as it passes ``max_body``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise Rejection(400, "malformed Content-Length", "400")
        if int(declared) > max_body:
            raise Rejection(
                413,
                f"body over {max_body} bytes",
                "413",
                "webhook rejected: body of %s bytes over %d",
                declared.strip(),
                max_body,
            )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_body:
            raise Rejection(413, f"body over {max_body} bytes", "413", "webhook rejected: body over %d bytes", max_body)
    return bytes(body)


def _check_signature(raw: bytes, request: Request, secret: str) -> None:
    """2. signature: HMAC-SHA256 of the raw bytes (constant-time compare)."""
    if not verify(raw, request.headers.get("x-aeries-signature"), secret):
        raise Rejection(
            401,
            "bad or missing signature",
            "401 signature",
            "webhook rejected: bad or missing signature (client %s)",
            request.client.host if request.client else "?",
        )


async def _store(inbox: Inbox, event: Event, raw: bytes) -> str:
    """6.-8. duplicate, type, store: one atomic insert decides ``accepted``/``duplicate``; an
    unsupported type is stored as a dead letter, then refused (422); an unreachable store → 503."""
    try:
        if event.supported:
            outcome = await inbox.astore(event.event_id, event.event_type, event.timestamp, event.body, raw)
        else:
            outcome = await inbox.astore_dead_letter(
                event.event_id, event.event_type, event.timestamp, event.body, raw, UNSUPPORTED_TYPE_REASON
            )
    except Exception as exc:
        raise Rejection(
            503,
            "inbox unavailable, retry later",
            "503",
            "webhook %s (%s) not stored: inbox unavailable (%s)",
            for_log(event.event_id),
            for_log(event.event_type),
            type(exc).__name__,
            level=logging.ERROR,
        ) from exc
    if outcome != "duplicate" and not event.supported:
        raise Rejection(
            422,
            "unsupported event type (stored as a dead letter)",
            "422 dead-lettered",
            "webhook %s (%s): unsupported event type, dead-lettered",
            for_log(event.event_id),
            for_log(event.event_type),
        )
    return outcome


class _Receiver:
    """The receiver's handlers over one inbox, and the outcome tally behind the periodic summary."""

    def __init__(
        self,
        inbox: Inbox,
        secret: str,
        max_body: int,
        replay_window: dt.timedelta,
        future_skew: dt.timedelta,
        now: Callable[[], dt.datetime],
        summary_interval: float,
    ) -> None:
        self.inbox = inbox
        self.secret = secret
        self.max_body = max_body
        self.replay_window = replay_window
        self.future_skew = future_skew
        self.now = now
        self.summary_interval = summary_interval
        self.tally: Counter[str] = Counter()

    async def receive(self, request: Request) -> Response:
        try:
            raw = await _read_body(request, self.max_body)  # 1. size
            _check_signature(raw, request, self.secret)  # 2. signature (over the raw bytes)
            event = parse_event(raw, self.now, self.replay_window, self.future_skew)  # 3. JSON, 4. fields, 5. time
            outcome = await _store(self.inbox, event, raw)  # 6.-8. duplicate, type, store
        except Rejection as rejection:
            self.tally[rejection.tally] += 1
            if rejection.log_message is not None:
                logger.log(rejection.level, rejection.log_message, *rejection.log_args)
            return _error(rejection.status, rejection.message)
        self.tally[outcome] += 1
        logger.debug("webhook %s (%s): %s", for_log(event.event_id), for_log(event.event_type), outcome)
        if outcome == "duplicate":
            return _json(200, {"status": "duplicate"})
        return _json(200, {"status": "accepted", "eventId": event.event_id})

    async def healthz(self, request: Request) -> Response:
        if await self.inbox.ahealthy():
            return _json(200, {"status": "ok"})
        logger.warning("healthz: inbox unreachable")
        return _json(503, {"status": "unavailable", "error": "inbox unreachable"})

    def log_summary(self) -> None:
        if self.tally:
            logger.info(
                "webhooks since the last summary: %s", ", ".join(f"{k} {v}" for k, v in sorted(self.tally.items()))
            )
            self.tally.clear()

    async def summaries(self) -> None:
        while True:
            await asyncio.sleep(self.summary_interval)
            self.log_summary()

    @asynccontextmanager
    async def lifespan(self, app: Starlette):
        try:
            await self.inbox.aopen()
        except Exception as exc:  # noqa: BLE001 - start anyway; /healthz reports the store
            logger.error("inbox not reachable at startup (%s)", type(exc).__name__)
        task = asyncio.get_running_loop().create_task(self.summaries())
        try:
            yield
        finally:
            task.cancel()
            self.log_summary()
            await self.inbox.aclose()


def create_app(
    inbox: Inbox,
    secret: str,
    *,
    max_body: int = MAX_BODY,
    replay_window: dt.timedelta = dt.timedelta(minutes=5),
    future_skew: dt.timedelta = dt.timedelta(minutes=1),
    clock: Callable[[], dt.datetime] | None = None,
    summary_interval: float = 60.0,
) -> Starlette:
    """The receiver app over ``inbox``. ``clock`` (aware ``datetime`` now) is for tests.

    Logging: every rejection (400/401/413/422/503) is a WARNING/ERROR line with the event ID and
    type when known; accepted and duplicate events are DEBUG lines (the inbox row is their
    durable record) and are counted in an INFO summary every ``summary_interval`` seconds.
    """
    if not secret:
        raise ValueError(f"a webhook secret is required ({SECRET_ENV})")
    now = clock or (lambda: dt.datetime.now(dt.UTC))
    receiver = _Receiver(inbox, secret, max_body, replay_window, future_skew, now, summary_interval)
    return Starlette(
        routes=[
            Route(WEBHOOK_PATH, receiver.receive, methods=["POST"]),
            Route("/healthz", receiver.healthz, methods=["GET"]),
        ],
        lifespan=receiver.lifespan,
    )


def _fastest(module: str, name: str, fallback: str) -> str:
    try:
        __import__(module)
    except ImportError:
        return fallback
    return name


def serve(host: str = "127.0.0.1", port: int = 8787, database_url: str | None = None, log_level: str = "info") -> None:
    """Run the receiver (``aptool webhooks serve``) until interrupted.

    ``log_level="debug"`` adds one log line per accepted/duplicate event (ID, type, outcome).

    Reads the secret from ``APTOOL_WEBHOOK_SECRET`` and refuses to start without it. The inbox
    is ``database_url``, else ``APTOOL_DATABASE_URL``, else the embedded SQLite inbox. One
    uvicorn worker (uvloop and httptools when installed); concurrency comes from the event loop
    and the async connection pool, not from processes.
    """
    import uvicorn

    from aptool_assets.settings import ConfigurationError

    secret = os.environ.get(SECRET_ENV, "")
    if not secret.strip():
        raise ConfigurationError(
            f"{SECRET_ENV} is not set: the webhook receiver refuses to start without the shared secret "
            "used to verify X-Aeries-Signature"
        )
    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        raise ConfigurationError(f"log level {log_level!r} is not one of debug, info, warning, error")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aptool_assets.events").setLevel(level)
    scrub_logs(*logging.getLogger().handlers)  # no password in any line (aptool_assets.redaction)

    inbox = open_inbox(database_url)
    try:
        inbox.setup()
        logger.info("webhook receiver on http://%s:%d%s, inbox: %s", host, port, WEBHOOK_PATH, inbox.describe())
        config = uvicorn.Config(
            create_app(inbox, secret),
            host=host,
            port=port,
            loop=_fastest("uvloop", "uvloop", "asyncio"),
            http=_fastest("httptools", "httptools", "h11"),
            lifespan="on",
            access_log=False,  # our own lines carry id, type and outcome (see create_app)
            log_level=log_level.lower(),
            timeout_keep_alive=30,
            server_header=False,
        )
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # uvicorn's own handlers, set up just now
            scrub_logs(*logging.getLogger(name).handlers)
        uvicorn.Server(config).run()
    finally:
        inbox.close()
