"""i-Ready assets: the landed raw files and the parsed, validated diagnostic results.

Both are partitioned by school year × subject, because the vendor delivers one cumulative file
per subject and year and rewrites it nightly: a partition is replaced as a whole, atomically.
"""

import datetime as dt
from pathlib import Path

import dagster as dg
import polars as pl

from aptool_assets.metadata import column_schema, counts_table, id_preview, table_metadata
from aptool_assets.partitions import YEAR_OF_A_FILE, school_year_subject_partitions, split_year_subject_key
from aptool_assets.resilience.failures import STEP_RETRY_POLICY, retry_as_fits
from aptool_assets.resources import PlatformResource
from aptool_assets.rules.academic import AssessmentWindows
from aptool_assets.rules.student_ids import ID_FIELDS, map_vendor_ids
from aptool_assets.sources.iready.files import diagnostic_files
from aptool_assets.sources.iready.landing import PartitionLanding, land_partition, quarantine
from aptool_assets.sources.iready.parser import ParsedDiagnostics, parse_diagnostic_file
from aptool_assets.sources.iready.resources import IReadySFTPResource
from aptool_assets.sources.iready.retention import current_selection
from aptool_assets.storage.resources import WarehouseResource
from aptool_assets.storage.sync_state import sync_state
from aptool_assets.storage.warehouse import TableWrite
from aptool_assets.tables import asset_key
from aptool_assets.tables.aeries import SCHOOLS, STUDENTS
from aptool_assets.tables.iready import (
    CELL_PROBLEMS,
    DIAGNOSTIC_RESULTS,
    LANDED_FILES,
    QUARANTINED_FILES,
    REJECTED_ROWS,
)
from aptool_assets.tables.rosters import roster_of_year

GROUP = "iready"
RAW_FILES_KEY = dg.AssetKey(["iready", "raw_diagnostic_files"])
DIAGNOSTIC_RESULTS_KEY = dg.AssetKey(["aptool", DIAGNOSTIC_RESULTS.name])
FILE_ACCEPTED_CHECK = "file_accepted"
STUDENTS_KEY = asset_key(STUDENTS)


def roster_ids(warehouse, school_year: int) -> pl.DataFrame:
    """Every student record's identifiers and its school's name in ``school_year`` (the year's own roster when a
    backfill kept one, else the current roster): what a vendor Student ID is mapped through."""
    students = roster_of_year(warehouse, school_year, [*ID_FIELDS, "school_code"])
    names = warehouse.read_table(SCHOOLS, columns=["school_code", "name"]).rename({"name": "school_name"})
    return students.join(names, on="school_code", how="left").drop("school_code")


OWNERS = ["team:district-data"]


def _utc(epoch: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


def _landing_rows(landing: PartitionLanding, run_id: str, now: dt.datetime) -> pl.DataFrame:
    rows = [
        {
            "school_year": landing.school_year,
            "subject": landing.subject,
            "region": d.file.region,
            "remote_path": d.file.remote.path,
            "size_bytes": d.file.remote.size,
            "remote_mtime": _utc(d.file.remote.mtime),
            "sha256": d.landed.sha256 if d.landed else None,
            "local_path": str(d.landed.local_path) if d.landed else None,
            "status": d.status,
            "detail": d.detail,
            "landed_at": now,
            "run_id": run_id,
        }
        for d in landing.decisions
    ]
    return pl.DataFrame(rows, schema=LANDED_FILES.polars_schema)


def _quarantine_refused(
    context: dg.AssetExecutionContext, landing: PartitionLanding, landing_dir: Path, run_id: str, now: dt.datetime
) -> pl.DataFrame:
    """Move each refused file into the quarantine area; its rows for ``aptool.iready_quarantined_files``."""
    quarantined = []
    for d in landing.refused:
        dest = quarantine(d, landing_dir / "quarantine" / "iready")
        quarantined.append(
            {
                "school_year": landing.school_year,
                "subject": landing.subject,
                "remote_path": d.file.remote.path,
                "sha256": d.landed.sha256 if d.landed else None,
                "quarantine_path": str(dest),
                "reason": d.detail,
                "quarantined_at": now,
                "run_id": run_id,
            }
        )
        context.log.error(f"quarantined {d.file.remote.path}: {d.detail}")
    return pl.DataFrame(quarantined, schema=QUARANTINED_FILES.polars_schema)


def _files_markdown(landing: PartitionLanding) -> str:
    return "\n".join(
        ["| file | bytes | modified (UTC) | status | sha256 |", "|---|---:|---|---|---|"]
        + [
            f"| {d.file.remote.path} | {d.file.remote.size} | {_utc(d.file.remote.mtime):%Y-%m-%d %H:%M} | "
            f"{d.status} | {(d.landed.sha256[:12] if d.landed else '')} |"
            for d in landing.decisions
        ]
    )


@dg.asset(
    key=RAW_FILES_KEY,
    group_name=GROUP,
    partitions_def=school_year_subject_partitions,
    kinds={"sftp", "csv"},
    owners=OWNERS,
    description=(
        "The i-Ready Diagnostic Results CSV files of one school year and subject, downloaded from the "
        "vendor's SFTP server into the landing area with their size and sha256. Per region the newest "
        "file whose own Academic Year matches the partition is selected; stale rollover copies, "
        "superseded and unreadable files are recorded in aptool.iready_landed_files and refused files "
        "are quarantined. The blocking check `file_accepted` stops the load when no acceptable file "
        "exists, so the previously published data stays in place."
    ),
    check_specs=[
        dg.AssetCheckSpec(
            FILE_ACCEPTED_CHECK,
            asset=RAW_FILES_KEY,
            blocking=True,
            description="Every region has a current, readable diagnostic file for the partition.",
        )
    ],
    retry_policy=STEP_RETRY_POLICY,  # service failures: resilience.failures.retry_as_fits
)
@retry_as_fits
def raw_diagnostic_files(
    context: dg.AssetExecutionContext,
    iready_sftp: IReadySFTPResource,
    warehouse: WarehouseResource,
    platform: PlatformResource,
) -> dg.MaterializeResult:
    school_year, subject = split_year_subject_key(context.partition_key)
    settings = platform.settings()
    with iready_sftp.session() as sftp:
        files = diagnostic_files(sftp.list_files(), settings.school_year)
        context.log.info(f"{len(files)} diagnostic files on the server; landing {subject} {school_year}")
        landing = land_partition(sftp, files, settings.landing_dir, school_year, subject)

    now = dt.datetime.now(dt.UTC)
    run_id = context.run.run_id
    writes = [
        TableWrite(
            LANDED_FILES,
            _landing_rows(landing, run_id, now),
            {"run_id": run_id, "school_year": school_year, "subject": subject},
        )
    ]
    problems = landing.problems
    if problems:
        quarantined = _quarantine_refused(context, landing, settings.landing_dir, run_id, now)
        writes.append(
            TableWrite(
                QUARANTINED_FILES, quarantined, {"run_id": run_id, "school_year": school_year, "subject": subject}
            )
        )
    warehouse.get().write(*writes)

    for d in landing.decisions:
        context.log.info(f"{d.file.remote.path} ({d.file.remote.size} bytes): {d.status} {d.detail}".rstrip())
    selected = landing.selected
    return dg.MaterializeResult(
        metadata={
            "files": dg.MetadataValue.md(_files_markdown(landing)),
            "selected_files": len(selected),
            "bytes_landed": sum(d.landed.size for d in selected if d.landed),
            "sha256": ", ".join(d.landed.sha256 for d in selected if d.landed),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=FILE_ACCEPTED_CHECK,
                passed=not problems,
                severity=dg.AssetCheckSeverity.ERROR,
                description="; ".join(problems) if problems else f"{len(selected)} file(s) accepted",
                metadata={"problems": len(problems), "quarantined_files": len(landing.refused)},
            )
        ],
    )


def latest_selected_files(warehouse, school_year: int, subject: str) -> pl.DataFrame:
    """The files chosen by the most recent landing of this partition that selected any (the landing
    retention keeps exactly these, by the same rule)."""
    landed = warehouse.read_table(LANDED_FILES, where={"school_year": school_year, "subject": subject})
    return current_selection(landed).sort("remote_path")


def _parse_landed_files(
    context: dg.AssetExecutionContext,
    files: pl.DataFrame,
    school_year: int,
    subject: str,
    windows: AssessmentWindows,
    loaded_at: dt.datetime,
) -> ParsedDiagnostics:
    """Every selected file of the partition parsed, stacked into one result (row counts added up)."""
    parts: list[ParsedDiagnostics] = []
    for row in files.iter_rows(named=True):
        path = Path(row["local_path"])
        if not path.exists():
            raise dg.Failure(
                description=f"landed file for {row['remote_path']} is missing at {path}; "
                "re-materialize iready/raw_diagnostic_files for this partition"
            )
        parsed = parse_diagnostic_file(
            path,
            subject=subject,
            source_file=row["remote_path"],
            expected_academic_year=school_year,
            windows=windows,
            loaded_at=loaded_at,
        )
        parts.append(parsed)
        context.log.info(
            f"{row['remote_path']}: {parsed.total_rows} rows, {parsed.results.height} loaded, "
            f"{parsed.rejected.height} rejected, {parsed.duplicate_rows_collapsed} duplicates collapsed"
        )
    return ParsedDiagnostics(
        results=pl.concat([p.results for p in parts], how="vertical_relaxed"),
        rejected=pl.concat([p.rejected for p in parts], how="vertical_relaxed"),
        total_rows=sum(p.total_rows for p in parts),
        duplicate_rows_collapsed=sum(p.duplicate_rows_collapsed for p in parts),
        academic_years=sorted({y for p in parts for y in p.academic_years}),
        unknown_columns=sorted({c for p in parts for c in p.unknown_columns}),
        cell_problems=pl.concat([p.cell_problems for p in parts], how="vertical_relaxed"),
    )


@dg.asset(
    key=DIAGNOSTIC_RESULTS_KEY,
    group_name=GROUP,
    partitions_def=school_year_subject_partitions,
    deps=[RAW_FILES_KEY, dg.AssetDep(STUDENTS_KEY, partition_mapping=YEAR_OF_A_FILE)],
    kinds={"polars", "pandera", "duckdb", "postgres"},
    owners=OWNERS,
    description=(
        "aptool.iready_diagnostic_results: one row per completed diagnostic, parsed by header name from "
        "every vendor layout, validated with a pandera schema. The file's Student ID is kept as "
        "vendor_student_id and mapped to the Aeries StudentID through aptool.students by "
        "APTOOL_IREADY_ID_FIELD (null when no student matches). Rows whose key, overall scale score or "
        "overall relative placement is unusable go to aptool.iready_rejected_rows with the reason; any other "
        "unreadable cell is published as null and listed in aptool.iready_cell_problems. Rows repeating a "
        "diagnostic are collapsed (the later row wins) unless their placements conflict. The partition is "
        "replaced atomically."
    ),
    metadata={"dagster/column_schema": column_schema(DIAGNOSTIC_RESULTS)},
)
def iready_diagnostic_results(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    platform: PlatformResource,
) -> dg.MaterializeResult:
    school_year, subject = split_year_subject_key(context.partition_key)
    wh = warehouse.get()
    files = latest_selected_files(wh, school_year, subject)
    if files.height == 0:
        raise dg.Failure(
            description=f"no accepted i-Ready {subject} file has been landed for {school_year}; "
            "materialize iready/raw_diagnostic_files for this partition first"
        )

    loaded_at = dt.datetime.now(dt.UTC)
    parsed = _parse_landed_files(context, files, school_year, subject, platform.settings().windows, loaded_at)
    id_field = platform.iready_id_field
    result_df = map_vendor_ids(parsed.results, roster_ids(wh, school_year), id_field)
    matched = int(result_df.get_column("student_id").is_not_null().sum())
    context.log.info(f"{matched} of {result_df.height} rows matched an Aeries student by {id_field}")
    problems_df = parsed.cell_problems.with_columns(
        pl.lit(school_year, pl.Int32).alias("academic_year"),
        pl.lit(subject).alias("subject"),
        pl.lit(loaded_at).alias("recorded_at"),
    )
    rejected_df = parsed.rejected.with_columns(
        pl.lit(school_year, pl.Int32).alias("academic_year"),
        pl.lit(subject).alias("subject"),
        pl.lit(loaded_at).alias("rejected_at"),
    )
    slice_ = {"academic_year": school_year, "subject": subject}
    source_files_cursor = ", ".join(files.get_column("remote_path").to_list())
    wh.write(
        TableWrite(DIAGNOSTIC_RESULTS, result_df, slice_),
        TableWrite(REJECTED_ROWS, rejected_df, slice_),
        TableWrite(CELL_PROBLEMS, problems_df, slice_),
        sync_state(
            "iready",
            f"diagnostic_results/{school_year}/{subject}",
            cursor=source_files_cursor,
            detail=f"{result_df.height} rows loaded, {rejected_df.height} rejected, "
            f"{problems_df.height} cells unreadable",
        ),
    )

    by_reason = (
        rejected_df.group_by(pl.col("reason").str.split(":").list.first().str.strip_chars().alias("code"))
        .len()
        .iter_rows()
    )
    reasons = dict(by_reason)
    if parsed.unknown_columns:
        context.log.warning(f"unknown columns kept out of the table: {sorted(parsed.unknown_columns)}")
    return dg.MaterializeResult(
        metadata=table_metadata(
            DIAGNOSTIC_RESULTS,
            result_df.height,
            {
                "rows_in_files": parsed.total_rows,
                "rows_rejected": rejected_df.height,
                "rejected_by_reason": counts_table(reasons),
                "duplicate_rows_collapsed": parsed.duplicate_rows_collapsed,
                "cells_unreadable": problems_df.height,
                "cell_problems_by_column": counts_table(
                    dict(problems_df.group_by("column_name").len().iter_rows()), "column"
                ),
                "id_field": id_field,
                "rows_matched_to_students": matched,
                "students": result_df.get_column("student_id").drop_nulls().n_unique(),
                "unknown_columns": ", ".join(sorted(parsed.unknown_columns)) or "none",
                "student_id_preview": dg.MetadataValue.json(id_preview(result_df)),
                "source_files": ", ".join(files.get_column("remote_path").to_list()),
            },
        )
    )
