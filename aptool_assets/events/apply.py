"""Applying webhook events to the published tables (contract §5), as plain functions over frames.

Who wins, per record (the rule, also in README "Webhooks"):

* **Per cell, the latest timestamp wins.** An attendance cell is (student, school, date, period),
  the all-day code being period ``''``. Events are ordered by ``(timestamp, eventId)``, so the same
  set of events converges to the same table whatever order they arrive in; an event older than the
  cell's last applied event is ``superseded``. Student events order per (student, school) record.
* **A pull is the truth as of when it started.** Every attendance pull records its window
  (``aptool.attendance_pulls``); an event older than the last pull of its school and day is
  already reflected in (or overruled by) that pull and is ``superseded``. A pull replaces its
  window wholesale and then lays back only the webhook cells newer than itself
  (:func:`overlay_newer_cells`), so past days end up exactly as Aeries has them, and a correction
  that Aeries never received is overruled by the next pull. Rows written from events carry
  ``source = 'webhook'`` until a pull confirms them (``aeries_pull``). A full roster pull does the
  same for ``aptool.students``: it keeps the records events changed after it started.
* **Unknown students wait.** An event for a student the roster does not know yet is retried with
  backoff (the pull may not have caught up) and dead-lettered after the retry period. Invalid data
  is dead-lettered at once.
* **One bad event stops nothing.** Each event is checked on its own (:mod:`.frame`), and an event
  whose rows the warehouse still refuses is found by bisecting the batch; either way it alone is
  dead-lettered and the rest of the batch applies.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl

from aptool_assets.events.frame import ATTENDANCE_TYPES, EVENT_SCHEMA, STUDENT_TYPES, event_frame
from aptool_assets.rules.attendance import DISTRICT_SCHOOL_CODE
from aptool_assets.rules.attendance_cells import (
    CELL_KEY,
    DAY_KEY,
    attendance_day_rows,
    days_from_cells,
    overlay_cells,
    stored_cells,
)
from aptool_assets.storage.inbox import InboxEvent
from aptool_assets.storage.sync_state import sync_state
from aptool_assets.storage.warehouse import AnyOf, TableWrite, Warehouse
from aptool_assets.tables.aeries import ABSENCE_CODES, ATTENDANCE_DAYS, ATTENDANCE_DAYS_LOCK, ENROLLMENT, STUDENTS
from aptool_assets.tables.events import ATTENDANCE_CORRECTIONS, ATTENDANCE_EVENT_CELLS, ATTENDANCE_PULLS
from aptool_assets.vocabulary import UTC_TS, school_year_expr

__all__ = ["EVENT_SCHEMA", "ApplyResult", "apply_events", "event_frame"]

WITHDRAWN_STATUS = "withdrawn"  # inactive_status_code until the next roster pull brings the district's own code

_RECORD = ["student_id", "school_code"]

TOUCHED_SCHEMA = {"school_year": pl.Int32, "student_id": pl.Int64, "school_code": pl.Int32}


@dataclass
class ApplyResult:
    """What became of each event of a batch, and which students' metrics must be recomputed."""

    applied: list[str] = field(default_factory=list)
    superseded: list[str] = field(default_factory=list)
    unknown_student: dict[str, str] = field(default_factory=dict)  # event_id → reason (IDs only)
    invalid: dict[str, str] = field(default_factory=dict)  # event_id → reason, dead-lettered at once
    touched: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=TOUCHED_SCHEMA))
    touched_dates: list[dt.date] = field(default_factory=list)
    rows_written: dict[str, int] = field(default_factory=dict)

    @property
    def students_changed(self) -> bool:
        return self.rows_written.get(STUDENTS.name, 0) > 0

    def merge(self, other: ApplyResult) -> None:
        """Add the fates and writes of another group of the same batch."""
        self.applied += other.applied
        self.superseded += other.superseded
        self.unknown_student.update(other.unknown_student)
        self.invalid.update(other.invalid)
        self.touched = pl.concat([self.touched, other.touched], how="vertical_relaxed")
        self.touched_dates += other.touched_dates
        for table, rows in other.rows_written.items():
            self.rows_written[table] = self.rows_written.get(table, 0) + rows


# ---------------------------------------------------------------------------------------------
# Who wins


def latest_first(frame: pl.DataFrame, by: Sequence[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split into the latest event per ``by`` (ordered by timestamp, then event ID) and the rest."""
    ranked = frame.sort(["event_timestamp", "event_id"], descending=True).with_columns(
        (pl.int_range(pl.len()).over(by) == 0).alias("_latest")
    )
    return ranked.filter("_latest").drop("_latest"), ranked.filter(~pl.col("_latest")).drop("_latest")


def _newer(a_ts: str, a_id: str, b_ts: str, b_id: str) -> pl.Expr:
    """(a_ts, a_id) > (b_ts, b_id), the order in which events win."""
    return (pl.col(a_ts) > pl.col(b_ts)) | ((pl.col(a_ts) == pl.col(b_ts)) & (pl.col(a_id) > pl.col(b_id)))


# ---------------------------------------------------------------------------------------------
# Attendance cells


def _last_pull(cells: pl.DataFrame, pulls: pl.DataFrame) -> pl.DataFrame:
    """Per cell, when the last pull that covered its school and day started (null: never pulled)."""
    keyed = cells.select(CELL_KEY).unique()
    if pulls.height == 0:
        return keyed.with_columns(pl.lit(None, dtype=UTC_TS).alias("pulled_at"))
    covering = (
        keyed.join(pulls, on="school_code", how="inner")
        .filter(pl.col("calendar_date").is_between(pl.col("first_date"), pl.col("last_date")))
        .group_by(CELL_KEY)
        .agg(pl.col("pulled_at").max())
    )
    return keyed.join(covering, on=CELL_KEY, how="left")


@dataclass(frozen=True)
class SchoolReference:
    """What every group of a batch reads alike for its schools: their absence codes and attendance pulls.
    Read once per batch, under the lock (a pull records itself under it too)."""

    codes: pl.DataFrame
    pulls: pl.DataFrame

    @classmethod
    def read(cls, wh: Warehouse, schools: list[int]) -> SchoolReference:
        if not schools:
            return cls(ABSENCE_CODES.empty(), ATTENDANCE_PULLS.empty())
        where = {"school_code": AnyOf(schools)}
        codes = wh.read_table(ABSENCE_CODES, where={"school_code": AnyOf([DISTRICT_SCHOOL_CODE, *schools])})
        return cls(codes, wh.read_table(ATTENDANCE_PULLS, where=where))


def _with_winner_flag(wh: Warehouse, latest: pl.DataFrame, near: dict, pulls: pl.DataFrame) -> pl.DataFrame:
    """The latest event per cell, flagged ``_wins`` when it is newer than the cell's clock (the last event
    applied to it) and than the last pull covering its day."""
    clock = wh.read_table(ATTENDANCE_EVENT_CELLS, where=near).join(latest.select(CELL_KEY), on=CELL_KEY, how="semi")
    return (
        latest.join(
            clock.select(
                *CELL_KEY, pl.col("event_id").alias("_clock_id"), pl.col("event_timestamp").alias("_clock_ts")
            ),
            on=CELL_KEY,
            how="left",
        )
        .join(_last_pull(latest, pulls), on=CELL_KEY, how="left")
        .with_columns(
            (
                (
                    pl.col("_clock_id").is_null()
                    | (pl.col("_clock_id") == pl.col("event_id"))
                    | _newer("event_timestamp", "event_id", "_clock_ts", "_clock_id")
                )
                & (pl.col("pulled_at").is_null() | (pl.col("event_timestamp") > pl.col("pulled_at")))
            ).alias("_wins")
        )
    )


def apply_attendance(
    wh: Warehouse,
    events: pl.DataFrame,
    known: pl.DataFrame,
    now: dt.datetime,
    result: ApplyResult,
    reference: SchoolReference | None = None,
) -> list[TableWrite]:
    """Attendance events → the writes of ``attendance_days``, the cell clock and the audit trail
    (``reference``: the schools' codes and pulls, when the caller already read them)."""
    ev = events.filter(pl.col("event_type").is_in(ATTENDANCE_TYPES))
    if ev.height == 0:
        return []
    ev = _drop_unknown(ev, known, _RECORD, result, "at that school")
    latest, older = latest_first(ev, CELL_KEY)
    result.superseded += older.get_column("event_id").to_list()

    schools = latest.get_column("school_code").unique().to_list()
    near = {"school_code": AnyOf(schools), "student_id": AnyOf(latest.get_column("student_id").unique().to_list())}
    reference = reference or SchoolReference.read(wh, schools)
    candidates = _with_winner_flag(wh, latest, near, reference.pulls)
    winners = candidates.filter("_wins")
    result.superseded += candidates.filter(~pl.col("_wins")).get_column("event_id").to_list()
    result.applied += winners.get_column("event_id").to_list()

    dates = latest.get_column("calendar_date").unique().to_list()
    days = wh.read_table(ATTENDANCE_DAYS, where={**near, "calendar_date": AnyOf(dates)})
    days = days.join(winners.select(DAY_KEY).unique(), on=DAY_KEY, how="semi")
    before = stored_cells(days)
    writes = [_corrections(ev, winners, before, now)] if ev["event_type"].eq("attendance.corrected").any() else []
    if winners.height == 0:
        return writes

    touched_days = winners.select(DAY_KEY).unique()
    merged = days_from_cells(overlay_cells(before, winners))
    stamp = (
        winners.group_by(DAY_KEY)
        .agg(pl.col("event_timestamp").max().alias("_ts"))
        .join(days.select(*DAY_KEY, pl.col("source_updated_at").alias("_stored")), on=DAY_KEY, how="left")
        .select(*DAY_KEY, pl.max_horizontal("_ts", "_stored").alias("_ts"))
    )
    rows = attendance_day_rows(merged.join(stamp, on=DAY_KEY, how="left"), reference.codes, pl.col("_ts"), "webhook")
    cleared = touched_days.join(rows.select(DAY_KEY), on=DAY_KEY, how="anti")
    clock_rows = winners.select(
        *CELL_KEY,
        pl.col("code").fill_null(""),
        "event_id",
        "event_type",
        "event_timestamp",
        pl.lit(now, dtype=UTC_TS).alias("applied_at"),
    )
    result.touched = pl.concat([result.touched, _touched(touched_days)], how="vertical_relaxed")
    result.touched_dates += touched_days.get_column("calendar_date").unique().to_list()
    return [
        *writes,
        TableWrite(ATTENDANCE_DAYS, cleared, replace_where=None, delete=True),
        TableWrite(ATTENDANCE_DAYS, rows, replace_where=None, upsert=True, newer_column="source_updated_at"),
        TableWrite(ATTENDANCE_EVENT_CELLS, clock_rows, replace_where=None, upsert=True, newer_column="event_timestamp"),
    ]


def _corrections(ev: pl.DataFrame, winners: pl.DataFrame, before: pl.DataFrame, now: dt.datetime) -> TableWrite:
    """The audit rows of every correction in the batch (applied or superseded), keyed by event ID."""
    won = winners.get_column("event_id")
    audit = (
        ev.filter(pl.col("event_type") == "attendance.corrected")
        .join(before.rename({"code": "code_before"}), on=CELL_KEY, how="left")
        .select(
            "event_id",
            "student_id",
            "school_code",
            "calendar_date",
            "period",
            "original_code",
            pl.col("code").alias("new_code"),
            "code_before",
            "reason",
            "corrected_by",
            "event_timestamp",
            pl.when(pl.col("event_id").is_in(won.implode()))
            .then(pl.lit("applied"))
            .otherwise(pl.lit("superseded"))
            .alias("outcome"),
            pl.lit(now, dtype=UTC_TS).alias("recorded_at"),
        )
    )
    return TableWrite(ATTENDANCE_CORRECTIONS, audit, replace_where=None, upsert=True)


# ---------------------------------------------------------------------------------------------
# Student records


def apply_students(wh: Warehouse, events: pl.DataFrame, roster: pl.DataFrame, result: ApplyResult) -> list[TableWrite]:
    """Enrolled/withdrawn events → the writes of ``aptool.students`` and ``aptool.enrollment``."""
    ev = events.filter(pl.col("event_type").is_in(STUDENT_TYPES))
    if ev.height == 0:
        return []
    # An enrolment may be at a new school, but the student must be known somewhere (names, numbers
    # come from the roster); a withdrawal needs the record at that school.
    enrolled = _drop_unknown(
        ev.filter(pl.col("event_type") == "student.enrolled"), roster, ["student_id"], result, "in the roster"
    )
    withdrawn = _drop_unknown(
        ev.filter(pl.col("event_type") == "student.withdrawn"), roster, _RECORD, result, "at that school"
    )
    latest, older = latest_first(pl.concat([enrolled, withdrawn]), _RECORD)
    result.superseded += older.get_column("event_id").to_list()
    current = roster.join(latest.select(_RECORD), on=_RECORD, how="semi")
    candidates = latest.join(
        current.select(*_RECORD, pl.col("source_updated_at").alias("_stored")), on=_RECORD, how="left"
    ).with_columns((pl.col("_stored").is_null() | (pl.col("event_timestamp") > pl.col("_stored"))).alias("_wins"))
    winners = candidates.filter("_wins")
    result.superseded += candidates.filter(~pl.col("_wins")).get_column("event_id").to_list()
    result.applied += winners.get_column("event_id").to_list()
    if winners.height == 0:
        return []

    identity = roster.sort("source_updated_at", descending=True, nulls_last=True).unique("student_id", keep="first")
    identity = identity.select("student_id", "student_number", "state_student_id", "first_name", "last_name")
    base = winners.join(current.drop("source_updated_at"), on=_RECORD, how="left", suffix="_stored")
    base = base.join(identity, on="student_id", how="left", suffix="_any")
    is_enrol = pl.col("event_type") == "student.enrolled"
    students = base.select(
        "student_id",
        "school_code",
        *[
            pl.coalesce(c, f"{c}_any").alias(c)
            for c in ("student_number", "state_student_id", "first_name", "last_name")
        ],
        pl.when(is_enrol).then(pl.col("grade")).otherwise(pl.col("grade_stored")).alias("grade"),
        pl.when(is_enrol).then(pl.col("enter_date")).otherwise(pl.col("school_enter_date")).alias("school_enter_date"),
        pl.when(is_enrol).then(pl.lit(None, pl.Date)).otherwise(pl.col("leave_date")).alias("school_leave_date"),
        pl.when(is_enrol).then(pl.lit("")).otherwise(pl.lit(WITHDRAWN_STATUS)).alias("inactive_status_code"),
        is_enrol.alias("is_active"),
        pl.col("event_timestamp").alias("source_updated_at"),
    )
    stints = _enrollment_stints(wh, winners)
    result.touched = pl.concat(
        [
            result.touched,
            _touched(
                winners.select(
                    "student_id", "school_code", pl.coalesce("enter_date", "leave_date").alias("calendar_date")
                )
            ),
        ],
        how="vertical_relaxed",
    )
    return [
        TableWrite(STUDENTS, students, replace_where=None, upsert=True, newer_column="source_updated_at"),
        TableWrite(ENROLLMENT, stints, replace_where=None, upsert=True),
    ]


def _enrollment_stints(wh: Warehouse, winners: pl.DataFrame) -> pl.DataFrame:
    """The enrollment stint an event opens (enrolled) or closes (withdrawn: the latest stint that
    started on or before the leave date)."""
    stored = wh.read_table(ENROLLMENT, where={"student_id": AnyOf(winners.get_column("student_id").unique().to_list())})
    ev = winners.with_columns(school_year_expr(pl.coalesce("enter_date", "leave_date")).alias("academic_year"))
    opened = ev.filter(pl.col("event_type") == "student.enrolled").select(
        "student_id",
        "school_code",
        "academic_year",
        "grade",
        "enter_date",
        pl.lit(None, pl.Date).alias("leave_date"),
        pl.lit("").alias("exit_reason_code"),
        pl.col("event_timestamp").alias("source_updated_at"),
    )
    closed = (
        ev.filter(pl.col("event_type") == "student.withdrawn")
        .select(
            "student_id",
            "school_code",
            "academic_year",
            pl.col("leave_date").alias("_leave"),
            "exit_reason",
            "event_timestamp",
        )
        .join(stored.drop("source_updated_at"), on=["student_id", "school_code", "academic_year"], how="inner")
        .filter(pl.col("enter_date") <= pl.col("_leave"))
        .sort("enter_date", descending=True)
        .unique(["student_id", "school_code", "academic_year"], keep="first")
        .select(
            "student_id",
            "school_code",
            "academic_year",
            "grade",
            "enter_date",
            pl.col("_leave").alias("leave_date"),
            pl.col("exit_reason").fill_null("").alias("exit_reason_code"),
            pl.col("event_timestamp").alias("source_updated_at"),
        )
    )
    return pl.concat([opened, closed], how="vertical_relaxed")


# ---------------------------------------------------------------------------------------------


def _drop_unknown(
    ev: pl.DataFrame, known: pl.DataFrame, on: list[str], result: ApplyResult, where: str
) -> pl.DataFrame:
    """Keep events whose student is known; record the others (IDs only) for retry."""
    keys = known.select(on).unique()
    missing = ev.join(keys, on=on, how="anti")
    for event_id, student, school in missing.select("event_id", "student_id", "school_code").iter_rows():
        result.unknown_student[event_id] = f"unknown student {student} {where} (school {school})"
    return ev.join(keys, on=on, how="semi")


def _touched(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select(
        school_year_expr("calendar_date").alias("school_year"),
        pl.col("student_id").cast(pl.Int64),
        pl.col("school_code").cast(pl.Int32),
    ).unique()


def _apply_group(wh: Warehouse, frame: pl.DataFrame, now: dt.datetime, reference: SchoolReference) -> ApplyResult:
    """Decide and write one group of valid events in ONE transaction (the caller holds the lock)."""
    result = ApplyResult()
    roster = wh.read_table(STUDENTS, where={"student_id": AnyOf(frame.get_column("student_id").unique().to_list())})
    writes = apply_students(wh, frame, roster, result)
    # An attendance event for a student enrolled by this very batch is known from that enrolment.
    known = pl.concat([roster.select(_RECORD), *[w.df.select(_RECORD) for w in writes if w.table is STUDENTS]])
    writes += apply_attendance(wh, frame, known, now, result, reference)
    # Even a batch that changed nothing is a sync: its events are settled.
    writes.append(
        sync_state(
            "webhooks",
            "events",
            cursor=f"seq {frame.get_column('seq').max()}",
            now=now,
            last_modified=frame.get_column("event_timestamp").max(),
            detail=f"{len(result.applied)} applied, {len(result.superseded)} superseded",
        )
    )
    result.rows_written = wh.write(*writes)
    return result


def _apply_isolating(
    wh: Warehouse, frame: pl.DataFrame, now: dt.datetime, reference: SchoolReference, result: ApplyResult
) -> None:
    """Apply ``frame`` as one group; when the warehouse refuses it for what its rows hold, apply each half
    on its own (bisection, in arrival order) down to the single events it refuses. Those are set aside
    as invalid with the error's class (never its message, which may quote values); all others are
    written. Connection trouble is not bisected: it is raised, and the run is retried."""
    try:
        part = _apply_group(wh, frame, now, reference)
    except BaseException as exc:
        if not wh.rejects_rows(exc):
            raise
        if frame.height == 1:
            result.invalid[frame.item(0, "event_id")] = f"the warehouse refused the event's rows ({type(exc).__name__})"
            return
        half = frame.height // 2
        _apply_isolating(wh, frame.slice(0, half), now, reference, result)
        _apply_isolating(wh, frame.slice(half), now, reference, result)
        return
    result.merge(part)


def apply_events(wh: Warehouse, events: Sequence[InboxEvent], now: dt.datetime | None = None) -> ApplyResult:
    """Apply a batch of inbox events to the warehouse; returns each event's fate.

    Valid events are written in ONE transaction. An event that cannot be applied never holds up the
    others: invalid data is set aside before anything is written (:func:`event_frame`), and when the
    warehouse still refuses the batch's rows, the batch is bisected until the refused events are
    found (:func:`_apply_isolating`); both end in ``invalid``, which the job dead-letters.

    Idempotent: re-applying events already applied changes nothing (the cell clock and the records'
    ``source_updated_at`` recognise them), so a run that dies after writing and before marking the
    inbox converges when the events are applied again.
    """
    now = now or dt.datetime.now(dt.UTC)
    result = ApplyResult()
    frame, result.invalid = event_frame(events, now.date())
    if frame.height == 0:
        return result
    # Read, decide and write under the lock a pull takes for its window (and the roster refresh for
    # the roster), so neither overwrites rows the other wrote between its read and its write.
    with wh.exclusive(ATTENDANCE_DAYS_LOCK):
        attendance = frame.filter(pl.col("event_type").is_in(ATTENDANCE_TYPES))
        reference = SchoolReference.read(wh, attendance.get_column("school_code").unique().to_list())
        _apply_isolating(wh, frame, now, reference, result)
    result.touched = result.touched.unique()
    result.touched_dates = sorted(set(result.touched_dates))
    return result
