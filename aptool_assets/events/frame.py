"""Inbox events → one typed frame, built defensively so that one bad event can never poison the batch.

The inbox may hold anything a receiver once accepted (events stored before the receiver checked
ranges, or by an older version): IDs too large for their columns, objects where text belongs, NUL
bytes, undecodable or deeply nested payloads. Each event is checked on its own and an event that
fails is set aside with a reason (keys only, never values), so it is dead-lettered alone and the
others apply:

1. **Per event, in Python (cheap)**: the payload decoded (:attr:`InboxEvent.payload_error`), a
   supported type, ``data`` an object, the contract's keys (:func:`~aptool_assets.events.validation.data_problem`,
   the receiver's own check), and each field of the right JSON type. Every value then goes on as
   text (or null), so polars never infers a type from a payload.
2. **Vectorised (polars)**: each column's values against what the published columns hold (the ranges
   of contract §5): IDs 1..999,999,999 (students) and 1..9,999 (schools), real dates from 2000-01-01
   to one year ahead, codes of at most 8 printable characters (``''`` clears), free text of at most
   500 characters without control characters, grades -2..18. A row that fails is named with its first
   failing key; the others are cast to :data:`EVENT_SCHEMA` and can no longer overflow a column.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import polars as pl

from aptool_assets.events.validation import data_problem
from aptool_assets.rules.attendance_cells import ALL_DAY
from aptool_assets.storage.inbox import InboxEvent
from aptool_assets.vocabulary import UTC_TS

ATTENDANCE_TYPES = ("attendance.updated", "attendance.corrected")
STUDENT_TYPES = ("student.enrolled", "student.withdrawn")

MAX_STUDENT_ID = 999_999_999
MAX_SCHOOL_CODE = 9_999
GRADE_RANGE = (-2, 18)
MAX_CODE_LENGTH = 8
MAX_TEXT_LENGTH = 500
FIRST_DATE = dt.date(2000, 1, 1)

EVENT_SCHEMA = {
    "seq": pl.Int64,
    "event_id": pl.Utf8,
    "event_type": pl.Utf8,
    "event_timestamp": UTC_TS,
    "student_id": pl.Int64,
    "school_code": pl.Int32,
    "calendar_date": pl.Date,
    "period": pl.Utf8,
    "code": pl.Utf8,
    "original_code": pl.Utf8,
    "reason": pl.Utf8,
    "corrected_by": pl.Utf8,
    "grade": pl.Int32,
    "enter_date": pl.Date,
    "leave_date": pl.Date,
    "exit_reason": pl.Utf8,
}

# Which data key fills which column, per event type; every other column stays null.
_KEYS: dict[str, dict[str, str]] = {
    "attendance.updated": {
        "student_id": "studentId",
        "school_code": "schoolId",
        "calendar_date": "date",
        "period": "period",
        "code": "attendanceCode",
    },
    "attendance.corrected": {
        "student_id": "studentId",
        "school_code": "schoolId",
        "calendar_date": "date",
        "period": "period",
        "code": "newCode",
        "original_code": "originalCode",
        "reason": "reason",
        "corrected_by": "correctedBy",
    },
    "student.enrolled": {
        "student_id": "studentId",
        "school_code": "schoolId",
        "grade": "grade",
        "enter_date": "enterDate",
    },
    "student.withdrawn": {
        "student_id": "studentId",
        "school_code": "schoolId",
        "leave_date": "leaveDate",
        "exit_reason": "exitReason",
    },
}
_OPTIONAL = frozenset({"period", "exit_reason"})  # may be null (period: all-day) or absent
_KIND = {
    "student_id": "id",
    "school_code": "id",
    "calendar_date": "date",
    "period": "code",
    "code": "code",
    "original_code": "code",
    "reason": "text",
    "corrected_by": "text",
    "grade": "integer",
    "enter_date": "date",
    "leave_date": "date",
    "exit_reason": "text",
}
_FIELD_COLUMNS = tuple(_KIND)
_TYPE_WORDS = {"id": "an integer ID", "date": "a date as YYYY-MM-DD", "code": "a string", "text": "a string"}
GRADE_PROBLEM = f"must be an integer grade from {GRADE_RANGE[0]} to {GRADE_RANGE[1]}"

_NOT_PRINTABLE = r"[\p{C}\p{Zl}\p{Zp}]|[\p{Zs}&&[^ ]]"  # what str.isprintable() refuses
_CONTROL = r"\p{Cc}"
_WRONG = object()  # a value of the wrong JSON type


def _text(value: object, kind: str) -> object:
    """The value as text for the vectorised checks; None when absent; ``_WRONG`` for a wrong JSON type
    (objects, lists, booleans, floats, text that is not valid Unicode)."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and kind in ("id", "integer", "text"):
        return str(value)
    if not isinstance(value, str):
        return _WRONG
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a "\ud800" escape
        return _WRONG
    return value


def _row(ev: InboxEvent) -> tuple[dict | None, str | None]:
    """One event's text row, or why it cannot be applied (checks 1)."""
    if ev.payload_error:
        return None, ev.payload_error
    keys = _KEYS.get(ev.event_type)
    if keys is None:
        return None, "unsupported event type"
    data = ev.payload.get("data") if isinstance(ev.payload, dict) else None
    if not isinstance(data, dict):
        return None, "data must be an object"
    try:
        problem = data_problem(ev.event_type, data)
    except Exception as exc:  # noqa: BLE001 - whatever the payload does to the check, the event is invalid
        problem = f"data could not be checked ({type(exc).__name__})"
    if problem:
        return None, problem
    stamp = ev.event_timestamp
    if not isinstance(stamp, dt.datetime) or stamp.utcoffset() is None:
        return None, "the event timestamp has no UTC offset"
    row = {
        "seq": ev.seq,
        "event_id": ev.event_id,
        "event_type": ev.event_type,
        "event_timestamp": stamp.astimezone(dt.UTC),
    }
    for column, key in keys.items():
        kind = _KIND[column]
        value = _text(data.get(key), kind)
        if value is _WRONG:
            return None, f"data.{key} {GRADE_PROBLEM if kind == 'integer' else 'must be ' + _TYPE_WORDS[kind]}"
        if value is None and column not in _OPTIONAL:
            return None, f"data.{key} must not be null"
        row[column] = value
    return row, None


def _bad(column: str, today: dt.date) -> pl.Expr:
    """True where the column's (non-null) text is not a value the published columns accept (checks 2)."""
    raw = pl.col(column)
    kind = _KIND[column]
    if kind == "id":
        top = MAX_STUDENT_ID if column == "student_id" else MAX_SCHOOL_CODE
        ok = raw.str.contains(r"^[0-9]{1,12}$") & raw.cast(pl.Int64, strict=False).is_between(1, top)
    elif kind == "integer":
        ok = raw.str.contains(r"^-?[0-9]{1,3}$") & raw.cast(pl.Int32, strict=False).is_between(*GRADE_RANGE)
    elif kind == "date":
        last = today + dt.timedelta(days=366)
        parsed = raw.str.to_date("%Y-%m-%d", strict=False)
        ok = raw.str.contains(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$") & parsed.is_between(FIRST_DATE, last)
    elif kind == "code":
        ok = (raw.str.len_chars() <= MAX_CODE_LENGTH) & ~raw.str.contains(_NOT_PRINTABLE)
    else:
        ok = (raw.str.len_chars() <= MAX_TEXT_LENGTH) & ~raw.str.contains(_CONTROL)
    return raw.is_not_null() & ~ok.fill_null(False)


def _expected(column: str, key: pl.Expr) -> pl.Expr:
    words = {
        "id": f"an integer ID from 1 to {MAX_STUDENT_ID if column == 'student_id' else MAX_SCHOOL_CODE}",
        "integer": GRADE_PROBLEM.removeprefix("must be "),
        "date": f"a real date YYYY-MM-DD from {FIRST_DATE} to one year ahead",
        "code": f"a code of at most {MAX_CODE_LENGTH} printable characters",
        "text": f"text of at most {MAX_TEXT_LENGTH} characters without control characters",
    }[_KIND[column]]
    return pl.concat_str(pl.lit("data."), key, pl.lit(f" must be {words}"))


def _typed(rows: pl.DataFrame) -> pl.DataFrame:
    """Checked text rows → :data:`EVENT_SCHEMA` (every cast is safe after the checks)."""
    return rows.select(
        "seq",
        "event_id",
        "event_type",
        pl.col("event_timestamp").cast(UTC_TS),
        pl.col("student_id").cast(pl.Int64),
        pl.col("school_code").cast(pl.Int32),
        pl.col("calendar_date").str.to_date("%Y-%m-%d"),
        pl.when(pl.col("event_type").is_in(ATTENDANCE_TYPES)).then(pl.col("period").fill_null(ALL_DAY)).alias("period"),
        "code",
        "original_code",
        "reason",
        "corrected_by",
        pl.col("grade").cast(pl.Int32),
        pl.col("enter_date").str.to_date("%Y-%m-%d"),
        pl.col("leave_date").str.to_date("%Y-%m-%d"),
        "exit_reason",
    )


def event_frame(events: Iterable[InboxEvent], today: dt.date | None = None) -> tuple[pl.DataFrame, dict[str, str]]:
    """Supported, valid events as one typed frame (:data:`EVENT_SCHEMA`, in the order given); every
    other event with the reason it cannot be applied (event ID → reason, keys only)."""
    today = today or dt.datetime.now(dt.UTC).date()
    rows, invalid = [], {}
    for ev in events:
        row, problem = _row(ev)
        if problem:
            invalid[ev.event_id] = problem
        else:
            rows.append(row)
    text_schema = {
        "seq": pl.Int64,
        "event_id": pl.Utf8,
        "event_type": pl.Utf8,
        "event_timestamp": pl.Datetime("us", "UTC"),
        **dict.fromkeys(_FIELD_COLUMNS, pl.Utf8),
    }
    frame = pl.DataFrame(rows, schema=text_schema)
    problems = [
        pl.when(_bad(c, today)).then(
            _expected(c, pl.col("event_type").replace_strict({t: k.get(c) for t, k in _KEYS.items()}, default=None))
        )
        for c in _FIELD_COLUMNS
    ]
    frame = frame.with_columns(pl.coalesce(problems).alias("_problem"))
    bad = frame.filter(pl.col("_problem").is_not_null())
    invalid.update(dict(bad.select("event_id", "_problem").iter_rows()))
    return _typed(frame.filter(pl.col("_problem").is_null())), invalid
