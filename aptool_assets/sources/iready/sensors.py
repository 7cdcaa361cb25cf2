"""Notice new or rewritten i-Ready files on the SFTP server.

The cursor (JSON) remembers each diagnostic file's (size, mtime) twice: as last *seen* and as
last *requested*. A file is requested only once its fingerprint is the same in two consecutive
listings, so a file still being uploaded is skipped until it settles; a zero-byte file is never
requested. One run per partition per tick, keyed by the fingerprints it covers, so a retried
tick never launches the same load twice.
"""

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable

import dagster as dg

from aptool_assets.partitions import FIRST_SCHOOL_YEAR, known_school_years, year_subject_key
from aptool_assets.resilience.breaker import BreakerOpen
from aptool_assets.resources import PlatformResource
from aptool_assets.sources.iready.files import DiagnosticFile, diagnostic_files
from aptool_assets.sources.iready.jobs import iready_sync_job
from aptool_assets.sources.iready.resources import IReadySFTPResource

SENSOR_INTERVAL_S = 300


def run_key_for(school_year: int, subject: str, files: Iterable[DiagnosticFile]) -> str:
    digest = hashlib.sha1(json.dumps(sorted(f.fingerprint for f in files)).encode(), usedforsecurity=False).hexdigest()[
        :16
    ]
    return f"iready-{school_year}-{subject}-{digest}"


def partition_run_requests(
    by_partition: dict[tuple[int, str], list[DiagnosticFile]], reason: str, log=None
) -> list[dg.RunRequest]:
    """One run per (school year, subject); files of a year without a partition (before FIRST_SCHOOL_YEAR, or
    after next school year) are left on the server with a warning."""
    years = set(known_school_years(y for y, _ in by_partition))
    outside = sorted({y for y, _ in by_partition} - years)
    if outside and log is not None:
        log.warning(
            f"i-Ready files of school year(s) {outside} not loaded: school-year partitions run from "
            f"{FIRST_SCHOOL_YEAR} through the next school year"
        )
    return [
        dg.RunRequest(
            run_key=run_key_for(year, subject, files),
            partition_key=year_subject_key(year, subject),
            tags={"aptool/trigger": reason, "aptool/files": str(len(files))},
        )
        for (year, subject), files in sorted(by_partition.items())
        if year in years
    ]


@dg.sensor(
    job=iready_sync_job,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Lists the i-Ready SFTP tree and requests a load for each partition whose diagnostic file is "
        "new or rewritten (changed size or mtime) and has stopped changing."
    ),
)
def iready_sftp_sensor(
    context: dg.SensorEvaluationContext, iready_sftp: IReadySFTPResource, platform: PlatformResource
) -> dg.SensorResult | dg.SkipReason:
    if not iready_sftp.is_configured():
        return dg.SkipReason("i-Ready SFTP is not configured (IREADY_SFTP_HOST, IREADY_SFTP_USERNAME, credentials)")
    if blocked := iready_sftp.blocked_reason():
        return dg.SkipReason(blocked)
    cursor = json.loads(context.cursor) if context.cursor else {}
    seen: dict[str, list[int]] = cursor.get("seen", {})
    requested: dict[str, list[int]] = cursor.get("requested", {})

    try:
        listing = iready_sftp.list_files()
    except BreakerOpen as exc:  # opened by this listing or by a run meanwhile
        return dg.SkipReason(str(exc))
    files = diagnostic_files(listing, platform.settings().school_year)
    now_seen: dict[str, list[int]] = {}
    ready: dict[tuple[int, str], list[DiagnosticFile]] = defaultdict(list)
    settling = empty = 0
    for f in files:
        fp = [f.remote.size, f.remote.mtime]
        now_seen[f.remote.path] = fp
        if f.remote.size == 0:
            empty += 1
        elif requested.get(f.remote.path) == fp:
            continue
        elif seen.get(f.remote.path) == fp:
            ready[(f.school_year, f.subject)].append(f)
        else:
            settling += 1

    for partition_files in ready.values():
        for f in partition_files:
            requested[f.remote.path] = [f.remote.size, f.remote.mtime]
    # Forget files that disappeared from the server so the cursor does not grow forever.
    requested = {p: fp for p, fp in requested.items() if p in now_seen}
    new_cursor = json.dumps({"seen": now_seen, "requested": requested}, sort_keys=True)

    context.log.info(
        f"{len(files)} diagnostic files listed: {sum(map(len, ready.values()))} ready to load, "
        f"{settling} new or still changing, {empty} empty"
    )
    if not ready:
        return dg.SensorResult(
            skip_reason=f"no settled new or rewritten diagnostic files ({settling} still changing, {empty} empty)",
            cursor=new_cursor,
        )
    return dg.SensorResult(
        run_requests=partition_run_requests(ready, "sftp_sensor", context.log),
        cursor=new_cursor,
    )
