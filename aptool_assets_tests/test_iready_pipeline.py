"""The i-Ready path end to end: real sshd → landing → parse/validate → warehouse (DuckDB and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from aptool_assets import definitions
from aptool_assets.metrics.assets import ACADEMIC_RISK_KEY
from aptool_assets.partitions import year_subject_key
from aptool_assets.resilience.policy import IREADY_POLICY
from aptool_assets.resources import PlatformResource
from aptool_assets.storage.resources import WarehouseResource
from aptool_assets.storage.warehouse import TableWrite, open_warehouse
from aptool_assets.tables.aeries import SCHOOLS, STUDENTS
from aptool_assets.tables.iready import (
    CELL_PROBLEMS,
    DIAGNOSTIC_RESULTS,
    LANDED_FILES,
    QUARANTINED_FILES,
    REJECTED_ROWS,
)
from aptool_assets.tables.metrics import STUDENT_ACADEMIC_RISK
from aptool_assets_tests.conftest import with_default_resources
from aptool_assets_tests.iready_helpers import diagnostics, write_file
from aptool_demo.district import append_invalid_rows

YEAR = 2026
ELA = "i-ready_inform_results_reading_english_CONFIDENTIAL.csv"
SCHOOL_NAME = "Test Elementary"


class IReadyEnv:
    def __init__(self, server, root: Path, warehouse_url: str, landing: Path, instance):
        self.root = root
        self.instance = instance
        self.warehouse = open_warehouse(warehouse_url)
        self.landing = landing
        self.resources = with_default_resources(
            iready_sftp=server.resource(
                remote_dir=server.remote_path(root), resilience=IREADY_POLICY.but(retry_base_delay_s=0.01)
            ),
            warehouse=WarehouseResource(database_url=warehouse_url),
            platform=PlatformResource(school_year=YEAR, landing_dir=str(landing)),
        )

    def load(self, subject: str = "ela", year: int = YEAR) -> dg.ExecuteInJobResult:
        return dg.materialize(
            assets=[*definitions.ASSETS, *definitions.ASSET_CHECKS],
            selection=dg.AssetSelection.groups("iready"),
            partition_key=year_subject_key(year, subject),
            resources=self.resources,
            instance=self.instance,
            raise_on_error=False,
        )

    def risk(self, year: int = YEAR) -> dg.ExecuteInJobResult:
        return dg.materialize(
            assets=[*definitions.ASSETS, *definitions.ASSET_CHECKS],
            selection=dg.AssetSelection.assets(ACADEMIC_RISK_KEY),
            partition_key=str(year),
            resources=self.resources,
            instance=self.instance,
        )

    def published(self, subject: str = "ela", year: int = YEAR) -> pl.DataFrame:
        return self.warehouse.read_table(DIAGNOSTIC_RESULTS, where={"academic_year": year, "subject": subject})

    def seed_roster(self, student_ids, school_name: str = SCHOOL_NAME) -> pl.DataFrame:
        """Publish ``aptool.schools`` and ``aptool.students`` as Aeries would: StudentID ``id``, StudentNumber
        ``id % 1000 + 1`` at school 1, SSID ``"00" + id * 7``; returns the students written."""
        ids = sorted({int(i) for i in student_ids})
        now = dt.datetime.now(dt.UTC)
        students = pl.DataFrame(
            {
                "student_id": ids,
                "school_code": 1,
                "student_number": [i % 1000 + 1 for i in ids],
                "state_student_id": [f"00{i * 7}" for i in ids],
                "first_name": "x",
                "last_name": "y",
                "grade": 3,
                "school_enter_date": dt.date(YEAR, 8, 15),
                "school_leave_date": None,
                "inactive_status_code": "",
                "is_active": True,
                "source_updated_at": now,
            }
        )
        schools = pl.DataFrame(
            {"school_code": [1], "name": [school_name], "inactive_status_code": [""], "low_grade": [0]}
        ).with_columns(
            pl.lit(8).alias("high_grade"),
            pl.lit("").alias("attendance_type"),
            pl.lit("Negative").alias("attendance_reporting"),
            pl.lit(True).alias("is_real_school"),
            pl.lit(now).alias("source_updated_at"),
        )
        self.warehouse.write(TableWrite(SCHOOLS, schools), TableWrite(STUDENTS, students))
        return students


@pytest.fixture
def iready_env(sftp_server, sftp_test_dir, warehouse_url, tmp_path):
    with dg.instance_for_test() as instance:
        yield IReadyEnv(sftp_server, sftp_test_dir, warehouse_url, tmp_path / "landing", instance)


def checks_by_name(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_happy_path_loads_rows_quarantines_bad_rows_and_passes_checks(iready_env):
    path = write_file(iready_env.root, "Current_Year", ELA, YEAR, "ela", layout="2026-27")
    append_invalid_rows(path)  # two bad rows and a repeated diagnostic with an impossible Percentile 0
    expected = diagnostics(YEAR, "ela").height
    iready_env.seed_roster(diagnostics(YEAR, "ela").get_column("student_id"))

    result = iready_env.load()
    assert result.success
    checks = checks_by_name(result)
    assert {
        "file_accepted",
        "schema_valid",
        "key_unique",
        "scale_scores_in_range",
        "relative_placement_valid",
        "rejected_ratio_below_threshold",
        "fresh",
        "iready_students_matched",
        "cells_readable",
    } <= set(checks)
    # The repeat is collapsed into its diagnostic; its Percentile is published as null and reported (a warning).
    unreadable = checks.pop("cells_readable")
    assert not unreadable.passed and unreadable.severity == dg.AssetCheckSeverity.WARN
    assert "percentile percentile_out_of_range (1)" in unreadable.description
    assert all(c.passed for c in checks.values()), {n: c.description for n, c in checks.items() if not c.passed}
    assert "100.0%" in checks["iready_students_matched"].description

    published = iready_env.published()
    assert published.height == expected
    assert (
        published.get_column("student_id").to_list()
        == published.get_column("vendor_student_id").cast(pl.Int64).to_list()
    )
    problems = iready_env.warehouse.read_table(CELL_PROBLEMS)
    assert problems.select("column_name", "reason").rows() == [("percentile", "percentile_out_of_range")]
    assert published.get_column("source_file").unique().to_list() == [
        f"{iready_env.resources['iready_sftp'].remote_dir}/exports/ca-test_usd/Current_Year/{ELA}"
    ]
    rejected = iready_env.warehouse.read_table(REJECTED_ROWS)
    assert sorted(r.split(":")[0] for r in rejected.get_column("reason")) == [
        "non_numeric_student_id",
        "scale_score_out_of_range",
    ]
    assert rejected.get_column("line_number").to_list() == sorted(rejected.get_column("line_number").to_list())

    landed = iready_env.warehouse.read_table(LANDED_FILES)
    assert landed.get_column("status").to_list() == ["selected"]
    assert landed.item(0, "sha256") == hashlib.sha256(path.read_bytes()).hexdigest()
    assert landed.item(0, "size_bytes") == path.stat().st_size


def test_rerun_is_idempotent_and_a_rewrite_replaces_the_partition(iready_env):
    write_file(iready_env.root, "Current_Year", ELA, YEAR, "ela", layout="2026-27", n_students=30)
    write_file(
        iready_env.root,
        "Current_Year",
        "i-ready_inform_results_math_CONFIDENTIAL.csv",
        YEAR,
        "math",
        layout="2026-27",
        n_students=12,
    )
    assert iready_env.load("ela").success and iready_env.load("math").success
    first = iready_env.published().height
    assert iready_env.load("ela").success
    assert iready_env.published().height == first

    write_file(iready_env.root, "Current_Year", ELA, YEAR, "ela", layout="2026-27", n_students=10, seed=9)
    assert iready_env.load("ela").success
    assert iready_env.published().height == diagnostics(YEAR, "ela", n_students=10, seed=9).height
    assert iready_env.published("math").height == diagnostics(YEAR, "math", n_students=12).height  # untouched


def test_stale_rollover_file_is_refused_and_previous_data_stays(iready_env):
    write_file(iready_env.root, "Current_Year", ELA, YEAR, "ela", layout="2026-27")
    assert iready_env.load().success
    before = iready_env.published()

    # July: Current_Year still holds last year's file, rewritten by the vendor.
    write_file(iready_env.root, "Current_Year", ELA, YEAR - 1, "ela", layout="2026-27", seed=3)
    result = iready_env.load()
    assert not result.success
    check = checks_by_name(result)["file_accepted"]
    assert not check.passed
    assert "2025-2026" in check.description and "stale" in check.description.lower()
    assert iready_env.published().equals(before)  # nothing published was touched

    quarantined = iready_env.warehouse.read_table(QUARANTINED_FILES)
    assert quarantined.height == 1
    assert "2025-2026" in quarantined.item(0, "reason")
    assert Path(quarantined.item(0, "quarantine_path")).exists()
    assert Path(quarantined.item(0, "quarantine_path") + ".reason.txt").exists()


def test_file_missing_a_required_column_is_quarantined_with_the_reason(iready_env):
    path = write_file(iready_env.root, "Current_Year", ELA, YEAR, "ela", layout="2026-27")
    assert iready_env.load().success
    before = iready_env.published()

    lines = path.read_text().splitlines()
    lines[0] = lines[0].replace("Overall Scale Score", "Overall Score")
    path.write_text("\n".join(lines) + "\n")
    result = iready_env.load()
    assert not result.success
    check = checks_by_name(result)["file_accepted"]
    assert "Overall Scale Score" in check.description
    assert iready_env.published().equals(before)
    reasons = iready_env.warehouse.read_table(QUARANTINED_FILES).get_column("reason").to_list()
    assert len(reasons) == 1 and "Overall Scale Score" in reasons[0]


def test_old_and_new_names_side_by_side_load_the_file_of_the_right_year(iready_env):
    # After the FY27 rename the old-name file (last year's content) stayed beside the new one.
    write_file(
        iready_env.root, "Current_Year", "diagnostic_results_ela_CONFIDENTIAL.csv", YEAR - 1, "ela", mtime=1_790_000_000
    )
    write_file(iready_env.root, "Current_Year", ELA, YEAR, "ela", layout="2026-27", mtime=1_780_000_000)
    result = iready_env.load()
    assert result.success, checks_by_name(result)["file_accepted"].description
    assert iready_env.published().get_column("source_file").str.ends_with(ELA).all()
    statuses = dict(iready_env.warehouse.read_table(LANDED_FILES).select("remote_path", "status").iter_rows())
    assert sorted(statuses.values()) == ["selected", "stale"]


def test_no_file_for_the_partition_fails_without_touching_data(iready_env):
    result = iready_env.load("math")
    assert not result.success
    assert "no i-Ready math diagnostic file" in checks_by_name(result)["file_accepted"].description


def test_academic_risk_is_computed_from_the_published_results(iready_env):
    write_file(iready_env.root, "Current_Year", ELA, YEAR, "ela", layout="2026-27", n_students=20)
    iready_env.seed_roster([*diagnostics(YEAR, "ela", n_students=20).get_column("student_id"), 1, 2])
    assert iready_env.load().success
    assert iready_env.risk().success
    risk = iready_env.warehouse.read_table(STUDENT_ACADEMIC_RISK, where={"school_year": YEAR})
    published = iready_env.published()
    assert risk.height == published.get_column("student_id").n_unique() + 2  # two rostered students without results
    assert risk.filter(pl.col("student_id").is_in([1, 2])).get_column("overall_risk").to_list() == ["UNKNOWN"] * 2
    # spot-check one student against the rule: latest completion date wins
    sid = published.get_column("student_id")[0]
    latest = published.filter(pl.col("student_id") == sid).sort(["completion_date", "overall_scale_score"])[-1]
    row = risk.filter(pl.col("student_id") == sid)
    assert row.item(0, "ela_relative_placement") == latest.item(0, "overall_relative_placement")
    assert row.item(0, "math_risk") is None


def test_the_sensor_job_lands_parses_and_checks(iready_env):
    """`iready_sync` is what the sensor and schedules launch: it must carry the assets and their checks."""
    write_file(iready_env.root, "Current_Year", ELA, YEAR, "ela", layout="2026-27")
    job = definitions.defs.resolve_job_def("iready_sync")
    result = job.execute_in_process(
        partition_key=year_subject_key(YEAR, "ela"),
        instance=iready_env.instance,
        resources=iready_env.resources,
    )
    assert result.success
    assert {e.check_name for e in result.get_asset_check_evaluations()} >= {"file_accepted", "schema_valid", "fresh"}
    assert iready_env.published().height == diagnostics(YEAR, "ela").height


@pytest.mark.parametrize("id_field", ["student_number", "state_student_id"])
def test_files_keyed_by_another_aeries_id_map_through_the_roster(iready_env, id_field):
    """Contract v2 §2: with APTOOL_IREADY_ID_FIELD the file's Student ID is looked up in that roster column; the
    delivered value stays in vendor_student_id, risk follows the mapped StudentID."""
    roster = iready_env.seed_roster(diagnostics(YEAR, "ela", n_students=20).get_column("student_id"))
    vendor = dict(zip(roster.get_column("student_id"), roster.get_column(id_field).cast(pl.Utf8), strict=True))
    records = diagnostics(YEAR, "ela", n_students=20).with_columns(
        pl.col("student_id").replace_strict(vendor, return_dtype=pl.Utf8).alias("vendor_student_id"),
        pl.lit(SCHOOL_NAME).alias("school_name"),
    )
    write_file(iready_env.root, "Current_Year", ELA, YEAR, "ela", layout="2026-27", records=records.drop("student_id"))
    iready_env.resources["platform"] = PlatformResource(
        school_year=YEAR, landing_dir=str(iready_env.landing), iready_id_field=id_field
    )
    result = iready_env.load()
    assert result.success
    assert checks_by_name(result)["iready_students_matched"].passed
    published = iready_env.published()
    expected = records.select("vendor_student_id", "student_id").unique()
    got = published.select("vendor_student_id", "student_id").unique()
    assert got.sort("vendor_student_id").equals(expected.sort("vendor_student_id"))
    assert iready_env.risk().success
    risk = iready_env.warehouse.read_table(STUDENT_ACADEMIC_RISK, where={"school_year": YEAR})
    assert set(risk.drop_nulls("ela_risk").get_column("student_id")) == set(expected.get_column("student_id"))


def test_a_wrong_id_field_fails_the_match_check_and_names_the_better_field(iready_env):
    """Files keyed by StudentNumber loaded with the default student_id: nothing matches, the check fails (ERROR
    under 90%) and says which APTOOL_IREADY_ID_FIELD would match; the rows are kept, with a null student_id."""
    roster = iready_env.seed_roster(diagnostics(YEAR, "ela", n_students=20).get_column("student_id"))
    numbers = dict(zip(roster.get_column("student_id"), roster.get_column("student_number").cast(pl.Utf8), strict=True))
    records = diagnostics(YEAR, "ela", n_students=20).with_columns(
        pl.col("student_id").replace_strict(numbers, return_dtype=pl.Utf8).alias("vendor_student_id"),
        pl.lit(SCHOOL_NAME).alias("school_name"),
    )
    write_file(iready_env.root, "Current_Year", ELA, YEAR, "ela", layout="2026-27", records=records.drop("student_id"))
    result = iready_env.load()
    check = checks_by_name(result)["iready_students_matched"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert "APTOOL_IREADY_ID_FIELD=student_number would match 100.0%" in check.description
    published = iready_env.published()
    assert published.height == records.height and published.get_column("student_id").null_count() == records.height
