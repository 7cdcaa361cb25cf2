"""The SFTP sensor against a real OpenSSH server: new, rewritten, settling and empty files."""

from __future__ import annotations

import json
import os

import dagster as dg
import pytest

from aptool_assets.resources import PlatformResource
from aptool_assets.sources.iready.files import DiagnosticFile
from aptool_assets.sources.iready.resources import IReadySFTPResource
from aptool_assets.sources.iready.sensors import iready_sftp_sensor, partition_run_requests
from aptool_assets.sources.iready.sftp_tree import RemoteFile
from aptool_assets_tests.conftest import evaluate_sensor
from aptool_assets_tests.iready_helpers import write_file, year_dir

YEAR = 2026
ELA = "i-ready_inform_results_reading_english_CONFIDENTIAL.csv"


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture
def tick(sftp_server, sftp_test_dir, instance):
    """Evaluate the sensor once with a given cursor; returns (result, new cursor)."""
    resources = {
        "iready_sftp": sftp_server.resource(remote_dir=sftp_server.remote_path(sftp_test_dir)),
        "platform": PlatformResource(school_year=YEAR),
    }

    def _tick(cursor: str | None):
        result = evaluate_sensor(iready_sftp_sensor, cursor=cursor, resources=resources, instance=instance)
        return result, result.cursor if isinstance(result, dg.SensorResult) else cursor

    return _tick


def partition_keys(result) -> list[str]:
    return sorted(str(r.partition_key) for r in result.run_requests)


def test_new_file_is_requested_once_it_settles(tick, sftp_test_dir):
    write_file(sftp_test_dir, "Current_Year", ELA, YEAR, "ela", layout="2026-27", mtime=1_790_000_000)
    first, cursor = tick(None)
    assert first.run_requests == []  # first sight: could still be uploading
    second, cursor = tick(cursor)
    assert partition_keys(second) == ["2026|ela"]
    third, _ = tick(cursor)
    assert third.run_requests == []  # nothing changed: no duplicate load


def test_rewritten_file_requests_a_new_run_with_a_new_key(tick, sftp_test_dir):
    path = write_file(sftp_test_dir, "Current_Year", ELA, YEAR, "ela", layout="2026-27", mtime=1_790_000_000)
    _, cursor = tick(None)
    first, cursor = tick(cursor)
    os.utime(path, (1_790_086_400, 1_790_086_400))  # the vendor's nightly rewrite
    settling, cursor = tick(cursor)
    assert settling.run_requests == []
    rewritten, cursor = tick(cursor)
    assert partition_keys(rewritten) == ["2026|ela"]
    assert rewritten.run_requests[0].run_key != first.run_requests[0].run_key


def test_file_still_being_written_is_skipped(tick, sftp_test_dir):
    path = write_file(sftp_test_dir, "Current_Year", ELA, YEAR, "ela", layout="2026-27", n_students=5)
    _, cursor = tick(None)
    with open(path, "a") as fh:  # the upload goes on between two listings
        fh.write("more bytes\n")
    growing, cursor = tick(cursor)
    assert growing.run_requests == []
    settled, _ = tick(cursor)
    assert partition_keys(settled) == ["2026|ela"]


def test_empty_files_and_other_exports_are_never_requested(tick, sftp_test_dir):
    folder = year_dir(sftp_test_dir, "Current_Year")
    (folder / "i-ready_inform_results_math_CONFIDENTIAL.csv").write_bytes(b"")
    (folder / "personalized_instruction_by_lesson_math_CONFIDENTIAL.csv").write_text("Student ID\n1\n")
    (folder / "diagnostic_and_instruction_ela_ytd_window.csv").write_text("Student ID\n1\n")
    for f in folder.iterdir():
        f.chmod(0o644)
    _, cursor = tick(None)
    result, cursor = tick(cursor)
    assert result.run_requests == []
    assert json.loads(cursor)["seen"]  # the empty diagnostic file is watched, not loaded


def test_one_run_per_partition_and_archive_years(tick, sftp_test_dir):
    write_file(sftp_test_dir, "Current_Year", ELA, YEAR, "ela", layout="2026-27")
    write_file(
        sftp_test_dir, "Current_Year", "i-ready_inform_results_math_CONFIDENTIAL.csv", YEAR, "math", layout="2026-27"
    )
    write_file(sftp_test_dir, "2025", "diagnostic_results_ela_CONFIDENTIAL.csv", 2025, "ela")
    # An old-name file beside the new one in the same partition: still one run for the partition.
    write_file(sftp_test_dir, "Current_Year", "diagnostic_results_ela_CONFIDENTIAL.csv", YEAR - 1, "ela")
    _, cursor = tick(None)
    result, _ = tick(cursor)
    assert partition_keys(result) == ["2025|ela", "2026|ela", "2026|math"]
    keys = [r.run_key for r in result.run_requests]
    assert len(set(keys)) == 3


def test_run_keys_are_idempotent_for_the_same_files(tick, sftp_test_dir):
    write_file(sftp_test_dir, "Current_Year", ELA, YEAR, "ela", layout="2026-27", mtime=1_790_000_000)
    _, cursor = tick(None)
    a, _ = tick(cursor)
    b, _ = tick(cursor)  # a retried tick with the same cursor asks for the same run key
    assert [r.run_key for r in a.run_requests] == [r.run_key for r in b.run_requests]


def test_unconfigured_sftp_skips_with_a_reason(instance):
    result = evaluate_sensor(
        iready_sftp_sensor,
        resources={"iready_sftp": IReadySFTPResource(), "platform": PlatformResource(school_year=YEAR)},
        instance=instance,
    )
    assert isinstance(result, dg.SkipReason)
    assert "IREADY_SFTP_HOST" in result.skip_message


def test_files_of_a_year_without_a_partition_stay_on_the_server_with_a_warning():
    """School-year partitions run from 2020 through next year: a 2019 archive folder has nowhere to land."""
    warnings: list[str] = []

    class Log:
        def warning(self, message: str) -> None:
            warnings.append(message)

    def file(year: int) -> DiagnosticFile:
        remote = RemoteFile(path=f"/exports/{year}/diagnostic_results_ela_CONFIDENTIAL.csv", size=10, mtime=1)
        return DiagnosticFile(remote, "ela", year, str(year), "")

    by_partition = {(2019, "ela"): [file(2019)], (2024, "ela"): [file(2024)]}
    requests = partition_run_requests(by_partition, "sftp_sensor", Log())
    assert [str(r.partition_key) for r in requests] == ["2024|ela"]
    assert len(warnings) == 1 and "[2019]" in warnings[0] and "2020" in warnings[0]
