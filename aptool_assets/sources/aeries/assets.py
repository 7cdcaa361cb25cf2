"""Aeries assets: reference data, the roster (with its demographic codes), enrollment, program records,
daily attendance and Aeries' own totals.

Every pull goes per school (and per date window for attendance), never per student: a full
school year of attendance costs about schools × months requests. The one exception is a district whose
Aeries refuses the whole-school programs call: its schools' programs are then asked student by student.
"""

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
import polars as pl

from aptool_assets.metadata import column_schema, counts_table, id_preview, table_metadata
from aptool_assets.partitions import EACH_DAY_TO_ITS_YEAR, school_years
from aptool_assets.resilience.errors import NotFoundError
from aptool_assets.resilience.failures import STEP_RETRY_POLICY, retry_as_fits
from aptool_assets.resources import PlatformResource
from aptool_assets.rules.attendance import DISTRICT_SCHOOL_CODE
from aptool_assets.rules.attendance_cells import attendance_day_rows, overlay_newer_cells
from aptool_assets.sources.aeries import frames
from aptool_assets.sources.aeries.client import AeriesClient, AeriesRequestRefusedError, AeriesResource
from aptool_assets.storage.resources import WarehouseResource
from aptool_assets.storage.sync_state import sync_state
from aptool_assets.storage.warehouse import AnyOf, Between, TableSpec, TableWrite, Warehouse
from aptool_assets.tables import asset_key
from aptool_assets.tables.aeries import (
    ABSENCE_CODES,
    ATTENDANCE_DAYS,
    ATTENDANCE_DAYS_LOCK,
    ATTENDANCE_HISTORY_SUMMARY,
    ENROLLMENT,
    PAST_YEAR_STUDENTS,
    SCHOOL_CALENDAR,
    SCHOOLS,
    STUDENT_DEMOGRAPHICS,
    STUDENT_PROGRAMS,
    STUDENTS,
)
from aptool_assets.tables.events import ATTENDANCE_EVENT_CELLS, ATTENDANCE_PULLS
from aptool_assets.tables.rosters import roster_of_year
from aptool_assets.vocabulary import school_year_bounds, school_year_of

GROUP = "aeries"
OWNERS = ["team:district-data"]
KINDS = {"aeries", "polars", "duckdb", "postgres"}
# Service failures are retried as they need (resilience.failures: seconds for a transient failure, the
# half-open time for an open breaker, none for a refused certificate); this is for anything else.
RETRY = STEP_RETRY_POLICY


SCHOOLS_KEY = asset_key(SCHOOLS)
ABSENCE_CODES_KEY = asset_key(ABSENCE_CODES)
CALENDAR_KEY = asset_key(SCHOOL_CALENDAR)
STUDENTS_KEY = asset_key(STUDENTS)
ENROLLMENT_KEY = asset_key(ENROLLMENT)
ATTENDANCE_DAYS_KEY = asset_key(ATTENDANCE_DAYS)
HISTORY_KEY = asset_key(ATTENDANCE_HISTORY_SUMMARY)
STUDENT_PROGRAMS_KEY = asset_key(STUDENT_PROGRAMS)


_FAR_FUTURE = dt.datetime(9999, 12, 31, tzinfo=dt.UTC)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def real_school_codes(warehouse) -> list[int]:
    """Schools to pull: active, real (not the district or a pseudo-school)."""
    schools = warehouse.read_table(SCHOOLS)
    if schools.height == 0:
        raise dg.Failure(description="no schools published yet: materialize aptool/schools first")
    return schools.filter(pl.col("is_real_school")).get_column("school_code").sort().to_list()


def aeries_asset(
    table: TableSpec,
    *,
    description: str,
    deps: Sequence[dg.AssetKey | dg.AssetDep] = (SCHOOLS_KEY,),
    partitions_def: dg.PartitionsDefinition | None = None,
    backfill_policy: dg.BackfillPolicy | None = None,
):
    """An asset that pulls one Aeries table: shared group, kinds, owners, column schema, and step retries
    that fit the failure (seconds after a transient one, the half-open time of an open breaker, none after
    a refused certificate or a malformed response)."""

    def decorate(fn):
        return dg.asset(
            key=asset_key(table),
            group_name=GROUP,
            deps=list(deps),
            partitions_def=partitions_def,
            backfill_policy=backfill_policy,
            kinds=KINDS,
            owners=OWNERS,
            retry_policy=RETRY,
            description=description,
            metadata={"dagster/column_schema": column_schema(table)},
        )(retry_as_fits(fn))

    return decorate


def pull_per_school(
    aeries: AeriesResource,
    school_codes: list[int],
    fetch: Callable[[AeriesClient, int], pl.DataFrame],
    empty: pl.DataFrame,
    database_year: int | None = None,
) -> tuple[pl.DataFrame, dict]:
    """Run ``fetch(client, school_code)`` for every school (bounded concurrency) and stack the frames.

    Returns the rows and metadata with the number of requests the pull cost.
    """
    with aeries.client(database_year=database_year) as client:
        parts = client.map_schools(lambda sc: fetch(client, sc), school_codes)
        meta = {"aeries_requests": client.request_count, "schools": len(school_codes)}
    non_empty = [df for _, df in sorted(parts.items()) if df.height]
    return (pl.concat(non_empty, how="vertical_relaxed") if non_empty else empty), meta


@aeries_asset(
    SCHOOLS,
    description="aptool.schools: every school Aeries lists; pseudo-schools (0 district, 99 transfer, "
    "900-902, 999) and inactive schools are kept but flagged is_real_school = false.",
    deps=[],
)
def schools(context: dg.AssetExecutionContext, aeries: AeriesResource, warehouse: WarehouseResource):
    with aeries.client() as client:
        df = frames.schools_frame(client.schools())
        meta = {"aeries_requests": client.request_count}
    df = df.with_columns(frames.is_real_school().alias("is_real_school"), pl.lit(_now()).alias("source_updated_at"))
    warehouse.get().write(TableWrite(SCHOOLS, df), sync_state("aeries", "schools", detail=f"{df.height} schools"))
    real = df.filter(pl.col("is_real_school")).get_column("school_code").to_list()
    context.log.info(f"{df.height} schools listed, {len(real)} real and active: {real}")
    return dg.MaterializeResult(metadata=table_metadata(SCHOOLS, df.height, {"real_schools": len(real), **meta}))


class StudentsConfig(dg.Config):
    """Empty: refresh every school's roster. Otherwise [school_code, student_id] pairs from the change feed:
    only those schools are pulled and only those students' rows are merged."""

    changed: list[list[int]] = []


@aeries_asset(
    STUDENTS,
    description="aptool.students: one row per student record at a school (active and inactive), pulled "
    "per school with paging. The change-feed sensor re-pulls only schools with changed students and "
    "merges just those rows (a newer source_updated_at always wins). The same pull writes the records' "
    "demographic codes to aptool.student_demographics (internal, for the student groups), in the same "
    "transaction. Partitioned by school year: the current year's partition (APTOOL_SCHOOL_YEAR, else today's) "
    "is aptool.students; a past year's, pulled with its DatabaseYear by a backfill, goes to "
    "aptool.past_year_students (no names) and leaves the current roster alone.",
    partitions_def=school_years,
)
def students(
    context: dg.AssetExecutionContext,
    config: StudentsConfig,
    aeries: AeriesResource,
    warehouse: WarehouseResource,
    platform: PlatformResource,
):
    year = int(context.partition_key)
    current = platform.settings().school_year
    if year > current:
        raise dg.Failure(
            description=f"school year {year} has not begun: the current one is {current} (APTOOL_SCHOOL_YEAR, else "
            "today's); set APTOOL_SCHOOL_YEAR when the district switches",
            allow_retries=False,
        )
    if year < current:
        if config.changed:
            raise dg.Failure(
                description=f"changed-student merges apply to the current school year ({current}), not {year}",
                allow_retries=False,
            )
        return past_year_roster(context, aeries, warehouse.get(), year)
    wh = warehouse.get()
    changed = {(int(sc), int(sid)) for sc, sid in config.changed}
    codes = sorted({sc for sc, _ in changed}) if changed else real_school_codes(wh)
    # Rows are stamped with when the pull started: it is the truth as of then, and an event newer
    # than that (applied during the pull or after it) wins over it.
    pulled_at = _now()
    df, meta = pull_per_school(
        aeries, codes, lambda c, sc: frames.roster_frame(c.students(sc)), frames.roster_frame([]), year
    )
    df = df.with_columns(pl.lit(pulled_at).alias("source_updated_at"))
    if changed:
        wanted = pl.DataFrame(sorted(changed), schema={"school_code": pl.Int32, "student_id": pl.Int64}, orient="row")
        df = df.join(wanted, on=["school_code", "student_id"], how="semi")
        wh.write(
            TableWrite(STUDENTS, df, upsert=True, newer_column="source_updated_at"),
            TableWrite(STUDENT_DEMOGRAPHICS, df, upsert=True, newer_column="source_updated_at"),
            sync_state("aeries", "students/changes", detail=f"{df.height} changed records merged"),
        )
        missing = len(changed) - df.height
        if missing:
            context.log.warning(f"{missing} changed student record(s) not found at their school (IDs skipped)")
        demographics = df.height
    else:
        df, demographics = publish_roster(wh, df, pulled_at)
    active = int(df.get_column("is_active").sum()) if df.height else 0
    context.log.info(f"{df.height} student records from {len(codes)} school(s), {active} active")
    return dg.MaterializeResult(
        metadata=table_metadata(
            STUDENTS,
            df.height,
            {
                "mode": "changed students" if changed else "full roster",
                "active_records": active,
                "demographics_rows": demographics,
                "student_id_preview": dg.MetadataValue.json(id_preview(df)),
                **meta,
            },
        )
    )


def past_year_roster(
    context: dg.AssetExecutionContext, aeries: AeriesResource, wh: Warehouse, year: int
) -> dg.MaterializeResult:
    """A past school year's roster, pulled with its DatabaseYear into ``aptool.past_year_students`` (the
    year's slice replaced): what that year's metrics read, while ``aptool.students`` stays the current year's."""
    codes = real_school_codes(wh)
    df, meta = pull_per_school(
        aeries, codes, lambda c, sc: frames.roster_frame(c.students(sc)), frames.roster_frame([]), year
    )
    rows = df.with_columns(pl.lit(year, pl.Int32).alias("school_year"), pl.lit(_now()).alias("source_updated_at"))
    rows = rows.unique(subset=list(PAST_YEAR_STUDENTS.key), keep="last", maintain_order=True)
    wh.write(
        TableWrite(PAST_YEAR_STUDENTS, rows.select(list(PAST_YEAR_STUDENTS.columns)), {"school_year": year}),
        sync_state("aeries", f"{PAST_YEAR_STUDENTS.name}/{year}", detail=f"{rows.height} records"),
    )
    context.log.info(
        f"school year {year} is past: {rows.height} student records from {len(codes)} school(s) kept in "
        f"aptool.{PAST_YEAR_STUDENTS.name} (aptool.students, the current year's roster, is unchanged)"
    )
    return dg.MaterializeResult(
        metadata=table_metadata(
            PAST_YEAR_STUDENTS,
            rows.height,
            {"mode": "past year", "student_id_preview": dg.MetadataValue.json(id_preview(rows)), **meta},
        )
    )


def overlay_newer_records(pulled: pl.DataFrame, newer: pl.DataFrame, table: TableSpec = STUDENTS) -> pl.DataFrame:
    """The pulled rows of ``table`` with the stored rows in ``newer`` laid over them (a newer row replaces the
    pulled row of its key, e.g. a student's record at a school, or is added when the pull has none)."""
    if newer.height == 0:
        return pulled
    key = list(table.key)
    kept = pulled.join(newer.select(key), on=key, how="anti")
    return pl.concat([kept, newer.select(pulled.columns)], how="vertical_relaxed")


def publish_roster(wh: Warehouse, pulled: pl.DataFrame, pulled_at: dt.datetime) -> tuple[pl.DataFrame, int]:
    """Replace ``aptool.students`` and ``aptool.student_demographics`` with a full pull (``frames.roster_frame``
    rows), laying back the rows changed after the pull started (webhook enrolments and withdrawals, a
    change-feed merge); returns the student records published and the number of demographic rows. Under the
    lock the webhook path holds from reading the roster to writing it, so no event lands between the read and
    the write; both tables in one transaction.
    """
    students = pulled.select(list(STUDENTS.columns))
    demographics = pulled.select(list(STUDENT_DEMOGRAPHICS.columns))
    recent = {"source_updated_at": Between(pulled_at, _FAR_FUTURE)}
    with wh.exclusive(ATTENDANCE_DAYS_LOCK):
        newer = wh.read_table(STUDENTS, where=recent).filter(pl.col("source_updated_at") > pulled_at)
        newer_codes = wh.read_table(STUDENT_DEMOGRAPHICS, where=recent).filter(pl.col("source_updated_at") > pulled_at)
        rows = overlay_newer_records(students, newer)
        codes = overlay_newer_records(demographics, newer_codes, STUDENT_DEMOGRAPHICS)
        detail = f"{rows.height} records" + (f", {newer.height} newer kept" if newer.height else "")
        wh.write(
            TableWrite(STUDENTS, rows),
            TableWrite(STUDENT_DEMOGRAPHICS, codes),
            sync_state("aeries", "students", detail=detail),
        )
    return rows, codes.height


def month_windows(start: dt.date, end: dt.date) -> list[tuple[dt.date, dt.date]]:
    """Split [start, end] (inclusive) at month boundaries: one attendance request per school and window."""
    windows = []
    cur = start
    while cur <= end:
        nxt = (cur.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        windows.append((cur, min(end, nxt - dt.timedelta(days=1))))
        cur = nxt
    return windows


def attendance_rows(raw: pl.DataFrame, codes: pl.DataFrame, pulled_at: dt.datetime) -> pl.DataFrame:
    """Categorise pulled attendance by each school's code table and shape it as aptool.attendance_days."""
    return attendance_day_rows(raw, codes, pulled_at, "aeries_pull")


def pull_attendance(
    aeries: AeriesResource, school_codes: list[int], first: dt.date, last: dt.date
) -> tuple[pl.DataFrame, dict]:
    """Coded student-days of ``school_codes`` in [first, last]: one request per school and month.

    Each school year lives in its own Aeries database: every window asks for the year its dates belong to
    (month windows never straddle July 1), so a backfill of a past year reads that year's attendance.
    """
    by_year: dict[int, list[tuple[dt.date, dt.date]]] = {}
    for a, b in month_windows(first, last):
        by_year.setdefault(school_year_of(a), []).append((a, b))
    parts, meta = [], {"aeries_requests": 0, "schools": len(school_codes)}
    for year, year_windows in sorted(by_year.items()):

        def pull(client: AeriesClient, sc: int, year_windows=year_windows) -> pl.DataFrame:
            return pl.concat(
                [frames.attendance_frame(client.attendance(sc, a, b), sc) for a, b in year_windows],
                how="vertical_relaxed",
            )

        part, year_meta = pull_per_school(
            aeries, school_codes, pull, frames.attendance_frame([], 0), database_year=year
        )
        parts.append(part)
        meta["aeries_requests"] += year_meta["aeries_requests"]
    raw = pl.concat(parts, how="vertical_relaxed")
    return raw.filter(pl.col("calendar_date").is_between(first, last)), meta


def publish_attendance_window(
    wh: Warehouse,
    rows: pl.DataFrame,
    codes: pl.DataFrame,
    school_codes: list[int],
    first: dt.date,
    last: dt.date,
    pulled_at: dt.datetime,
) -> pl.DataFrame:
    """Replace the window with the pulled rows, laying back webhook cells newer than the pull; returns what
    was published. Under the attendance lock: no webhook batch lands between reading its cells and the write."""
    pulls = pl.DataFrame(
        {"school_code": school_codes, "first_date": first, "last_date": last, "pulled_at": pulled_at},
        schema=ATTENDANCE_PULLS.polars_schema,
    )
    window = {"calendar_date": Between(first, last)}
    with wh.exclusive(ATTENDANCE_DAYS_LOCK):
        # Events applied since the pull started are newer than what it saw: lay them back over it.
        newer = wh.read_table(ATTENDANCE_EVENT_CELLS, where=window).filter(pl.col("event_timestamp") > pulled_at)
        rows = overlay_newer_cells(rows, newer, codes)
        wh.write(
            TableWrite(ATTENDANCE_DAYS, rows, window),
            TableWrite(ATTENDANCE_PULLS, pulls, replace_where=None),
            sync_state("aeries", "attendance_days", cursor=f"{first}..{last}", detail=f"{rows.height} coded days"),
        )
    return rows


def attendance_days(context: dg.AssetExecutionContext, aeries: AeriesResource, warehouse: WarehouseResource):
    window = context.partition_time_window
    first = window.start.date()
    last = (window.end - dt.timedelta(days=1)).date()
    wh = warehouse.get()
    codes = real_school_codes(wh)
    code_table = wh.read_table(ABSENCE_CODES)
    context.log.info(
        f"pulling attendance {first}..{last}: {len(codes)} schools × {len(month_windows(first, last))} window(s)"
    )
    pulled_at = _now()
    raw, meta = pull_attendance(aeries, codes, first, last)
    rows = attendance_rows(raw, code_table, pulled_at)
    unknown = rows.filter(pl.col("absence_category") == "unknown_code")
    if unknown.height:
        context.log.warning(
            f"{unknown.height} attendance rows carry codes found neither in their school's nor in the district's "
            f"code table (published as unknown_code, counted as unverified absences): "
            f"{sorted(set(unknown.select('school_code', 'all_day_code').iter_rows()))[:10]}"
        )
    rows = publish_attendance_window(wh, rows, code_table, codes, first, last, pulled_at)
    by_category = dict(rows.group_by("absence_category").len().fill_null("unknown_code").iter_rows())
    return dg.MaterializeResult(
        metadata=table_metadata(
            ATTENDANCE_DAYS,
            rows.height,
            {
                "window": f"{first}..{last}",
                "rows_by_category": counts_table({str(k): v for k, v in by_category.items()}, "category"),
                "full_day_absences": int(rows.get_column("is_full_day_absence").sum()) if rows.height else 0,
                **meta,
            },
        )
    )


def build_attendance_days(day_partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """``aptool/attendance_days`` over the district's daily partitions (their time zone is configuration)."""
    return aeries_asset(
        ATTENDANCE_DAYS,
        description="aptool.attendance_days: one row per student-day carrying a code (negative attendance), "
        "categorised by the school's absence-code definitions. Partitioned by date so any window can be "
        "re-pulled; a backfill of a whole year runs as one run, one request per school and month. The pull "
        "is the source of truth for the days it covers (it replaces webhook-sourced rows of those days).",
        deps=[SCHOOLS_KEY, dg.AssetDep(ABSENCE_CODES_KEY, partition_mapping=EACH_DAY_TO_ITS_YEAR)],
        partitions_def=day_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
    )(attendance_days)


@dataclass(frozen=True)
class SchoolPull:
    """One Aeries table pulled school by school, one request per school: what to ask for, how the rows are
    shaped, and which slice they replace (the school year's, when ``year_column`` partitions the table)."""

    table: TableSpec
    description: str
    fetch: Callable[[AeriesClient, int, int | None], Any]  # (client, school_code, school year) → records
    frame: Callable[[Any], pl.DataFrame]  # records → typed frame; frame([]) is the empty one
    shape: Callable[[pl.DataFrame, int | None], pl.DataFrame] = lambda df, year: df
    year_column: str | None = None
    noun: str | None = None  # what a row is, for aptool.sync_state's detail ("12 codes")
    metadata: Callable[[pl.DataFrame], dict] = lambda df: {}
    with_district: bool = False  # pull SchoolCode 0 (the district-wide table) besides the real schools


def build_school_pull(spec: SchoolPull) -> dg.AssetsDefinition:
    """The asset that pulls ``spec.table``: every real school, bounded concurrency, one transaction."""

    def pull(context: dg.AssetExecutionContext, aeries: AeriesResource, warehouse: WarehouseResource):
        year = int(context.partition_key) if spec.year_column else None
        wh = warehouse.get()
        schools = ([DISTRICT_SCHOOL_CODE] if spec.with_district else []) + real_school_codes(wh)
        df, meta = pull_per_school(
            aeries, schools, lambda c, sc: spec.frame(spec.fetch(c, sc, year)), spec.frame([]), year
        )
        df = spec.shape(df, year)
        entity = spec.table.name if year is None else f"{spec.table.name}/{year}"
        detail = f"{df.height} {spec.noun}" if spec.noun else None
        wh.write(
            TableWrite(spec.table, df, {} if year is None else {spec.year_column: year}),
            sync_state("aeries", entity, detail=detail),
        )
        return dg.MaterializeResult(metadata=table_metadata(spec.table, df.height, {**spec.metadata(df), **meta}))

    pull.__name__ = spec.table.name
    partitions = school_years if spec.year_column else None
    return aeries_asset(spec.table, description=spec.description, partitions_def=partitions)(pull)


def _pulled_now(df: pl.DataFrame, year: int | None = None) -> pl.DataFrame:
    return df.with_columns(pl.lit(_now()).alias("source_updated_at"))


def _of_year(column: str, key: tuple[str, ...]) -> Callable[[pl.DataFrame, int | None], pl.DataFrame]:
    """Rows of the partition's year only, the last of any repeated key, stamped with the pull time."""
    return lambda df, year: _pulled_now(
        df.filter(pl.col(column) == year).unique(subset=list(key), keep="last", maintain_order=True)
    )


def _calendar_of_year(df: pl.DataFrame, year: int | None) -> pl.DataFrame:
    first, last = school_year_bounds(year)
    return df.filter(pl.col("calendar_date").is_between(first, last)).with_columns(
        pl.lit(year, pl.Int32).alias("school_year"),
        pl.col("holiday_code").is_in(["", "%"]).alias("is_instructional"),
    )


def _instructional_days_by_school(df: pl.DataFrame) -> dict:
    days = df.filter(pl.col("is_instructional")).group_by("school_code").len()
    return {"instructional_days_by_school": counts_table({str(k): v for k, v in days.iter_rows()}, "school")}


def _district_codes_optional(client: AeriesClient, school: int) -> list[dict]:
    """A school's code table; the district-wide table (SchoolCode 0) may not exist: then it is empty."""
    if school != DISTRICT_SCHOOL_CODE:
        return client.absence_codes(school)
    try:
        return client.absence_codes(school)
    except NotFoundError:
        return []


def _codes_of_year(df: pl.DataFrame, year: int | None) -> pl.DataFrame:
    return _pulled_now(df.with_columns(pl.lit(year, pl.Int32).alias("school_year")))


def _codes_by_table(df: pl.DataFrame) -> dict:
    district = df.filter(pl.col("school_code") == DISTRICT_SCHOOL_CODE).height
    return {"district_wide_codes": district, "school_codes": df.height - district}


absence_codes = build_school_pull(
    SchoolPull(
        ABSENCE_CODES,
        description="aptool.absence_codes: each school's absence-code table (TypeCode and flags) for the school "
        "year (pulled with its DatabaseYear), and the district-wide table (SchoolCode 0) that a code missing "
        "from a school's table is looked up in. Categories are always derived from these definitions, never "
        "from hard-coded letters.",
        fetch=lambda client, school, year: _district_codes_optional(client, school),
        frame=frames.absence_codes_frame,
        shape=_codes_of_year,
        year_column="school_year",
        noun="codes",
        metadata=_codes_by_table,
        with_district=True,
    )
)
school_calendar = build_school_pull(
    SchoolPull(
        SCHOOL_CALENDAR,
        description="aptool.school_calendar: every calendar day of every school for the school year; "
        "instructional days are HolidayCode '' (regular) or '%' (minimum day).",
        fetch=lambda client, school, year: client.calendar(school),
        frame=frames.calendar_frame,
        shape=_calendar_of_year,
        year_column="school_year",
        metadata=_instructional_days_by_school,
    )
)
enrollment = build_school_pull(
    SchoolPull(
        ENROLLMENT,
        description="aptool.enrollment: enrollment-history stints of the school year per school (a mid-year "
        "transfer gives a row at each school); the basis of days enrolled.",
        fetch=lambda client, school, year: client.enrollment(school, year),
        frame=frames.enrollment_frame,
        shape=_of_year("academic_year", ENROLLMENT.key),
        year_column="academic_year",
        metadata=lambda df: {"students": df.get_column("student_id").n_unique()},
    )
)
attendance_history_summary = build_school_pull(
    SchoolPull(
        ATTENDANCE_HISTORY_SUMMARY,
        description="aptool.attendance_history_summary: Aeries' own per-student attendance totals as pulled. "
        "Aeries recomputes them nightly, so they lag; used to reconcile the computed summary.",
        fetch=lambda client, school, year: client.attendance_history_summary(school, year),
        frame=frames.history_summary_frame,
        shape=_of_year("school_year", ATTENDANCE_HISTORY_SUMMARY.key),
        year_column="school_year",
    )
)


class ProgramsConfig(dg.Config):
    """Empty: every real school. Otherwise the school codes the change feed reported program changes at: only
    those schools are re-pulled, and only their rows of the school year replaced."""

    schools: list[int] = []


_PER_STUDENT_ENDPOINT = "/api/v5/schools/{sc}/students/{StudentID}/programs"


def pull_programs(
    aeries: AeriesResource, school_codes: list[int], roster: pl.DataFrame, school_year: int
) -> tuple[pl.DataFrame, dict, dict[int, str]]:
    """Every school's program records (with ``school_code``), asked with the year's DatabaseYear.

    One whole-school request per school (bounded concurrency). A school whose Aeries refuses that call
    (404, or 400/501: the server does not serve the StudentID-less form) is asked student by student instead:
    every student with a record at the school in ``roster`` (student_id, school_code), with the client's
    bounded concurrency. Returns the rows, the metadata (requests; the schools that fell back and what their
    per-student requests cost) and, per school that fell back, why.
    """
    with aeries.client(database_year=school_year) as client:

        def whole_school(sc: int) -> pl.DataFrame | str:
            try:
                return frames.programs_frame(client.programs(sc))
            except (NotFoundError, AeriesRequestRefusedError) as exc:
                return str(exc)

        answers = client.map_schools(whole_school, school_codes)
        whole_school_requests = client.request_count
        refused = {sc: answer for sc, answer in answers.items() if isinstance(answer, str)}
        parts = {sc: answer for sc, answer in answers.items() if isinstance(answer, pl.DataFrame)}
        for sc in refused:
            ids = roster.filter(pl.col("school_code") == sc).get_column("student_id").unique().sort().to_list()
            per_student = client.map_students(lambda sid, sc=sc: client.student_programs(sc, sid), ids)
            # The path names the student: a record without its own StudentID belongs to that student.
            records = [
                r if "StudentID" in r else {**r, "StudentID": sid} for sid, rs in per_student.items() for r in rs
            ]
            parts[sc] = frames.programs_frame(records, endpoint=_PER_STUDENT_ENDPOINT)
        meta = {
            "aeries_requests": client.request_count,
            "schools": len(school_codes),
            "per_student_fallback_schools": dg.MetadataValue.json(sorted(refused)),
            "per_student_requests": client.request_count - whole_school_requests,
        }
    stacked = [df.with_columns(pl.lit(sc, pl.Int32).alias("school_code")) for sc, df in sorted(parts.items())]
    empty = frames.programs_frame([]).with_columns(pl.lit(None, pl.Int32).alias("school_code"))
    rows = (
        pl.concat([df for df in stacked if df.height], how="vertical_relaxed")
        if any(d.height for d in stacked)
        else empty
    )
    return rows, meta, refused


def programs_of_year(df: pl.DataFrame, school_year: int, pulled_at: dt.datetime) -> pl.DataFrame:
    """The program stints that overlap the school year, as ``aptool.student_programs``: a stint without any
    start date starts with the year (so the key has one); the last of any repeated key is kept."""
    first, last = school_year_bounds(school_year)
    key = [c for c in STUDENT_PROGRAMS.key if c != "school_year"]
    return (
        df.with_columns(pl.col("start_date").fill_null(first))
        .filter((pl.col("start_date") <= last) & (pl.col("end_date").is_null() | (pl.col("end_date") >= first)))
        .unique(subset=key, keep="last", maintain_order=True)
        .with_columns(pl.lit(school_year, pl.Int32).alias("school_year"), pl.lit(pulled_at).alias("source_updated_at"))
        .select(list(STUDENT_PROGRAMS.columns))
        .sort("school_code", "student_id", "program_code", "start_date")
    )


@aeries_asset(
    STUDENT_PROGRAMS,
    description="aptool.student_programs (internal, for the student groups): the program records (CALPADS codes "
    "such as 144 special education, 181/182 meals, 191 homeless, 190 foster, 135 migrant) of the students with "
    "a record at each school, the stints overlapping the school year, pulled with its DatabaseYear: one "
    "request per school, or, where a district's Aeries refuses the whole-school call, one per student on the "
    "roster (metadata per_student_fallback_schools). The change-feed sensor re-pulls only the schools with "
    "program changes.",
    deps=[SCHOOLS_KEY, STUDENTS_KEY],
    partitions_def=school_years,
)
def student_programs(
    context: dg.AssetExecutionContext,
    config: ProgramsConfig,
    aeries: AeriesResource,
    warehouse: WarehouseResource,
):
    year = int(context.partition_key)
    wh = warehouse.get()
    real = real_school_codes(wh)
    wanted = set(config.schools)
    codes = [sc for sc in real if sc in wanted] if wanted else real
    roster = roster_of_year(wh, year, ["student_id", "school_code"])
    pulled_at = _now()
    raw, meta, refused = pull_programs(aeries, codes, roster, year)
    for sc, reason in refused.items():
        context.log.warning(f"school {sc}: the whole-school programs call was refused ({reason}); asked per student")
    if refused:
        context.log.info(
            f"{len(refused)} school(s) pulled per student, {meta['per_student_requests']} per-student requests"
        )
    rows = programs_of_year(raw, year, pulled_at)
    where = {"school_year": year, **({"school_code": AnyOf(codes)} if wanted else {})}
    entity = f"{STUDENT_PROGRAMS.name}/{year}"
    wh.write(
        TableWrite(STUDENT_PROGRAMS, rows, where),
        sync_state("aeries", entity, detail=f"{rows.height} program stints from {len(codes)} school(s)"),
    )
    by_program = rows.group_by("program_code").agg(pl.col("student_id").n_unique()).sort("program_code")
    context.log.info(f"{rows.height} program stints of {rows.get_column('student_id').n_unique()} students")
    return dg.MaterializeResult(
        metadata=table_metadata(
            STUDENT_PROGRAMS,
            rows.height,
            {
                "mode": "changed schools" if wanted else "every school",
                "students": rows.get_column("student_id").n_unique(),
                "students_by_program": counts_table(dict(by_program.iter_rows()), "program_code"),
                **meta,
            },
        )
    )


def build_aeries_assets(day_partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """Every Aeries asset; attendance is partitioned by ``day_partitions``."""
    return [
        schools,
        absence_codes,
        school_calendar,
        students,
        enrollment,
        build_attendance_days(day_partitions),
        attendance_history_summary,
        student_programs,
    ]
