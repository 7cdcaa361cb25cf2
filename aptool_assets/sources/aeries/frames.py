"""Aeries JSON → typed polars DataFrames (reference aeries-api.md §5-§6).

Every frame keeps only the fields the platform uses, so unknown or drifting keys (``AtRiskPoints`` as a
string, new fields in a later Aeries version) are ignored. A field the platform needs that is absent,
or holds a value of the wrong kind, raises ``AeriesResponseError`` naming the field and the endpoint,
because a silently-null StudentID or date would corrupt every metric downstream.

Values are first read as text and then converted column by column, so ``"2020"`` and ``2020`` both parse
where Aeries is inconsistent (``AcademicYear`` is a string, most numbers are ints).

Two frames are tolerant by design, because our sources do not pin their fields down: the demographic codes
of a student record (an optional code may be missing; a blank code is null) and program records, whose
field names are inferred (reference §2 **[UNCERTAIN]**): each column is read from the first of several
candidate keys present, and only the StudentID and the ProgramCode are required.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from aptool_assets.rules.attendance import ATTENDANCE_SCHEMA
from aptool_assets.sources.aeries.client import AeriesResponseError
from aptool_assets.storage.warehouse import TableSpec
from aptool_assets.tables.aeries import (
    ABSENCE_CODES,
    ATTENDANCE_HISTORY_SUMMARY,
    DEMOGRAPHIC_CODE_COLUMNS,
    ENROLLMENT,
    HISTORY_DAY_COLUMNS,
    SCHOOL_CALENDAR,
    SCHOOLS,
    STUDENT_DEMOGRAPHICS,
    STUDENT_PROGRAMS,
    STUDENTS,
)

# Pseudo-schools the Aeries demo and POSH examples skip: district office, transfer, "X" placeholders, inactive.
PSEUDO_SCHOOL_CODES = frozenset({0, 99, 900, 901, 902, 999})


@dataclass(frozen=True)
class _Field:
    source: str  # Aeries key
    name: str  # column name
    dtype: pl.DataType | type[pl.DataType]
    nullable: bool = False  # null allowed (dates such as SchoolLeaveDate); the key itself is still required
    optional: bool = False  # the key may be missing from a record too (then null); implies nullable


def _f(source: str, name: str, dtype: Any, nullable: bool = False) -> _Field:
    return _Field(source, name, dtype, nullable)


def _optional(table: TableSpec, source: str, name: str) -> _Field:
    """A field a record may lack altogether (then null), typed as ``table`` declares ``name``."""
    return _Field(source, name, table.columns[name], nullable=True, optional=True)


def _fields(table: TableSpec, *mapping: tuple[str, str] | tuple[str, str, bool]) -> list[_Field]:
    """(Aeries key, column[, nullable]) pairs typed as the published table declares the column."""
    return [_Field(source, name, table.columns[name], *rest) for source, name, *rest in mapping]


def _schema(fields: list[_Field]) -> dict[str, Any]:
    return {f.name: f.dtype for f in fields}


_SCHOOL_FIELDS = _fields(
    SCHOOLS,
    ("SchoolCode", "school_code"),
    ("Name", "name"),
    ("InactiveStatusCode", "inactive_status_code"),
    ("LowGradeLevel", "low_grade"),
    ("HighGradeLevel", "high_grade"),
    ("AttendanceType", "attendance_type"),
    ("AttendanceReporting", "attendance_reporting"),
)
_STUDENT_FIELDS = _fields(
    STUDENTS,
    ("StudentID", "student_id"),
    ("SchoolCode", "school_code"),
    ("StudentNumber", "student_number"),
    ("StateStudentID", "state_student_id", True),
    ("FirstName", "first_name", True),
    ("LastName", "last_name", True),
    ("Grade", "grade"),
    ("SchoolEnterDate", "school_enter_date", True),
    ("SchoolLeaveDate", "school_leave_date", True),
    ("InactiveStatusCode", "inactive_status_code", True),
)
_ENROLLMENT_FIELDS = _fields(
    ENROLLMENT,
    ("StudentID", "student_id"),
    ("SchoolCode", "school_code"),
    ("AcademicYear", "academic_year"),
    ("Grade", "grade"),
    ("EnterDate", "enter_date"),
    ("LeaveDate", "leave_date", True),
    ("ExitReasonCode", "exit_reason_code", True),
)
_CALENDAR_FIELDS = _fields(
    SCHOOL_CALENDAR,
    ("SchoolCode", "school_code"),
    ("CalendarDate", "calendar_date"),
    ("HolidayCode", "holiday_code", True),
    ("CalendarDayNumber", "calendar_day_number", True),
)
_ABSENCE_CODE_FIELDS = _fields(
    ABSENCE_CODES,
    ("SchoolCode", "school_code"),
    ("AbsenceCode", "code"),
    ("Title", "title", True),
    ("TypeCode", "type_code"),
    ("CountsForADA", "counts_for_ada"),
    ("IsSuspension", "is_suspension"),
    ("IsPartialDayTruant", "is_partial_day_truant"),
    ("IsTemporarilyNotEnrolled", "is_temporarily_not_enrolled"),
)
_DATA_CHANGE_FIELDS = _fields(
    STUDENTS, ("StudentID", "student_id"), ("SchoolCode", "school_code"), ("StudentNumber", "student_number")
)
_DEMOGRAPHIC_SOURCES = (
    "EthnicityCode",
    *(f"RaceCode{i}" for i in range(1, 6)),
    "LanguageFluencyCode",
    "ParentEdLevelCode",
)
_DEMOGRAPHIC_FIELDS = [
    *_fields(STUDENT_DEMOGRAPHICS, ("StudentID", "student_id"), ("SchoolCode", "school_code")),
    *(
        _optional(STUDENT_DEMOGRAPHICS, source, name)
        for source, name in zip(_DEMOGRAPHIC_SOURCES, DEMOGRAPHIC_CODE_COLUMNS, strict=True)
    ),
    _optional(STUDENT_DEMOGRAPHICS, "SchoolEnterDate", "school_enter_date"),
]
HISTORY_DAY_FIELDS = dict(
    zip(
        (
            "DaysEnrolled",
            "DaysPresent",
            "DaysAbsence",
            "DaysExcused",
            "DaysUnexcused",
            "DaysTardy",
            "DaysOfTruancy",
            "DaysSuspension",
            "DaysInSchoolSuspension",
        ),
        HISTORY_DAY_COLUMNS,
        strict=True,
    )
)
"""Aeries' AttendanceHistory summary keys → columns of ``aptool.attendance_history_summary``."""
_HISTORY_FIELDS = _fields(
    ATTENDANCE_HISTORY_SUMMARY,
    ("SchoolYear", "school_year"),
    ("SchoolCode", "school_code"),
    *HISTORY_DAY_FIELDS.items(),
)

SCHOOLS_SCHEMA = _schema(_SCHOOL_FIELDS)
STUDENTS_SCHEMA = {**_schema(_STUDENT_FIELDS), "is_active": pl.Boolean}
ENROLLMENT_SCHEMA = _schema(_ENROLLMENT_FIELDS)
CALENDAR_SCHEMA = _schema(_CALENDAR_FIELDS)
ABSENCE_CODES_SCHEMA = _schema(_ABSENCE_CODE_FIELDS)
DATA_CHANGES_SCHEMA = _schema(_DATA_CHANGE_FIELDS)
HISTORY_SUMMARY_SCHEMA = {"student_id": pl.Int64, **_schema(_HISTORY_FIELDS)}
DEMOGRAPHICS_SCHEMA = _schema(_DEMOGRAPHIC_FIELDS)
PROGRAMS_SCHEMA = {c: STUDENT_PROGRAMS.columns[c] for c in ("student_id", "program_code", "program_description")} | {
    "start_date": pl.Date,
    "end_date": pl.Date,
}

# Program record keys, in order of preference per column (reference §2: the names are inferred). Dates: the
# participation date, else the eligibility date, else a plain StartDate/EndDate.
PROGRAM_SOURCES: dict[str, tuple[str, ...]] = {
    "student_id": ("StudentID", "PermanentID"),
    "program_code": ("ProgramCode", "Code"),
    "program_description": ("ProgramDescription", "Description"),
    "start_date": ("ParticipationStartDate", "EligibilityStartDate", "StartDate"),
    "end_date": ("ParticipationEndDate", "EligibilityEndDate", "EndDate"),
}
_PROGRAM_REQUIRED = ("student_id", "program_code")

# -- conversion helpers --------------------------------------------------------------------------


def _as_records(records: Any, endpoint: str) -> list[Mapping[str, Any]]:
    if isinstance(records, Mapping):  # a bare object where an array was documented (single school, staff)
        records = [records]
    if not isinstance(records, Sequence) or isinstance(records, (str, bytes)):
        raise AeriesResponseError(f"{endpoint}: expected a JSON array, got {type(records).__name__}")
    if not all(isinstance(r, Mapping) for r in records):
        raise AeriesResponseError(f"{endpoint}: expected an array of objects")
    return list(records)


def _require_keys(records: list[Mapping[str, Any]], keys: Sequence[str], endpoint: str) -> None:
    wanted = frozenset(keys)
    for index, record in enumerate(records):
        if not wanted <= record.keys():
            missing = sorted(wanted - record.keys())
            raise AeriesResponseError(
                f"{endpoint}: required field {', '.join(missing)} missing (record {index + 1} of {len(records)})"
            )


def _convert(series: pl.Series, field: _Field, endpoint: str, where: str = "") -> pl.Series:
    """Text column → the field's dtype; a value that does not fit names the field, never the value."""
    label = f"{where}{field.source}"
    text = series.cast(pl.Utf8).str.strip_chars()
    try:
        if field.dtype == pl.Date:
            parsed = text.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=True)
            # Older servers wrote 0001-01-01 for "no date".
            out = pl.select(pl.when(parsed.dt.year() < 1900).then(None).otherwise(parsed)).to_series()
        elif field.dtype == pl.Boolean:
            lowered = text.str.to_lowercase()
            if not lowered.drop_nulls().is_in(["true", "false"]).all():
                raise ValueError("not a boolean")
            out = lowered == "true"
        elif field.dtype in (pl.Int32, pl.Int64):
            if field.source == "SchoolYear":  # "2025-2026" → 2025
                if not text.drop_nulls().str.contains(r"^\d{4}-\d{4}$").all():
                    raise ValueError("not yyyy-yyyy")
                text = text.str.slice(0, 4)
            # Decimals print as 34.0000; anything with a real fraction fails below.
            out = text.str.replace(r"\.0*$", "").cast(pl.Int64, strict=True).cast(field.dtype, strict=True)
        else:
            out = text if field.dtype == pl.Utf8 else text.cast(field.dtype, strict=True)
    except (pl.exceptions.PolarsError, ValueError):
        raise AeriesResponseError(f"{endpoint}: field {label} has a value that is not a valid {field.dtype}") from None
    if not field.nullable and out.null_count():
        raise AeriesResponseError(f"{endpoint}: required field {label} is null or missing")
    return out.alias(field.name)


def _flat_frame(records: Any, fields: list[_Field], schema: dict[str, Any], endpoint: str) -> pl.DataFrame:
    rows = _as_records(records, endpoint)
    if not rows:
        return pl.DataFrame(schema=schema)
    sources = [f.source for f in fields]
    _require_keys(rows, [f.source for f in fields if not f.optional], endpoint)
    raw = pl.from_dicts(rows, schema=dict.fromkeys(sources, pl.Utf8), strict=False)
    return pl.DataFrame([_convert(raw.get_column(f.source), f, endpoint) for f in fields])


# -- public frames -------------------------------------------------------------------------------


def schools_frame(records: Any, *, endpoint: str = "/api/v5/schools") -> pl.DataFrame:
    """All schools as served, pseudo-schools included (filter with ``is_real_school``)."""
    return _flat_frame(records, _SCHOOL_FIELDS, SCHOOLS_SCHEMA, endpoint).with_columns(
        pl.col("inactive_status_code").fill_null("")
    )


def is_real_school() -> pl.Expr:
    """Expression over a schools frame: active and not a pseudo-school (0, 99, 900-902, 999)."""
    return ~pl.col("school_code").is_in(sorted(PSEUDO_SCHOOL_CODES)) & (
        pl.col("inactive_status_code").fill_null("") == ""
    )


def is_real_school_code(school_code: int, inactive_status_code: str | None = "") -> bool:
    """The same test for one school record."""
    return int(school_code) not in PSEUDO_SCHOOL_CODES and not (inactive_status_code or "")


def students_frame(records: Any, *, endpoint: str = "/api/v5/schools/{sc}/students") -> pl.DataFrame:
    """One row per student record at a school; ``is_active`` means InactiveStatusCode is ``""``."""
    frame = _flat_frame(records, _STUDENT_FIELDS, _schema(_STUDENT_FIELDS), endpoint)
    return frame.with_columns(pl.col("inactive_status_code").fill_null("")).with_columns(
        (pl.col("inactive_status_code") == "").alias("is_active")
    )


def enrollment_frame(records: Any, *, endpoint: str = "/api/v5/schools/{sc}/enrollment/0/year/{yyyy}") -> pl.DataFrame:
    return _flat_frame(records, _ENROLLMENT_FIELDS, ENROLLMENT_SCHEMA, endpoint).with_columns(
        pl.col("exit_reason_code").fill_null("")
    )


def calendar_frame(records: Any, *, endpoint: str = "/api/v5/schools/{sc}/calendar") -> pl.DataFrame:
    return _flat_frame(records, _CALENDAR_FIELDS, CALENDAR_SCHEMA, endpoint)


def absence_codes_frame(records: Any, *, endpoint: str = "/api/v5/schools/{sc}/AbsenceCodes") -> pl.DataFrame:
    return _flat_frame(records, _ABSENCE_CODE_FIELDS, ABSENCE_CODES_SCHEMA, endpoint)


def data_changes_frame(records: Any, *, endpoint: str = "/api/v5/StudentDataChanges/{area}/...") -> pl.DataFrame:
    return _flat_frame(records, _DATA_CHANGE_FIELDS, DATA_CHANGES_SCHEMA, endpoint)


_CLASS_RAW = pl.Struct({"SectionNumber": pl.Utf8, "Period": pl.Utf8, "AttendanceCode": pl.Utf8})
_DAY_RAW = pl.Struct({"CalendarDate": pl.Utf8, "AllDayAttendanceCode": pl.Utf8, "Classes": pl.List(_CLASS_RAW)})


def attendance_frame(
    records: Any, school_code: int, *, endpoint: str = "/api/v5/schools/{sc}/attendance"
) -> pl.DataFrame:
    """One row per coded student-day: ``all_day_code`` (null when blank) and the coded periods.

    Present days are absent from the source (negative attendance) and stay absent here; a day whose
    only entries are blank codes is dropped as uncoded.
    """
    rows = _as_records(records, endpoint)
    if not rows:
        return pl.DataFrame(schema=ATTENDANCE_SCHEMA)
    _require_keys(rows, ["StudentID", "AttendanceDays"], endpoint)
    raw = pl.from_dicts(rows, schema={"StudentID": pl.Utf8, "AttendanceDays": pl.List(_DAY_RAW)}, strict=False)
    student_ids = _convert(raw.get_column("StudentID"), _f("StudentID", "student_id", pl.Int64), endpoint)
    days = (
        raw.with_columns(student_ids)
        .select("student_id", "AttendanceDays")
        .explode("AttendanceDays")
        .filter(pl.col("AttendanceDays").is_not_null())
        .unnest("AttendanceDays")
    )
    if days.is_empty():
        return pl.DataFrame(schema=ATTENDANCE_SCHEMA)
    calendar_date = _convert(
        days.get_column("CalendarDate"), _f("CalendarDate", "calendar_date", pl.Date), endpoint, "AttendanceDays[]."
    )
    try:
        period_codes = days.select(
            pl.col("Classes")
            .fill_null(pl.lit([], dtype=pl.List(_CLASS_RAW)))
            .list.eval(
                pl.struct(
                    pl.element().struct.field("Period").str.strip_chars().alias("period"),
                    pl.element().struct.field("SectionNumber").str.strip_chars().cast(pl.Int64).alias("section_number"),
                    pl.element().struct.field("AttendanceCode").str.strip_chars().alias("code"),
                )
            )
            .list.eval(pl.element().filter(pl.element().struct.field("code").fill_null("") != ""))
            .alias("period_codes")
        ).to_series()
    except pl.exceptions.PolarsError:
        raise AeriesResponseError(
            f"{endpoint}: field AttendanceDays[].Classes[].SectionNumber has a value that is not a valid Int64"
        ) from None
    all_day = days.get_column("AllDayAttendanceCode").str.strip_chars()
    frame = pl.DataFrame(
        {
            "student_id": days.get_column("student_id"),
            "school_code": pl.repeat(int(school_code), days.height, dtype=pl.Int32, eager=True),
            "calendar_date": calendar_date,
            "all_day_code": pl.select(pl.when(all_day == "").then(None).otherwise(all_day)).to_series(),
            "period_codes": period_codes,
        },
        schema=ATTENDANCE_SCHEMA,
    )
    return frame.filter(pl.col("all_day_code").is_not_null() | (pl.col("period_codes").list.len() > 0)).sort(
        "student_id", "calendar_date"
    )


def history_summary_frame(
    records: Any, *, endpoint: str = "/api/v5/schools/{sc}/AttendanceHistory/summary/year/{yyyy-yyyy}"
) -> pl.DataFrame:
    """One row per (student, SchoolYear, SchoolCode); a school's response may hold other schools' rows."""
    rows = _as_records(records, endpoint)
    if not rows:
        return pl.DataFrame(schema=HISTORY_SUMMARY_SCHEMA)
    _require_keys(rows, ["StudentID", "HistorySummaries"], endpoint)
    summary_raw = pl.Struct({f.source: pl.Utf8 for f in _HISTORY_FIELDS})
    raw = pl.from_dicts(rows, schema={"StudentID": pl.Utf8, "HistorySummaries": pl.List(summary_raw)}, strict=False)
    student_ids = _convert(raw.get_column("StudentID"), _f("StudentID", "student_id", pl.Int64), endpoint)
    summaries = (
        raw.with_columns(student_ids)
        .select("student_id", "HistorySummaries")
        .explode("HistorySummaries")
        .filter(pl.col("HistorySummaries").is_not_null())
        .unnest("HistorySummaries")
    )
    if summaries.is_empty():
        return pl.DataFrame(schema=HISTORY_SUMMARY_SCHEMA)
    columns = [summaries.get_column("student_id")] + [
        _convert(summaries.get_column(f.source), f, endpoint, "HistorySummaries[].") for f in _HISTORY_FIELDS
    ]
    return pl.DataFrame(columns).select(list(HISTORY_SUMMARY_SCHEMA))


def demographics_frame(records: Any, *, endpoint: str = "/api/v5/schools/{sc}/students") -> pl.DataFrame:
    """The demographic codes of each student record (``aptool.student_demographics`` less the pull time).

    StudentID and SchoolCode are required; a code the record lacks, or leaves blank, is null.
    """
    frame = _flat_frame(records, _DEMOGRAPHIC_FIELDS, DEMOGRAPHICS_SCHEMA, endpoint)
    return frame.with_columns(
        pl.when(pl.col(c) == "").then(None).otherwise(pl.col(c)).alias(c) for c in DEMOGRAPHIC_CODE_COLUMNS
    )


def roster_frame(records: Any, *, endpoint: str = "/api/v5/schools/{sc}/students") -> pl.DataFrame:
    """:func:`students_frame` with the demographic codes of :func:`demographics_frame` beside it: one pull
    feeds ``aptool.students`` and ``aptool.student_demographics`` (select each table's columns)."""
    students = students_frame(records, endpoint=endpoint)
    codes = demographics_frame(records, endpoint=endpoint).select(DEMOGRAPHIC_CODE_COLUMNS)
    return students.hstack(codes)


def _first_present(raw: pl.DataFrame, column: str, endpoint: str) -> pl.Series:
    """``column`` from the first of its candidate keys that holds a value, record by record, converted."""
    dtype = PROGRAMS_SCHEMA[column]
    converted = []
    for source in PROGRAM_SOURCES[column]:
        text = raw.get_column(source).cast(pl.Utf8).str.strip_chars()
        text = pl.select(pl.when(text == "").then(None).otherwise(text)).to_series().alias(source)
        converted.append(_convert(text, _Field(source, column, dtype, nullable=True), endpoint))
    out = pl.select(pl.coalesce(converted)).to_series().alias(column)
    if column in _PROGRAM_REQUIRED and out.null_count():
        names = " or ".join(PROGRAM_SOURCES[column])
        raise AeriesResponseError(f"{endpoint}: required field {names} is null or missing")
    return out


def programs_frame(records: Any, *, endpoint: str = "/api/v5/schools/{sc}/students/programs") -> pl.DataFrame:
    """One row per program record: ``student_id``, ``program_code`` (text), ``program_description``,
    ``start_date`` (participation start, else eligibility start) and ``end_date`` (likewise; null while open).

    Tolerant (the field names are inferred, reference §2): each column comes from the first of its
    candidate keys in ``PROGRAM_SOURCES`` that holds a value; unknown keys are ignored; a missing
    description or date is null. A record without a StudentID or a ProgramCode is an error.
    """
    rows = _as_records(records, endpoint)
    if not rows:
        return pl.DataFrame(schema=PROGRAMS_SCHEMA)
    sources = [source for candidates in PROGRAM_SOURCES.values() for source in candidates]
    raw = pl.from_dicts(rows, schema=dict.fromkeys(sources, pl.Utf8), strict=False)
    return pl.DataFrame([_first_present(raw, column, endpoint) for column in PROGRAMS_SCHEMA])
