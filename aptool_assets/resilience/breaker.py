"""Circuit breakers per service, whose state is shared by every run, sensor and process.

Closed: requests go through; each failed request (5xx, timeout, dropped connection — never a 429, a
404 or a refused credential) is recorded with its time. ``failure_threshold`` failures within
``window_s`` open the breaker. Open: no request is sent (``BreakerOpen`` names the service and when it
half-opens), so a run stops hammering a server that is down and sensors skip with a reason.
After ``half_open_after_s`` the breaker is half-open: exactly one caller (across all processes) gets
a trial request; success closes it, failure opens it again. Other callers meanwhile wait up to
``trial_wait_s`` for that outcome (the clients' concurrent per-school requests: 30 s) or fail at once.
A trial whose process died is given up after another ``half_open_after_s``. ``open_for`` opens it for a
fixed time (Aeries maintenance, a refused credential) regardless of counts.

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
from aptool_assets.resilience.store_api import BreakerStore

log = logging.getLogger("aptool_assets.resilience.breaker")

State = Literal["closed", "open", "half_open"]


@dataclass(frozen=True)
class BreakerSettings:
    """When one service's breaker opens and how long it stays open."""

    service: str
    failure_threshold: int
    window_s: float
    half_open_after_s: float

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if self.window_s <= 0 or self.half_open_after_s < 0:
            raise ValueError("window_s must be positive and half_open_after_s not negative")


# The original design's breakers (issue #6).
AERIES_BREAKER = BreakerSettings("aeries", failure_threshold=10, window_s=300.0, half_open_after_s=60.0)
IREADY_BREAKER = BreakerSettings("iready", failure_threshold=5, window_s=600.0, half_open_after_s=300.0)
# Maintenance (503 with a long Retry-After, or only 503s until retries ran out) and refused credentials.
MAINTENANCE_BACKOFF_S = 1800.0
AUTH_BACKOFF_S = 1800.0


def settings_from_env(default: BreakerSettings, environ: dict | None = None) -> BreakerSettings:
    """``APTOOL_<SERVICE>_BREAKER="failures=10,window_s=300,half_open_s=60"``; missing keys keep the default."""
    env = os.environ if environ is None else environ
    text = env.get(f"APTOOL_{default.service.upper()}_BREAKER", "").strip()
    if not text:
        return default
    values = parse_pairs(text, f"APTOOL_{default.service.upper()}_BREAKER", {"failures", "window_s", "half_open_s"})
    return replace(
        default,
        failure_threshold=int(values.get("failures", default.failure_threshold)),
        window_s=values.get("window_s", default.window_s),
        half_open_after_s=values.get("half_open_s", default.half_open_after_s),
    )


def _utc(epoch: float | None) -> str:
    return "-" if epoch is None else dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class BreakerStatus:
    """A breaker as seen at one moment (what sensors and the UI show)."""

    service: str
    state: State
    failures_in_window: int
    failure_threshold: int
    window_s: float
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
                f"{self.service} circuit breaker closed ({self.failures_in_window} of {self.failure_threshold} "
                f"failures within {self.window_s:g} s)"
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
            "failure_threshold": self.failure_threshold,
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
        "failures": [],
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
        recent = [t for t in row["failures"] if t > now - s.window_s]
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
            len(recent),
            s.failure_threshold,
            s.window_s,
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

    def record_success(self) -> None:
        """A request succeeded: if it was this thread's half-open trial, the breaker closes.

        Otherwise nothing is written: while closed, failures stay counted in their window ("10
        failures within 5 minutes"), and a request that started before the breaker opened proves
        nothing about the server now.
        """
        if not getattr(self._local, "trial", False):
            return
        self._local.trial = False
        now = self._clock()

        def close(current: dict | None) -> dict | None:
            if current is None or current["state"] == "closed":
                return None
            if self._status(current, now).state == "open":
                return None  # opened again (e.g. maintenance) since this request started
            return {
                **current,
                "state": "closed",
                "failures": [],
                "trial_started_at": None,
                "reason": None,
                "updated_at": now,
            }

        try:
            after = self.store.update(self.service, close)
        except Exception as exc:  # noqa: BLE001 - a store failure must not stop the pipeline (module docstring)
            self._store_failed("update", exc)
            return
        if after and after["state"] == "closed":
            log.warning("%s circuit breaker closed again after a successful trial request", self.service)

    def record_failure(self, reason: str) -> BreakerStatus:
        """A request failed (server error, timeout, dropped connection). ``reason``: class names and IDs only."""
        self._local.trial = False
        now = self._clock()
        s = self.settings

        def fail(current: dict | None) -> dict:
            row = dict(current or _closed_row(s.service, now))
            status = self._status(row, now)
            failures = [t for t in row["failures"] if t > now - s.window_s] + [now]
            row.update(failures=failures[-s.failure_threshold :], updated_at=now)
            if status.state == "half_open":  # the trial failed: open again for a full period
                return self._opened(row, now, s.half_open_after_s, f"trial request failed: {reason}")
            if status.state == "closed" and len(failures) >= s.failure_threshold:
                return self._opened(
                    row,
                    now,
                    s.half_open_after_s,
                    f"{len(failures)} failures within {s.window_s:g} s, last: {reason}",
                )
            return row

        return self._apply(fail, now)

    def open_for(self, seconds: float, reason: str) -> BreakerStatus:
        """Open now for ``seconds`` (never shortening an opening that lasts longer)."""
        now = self._clock()

        def force(current: dict | None) -> dict:
            row = dict(current or _closed_row(self.service, now))
            if row["state"] == "open" and row["half_open_at"] is not None and row["half_open_at"] >= now + seconds:
                return row
            return self._opened(row, now, seconds, reason)

        return self._apply(force, now)

    def reset(self) -> BreakerStatus:
        """Close the breaker and forget its failures (an operator fixed the cause)."""
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

    def _apply(self, change: Callable[[dict | None], dict], now: float) -> BreakerStatus:
        try:
            before = self.store.read(self.service)
            after = self.store.update(self.service, change)
        except Exception as exc:  # noqa: BLE001 - a store failure must not stop the pipeline (module docstring)
            self._store_failed("update", exc)
            return self._status(None, now)
        status = self._status(after, now)
        if status.state == "open" and (before is None or self._status(before, now).state != "open"):
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
