"""The attendance summary and the ranking read from the warehouse, for a whole year or a few students.

The assets compute a whole school year; the webhook path recomputes only the students an event
touched and re-ranks only their schools. Both go through these functions, so an incremental
update is by construction what a full recompute would give for those rows (the rules are per
student and the ranking per school).
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from aptool_assets.resources import PlatformResource
from aptool_assets.rules import period_codes
from aptool_assets.rules.academic import DEFAULT_WINDOWS, AssessmentWindows
from aptool_assets.rules.attendance import DISTRICT_SCHOOL_CODE
from aptool_assets.rules.attendance import student_attendance_summary as compute_attendance_summary
from aptool_assets.rules.ranking import PriorityWeights, intervention_ranking
from aptool_assets.rules.reasons import growth_columns
from aptool_assets.storage.warehouse import AnyOf, Between, TableWrite, Warehouse
from aptool_assets.tables.aeries import ABSENCE_CODES, ATTENDANCE_DAYS, ENROLLMENT, SCHOOL_CALENDAR
from aptool_assets.tables.metrics import (
    CHRONIC_ABSENCE_PROJECTION,
    IREADY_GROWTH,
    STUDENT_ACADEMIC_RISK,
    STUDENT_ATTENDANCE_SUMMARY,
    STUDENT_INTERVENTION_RANKING,
)
from aptool_assets.vocabulary import clip_to_school_year, school_year_bounds

_RECORD = ["student_id", "school_code"]


def summary_inputs(wh: Warehouse, school_year: int, students: pl.DataFrame | None = None) -> dict[str, pl.DataFrame]:
    """What the attendance rules read for ``school_year``: calendar, enrollment, coded days (period codes
    parsed) and absence codes, for every student or only the (student_id, school_code) pairs in ``students``."""
    first, last = school_year_bounds(school_year)
    where_students: dict = {}
    where_schools: dict = {}
    where_codes: dict = {"school_year": school_year}
    if students is not None:
        schools = students.get_column("school_code").unique().to_list()
        where_students = {"student_id": AnyOf(students.get_column("student_id").unique().to_list())}
        where_schools = {"school_code": AnyOf(schools)}
        where_codes["school_code"] = AnyOf([DISTRICT_SCHOOL_CODE, *schools])  # the district table backs every school

    def only(frame: pl.DataFrame) -> pl.DataFrame:
        return frame if students is None else frame.join(students.select(_RECORD).unique(), on=_RECORD, how="semi")

    attendance = only(
        wh.read_table(ATTENDANCE_DAYS, where={"calendar_date": Between(first, last), **where_students})
    ).select(
        "student_id",
        "school_code",
        "calendar_date",
        "all_day_code",
        period_codes.from_json(pl.col("period_codes")).alias("period_codes"),
    )
    return {
        "calendar": wh.read_table(SCHOOL_CALENDAR, where={"school_year": school_year, **where_schools}),
        "enrollment": only(wh.read_table(ENROLLMENT, where={"academic_year": school_year, **where_students})),
        "attendance": attendance,
        "absence_codes": wh.read_table(ABSENCE_CODES, where=where_codes),
    }


def attendance_summary(
    wh: Warehouse, school_year: int, as_of: dt.date, students: pl.DataFrame | None = None
) -> pl.DataFrame:
    """The summary of ``school_year`` for every student, or only for the (student_id, school_code)
    pairs in ``students``."""
    return compute_attendance_summary(
        **summary_inputs(wh, school_year, students),
        school_year=school_year,
        as_of_date=clip_to_school_year(school_year, as_of),
    )


def ranking(
    wh: Warehouse,
    school_year: int,
    weights: PriorityWeights,
    schools: list[int] | None = None,
    summary: pl.DataFrame | None = None,
    windows: AssessmentWindows = DEFAULT_WINDOWS,
) -> pl.DataFrame:
    """The ranking of ``school_year`` for every school, or only ``schools``; ``summary`` (the rows of
    those schools) when the caller already holds a newer summary than the warehouse; ``windows`` name the
    assessment window in the growth reasons ("by mid-year")."""
    in_schools = {"school_code": AnyOf(schools)} if schools is not None else {}
    if summary is None:
        summary = wh.read_table(STUDENT_ATTENDANCE_SUMMARY, where={"school_year": school_year, **in_schools})
    risk = wh.read_table(STUDENT_ACADEMIC_RISK, where={"school_year": school_year})
    enrollment = wh.read_table(ENROLLMENT, where={"academic_year": school_year, **in_schools})
    growth = growth_columns(wh.read_table(IREADY_GROWTH, where={"school_year": school_year}), windows)
    projection = wh.read_table(CHRONIC_ABSENCE_PROJECTION, where={"school_year": school_year, **in_schools})
    return intervention_ranking(
        summary,
        risk,
        school_year=school_year,
        enrollment=enrollment,
        growth=growth,
        projection=projection,
        weights=weights,
    )


def refresh_students(
    wh: Warehouse,
    touched: pl.DataFrame,
    as_of: dt.date,
    weights: PriorityWeights,
    windows: AssessmentWindows = DEFAULT_WINDOWS,
) -> dict[int, dict[str, int]]:
    """Recompute the summary rows of the touched (school_year, student_id, school_code) and re-rank
    their schools, one transaction per year. Years whose summary was never computed are left to the
    full asset (a partial first summary would look complete). Returns counts per year."""
    done: dict[int, dict[str, int]] = {}
    if not wh.table_exists(STUDENT_ATTENDANCE_SUMMARY):
        return done
    computed = f"SELECT 1 FROM {STUDENT_ATTENDANCE_SUMMARY.qualified} WHERE school_year = {wh.placeholder} LIMIT 1"
    for (school_year,), pairs in touched.partition_by("school_year", as_dict=True).items():
        school_year = int(school_year)
        if wh.query(computed, [school_year]).height == 0:
            continue
        pairs = pairs.select(_RECORD).unique()
        schools = sorted(pairs.get_column("school_code").unique().to_list())
        fresh = attendance_summary(wh, school_year, as_of, pairs)
        stored = wh.read_table(
            STUDENT_ATTENDANCE_SUMMARY, where={"school_year": school_year, "school_code": AnyOf(schools)}
        )
        summary = pl.concat([stored.join(pairs, on=_RECORD, how="anti"), fresh], how="vertical_relaxed")
        ranked = ranking(wh, school_year, weights, schools, summary=summary, windows=windows)
        wh.write(
            TableWrite(
                STUDENT_ATTENDANCE_SUMMARY,
                pairs.with_columns(pl.lit(school_year, pl.Int32).alias("school_year")),
                replace_where=None,
                delete=True,
            ),
            TableWrite(STUDENT_ATTENDANCE_SUMMARY, fresh, replace_where=None),
            TableWrite(
                STUDENT_INTERVENTION_RANKING, ranked, {"school_year": school_year, "school_code": AnyOf(schools)}
            ),
        )
        done[school_year] = {
            "students": pairs.height,
            "summary_rows": fresh.height,
            "schools": len(schools),
            "ranking_rows": ranked.height,
        }
    return done


def refresh_after_events(wh: Warehouse, touched: pl.DataFrame, platform: PlatformResource) -> dict[int, dict[str, int]]:
    """The webhook path's hook (:class:`~aptool_assets.events.jobs.AfterApply`): the touched students'
    summaries and their schools' rankings, as of the configured date."""
    weights = PriorityWeights.from_string(platform.priority_weights)
    settings = platform.settings()
    return refresh_students(wh, touched, settings.as_of_date, weights, settings.windows)
