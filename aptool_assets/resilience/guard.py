"""The original design's error handling for one service: a guard (breaker, credential block, dead letters)
and :func:`call_guarded`, the one loop both clients run every request through.

| error | action |
|---|---|
| rate limit (429) | wait (Retry-After, at most 300 s) and retry; not a breaker failure |
| authentication refused | no retry; this credential is blocked for ``auth_backoff_s`` (so sensors and schedules
  do not hammer — or lock — the account); the run fails and the run-failure sensor alerts |
| not found (404 on one object) | log the ID and skip (for the breaker: an answer, so a success) |
| maintenance (503 with a long Retry-After, or only 503s until retries ran out) | breaker open for 30 min |
| transient (5xx, timeout, dropped connection) | retry with the service's policy; each failed attempt
  enters the breaker's window as a failure, and leaves it again when a retry of the same request succeeds |
| anything else | a dead letter (``failed_operations``) with its context, then the step fails |

The credential block is a breaker of its own, named ``<service>:auth:<8 hex digits of a hash of the
endpoint and credential>``: a corrected password or certificate is a different name, so it is used at
once, while the refused one is not tried again until the block half-opens.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from aptool_assets.redaction import scrub
from aptool_assets.resilience.breaker import (
    AUTH_BACKOFF_S,
    MAINTENANCE_BACKOFF_S,
    BreakerSettings,
    BreakerStatus,
    CircuitBreaker,
)
from aptool_assets.resilience.errors import (
    AuthError,
    MaintenanceError,
    NotFoundError,
    RateLimitedError,
    ServiceError,
    TransientError,
)
from aptool_assets.resilience.retry import RetryExhausted, RetrySettings, call_with_retry
from aptool_assets.resilience.store_api import BreakerStore

T = TypeVar("T")

log = logging.getLogger("aptool_assets.resilience.guard")

# A client's concurrent requests (one per school) wait this long for the half-open trial's outcome,
# so the run that closes the breaker is not failed by its own sibling requests.
TRIAL_WAIT_S = 30.0


def credential_id(*parts: object) -> str:
    """8 hex digits naming a credential without revealing it (32 bits: far too few to test guesses)."""
    return hashlib.sha256("\x00".join(str(p) for p in parts).encode()).hexdigest()[:8]


@dataclass
class ServiceGuard:
    """A service's breaker, its credential block and its dead letters, on one shared store (the
    caller opens it, e.g. ``open_breaker_store()``, and closes it when done)."""

    settings: BreakerSettings
    store: BreakerStore
    credential: str | None = None  # from credential_id(...)
    maintenance_backoff_s: float = MAINTENANCE_BACKOFF_S
    auth_backoff_s: float = AUTH_BACKOFF_S
    clock: Callable[[], float] = time.time
    trial_wait_s: float = TRIAL_WAIT_S

    def __post_init__(self) -> None:
        self.breaker = CircuitBreaker(self.settings, self.store, clock=self.clock, trial_wait_s=self.trial_wait_s)
        self.auth = None
        if self.credential:
            block = BreakerSettings.block(f"{self.settings.service}:auth:{self.credential}", self.auth_backoff_s)
            self.auth = CircuitBreaker(block, self.store, clock=self.clock)

    @property
    def service(self) -> str:
        return self.settings.service

    def check(self) -> None:
        """Before each request: raises ``BreakerOpen`` while the service or this credential is blocked."""
        if self.auth is not None:
            self.auth.check()
        self.breaker.check()

    def blocked(self) -> BreakerStatus | None:
        """What a sensor shows instead of polling: the open breaker, if any (read-only)."""
        for breaker in filter(None, (self.auth, self.breaker)):
            status = breaker.state()
            if status.is_open:
                return status
        return None

    def success(self, call: str = "") -> None:
        """A request (``call``: its ID, shared by its retries) was answered."""
        self.breaker.record_success(call)
        if self.auth is not None:
            self.auth.record_success()

    def failure(self, reason: str, call: str = "") -> BreakerStatus:
        """A transient failure (server error, timeout, dropped connection) of an attempt of ``call``."""
        return self.breaker.record_failure(reason, call)

    def maintenance(self, reason: str) -> BreakerStatus:
        return self.breaker.open_for(self.maintenance_backoff_s, f"maintenance: {reason}")

    def auth_refused(self, reason: str) -> BreakerStatus | None:
        if self.auth is None:
            return None
        return self.auth.open_for(self.auth_backoff_s, f"authentication refused: {reason}")

    def dead_letter(self, operation: str, exc: BaseException, context: dict | None = None) -> int | None:
        """Keep an unexpected failure with its context (IDs only); never raises."""
        try:
            message = scrub(str(exc))  # a library's message could quote a URL with its password
            return self.store.add_failed_operation(self.service, operation, type(exc).__name__, message, context)
        except Exception as store_exc:  # noqa: BLE001 - the original error is what matters
            log.warning(
                "could not record a dead letter for %s in %s (%s)",
                operation,
                self.store.describe(),
                type(store_exc).__name__,
            )
            return None


def _guarded_attempt(
    fn: Callable[[], T], guard: ServiceGuard | None, operation: str, statuses: list[int | None]
) -> Callable[[], T]:
    """One attempt: refused while the breaker is open; its outcome recorded on the guard under one call ID
    for all the attempts, so a request that succeeds on a retry counts as one success."""
    call = secrets.token_hex(4)

    def attempt() -> T:
        if guard is not None:
            guard.check()
        try:
            result = fn()
        except TransientError as exc:
            statuses.append(getattr(exc, "status", None))
            if guard is not None and not isinstance(exc, RateLimitedError):
                guard.failure(f"{type(exc).__name__} during {operation}", call)
            raise
        except AuthError as exc:
            if guard is not None and exc.blocks_credential:
                guard.auth_refused(f"{exc.refusal} during {operation}")
            raise
        except NotFoundError:
            if guard is not None:
                guard.success(call)  # the service answered: alive, whatever the object
            raise
        if guard is not None:
            guard.success(call)
        return result

    return attempt


def call_guarded(
    fn: Callable[[], T],
    *,
    guard: ServiceGuard | None,
    policy: RetrySettings,
    operation: str,
    what: str,
    context: dict,
    unavailable: Callable[[str, int, BaseException], BaseException],
    sleep: Callable[[float], None] = time.sleep,
    logger: logging.Logger | None = None,
) -> T:
    """Call ``fn`` (one request to the service) with the taxonomy of :mod:`.errors`:

    every attempt first asks the guard (``BreakerOpen`` ends the call at once); a transient failure
    enters the breaker's window (a rate limit does not) and is retried by ``policy``, honouring the
    server's Retry-After; a success counts once for the whole call (its failed attempts leave the
    window) and closes a half-open breaker; a refused credential blocks it
    (``AuthError.blocks_credential``); maintenance, or a 503 on every attempt, opens the breaker for the
    maintenance back-off; a not-found passes through; anything else is kept as a failed operation with
    ``context``. When every attempt failed, ``unavailable(what, attempts, last_error)`` is raised.
    ``operation`` ("GET /api/v5/schools", "list on host:22") names the request in reasons and logs.
    """
    statuses: list[int | None] = []
    attempt = _guarded_attempt(fn, guard, operation, statuses)
    try:
        return call_with_retry(
            attempt,
            policy=policy,
            is_retryable=lambda exc: isinstance(exc, TransientError),
            what=what,
            wait_hint_s=lambda exc: getattr(exc, "retry_after_s", None),
            sleep=sleep,
            logger=logger,
        )
    except RetryExhausted as exc:
        if guard is not None and statuses and all(status == 503 for status in statuses):
            guard.maintenance(f"HTTP 503 on all {len(statuses)} attempts of {operation}")
        raise unavailable(what, exc.attempts, exc.last) from exc.last
    except MaintenanceError as exc:
        if guard is not None:
            guard.maintenance(f"{exc.reason} during {operation}")
        raise
    except (AuthError, NotFoundError, TransientError):
        raise
    except ServiceError as exc:  # malformed response, unexpected answer: keep it with its context
        if guard is not None:
            guard.dead_letter(operation, exc, context)
        raise
