"""Follow Aeries' StudentDataChanges feed (student, enrollment and program areas).

The feed takes a "since" time in the server's local time zone and returns IDs only. The cursor
keeps the server time of the previous poll; each poll asks from a little before it (overlap), so a
change committed while we were polling is not missed, and the run key (a hash of the changed
records) keeps the overlap from loading the same changes twice.

Student and enrollment changes re-pull the changed student records; program changes re-pull the
program records of the schools they were reported at, for the current school year (programs are
pulled per school, so one run covers every changed student of a school).
"""

import datetime as dt
import hashlib
import json

import dagster as dg

from aptool_assets.resilience.breaker import BreakerOpen
from aptool_assets.resources import PlatformResource
from aptool_assets.sources.aeries.client import AeriesResource
from aptool_assets.sources.aeries.jobs import aeries_program_changes_job, aeries_student_changes_job, aeries_year_job

AREAS = ("student", "enrollment", "program")
STUDENT_AREAS = ("student", "enrollment")  # the areas whose changes re-pull the student records
OVERLAP = dt.timedelta(minutes=10)
FIRST_LOOKBACK = dt.timedelta(days=1)
SENSOR_INTERVAL_S = 900


def server_now(info: dict) -> dt.datetime:
    """The server's local wall-clock time from systeminfo ("2021-03-03T11:13:38.9539491-08:00")."""
    raw = info["CurrentDateTime"]
    head, _, tail = raw.partition(".")
    offset = tail[-6:] if tail and tail[-6] in "+-" else ""
    return dt.datetime.fromisoformat(head + offset).replace(tzinfo=None)


@dg.sensor(
    jobs=[aeries_student_changes_job, aeries_year_job, aeries_program_changes_job],
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Polls Aeries StudentDataChanges (student, enrollment, program) and re-pulls only the changed "
    "students; enrollment changes also refresh the year's enrollment stints and attendance summary, program "
    "changes the program records of the schools they were reported at.",
)
def aeries_student_changes_sensor(
    context: dg.SensorEvaluationContext, aeries: AeriesResource, platform: PlatformResource
):
    if not aeries.is_configured():
        return dg.SkipReason("Aeries is not configured (AERIES_BASE_URL, AERIES_CERT)")
    if blocked := aeries.blocked_reason():
        return dg.SkipReason(blocked)
    cursor = json.loads(context.cursor) if context.cursor else {}
    try:
        with aeries.client() as client:
            now = server_now(client.system_info())
            since = (
                dt.datetime.fromisoformat(cursor["server_time"]) - OVERLAP
                if "server_time" in cursor
                else now - FIRST_LOOKBACK
            )
            by_area = {area: client.student_data_changes(area, since) for area in AREAS}
    except BreakerOpen as exc:  # opened during this poll or by a run meanwhile; the cursor stays
        return dg.SkipReason(str(exc))
    changes = _pairs(r for area in STUDENT_AREAS for r in by_area[area])
    program_changes = _pairs(by_area["program"])
    new_cursor = json.dumps({"server_time": now.isoformat(timespec="seconds")})
    context.log.info(
        f"{len(changes)} changed student records, {len(program_changes)} with program changes, "
        f"since {since:%Y-%m-%d %H:%M} (server time)"
    )
    if not changes and not program_changes:
        return dg.SensorResult(
            skip_reason=f"no student, enrollment or program changes since {since:%Y-%m-%d %H:%M}", cursor=new_cursor
        )
    year = platform.settings().school_year
    requests = []
    if changes:
        digest = _digest(changes)
        tags = {"aptool/trigger": "student_data_changes", "aptool/changed_records": str(len(changes))}
        requests.append(
            dg.RunRequest(
                run_key=f"aeries-changes-{digest}",
                job_name=aeries_student_changes_job.name,
                partition_key=str(year),
                run_config={"ops": {"aptool__students": {"config": {"changed": [list(c) for c in changes]}}}},
                tags=tags,
            )
        )
        if by_area["enrollment"]:
            requests.append(
                dg.RunRequest(
                    run_key=f"aeries-enrollment-{year}-{digest}",
                    job_name=aeries_year_job.name,
                    partition_key=str(year),
                    tags=tags,
                )
            )
    if program_changes:
        schools = sorted({sc for sc, _ in program_changes})
        requests.append(
            dg.RunRequest(
                run_key=f"aeries-programs-{year}-{_digest(program_changes)}",
                job_name=aeries_program_changes_job.name,
                partition_key=str(year),
                run_config={"ops": {"aptool__student_programs": {"config": {"schools": schools}}}},
                tags={"aptool/trigger": "program_data_changes", "aptool/changed_records": str(len(program_changes))},
            )
        )
    return dg.SensorResult(run_requests=requests, cursor=new_cursor)


def _pairs(rows) -> list[tuple[int, int]]:
    """(SchoolCode, StudentID) of the feed's rows, distinct and sorted."""
    return sorted({(int(r["SchoolCode"]), int(r["StudentID"])) for r in rows})


def _digest(pairs: list[tuple[int, int]]) -> str:
    """The run key's part that makes a re-read of the same changes (the overlap) the same run."""
    return hashlib.sha1(json.dumps(pairs).encode(), usedforsecurity=False).hexdigest()[:16]
