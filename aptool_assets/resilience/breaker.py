"""Circuit breakers per service, whose state is shared by every run, sensor and process.

A breaker protects a failing service without punishing a flaky one (issue #12 §4). Closed: requests go
through and each outcome is kept in a sliding window of the last ``window`` calls (none older than
``max_age_s``). It opens when at least ``min_calls`` calls are in the window and at least
``failure_rate`` of them failed (Aeries: 50 % of the last 20, at least 10). A failure is a failed
request (5xx, timeout, dropped connection); a 429 is flow control and counts neither way, a 404 is an
answer (a success), a refused credential is the credential block's business. A request that succeeds
on a retry counts as one success: its failed attempts leave the window. So a flaky API whose every
request succeeds within its retries never opens the breaker, while an API that fails every request
opens it after ``min_calls`` failed attempts, i.e. within seconds.

Open: no request is sent (``BreakerOpen`` names the service and when it half-opens), so a run stops
hammering a server that is down and sensors skip with a reason. After ``half_open_after_s`` the breaker
is half-open: exactly one caller (across all processes) gets a trial request; success closes it with a
fresh window, failure opens it again. Other callers meanwhile wait up to ``trial_wait_s`` for that
outcome (the clients' concurrent per-school requests: 30 s) or fail at once. A trial whose process died
is given up after another ``half_open_after_s``. ``open_for`` opens it for a fixed time (Aeries
maintenance, a refused credential) regardless of the window.

The state lives in a :class:`~aptool_assets.resilience.store_api.BreakerStore` (PostgreSQL or
SQLite, from :mod:`aptool_assets.storage.breakers`) that whoever builds the breaker hands in; if that
store itself fails the breaker lets requests through with a warning, because a bookkeeping problem
must not stop the pipeline.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from aptool_assets.redaction import scrub
from aptool_assets.resilience.retry import parse_pairs
from aptool_assets.resilience.store_api import BreakerStore, Outcome

log = logging.getLogger("aptool_assets.resilience.breaker")

State = Literal["closed", "open", "half_open"]


@dataclass(frozen=True)
class BreakerSettings:
    """When one service's breaker opens and how long it stays open.

    ``counts_calls=False`` (a credential block, :meth:`block`): only ``open_for`` opens it, and outcomes
    are not recorded (no write per request).
    """

    service: str
    failure_rate: float  # open when at least this share of the window's calls failed ...
    window: int  # ... of the last ``window`` calls ...
    min_calls: int  # ... once the window holds at least this many
    half_open_after_s: float
    max_age_s: float = 300.0  # calls older than this have left the window
    counts_calls: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.failure_rate <= 1:
            raise ValueError(f"failure_rate must be above 0 and at most 1, got {self.failure_rate:g}")
        if self.window < 1 or not 1 <= self.min_calls <= self.window:
            raise ValueError(f"need window >= 1 and 1 <= min_calls <= window, got {self.window} and {self.min_calls}")
        if self.max_age_s <= 0 or self.half_open_after_s < 0:
            raise ValueError("max_age_s must be positive and half_open_after_s not negative")

    @classmethod
    def block(cls, service: str, seconds: float) -> BreakerSettings:
        """A block that only ``open_for`` opens, half-opening after ``seconds`` (a refused credential)."""
        return cls(service, 1.0, 1, 1, seconds, max(seconds, 1.0), counts_calls=False)

    def describe(self) -> str:
        return f"opens at {self.failure_rate:.0%} failed of the last {self.window} calls, at least {self.min_calls}"


AERIES_BREAKER = BreakerSettings(
    "aeries", failure_rate=0.5, window=20, min_calls=10, half_open_after_s=60.0, max_age_s=300.0
)
IREADY_BREAKER = BreakerSettings(
    "iready", failure_rate=0.5, window=10, min_calls=7, half_open_after_s=300.0, max_age_s=600.0
)  # at least 7 calls: one operation's 3 failed attempts (3 of 7 or more) never open it alone
# Maintenance (503 with a long Retry-After, or only 503s until retries ran out) and refused credentials.
MAINTENANCE_BACKOFF_S = 1800.0
AUTH_BACKOFF_S = 1800.0

ENV_KEYS = {"failure_rate", "window", "min_calls", "max_age_s", "half_open_s"}
# The count-based breaker's keys (before issue #12): refused with what replaces them.
RETIRED_KEYS = {"failures", "window_s"}


def settings_from_env(default: BreakerSettings, environ: dict | None = None) -> BreakerSettings:
    """``APTOOL_<SERVICE>_BREAKER="failure_rate=0.5,window=20,min_calls=10,max_age_s=300,half_open_s=60"``;
    missing keys keep the default."""
    env = os.environ if environ is None else environ
    name = f"APTOOL_{default.service.upper()}_BREAKER"
    text = env.get(name, "").strip()
    if not text:
        return default
    retired = sorted({p.partition("=")[0].strip() for p in text.split(",")} & RETIRED_KEYS)
    if retired:
        raise ValueError(
            f"{name}: {', '.join(k + '=' for k in retired)} no longer exist: the breaker opens on a failure rate "
            f"over the last calls, not on a count of failures; set e.g. failure_rate={default.failure_rate:g},"
            f"window={default.window},min_calls={default.min_calls},max_age_s={default.max_age_s:g} "
            "(README, Resilience)"
        )
    values = parse_pairs(text, name, ENV_KEYS)
    for key in ("window", "min_calls"):
        if key in values and not float(values[key]).is_integer():
            raise ValueError(f"{name}: {key} must be a whole number of calls, got {values[key]:g}")
    try:
        return replace(
            default,
            failure_rate=values.get("failure_rate", default.failure_rate),
            window=int(values.get("window", default.window)),
            min_calls=int(values.get("min_calls", default.min_calls)),
            max_age_s=values.get("max_age_s", default.max_age_s),
            half_open_after_s=values.get("half_open_s", default.half_open_after_s),
        )
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def _utc(epoch: float | None) -> str:
    return "-" if epoch is None else dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def recent(outcomes: list[Outcome], settings: BreakerSettings, now: float) -> list[Outcome]:
    """The outcomes worth keeping: the last ``2 × window`` younger than ``max_age_s``, oldest first. Twice the
    window, so that when a request succeeds on a retry and its failed attempts leave, the calls they had
    pushed out of the window come back into it."""
    return [o for o in outcomes if o[0] > now - settings.max_age_s][-2 * settings.window :]


def window_of(outcomes: list[Outcome], settings: BreakerSettings, now: float) -> list[Outcome]:
    """The outcomes that count now: the last ``window`` of those younger than ``max_age_s``, oldest first."""
    return recent(outcomes, settings, now)[-settings.window :]


def should_open(window: list[Outcome], settings: BreakerSettings) -> bool:
    """Enough calls in the window, and at least ``failure_rate`` of them failed."""
    failures = sum(1 for _, ok, _ in window if not ok)
    return len(window) >= settings.min_calls and failures >= settings.failure_rate * len(window)


@dataclass(frozen=True)
class BreakerStatus:
    """A breaker as seen at one moment (what sensors and the UI show)."""

    service: str
    state: State
    calls_in_window: int
    failures_in_window: int
    settings: BreakerSettings
    opened_at: float | None
    half_open_at: float | None
    reason: str | None
    trial_in_progress: bool
    times_opened: int

    @property
    def is_open(self) -> bool:
        return self.state == "open"

    def describe(self) -> str:
        if self.state == "closed":
            return (
                f"{self.service} circuit breaker closed ({self.failures_in_window} of the last "
                f"{self.calls_in_window} calls failed; {self.settings.describe()})"
            )
        why = f" ({scrub(self.reason)})" if self.reason else ""
        if self.state == "open":
            return (
                f"{self.service} circuit breaker open since {_utc(self.opened_at)}{why}; "
                f"half-opens at {_utc(self.half_open_at)}"
            )
        trial = "a trial request is in progress" if self.trial_in_progress else "the next request is a trial"
        return f"{self.service} circuit breaker half-open since {_utc(self.half_open_at)}{why}; {trial}"

    def as_metadata(self) -> dict[str, object]:
        """Plain values for Dagster metadata (no PII: counts, times and a reason built from IDs)."""
        return {
            "state": self.state,
            "failures_in_window": self.failures_in_window,
            "calls_in_window": self.calls_in_window,
            "opens_at": self.settings.describe(),
            "opened_at": _utc(self.opened_at),
            "half_open_at": _utc(self.half_open_at),
            "reason": scrub(self.reason or ""),
            "times_opened": self.times_opened,
        }


class BreakerOpen(RuntimeError):
    """A request was refused because the service's breaker is open (or its half-open trial is taken)."""

    def __init__(self, status: BreakerStatus):
        super().__init__(f"not calling {status.service}: {status.describe()}")
        self.status = status
        self.service = status.service
        self.half_open_at = status.half_open_at


def _closed_row(service: str, now: float) -> dict:
    return {
        "service": service,
        "state": "closed",
        "outcomes": [],
        "opened_at": None,
        "half_open_at": None,
        "reason": None,
        "trial_started_at": None,
        "times_opened": 0,
        "updated_at": now,
    }


class CircuitBreaker:
    """One service's breaker on a shared store. Thread-safe (the store serialises writes)."""

    def __init__(
        self,
        settings: BreakerSettings,
        store: BreakerStore,
        *,
        clock: Callable[[], float] = time.time,
        trial_wait_s: float = 0.0,
    ):
        self.settings = settings
        self.store = store
        self._clock = clock
        # While another caller's half-open trial is in flight, wait up to this long for its outcome
        # (closed: go ahead) instead of failing at once; 0 = fail at once.
        self.trial_wait_s = trial_wait_s
        self._local = threading.local()  # whether this thread holds the half-open trial

    @property
    def service(self) -> str:
        return self.settings.service

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.service!r}, {self.store.describe()})"

    # -- reading ---------------------------------------------------------------------------------

    def _status(self, row: dict | None, now: float) -> BreakerStatus:
        s = self.settings
        row = row or _closed_row(s.service, now)
        window = window_of(row["outcomes"], s, now)
        state: State = "closed"
        if row["state"] == "open":
            state = "open" if row["half_open_at"] is not None and now < row["half_open_at"] else "half_open"
        trial = (
            state == "half_open"
            and row["trial_started_at"] is not None
            and now - row["trial_started_at"] < max(s.half_open_after_s, 1.0)
        )
        return BreakerStatus(
            s.service,
            state,
            len(window),
            sum(1 for _, ok, _ in window if not ok),
            s,
            row["opened_at"],
            row["half_open_at"],
            row["reason"],
            trial,
            row["times_opened"],
        )

    def state(self) -> BreakerStatus:
        """The current state without changing it (sensors, the UI). Store errors read as closed."""
        now = self._clock()
        try:
            return self._status(self.store.read(self.service), now)
        except Exception as exc:  # noqa: BLE001 - see module docstring
            self._store_failed("read", exc)
            return self._status(None, now)

    # -- gate ------------------------------------------------------------------------------------

    def allow(self) -> bool:
        """May a request go now? In half-open this claims the single trial (for this caller only)."""
        try:
            self.check()
        except BreakerOpen:
            return False
        return True

    def check(self) -> None:
        """Raise :class:`BreakerOpen` unless a request may go now (claims the half-open trial)."""
        self._local.trial = False
        now = self._clock()
        try:
            row = self.store.read(self.service)
        except Exception as exc:  # noqa: BLE001 - a store failure must not stop the pipeline (module docstring)
            self._store_failed("read", exc)
            return
        status = self._status(row, now)
        if status.state == "closed":
            return  # the common path: one read, no write
        if status.state == "open":
            raise BreakerOpen(status)
        if status.trial_in_progress:
            self._after_trial(status)
            return
        claimed: list[bool] = []

        def claim(current: dict | None) -> dict | None:
            fresh = self._status(current, now)
            if fresh.state != "half_open" or fresh.trial_in_progress or current is None:
                return None
            claimed.append(True)
            return {**current, "trial_started_at": now, "updated_at": now}

        try:
            after = self.store.update(self.service, claim)
        except Exception as exc:  # noqa: BLE001 - a store failure must not stop the pipeline (module docstring)
            self._store_failed("update", exc)
            return
        if not claimed:
            fresh = self._status(after, now)
            if fresh.state == "half_open" and fresh.trial_in_progress:
                self._after_trial(fresh)  # another caller claimed the trial first
            elif fresh.state != "closed":
                raise BreakerOpen(fresh)
            return
        self._local.trial = True
        log.info("%s circuit breaker half-open: sending one trial request", self.service)

    def _after_trial(self, status: BreakerStatus) -> None:
        """Wait (up to ``trial_wait_s``) for another caller's trial: return once it closed the
        breaker, raise :class:`BreakerOpen` if it failed or is still running."""
        deadline = time.monotonic() + self.trial_wait_s
        while status.state == "half_open" and status.trial_in_progress and time.monotonic() < deadline:
            time.sleep(min(0.1, max(deadline - time.monotonic(), 0.0)))
            try:
                status = self._status(self.store.read(self.service), self._clock())
            except Exception as exc:  # noqa: BLE001 - a store failure must not stop the pipeline (module docstring)
                self._store_failed("read", exc)
                return
        if status.state != "closed":
            raise BreakerOpen(status)

    # -- outcomes --------------------------------------------------------------------------------

    def record_success(self, call: str = "") -> None:
        """A request succeeded. This thread's half-open trial closes the breaker (with a fresh window);
        while closed, the success enters the window and the earlier failed attempts of the same ``call``
        (a request that succeeded on a retry) leave it. While open (a request that started before the
        breaker opened proves nothing about the server now) nothing is written.
        """
        trial = getattr(self._local, "trial", False)
        self._local.trial = False
        if not trial and not self.settings.counts_calls:
            return
        now = self._clock()
        s = self.settings

        def succeed(current: dict | None) -> dict | None:
            status = self._status(current, now)
            if current is None and not trial:
                return {**_closed_row(s.service, now), "outcomes": [(now, True, call)]}
            if current is None or status.state == "open":
                return None  # opened again (e.g. maintenance) since this request started
            if status.state == "half_open":
                if not trial:
                    return None
                fresh = [(now, True, call)] if s.counts_calls else []
                return {
                    **current,
                    "state": "closed",
                    "outcomes": fresh,
                    "trial_started_at": None,
                    "reason": None,
                    "updated_at": now,
                }
            kept = [o for o in recent(current["outcomes"], s, now) if o[1] or not call or o[2] != call]
            return {**current, "outcomes": recent([*kept, (now, True, call)], s, now), "updated_at": now}

        after = self._apply(succeed, now)
        if trial and after.state == "closed":
            log.warning("%s circuit breaker closed again after a successful trial request", self.service)

    def record_failure(self, reason: str, call: str = "") -> BreakerStatus:
        """A request failed (server error, timeout, dropped connection). ``reason``: class names and IDs only;
        ``call`` names the request whose attempt this was (its retries share it)."""
        self._local.trial = False
        now = self._clock()
        s = self.settings

        def fail(current: dict | None) -> dict:
            row = dict(current or _closed_row(s.service, now))
            status = self._status(row, now)
            kept = recent([*row["outcomes"], (now, False, call)], s, now)
            window = kept[-s.window :]
            row.update(outcomes=kept if s.counts_calls else [], updated_at=now)
            if status.state == "half_open":  # the trial failed: open again for a full period
                return self._opened(row, now, s.half_open_after_s, f"trial request failed: {reason}")
            if status.state == "closed" and s.counts_calls and should_open(window, s):
                failed = sum(1 for _, ok, _ in window if not ok)
                return self._opened(
                    row, now, s.half_open_after_s, f"{failed} of the last {len(window)} calls failed, last: {reason}"
                )
            return row

        return self._apply(fail, now)

    def open_for(self, seconds: float, reason: str) -> BreakerStatus:
        """Open now for ``seconds`` (never shortening an opening that lasts longer)."""
        now = self._clock()

        def force(current: dict | None) -> dict | None:
            row = dict(current or _closed_row(self.service, now))
            if row["state"] == "open" and row["half_open_at"] is not None and row["half_open_at"] >= now + seconds:
                return None
            return self._opened(row, now, seconds, reason)

        return self._apply(force, now)

    def reset(self) -> BreakerStatus:
        """Close the breaker and forget its window (an operator fixed the cause)."""
        now = self._clock()
        return self._apply(
            lambda current: {
                **(current or _closed_row(self.service, now)),
                **{k: v for k, v in _closed_row(self.service, now).items() if k not in ("times_opened",)},
            },
            now,
        )

    # -- internals -------------------------------------------------------------------------------

    def _opened(self, row: dict, now: float, seconds: float, reason: str) -> dict:
        was_open = row["state"] == "open"
        row.update(
            state="open",
            opened_at=now if not was_open else (row["opened_at"] or now),
            half_open_at=now + seconds,
            reason=scrub(reason)[:300],
            trial_started_at=None,
            updated_at=now,
            times_opened=row["times_opened"] + (0 if was_open else 1),
        )
        return row

    def _apply(self, change: Callable[[dict | None], dict | None], now: float) -> BreakerStatus:
        """One atomic update of the stored row (``change`` returning None keeps it); logs an opening."""
        before: list[dict | None] = []

        def remember(current: dict | None) -> dict | None:
            before[:] = [current]
            return change(current)

        try:
            after = self.store.update(self.service, remember)
        except Exception as exc:  # noqa: BLE001 - a store failure must not stop the pipeline (module docstring)
            self._store_failed("update", exc)
            return self._status(None, now)
        status = self._status(after, now)
        was = before[0] if before else None
        if status.state == "open" and (was is None or self._status(was, now).state != "open"):
            log.warning("%s", status.describe())
        return status

    def _store_failed(self, what: str, exc: BaseException) -> None:
        log.warning(
            "%s circuit breaker: could not %s its state in %s (%s); letting requests through",
            self.service,
            what,
            self.store.describe(),
            type(exc).__name__,
        )
