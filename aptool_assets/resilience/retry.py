"""Retry policies shared by every client (Aeries, i-Ready SFTP, the database).

The settings are the original design's per-service policies; each client decides which errors
are transient (``is_retryable``) so that, for example, an authentication failure is never retried.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from aptool_assets.redaction import scrub

T = TypeVar("T")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrySettings:
    """How often and how patiently to retry one service."""

    max_attempts: int
    base_delay_s: float
    max_delay_s: float
    backoff: Literal["linear", "exponential"] = "exponential"
    jitter: bool = False

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay_s < 0 or self.max_delay_s < 0:
            raise ValueError("retry delays must not be negative")

    def delay_s(self, failures: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``failures``-th failed attempt (1-based)."""
        delay = self.base_delay_s * failures if self.backoff == "linear" else self.base_delay_s * 2 ** (failures - 1)
        delay = min(delay, self.max_delay_s)
        if self.jitter:
            # "Equal jitter": keep half the delay, randomise the other half, so a burst of clients
            # spreads out without any of them retrying immediately.
            delay = delay / 2 + (rng or random).uniform(0, delay / 2)
        return delay


# The services' policies. Aeries waits 0.5, 1, 2, 4 s (each jittered down to half) between its 5 attempts:
# a flaky request is recovered within a second, and a dead server has failed the breaker's 10 minimum
# calls within two calls' retries (issue #12 §4; it was 1–30 s, issue #6).
AERIES_RETRY = RetrySettings(max_attempts=5, base_delay_s=0.5, max_delay_s=30.0, backoff="exponential", jitter=True)
SFTP_RETRY = RetrySettings(max_attempts=3, base_delay_s=5.0, max_delay_s=60.0, backoff="linear")
DATABASE_RETRY_DEFAULT = RetrySettings(max_attempts=4, base_delay_s=0.5, max_delay_s=10.0, backoff="exponential")


def parse_pairs(text: str, name: str, allowed: set[str]) -> dict[str, float]:
    """``"key=number,key=number"`` (an environment variable ``name``) with only ``allowed`` keys."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in allowed:
            raise ValueError(f"{name}: expected {', '.join(sorted(k + '=...' for k in allowed))}, got {part!r}")
        try:
            out[key] = float(value)
        except ValueError:
            raise ValueError(f"{name}: {key} must be a number, got {value.strip()!r}") from None
    return out


def retry_from_env(name: str, default: RetrySettings, environ=None) -> RetrySettings:
    """``APTOOL_<NAME>_RETRY="attempts=…,base_s=…,max_s=…"`` over ``default`` (backoff and jitter stay)."""
    import os
    from dataclasses import replace

    env = os.environ if environ is None else environ
    var = f"APTOOL_{name.upper()}_RETRY"
    text = env.get(var, "").strip()
    if not text:
        return default
    values = parse_pairs(text, var, {"attempts", "base_s", "max_s"})
    return replace(
        default,
        max_attempts=int(values.get("attempts", default.max_attempts)),
        base_delay_s=values.get("base_s", default.base_delay_s),
        max_delay_s=values.get("max_s", default.max_delay_s),
    )


# The warehouse's PostgreSQL backend takes this as its default, so APTOOL_DATABASE_RETRY (read when the
# process starts: every Dagster run is a process of its own) is honoured without another setting.
DATABASE_RETRY = retry_from_env("database", DATABASE_RETRY_DEFAULT)


class RetryExhausted(RuntimeError):
    """Raised when every attempt failed with a retryable error; ``__cause__`` is the last one. Its message
    quotes the last error scrubbed of known secrets (a driver's error can quote a connection string)."""

    def __init__(self, what: str, attempts: int, last: BaseException):
        super().__init__(scrub(f"{what}: gave up after {attempts} attempts ({type(last).__name__}: {last})"))
        self.attempts = attempts
        self.last = last


def call_with_retry(
    fn: Callable[[], T],
    *,
    policy: RetrySettings,
    is_retryable: Callable[[BaseException], bool],
    what: str,
    wait_hint_s: Callable[[BaseException], float | None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    logger: logging.Logger | None = None,
) -> T:
    """Call ``fn`` until it succeeds, a non-retryable error occurs, or attempts run out.

    ``wait_hint_s`` lets a client honour a server's own hint (HTTP Retry-After) instead of the
    policy's backoff. ``what`` names the operation in logs and errors: never put PII in it.
    """
    logger = logger or log
    failures = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            if not is_retryable(exc):
                raise
            failures += 1
            if failures >= policy.max_attempts:
                raise RetryExhausted(what, failures, exc) from exc
            hinted = wait_hint_s(exc) if wait_hint_s else None
            delay = hinted if hinted is not None else policy.delay_s(failures)
            logger.warning(
                "%s failed (attempt %d of %d: %s); retrying in %.1fs",
                what,
                failures,
                policy.max_attempts,
                type(exc).__name__,
                delay,
            )
            sleep(delay)
