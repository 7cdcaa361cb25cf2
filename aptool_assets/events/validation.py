"""What a valid webhook event is (contract §5), and the receiver's checks of one delivery's body.

* The event types the platform applies (:data:`SUPPORTED_EVENT_TYPES`), each type's ``data`` fields
  (:data:`DATA_FIELDS`: required or optional, and the rule each value must meet) and
  :func:`data_problem`, which the applying job runs again on stored payloads: IDs are positive
  integers that fit the published columns, dates are real calendar dates from 2000-01-01 to one
  year after today, codes are 1-8 printable characters, free text is at most 500 characters without
  control characters, ``grade`` is -2..18 -- whatever reaches the inbox can be written to the tables.
* :func:`parse_event`: the receiver's steps 3-5 (nesting, JSON, fields, timestamp window, see
  :mod:`aptool_assets.events.app`), each failing with a :class:`Rejection` that carries the answer
  (status, client message naming the field), the tally label and the log line.

Pure: no I/O. Messages name fields only, never values, so they are safe to return and log.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aptool_assets.storage.inbox.payload import json_depth

SUPPORTED_EVENT_TYPES = ("attendance.updated", "attendance.corrected", "student.enrolled", "student.withdrawn")
_SUPPORTED = frozenset(SUPPORTED_EVENT_TYPES)

MAX_STUDENT_ID = 999_999_999  # aptool.students.student_id
MAX_SCHOOL_CODE = 9_999  # aptool.students.school_code
MIN_DATE = dt.date(2000, 1, 1)
MAX_CODE_LENGTH = 8
MAX_TEXT_LENGTH = 500
MIN_GRADE, MAX_GRADE = -2, 18
MAX_MINUTES = 24 * 60
MAX_JSON_DEPTH = 16
MAX_EVENT_ID_LENGTH = 256
MAX_EVENT_TYPE_LENGTH = 100
UNSUPPORTED_TYPE_REASON = "unsupported event type"
STALE_REASON = "stale"

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_DIGITS = re.compile(r"\d{1,10}", re.ASCII)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


# -- one rule per kind of field: None when the value is fine, else what it must be ----------------
def _plain_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _id_rule(maximum: int) -> Callable[[Any, dt.date], str | None]:
    def check(value: Any, today: dt.date) -> str | None:
        # A JSON integer, or its decimal digits as a string (some middleware quotes IDs).
        number = int(value) if isinstance(value, str) and _DIGITS.fullmatch(value) else _plain_int(value)
        return None if number is not None and 1 <= number <= maximum else f"must be an integer from 1 to {maximum}"

    return check


def add_years(day: dt.date, years: int) -> dt.date:
    """``day`` moved by whole years (February 29 → February 28 when the target year has none)."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)


def _date(value: Any, today: dt.date) -> str | None:
    if not isinstance(value, str) or not _ISO_DATE.fullmatch(value):
        return "must be a date as YYYY-MM-DD"
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        return "must be a date as YYYY-MM-DD"  # e.g. 2025-02-30: not a calendar date
    if not MIN_DATE <= day <= add_years(today, 1):
        return f"must be a date from {MIN_DATE.isoformat()} to one year after today"
    return None


def _is_code(value: Any) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= MAX_CODE_LENGTH and value.isprintable() and bool(value.strip())


def _code(value: Any, today: dt.date) -> str | None:
    """A code, or '' (clears the code)."""
    return (
        None
        if value == "" or _is_code(value)
        else f"must be '' or a code of 1 to {MAX_CODE_LENGTH} printable characters"
    )


def _period(value: Any, today: dt.date) -> str | None:
    """null or '' (all day), or a period code."""
    if value is None or value == "" or _is_code(value):
        return None
    return f"must be null or a period of 1 to {MAX_CODE_LENGTH} printable characters"


def _has_control(text: str) -> bool:
    return any(ord(c) < 32 or 127 <= ord(c) < 160 or 0xD800 <= ord(c) <= 0xDFFF for c in text)


def _text(value: Any, today: dt.date) -> str | None:
    if isinstance(value, str) and len(value) <= MAX_TEXT_LENGTH and not _has_control(value):
        return None
    return f"must be text of at most {MAX_TEXT_LENGTH} characters without control characters"


def _grade(value: Any, today: dt.date) -> str | None:
    number = _plain_int(value)
    ok = number is not None and MIN_GRADE <= number <= MAX_GRADE
    return None if ok else f"must be an integer grade from {MIN_GRADE} to {MAX_GRADE}"


def _minutes(value: Any, today: dt.date) -> str | None:
    number = _plain_int(value)
    return None if number is not None and 0 <= number <= MAX_MINUTES else f"must be an integer from 0 to {MAX_MINUTES}"


@dataclass(frozen=True)
class Field:
    """One ``data`` field: its rule, whether it must be present, and whether null is allowed."""

    rule: Callable[[Any, dt.date], str | None]
    required: bool = True
    nullable: bool = False


_STUDENT = Field(_id_rule(MAX_STUDENT_ID))
_SCHOOL = Field(_id_rule(MAX_SCHOOL_CODE))
_DATE = Field(_date)
_PERIOD = Field(_period, nullable=True)

DATA_FIELDS: dict[str, dict[str, Field]] = {
    "attendance.updated": {
        "studentId": _STUDENT,
        "schoolId": _SCHOOL,
        "date": _DATE,
        "period": _PERIOD,
        "attendanceCode": Field(_code),
        "minutes": Field(_minutes, required=False, nullable=True),
    },
    "attendance.corrected": {
        "studentId": _STUDENT,
        "schoolId": _SCHOOL,
        "date": _DATE,
        "period": _PERIOD,
        "originalCode": Field(_code),
        "newCode": Field(_code),
        "reason": Field(_text),
        "correctedBy": Field(_text),
    },
    "student.enrolled": {"studentId": _STUDENT, "schoolId": _SCHOOL, "grade": Field(_grade), "enterDate": _DATE},
    "student.withdrawn": {
        "studentId": _STUDENT,
        "schoolId": _SCHOOL,
        "leaveDate": _DATE,
        "exitReason": Field(_code, required=False, nullable=True),  # Aeries' ExitReasonCode
    },
}
"""Contract §5's fields per event type. Fields not listed are ignored (but count for nesting and size)."""

REQUIRED_DATA: dict[str, tuple[str, ...]] = {
    event_type: tuple(key for key, spec in fields.items() if spec.required)
    for event_type, fields in DATA_FIELDS.items()
}
NULLABLE_DATA = frozenset(key for fields in DATA_FIELDS.values() for key, spec in fields.items() if spec.nullable)


def data_problem(event_type: str, data: dict[str, Any], today: dt.date | None = None) -> str | None:
    """Why ``data`` is not a valid payload for ``event_type`` (None when it is; unknown types: None).

    ``today`` bounds the dates (one year after it at most); default: today in UTC. The message names
    the field (``data.<key> must …``), never its value, so it is safe to answer and log.
    """
    fields = DATA_FIELDS.get(event_type)
    if fields is None:
        return None
    if not isinstance(data, dict):
        return "data must be an object"
    missing = [key for key, spec in fields.items() if spec.required and key not in data]
    if missing:
        return f"data is missing required keys for {event_type}: {', '.join(missing)}"
    today = today or dt.datetime.now(dt.UTC).date()
    for key, spec in fields.items():
        if key not in data:
            continue
        value = data[key]
        if value is None:
            if spec.nullable:
                continue
            return f"data.{key} must not be null"
        problem = spec.rule(value, today)
        if problem:
            return f"data.{key} {problem}"
    return None


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
    """A delivery that passed every check of its body; ``stale`` when its timestamp is older than
    the replay window (the receiver keeps it as a dead letter and answers 401)."""

    event_id: str
    event_type: str
    timestamp: dt.datetime
    body: dict
    stale: bool = False

    @property
    def supported(self) -> bool:
        return self.event_type in _SUPPORTED


def for_log(value: str) -> str:
    """An identifier for a log line: repr (so no line breaks get through), bounded."""
    return repr(value[:120])


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)  # built once: json.loads(…, hook) builds one per call


def _is_name(value: object, max_length: int) -> bool:
    """A non-blank string of at most ``max_length`` printable characters."""
    return isinstance(value, str) and 0 < len(value) <= max_length and value.isprintable() and bool(value.strip())


def _parse_timestamp(value: object, current: dt.datetime) -> dt.datetime | None:
    """ISO-8601 with an offset, from 2000-01-01 to a year ahead (bounded first, so that comparing and
    converting it can never overflow)."""
    if not isinstance(value, str) or not 10 < len(value) <= 64:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        return None
    if not MIN_DATE.year <= parsed.year <= current.year + 1:
        return None
    if not dt.datetime.combine(MIN_DATE, dt.time(), dt.UTC) <= parsed <= add_years_dt(current, 1):
        return None
    return parsed


def add_years_dt(moment: dt.datetime, years: int) -> dt.datetime:
    return dt.datetime.combine(add_years(moment.date(), years), moment.timetz())


def _reject_400(message: str, event_id: str | None = None, event_type: str | None = None) -> Rejection:
    if event_id is None:
        return Rejection(400, message, "400", "webhook rejected: %s", message)
    if event_type is None:
        return Rejection(400, message, "400", "webhook %s rejected: %s", for_log(event_id), message)
    return Rejection(
        400, message, "400", "webhook %s (%s) rejected: %s", for_log(event_id), for_log(event_type), message
    )


def _unpaired_surrogate(value: Any, path: str) -> str | None:
    """The path of the first string (key or value) holding half a UTF-16 surrogate pair, which no
    database can store as text. Bounded recursion: the body is at most 16 levels deep by now."""
    if isinstance(value, str):
        return path if any(0xD800 <= ord(c) <= 0xDFFF for c in value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _unpaired_surrogate(key, path or "body") or _unpaired_surrogate(
                item, f"{path}.{key}" if path else key
            )
            if found:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _unpaired_surrogate(item, f"{path}[{i}]")
            if found:
                return found
    return None


def _json_object(raw: bytes) -> dict:
    """3. nesting, then JSON: at most 16 levels (measured without parsing, so no depth can exhaust the
    stack), strict UTF-8 (``json.loads`` on bytes would also take UTF-16/32 and encoded surrogates),
    JSON, an object, no NaN/Infinity, no ``\\u`` escape of half a surrogate pair."""
    if json_depth(raw, stop_above=MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise _reject_400(f"body: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        body = _DECODER.decode(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise Rejection(400, "malformed JSON", "400", "webhook rejected: malformed JSON") from None
    if not isinstance(body, dict):
        raise Rejection(400, "body must be a JSON object", "400", "webhook rejected: body is not a JSON object")
    if _SURROGATE_ESCAPE.search(raw):
        where = _unpaired_surrogate(body, "")
        if where:
            raise _reject_400(f"{where}: a \\u escape is half a surrogate pair (not a character)")
    return body


def _fields(body: dict, current: dt.datetime) -> tuple[str, str, dt.datetime]:
    """4. fields: ``eventId``, ``eventType``, ``timestamp``, ``data`` and its contract fields."""
    event_id = body.get("eventId")
    if not _is_name(event_id, MAX_EVENT_ID_LENGTH):
        raise _reject_400(f"eventId must be a non-empty string of at most {MAX_EVENT_ID_LENGTH} printable characters")
    event_type = body.get("eventType")
    if not _is_name(event_type, MAX_EVENT_TYPE_LENGTH):
        raise _reject_400(
            f"eventType must be a non-empty string of at most {MAX_EVENT_TYPE_LENGTH} printable characters", event_id
        )
    timestamp = _parse_timestamp(body.get("timestamp"), current)
    if timestamp is None:
        raise _reject_400(
            "timestamp must be ISO-8601 with a UTC offset, from 2000-01-01 to one year from now", event_id
        )
    data = body.get("data")
    if not isinstance(data, dict):
        raise _reject_400("data must be an object", event_id)
    problem = data_problem(event_type, data, current.date())
    if problem:
        raise _reject_400(problem, event_id, event_type)
    return event_id, event_type, timestamp


def parse_event(
    raw: bytes, now: Callable[[], dt.datetime], replay_window: dt.timedelta, future_skew: dt.timedelta
) -> Event:
    """Steps 3-5 of the receiver over a signed body: nesting and JSON, fields, then the timestamp
    window. More than ``future_skew`` ahead of ``now()`` → 401; older than ``replay_window`` → an
    :class:`Event` marked ``stale`` (the receiver stores it as a dead letter, then answers 401)."""
    current = now()
    body = _json_object(raw)
    event_id, event_type, timestamp = _fields(body, current)
    if timestamp > current + future_skew:
        raise Rejection(
            401,
            "timestamp outside the accepted window (replayed or clock skew)",
            "401 replay window",
            "webhook %s (%s) rejected: timestamp in the future",
            for_log(event_id),
            for_log(event_type),
        )
    return Event(event_id, event_type, timestamp, body, stale=timestamp < current - replay_window)
