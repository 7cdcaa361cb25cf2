"""The webhook receiver (contract §5): an ASGI app that verifies, validates and durably stores.

``POST /webhooks/aeries`` answers only after the event is in the inbox (:mod:`.inbox`); applying
it to the published tables is a Dagster sensor's job, later. ``GET /healthz`` answers 200
``{"status": "ok"}`` when the inbox store is reachable, 503 otherwise.

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
   (:func:`.inbox.data_problem`) → 400.
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

from aptool_assets.events.inbox import (
    MAX_EVENT_ID_LENGTH,
    MAX_EVENT_TYPE_LENGTH,
    SUPPORTED_EVENT_TYPES,
    UNSUPPORTED_TYPE_REASON,
    Inbox,
    data_problem,
    open_inbox,
)
from aptool_assets.events.signatures import verify

logger = logging.getLogger("aptool_assets.events.receiver")

WEBHOOK_PATH = "/webhooks/aeries"
MAX_BODY = 65536
SECRET_ENV = "APTOOL_WEBHOOK_SECRET"
_SUPPORTED = frozenset(SUPPORTED_EVENT_TYPES)


class _BodyTooLarge(Exception):
    pass


def _json(status: int, body: dict) -> Response:
    return Response(json.dumps(body, separators=(",", ":")).encode(), status_code=status,
                    media_type="application/json")


def _error(status: int, message: str) -> Response:
    return _json(status, {"error": message})


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _has_control(text: str) -> bool:
    return not text.isprintable()  # control characters, line breaks, separators


def _for_log(value: str) -> str:
    """An identifier for a log line: repr (so no line breaks get through), bounded."""
    return repr(value[:120])


def _parse_timestamp(value: object) -> dt.datetime | None:
    if not isinstance(value, str) or not 10 < len(value) <= 64:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        return None
    return parsed


async def _read_body(request: Request, max_body: int) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_body:
            raise _BodyTooLarge
    return bytes(body)


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
    now = clock or (lambda: dt.datetime.now(dt.timezone.utc))
    tally: Counter[str] = Counter()

    async def receive(request: Request) -> Response:
        # 1. size
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                tally["400"] += 1
                return _error(400, "malformed Content-Length")
            if int(declared) > max_body:
                tally["413"] += 1
                logger.warning("webhook rejected: body of %s bytes over %d", declared.strip(), max_body)
                return _error(413, f"body over {max_body} bytes")
        try:
            raw = await _read_body(request, max_body)
        except _BodyTooLarge:
            tally["413"] += 1
            logger.warning("webhook rejected: body over %d bytes", max_body)
            return _error(413, f"body over {max_body} bytes")

        # 2. signature (over the raw bytes)
        if not verify(raw, request.headers.get("x-aeries-signature"), secret):
            tally["401 signature"] += 1
            logger.warning("webhook rejected: bad or missing signature (client %s)",
                           request.client.host if request.client else "?")
            return _error(401, "bad or missing signature")

        # 3. JSON
        try:
            body = json.loads(raw, parse_constant=_reject_constant)
        except (ValueError, UnicodeDecodeError, RecursionError):
            tally["400"] += 1
            logger.warning("webhook rejected: malformed JSON")
            return _error(400, "malformed JSON")
        if not isinstance(body, dict):
            tally["400"] += 1
            logger.warning("webhook rejected: body is not a JSON object")
            return _error(400, "body must be a JSON object")

        # 4. fields
        event_id = body.get("eventId")
        if not isinstance(event_id, str) or not event_id.strip() or len(event_id) > MAX_EVENT_ID_LENGTH \
                or _has_control(event_id):
            tally["400"] += 1
            logger.warning("webhook rejected: missing or invalid eventId")
            return _error(400, f"eventId must be a non-empty string of at most {MAX_EVENT_ID_LENGTH} characters")
        event_type = body.get("eventType")
        if not isinstance(event_type, str) or not event_type or len(event_type) > MAX_EVENT_TYPE_LENGTH \
                or _has_control(event_type):
            tally["400"] += 1
            logger.warning("webhook %s rejected: missing or invalid eventType", _for_log(event_id))
            return _error(400, "eventType must be a non-empty string")
        timestamp = _parse_timestamp(body.get("timestamp"))
        if timestamp is None:
            tally["400"] += 1
            logger.warning("webhook %s rejected: missing or invalid timestamp", _for_log(event_id))
            return _error(400, "timestamp must be ISO-8601 with a UTC offset")
        data = body.get("data")
        if not isinstance(data, dict):
            tally["400"] += 1
            logger.warning("webhook %s rejected: data is not an object", _for_log(event_id))
            return _error(400, "data must be an object")
        problem = data_problem(event_type, data)
        if problem:
            tally["400"] += 1
            logger.warning("webhook %s (%s) rejected: %s", _for_log(event_id), _for_log(event_type), problem)
            return _error(400, problem)

        # 5. timestamp window
        current = now()
        if timestamp < current - replay_window or timestamp > current + future_skew:
            tally["401 replay window"] += 1
            logger.warning("webhook %s (%s) rejected: timestamp outside the replay window",
                           _for_log(event_id), _for_log(event_type))
            return _error(401, "timestamp outside the accepted window (replayed or clock skew)")

        # 6.–8. duplicate, type, store: one atomic insert decides accepted/duplicate.
        supported = event_type in _SUPPORTED
        try:
            if supported:
                outcome = await inbox.astore(event_id, event_type, timestamp, body, raw)
            else:
                outcome = await inbox.astore_dead_letter(
                    event_id, event_type, timestamp, body, raw, UNSUPPORTED_TYPE_REASON
                )
        except Exception as exc:  # noqa: BLE001 - the sender must retry; never acknowledge
            tally["503"] += 1
            logger.error("webhook %s (%s) not stored: inbox unavailable (%s)",
                         _for_log(event_id), _for_log(event_type), type(exc).__name__)
            return _error(503, "inbox unavailable, retry later")
        if outcome == "duplicate":
            tally["duplicate"] += 1
            logger.debug("webhook %s (%s): duplicate", _for_log(event_id), _for_log(event_type))
            return _json(200, {"status": "duplicate"})
        if not supported:
            tally["422 dead-lettered"] += 1
            logger.warning("webhook %s (%s): unsupported event type, dead-lettered",
                           _for_log(event_id), _for_log(event_type))
            return _error(422, "unsupported event type (stored as a dead letter)")
        tally["accepted"] += 1
        logger.debug("webhook %s (%s): accepted", _for_log(event_id), _for_log(event_type))
        return _json(200, {"status": "accepted", "eventId": event_id})

    async def healthz(request: Request) -> Response:
        if await inbox.ahealthy():
            return _json(200, {"status": "ok"})
        logger.warning("healthz: inbox unreachable")
        return _json(503, {"status": "unavailable", "error": "inbox unreachable"})

    def log_summary() -> None:
        if tally:
            logger.info("webhooks since the last summary: %s",
                        ", ".join(f"{k} {v}" for k, v in sorted(tally.items())))
            tally.clear()

    async def summaries() -> None:
        while True:
            await asyncio.sleep(summary_interval)
            log_summary()

    @asynccontextmanager
    async def lifespan(app: Starlette):
        try:
            await inbox.aopen()
        except Exception as exc:  # noqa: BLE001 - start anyway; /healthz reports the store
            logger.error("inbox not reachable at startup (%s)", type(exc).__name__)
        task = asyncio.get_running_loop().create_task(summaries())
        try:
            yield
        finally:
            task.cancel()
            log_summary()
            await inbox.aclose()

    return Starlette(
        routes=[Route(WEBHOOK_PATH, receive, methods=["POST"]), Route("/healthz", healthz, methods=["GET"])],
        lifespan=lifespan,
    )


def _fastest(module: str, name: str, fallback: str) -> str:
    try:
        __import__(module)
    except ImportError:
        return fallback
    return name


def serve(host: str = "127.0.0.1", port: int = 8787, database_url: str | None = None,
          log_level: str = "info") -> None:
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
        uvicorn.Server(config).run()
    finally:
        inbox.close()
