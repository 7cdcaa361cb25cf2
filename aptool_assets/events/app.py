"""The webhook receiver (contract §5): an ASGI app that verifies, validates and durably stores.

``POST /webhooks/aeries`` answers only after the event is in the inbox
(:mod:`aptool_assets.storage.inbox`); applying it to the published tables is a Dagster sensor's job,
later. ``GET /healthz`` answers 200 ``{"status": "ok"}`` when the inbox store is reachable, 503
otherwise.

Check order, cheapest and least trusting first -- each step only runs if the previous passed:

1. **size** -- ``Content-Length`` over 64 KiB → 413 without reading the body; the body is then
   read in chunks and abandoned (413) as soon as it passes 64 KiB, so a missing or lying
   ``Content-Length`` cannot make us buffer more. A malformed ``Content-Length`` → 400. (A request
   must also arrive whole within the server's read deadline, :mod:`.server`.)
2. **signature** -- HMAC-SHA256 of the *raw* bytes under ``APTOOL_WEBHOOK_SECRET`` or, during a
   rotation, ``APTOOL_WEBHOOK_SECRET_PREVIOUS``; constant-time compare → 401. Nothing in an
   unauthenticated body is parsed or logged.
3. **nesting and JSON** -- nested deeper than 16 levels (measured before parsing, so no depth can
   exhaust the stack), not UTF-8 JSON, not an object, NaN/Infinity → 400.
4. **fields** -- ``eventId`` (≤ 256 printable characters), ``eventType``, ``timestamp`` ISO-8601 *with*
   an offset, ``data`` an object, and every contract field of a supported type checked for type and
   range (:func:`.validation.data_problem`) → 400 naming the field. Steps 3-5 are
   :func:`.validation.parse_event`; every failing check raises a :class:`.validation.Rejection`,
   counted, logged and answered in one place.
5. **timestamp** -- more than 1 minute ahead of our clock → 401. Older than 5 minutes → the event is
   stored as a dead letter with reason ``stale`` (replayable by an operator), then 401; if its
   ``eventId`` is already stored → 200 ``duplicate`` instead, whatever its age.
6. **duplicate** -- an ``eventId`` already stored, whatever its type or status (a dead letter
   included) → 200 ``{"status": "duplicate"}``. This is decided by the store's own atomic insert
   (``ON CONFLICT DO NOTHING``) in steps 5, 7 and 8, so two concurrent deliveries of one event get
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
from collections.abc import Callable, Mapping, Sequence
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from aptool_assets.events.server import ServerLimits, deadline_protocol, plain_http_warning
from aptool_assets.events.signatures import MIN_SECRET_LENGTH, verify_any
from aptool_assets.events.validation import (
    STALE_REASON,
    UNSUPPORTED_TYPE_REASON,
    Event,
    Rejection,
    for_log,
    parse_event,
)
from aptool_assets.redaction import scrub_logs
from aptool_assets.settings import ConfigurationError
from aptool_assets.storage.inbox import Inbox, InboxMissing, open_inbox

logger = logging.getLogger("aptool_assets.events.receiver")

WEBHOOK_PATH = "/webhooks/aeries"
MAX_BODY = 65536
SECRET_ENV = "APTOOL_WEBHOOK_SECRET"
PREVIOUS_SECRET_ENV = "APTOOL_WEBHOOK_SECRET_PREVIOUS"


def _checked_secret(value: str, variable: str) -> str:
    secret = value.strip()
    if len(secret) < MIN_SECRET_LENGTH:
        raise ConfigurationError(
            f"{variable} must be at least {MIN_SECRET_LENGTH} characters (surrounding whitespace is stripped); "
            "generate one with `openssl rand -hex 32` and give the sender the same value"
        )
    return secret


def webhook_secrets(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The secrets signatures are checked against: ``APTOOL_WEBHOOK_SECRET``, then, during a rotation,
    ``APTOOL_WEBHOOK_SECRET_PREVIOUS``. Each is stripped and must be at least 32 characters; errors
    name the variable, never the value."""
    env = os.environ if environ is None else environ
    if not env.get(SECRET_ENV, "").strip():
        raise ConfigurationError(
            f"{SECRET_ENV} is not set: the webhook receiver refuses to start without the shared secret "
            "used to verify X-Aeries-Signature"
        )
    secrets = [_checked_secret(env[SECRET_ENV], SECRET_ENV)]
    if env.get(PREVIOUS_SECRET_ENV, "").strip():
        secrets.append(_checked_secret(env[PREVIOUS_SECRET_ENV], PREVIOUS_SECRET_ENV))
    return tuple(secrets)


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
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body:
                raise Rejection(
                    413, f"body over {max_body} bytes", "413", "webhook rejected: body over %d bytes", max_body
                )
    except ClientDisconnect:
        # The client went away, or the read deadline closed it mid-body (:mod:`.server`): nobody to answer.
        raise Rejection(400, "request body incomplete", "client gone mid-body") from None
    return bytes(body)


def _check_signature(raw: bytes, request: Request, secrets: Sequence[str]) -> None:
    """2. signature: HMAC-SHA256 of the raw bytes under any of the secrets (constant-time compare)."""
    if not verify_any(raw, request.headers.get("x-aeries-signature"), secrets):
        raise Rejection(
            401,
            "bad or missing signature",
            "401 signature",
            "webhook rejected: bad or missing signature (client %s)",
            request.client.host if request.client else "?",
        )


async def _store(inbox: Inbox, event: Event, raw: bytes) -> str:
    """5.-8. stale, duplicate, type, store: one atomic insert decides ``accepted``/``duplicate``; a
    stale or unsupported event is stored as a dead letter, then refused (401 / 422); an unreachable
    store → 503."""
    reason = STALE_REASON if event.stale else None if event.supported else UNSUPPORTED_TYPE_REASON
    try:
        if reason is None:
            outcome = await inbox.astore(event.event_id, event.event_type, event.timestamp, event.body, raw)
        else:
            outcome = await inbox.astore_dead_letter(
                event.event_id, event.event_type, event.timestamp, event.body, raw, reason
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
    if outcome == "duplicate" or reason is None:
        return outcome
    if event.stale:
        raise Rejection(
            401,
            "timestamp older than the replay window: refused as a replay (kept as a dead letter)",
            "401 stale (dead-lettered)",
            "webhook %s (%s): timestamp older than the replay window, kept as a dead letter (stale)",
            for_log(event.event_id),
            for_log(event.event_type),
        )
    raise Rejection(
        422,
        "unsupported event type (stored as a dead letter)",
        "422 dead-lettered",
        "webhook %s (%s): unsupported event type, dead-lettered",
        for_log(event.event_id),
        for_log(event.event_type),
    )


class _Receiver:
    """The receiver's handlers over one inbox, and the outcome tally behind the periodic summary."""

    def __init__(
        self,
        inbox: Inbox,
        secrets: tuple[str, ...],
        max_body: int,
        replay_window: dt.timedelta,
        future_skew: dt.timedelta,
        now: Callable[[], dt.datetime],
        summary_interval: float,
    ) -> None:
        self.inbox = inbox
        self.secrets = secrets
        self.max_body = max_body
        self.replay_window = replay_window
        self.future_skew = future_skew
        self.now = now
        self.summary_interval = summary_interval
        self.tally: Counter[str] = Counter()

    async def receive(self, request: Request) -> Response:
        try:
            raw = await _read_body(request, self.max_body)  # 1. size
            _check_signature(raw, request, self.secrets)  # 2. signature (over the raw bytes)
            event = parse_event(raw, self.now, self.replay_window, self.future_skew)  # 3. JSON, 4. fields, 5. time
            outcome = await _store(self.inbox, event, raw)  # 5.-8. stale, duplicate, type, store
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

    def count(self, label: str) -> None:
        """Count an outcome decided outside :meth:`receive` (e.g. a read deadline, :mod:`.server`)."""
        self.tally[label] += 1

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
    secret: str | Sequence[str],
    *,
    max_body: int = MAX_BODY,
    replay_window: dt.timedelta = dt.timedelta(minutes=5),
    future_skew: dt.timedelta = dt.timedelta(minutes=1),
    clock: Callable[[], dt.datetime] | None = None,
    summary_interval: float = 60.0,
) -> Starlette:
    """The receiver app over ``inbox``. ``secret``: the current secret, or the current and the previous
    one during a rotation (each stripped, at least 32 characters). ``clock`` (aware ``datetime`` now)
    is for tests. ``app.state.count(label)`` adds to the outcome tally.

    Logging: every rejection (400/401/413/422/503) is a WARNING/ERROR line with the event ID and
    type when known; accepted and duplicate events are DEBUG lines (the inbox row is their
    durable record) and are counted in an INFO summary every ``summary_interval`` seconds.
    """
    given = [secret] if isinstance(secret, str) else list(secret)
    if not given:
        raise ConfigurationError(f"a webhook secret is required ({SECRET_ENV})")
    secrets = tuple(_checked_secret(s, SECRET_ENV if i == 0 else PREVIOUS_SECRET_ENV) for i, s in enumerate(given))
    now = clock or (lambda: dt.datetime.now(dt.UTC))
    receiver = _Receiver(inbox, secrets, max_body, replay_window, future_skew, now, summary_interval)
    app = Starlette(
        routes=[
            Route(WEBHOOK_PATH, receiver.receive, methods=["POST"]),
            Route("/healthz", receiver.healthz, methods=["GET"]),
        ],
        lifespan=receiver.lifespan,
    )
    app.state.count = receiver.count
    return app


def server_config(
    app: Starlette,
    host: str,
    port: int,
    *,
    limits: ServerLimits | None = None,
    log_level: str = "info",
    proxy_headers: bool = True,
    forwarded_allow_ips: str | None = None,
):
    """The uvicorn configuration ``serve`` runs ``app`` with (tests run the same): one worker, uvloop,
    httptools with a read deadline per request, bounded connections and keep-alive (:mod:`.server`)."""
    import uvicorn

    limits = limits or ServerLimits()
    count = getattr(app.state, "count", None)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop=_fastest("uvloop", "uvloop", "asyncio"),
        http=deadline_protocol(limits.read_timeout, (lambda: count("408 read deadline")) if count else None),
        lifespan="on",
        access_log=False,  # our own lines carry id, type and outcome (see create_app)
        log_level=log_level.lower(),
        limit_concurrency=limits.max_connections,
        timeout_keep_alive=limits.keep_alive_timeout,
        timeout_graceful_shutdown=limits.read_timeout,  # on SIGTERM, requests in flight get this long
        proxy_headers=proxy_headers,
        forwarded_allow_ips=forwarded_allow_ips,
        server_header=False,
    )


def _fastest(module: str, name: str, fallback: str) -> str:
    try:
        __import__(module)
    except ImportError:
        return fallback
    return name


def _ready(inbox: Inbox) -> None:
    """The inbox's tables, without DDL when they exist; a one-line :class:`ConfigurationError` otherwise."""
    try:
        inbox.setup()
    except InboxMissing as exc:
        raise ConfigurationError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - any driver error: one line naming the store, not a traceback
        raise ConfigurationError(
            f"the webhook inbox ({inbox.describe()}) is not reachable ({type(exc).__name__}): the receiver "
            "does not start without it"
        ) from None


def serve(
    host: str = "127.0.0.1",
    port: int = 8787,
    database_url: str | None = None,
    log_level: str = "info",
    *,
    proxy_headers: bool = True,
    forwarded_allow_ips: str | None = None,
    limits: ServerLimits | None = None,
) -> None:
    """Run the receiver (``aptool webhooks serve``) until interrupted.

    ``log_level="debug"`` adds one log line per accepted/duplicate event (ID, type, outcome).

    Reads the secrets (:func:`webhook_secrets`) and refuses to start without a valid one. The inbox
    is ``database_url``, else ``APTOOL_DATABASE_URL``, else the embedded SQLite inbox; when its tables
    exist, no DDL is run (the receiver's database role needs only INSERT/SELECT, ``aptool db
    grant-receiver``), and when they are missing and cannot be created it refuses to start. One uvicorn
    worker (uvloop and httptools); concurrency comes from the event loop and the async connection
    pool, not from processes. Plain HTTP on a non-loopback host is served with a warning.
    """
    import uvicorn

    secrets = webhook_secrets()
    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        raise ConfigurationError(f"log level {log_level!r} is not one of debug, info, warning, error")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aptool_assets.events").setLevel(level)
    scrub_logs(*logging.getLogger().handlers)  # no password in any line (aptool_assets.redaction)

    inbox = open_inbox(database_url)
    try:
        _ready(inbox)
        logger.info("webhook receiver on http://%s:%d%s, inbox: %s", host, port, WEBHOOK_PATH, inbox.describe())
        if len(secrets) > 1:
            logger.info("accepting signatures made with %s or %s (rotation)", SECRET_ENV, PREVIOUS_SECRET_ENV)
        warning = plain_http_warning(host, port)
        if warning:
            logger.warning(warning)
        app = create_app(inbox, secrets)
        config = server_config(
            app,
            host,
            port,
            limits=limits,
            log_level=log_level,
            proxy_headers=proxy_headers,
            forwarded_allow_ips=forwarded_allow_ips,
        )
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # uvicorn's own handlers, set up just now
            scrub_logs(*logging.getLogger(name).handlers)
        uvicorn.Server(config).run()
    finally:
        inbox.close()
