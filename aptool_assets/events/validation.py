"""What a valid webhook event is (contract §5), and the receiver's checks of one delivery's body.

* The event types the platform applies (:data:`SUPPORTED_EVENT_TYPES`), the keys each type's ``data``
  must carry (:data:`REQUIRED_DATA`) and their types (:func:`data_problem`); the applying job checks
  stored payloads again with the same function.
* :func:`parse_event`: the receiver's steps 3-5 (JSON, fields, timestamp window, see
  :mod:`aptool_assets.events.app`), each failing with a :class:`Rejection` that carries the answer
  (status, client message), the tally label and the log line.

Pure: no I/O and no storage. Messages name keys only, never values, so they are safe to return and log.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SUPPORTED_EVENT_TYPES = ("attendance.updated", "attendance.corrected", "student.enrolled", "student.withdrawn")
_SUPPORTED = frozenset(SUPPORTED_EVENT_TYPES)

# Keys each event type's ``data`` must carry (contract §5). Optional keys (``minutes``,
# ``exitReason``) are not listed; ``period`` must be present but may be null (all-day).
REQUIRED_DATA: dict[str, tuple[str, ...]] = {
    "attendance.updated": ("studentId", "schoolId", "date", "period", "attendanceCode"),
    "attendance.corrected": (
        "studentId",
        "schoolId",
        "date",
        "period",
        "originalCode",
        "newCode",
        "reason",
        "correctedBy",
    ),
    "student.enrolled": ("studentId", "schoolId", "grade", "enterDate"),
    "student.withdrawn": ("studentId", "schoolId", "leaveDate"),
}
NULLABLE_DATA = frozenset({"period"})
_DATE_KEYS = frozenset({"date", "enterDate", "leaveDate"})
_ID_KEYS = frozenset({"studentId", "schoolId"})
_CODE_KEYS = frozenset({"attendanceCode", "originalCode", "newCode"})

UNSUPPORTED_TYPE_REASON = "unsupported event type"
MAX_EVENT_ID_LENGTH = 256
MAX_EVENT_TYPE_LENGTH = 100


def data_problem(event_type: str, data: dict[str, Any]) -> str | None:
    """Why ``data`` is not a valid payload for ``event_type`` (None when it is).

    Checks the contract's required keys (``period`` present, possibly null) and the types the
    contract states: IDs are integers (or digit strings), dates are ``YYYY-MM-DD``, ``period`` is
    a string or null, attendance codes are strings (``''`` clears), ``minutes`` is an integer.
    Messages name keys only, never values, so they are safe to return and log.
    """
    required = REQUIRED_DATA.get(event_type)
    if required is None:
        return None
    missing = [k for k in required if k not in data]
    if missing:
        return f"data is missing required keys for {event_type}: {', '.join(missing)}"
    for key in required:
        value = data[key]
        if value is None:
            if key in NULLABLE_DATA:
                continue
            return f"data.{key} must not be null"
        if key in _ID_KEYS and not _is_id(value):
            return f"data.{key} must be an integer ID"
        if key in _DATE_KEYS and not _is_date(value):
            return f"data.{key} must be a date as YYYY-MM-DD"
        if (key in _CODE_KEYS or key == "period") and not isinstance(value, str):
            return f"data.{key} must be a string"
    minutes = data.get("minutes")
    if minutes is not None and (isinstance(minutes, bool) or not isinstance(minutes, int)):
        return "data.minutes must be an integer"
    return None


def _is_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 0
    return isinstance(value, str) and value.isascii() and value.isdigit()


def _is_date(value: Any) -> bool:
    if not isinstance(value, str) or len(value) != 10:
        return False
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return False
    return True


class Rejection(Exception):
    """A delivery the receiver refuses: the ``status`` and client ``message`` to answer with, the
    ``tally`` label it counts under, and the log line (``log_message % log_args`` at ``level``;
    ``None``: not logged)."""

    def __init__(
        self,
        status: int,
        message: str,
        tally: str,
        log_message: str | None = None,
        *log_args: object,
        level: int = logging.WARNING,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.tally = tally
        self.log_message = log_message
        self.log_args = log_args
        self.level = level


@dataclass(frozen=True)
class Event:
    """A delivery that passed every check of its body."""

    event_id: str
    event_type: str
    timestamp: dt.datetime
    body: dict

    @property
    def supported(self) -> bool:
        return self.event_type in _SUPPORTED


def for_log(value: str) -> str:
    """An identifier for a log line: repr (so no line breaks get through), bounded."""
    return repr(value[:120])


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _has_control(text: str) -> bool:
    return not text.isprintable()  # control characters, line breaks, separators


def _is_name(value: object, max_length: int) -> bool:
    """A non-empty string of at most ``max_length`` characters without control characters."""
    return isinstance(value, str) and bool(value) and len(value) <= max_length and not _has_control(value)


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


def _json_object(raw: bytes) -> dict:
    """3. JSON: UTF-8 JSON, an object, no NaN/Infinity."""
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Rejection(400, "malformed JSON", "400", "webhook rejected: malformed JSON") from None
    if not isinstance(body, dict):
        raise Rejection(400, "body must be a JSON object", "400", "webhook rejected: body is not a JSON object")
    return body


def _fields(body: dict) -> tuple[str, str, dt.datetime]:
    """4. fields: ``eventId``, ``eventType``, ``timestamp``, ``data`` and its contract keys."""
    event_id = body.get("eventId")
    if not _is_name(event_id, MAX_EVENT_ID_LENGTH) or not event_id.strip():
        raise Rejection(
            400,
            f"eventId must be a non-empty string of at most {MAX_EVENT_ID_LENGTH} characters",
            "400",
            "webhook rejected: missing or invalid eventId",
        )
    event_type = body.get("eventType")
    if not _is_name(event_type, MAX_EVENT_TYPE_LENGTH):
        raise Rejection(
            400,
            "eventType must be a non-empty string",
            "400",
            "webhook %s rejected: missing or invalid eventType",
            for_log(event_id),
        )
    timestamp = _parse_timestamp(body.get("timestamp"))
    if timestamp is None:
        raise Rejection(
            400,
            "timestamp must be ISO-8601 with a UTC offset",
            "400",
            "webhook %s rejected: missing or invalid timestamp",
            for_log(event_id),
        )
    data = body.get("data")
    if not isinstance(data, dict):
        raise Rejection(
            400, "data must be an object", "400", "webhook %s rejected: data is not an object", for_log(event_id)
        )
    problem = data_problem(event_type, data)
    if problem:
        raise Rejection(
            400, problem, "400", "webhook %s (%s) rejected: %s", for_log(event_id), for_log(event_type), problem
        )
    return event_id, event_type, timestamp


def parse_event(
    raw: bytes, now: Callable[[], dt.datetime], replay_window: dt.timedelta, future_skew: dt.timedelta
) -> Event:
    """Steps 3-5 of the receiver over a signed body: JSON, fields, then the timestamp window
    (older than ``replay_window`` or more than ``future_skew`` ahead of ``now()`` → 401)."""
    body = _json_object(raw)
    event_id, event_type, timestamp = _fields(body)
    current = now()
    if timestamp < current - replay_window or timestamp > current + future_skew:
        raise Rejection(
            401,
            "timestamp outside the accepted window (replayed or clock skew)",
            "401 replay window",
            "webhook %s (%s) rejected: timestamp outside the replay window",
            for_log(event_id),
            for_log(event_type),
        )
    return Event(event_id, event_type, timestamp, body)
