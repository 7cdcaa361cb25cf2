"""How a failed step of a source asset is retried: with a delay that fits the failure (issue #12 §4), and
with every error scrubbed of secrets first (the step's failure, its description and its causes are what
Dagster keeps in the event log; :func:`aptool_assets.redaction.scrubbed`).

The clients already retried each request (``call_guarded``), so a step only fails when a request kept
failing, the breaker is open, or something else broke. What a Dagster step retry can still do:

| failure | step retry |
|---|---|
| refused credential, permanent error (``NO_STEP_RETRY``), a malformed setting (``ConfigurationError``, e.g. an
  ``APTOOL_DATABASE_URL`` libpq cannot read) | none: the step fails at once, the alert goes out |
| breaker open, half-opening within ``MAX_BREAKER_WAIT_S`` (2 min) | when it half-opens (+1–3 s): the next
  attempt sends its single trial request |
| breaker open for longer (maintenance, a refused credential) | none: waiting inside a run helps nobody |
| a request's retries ran out (``RetryExhausted``), another transient error | after 2, 4, 8 s (±25 %) |
| anything else (e.g. the database) | the asset's ``STEP_RETRY_POLICY``: 5 s, then 10 s (±) |

At most ``STEP_MAX_RETRIES`` (3) retries of a step in all. :func:`step_retry_delay` decides (a plain
function); :func:`retry_as_fits` is the thin Dagster wrapper around an asset's compute function that
turns its answer into ``RetryRequested`` or a ``Failure`` without retries.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable
from typing import TypeVar

import dagster as dg

from aptool_assets.redaction import scrub, scrubbed
from aptool_assets.resilience.breaker import BreakerOpen
from aptool_assets.resilience.errors import NO_STEP_RETRY, TransientError
from aptool_assets.resilience.retry import RetryExhausted
from aptool_assets.settings import ConfigurationError

F = TypeVar("F", bound=Callable)

STEP_MAX_RETRIES = 3
TRANSIENT_STEP_DELAY_S = 2.0  # then 4 and 8 s
MAX_BREAKER_WAIT_S = 120.0
STEP_RETRY_POLICY = dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)
"""For failures the taxonomy does not know (a database hiccup): a few seconds, not minutes."""

NO_RETRY = -1.0  # step_retry_delay: fail the step now, without retries
UNKNOWN = None  # step_retry_delay: not a service failure; the asset's RetryPolicy decides


def step_retry_delay(
    exc: BaseException, retry_number: int, now: float | None = None, rng: random.Random | None = None
) -> float | None:
    """Seconds before the step's next attempt after ``exc`` (``retry_number``: retries so far), ``NO_RETRY``
    when a retry cannot help, ``UNKNOWN`` (None) when the asset's RetryPolicy should decide."""
    rng = rng or random.Random()
    if isinstance(exc, (*NO_STEP_RETRY, ConfigurationError)):
        return NO_RETRY
    if isinstance(exc, BreakerOpen):
        if exc.half_open_at is None:
            return NO_RETRY
        wait = exc.half_open_at - (time.time() if now is None else now)
        if wait > MAX_BREAKER_WAIT_S:
            return NO_RETRY
        return max(wait, 0.0) + rng.uniform(1.0, 3.0)
    if isinstance(exc, (RetryExhausted, TransientError)):
        delay = TRANSIENT_STEP_DELAY_S * 2 ** max(retry_number, 0)
        return delay * rng.uniform(0.75, 1.25)
    return UNKNOWN


def _retry_number(args: tuple, kwargs: dict) -> int:
    context = kwargs.get("context", args[0] if args else None)
    number = getattr(context, "retry_number", 0)
    return number if isinstance(number, int) else 0


def retry_as_fits(fn: F) -> F:
    """Decorate an asset's compute function: its service failures are retried as :func:`step_retry_delay`
    says (``RetryRequested``, which Dagster prefers to the asset's RetryPolicy) or end the step at once;
    every error leaves scrubbed of secrets."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            clean = scrubbed(exc)
            if isinstance(clean, dg.Failure) and clean.description:
                clean.description = scrub(clean.description)
            delay = step_retry_delay(exc, _retry_number(args, kwargs))
            if delay is UNKNOWN:
                if clean is exc:
                    raise
                raise clean from None
            if delay < 0:
                raise dg.Failure(description=scrub(str(clean)), allow_retries=False) from clean
            raise dg.RetryRequested(max_retries=STEP_MAX_RETRIES, seconds_to_wait=delay) from clean

    return wrapper  # type: ignore[return-value]
