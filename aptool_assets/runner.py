"""Materialize the platform in dependency order without the Dagster daemon (``aptool run``/``demo``).

It runs the very asset definitions the daemon would, one partition at a time, against the
resources configured in the environment, and reports progress and a one-line reason on failure.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import dagster as dg

from aptool_assets import definitions
from aptool_assets.metrics.assets import ACADEMIC_RISK_KEY, INTERVENTION_RANKING_KEY, STUDENT_ATTENDANCE_SUMMARY_KEY
from aptool_assets.metrics.dashboard import INDICATOR_KEY, STUDENT_GROUPS_KEY
from aptool_assets.metrics.outlook import IREADY_GROWTH_KEY, PROJECTION_KEY
from aptool_assets.partitions import FIRST_SCHOOL_YEAR, known_school_years, year_subject_key
from aptool_assets.redaction import scrub
from aptool_assets.sources.aeries.assets import (
    ABSENCE_CODES_KEY,
    ATTENDANCE_DAYS_KEY,
    CALENDAR_KEY,
    ENROLLMENT_KEY,
    HISTORY_KEY,
    SCHOOLS_KEY,
    STUDENT_PROGRAMS_KEY,
    STUDENTS_KEY,
)
from aptool_assets.sources.aeries.schedules import RANGE_END, RANGE_START
from aptool_assets.sources.iready.files import diagnostic_files
from aptool_assets.vocabulary import clip_to_school_year, school_year_bounds

YEAR_STAGE_LABEL = "absence codes, calendar, enrollment, programs, Aeries totals"
"""The Aeries stage of the school year (each table pulled with the year's DatabaseYear); after the roster,
whose student IDs the programs fall back to where a district refuses the whole-school call."""


class PipelineError(RuntimeError):
    """A step failed; the message is one line an operator can act on."""


@dataclass
class StepOutcome:
    step: str
    partition: str
    ok: bool
    detail: str
    metadata: dict[str, object] = field(default_factory=dict)
    label: str = ""
    seconds: float = 0.0
    rows: int | None = None  # rows published by the step's assets (IDs and counts only)
    rejected: int | None = None
    skipped: bool = False  # not run because an earlier step failed
    fix: str = ""  # what the operator can do about a failure
    error: str = ""  # the full error with its stack, shown with --debug only

    @property
    def status(self) -> str:
        return "skipped" if self.skipped else "ok" if self.ok else "FAILED"


@dataclass
class RunSummary:
    school_year: int
    steps: list[StepOutcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)

    @property
    def failures(self) -> list[StepOutcome]:
        return [s for s in self.steps if not s.ok and not s.skipped]

    def table(self) -> str:
        """The closing table of `aptool run`: step, status, rows, rejected, seconds."""
        names = [s.label or f"{s.step} {s.partition}".strip() for s in self.steps]
        width = max([len("step"), *map(len, names)])
        lines = [f"  {'step':<{width}}  {'status':<7}  {'rows':>8}  {'rejected':>8}  {'seconds':>7}"]
        for name, s in zip(names, self.steps, strict=True):
            rows = "–" if s.rows is None else str(s.rows)
            rejected = "–" if s.rejected is None else str(s.rejected)
            seconds = "–" if s.skipped else f"{s.seconds:.1f}"
            lines.append(f"  {name:<{width}}  {s.status:<7}  {rows:>8}  {rejected:>8}  {seconds:>7}")
        total_rows = sum(s.rows or 0 for s in self.steps)
        total_rejected = sum(s.rejected or 0 for s in self.steps)
        total_seconds = sum(s.seconds for s in self.steps)
        verdict = "ok" if self.ok else "FAILED"
        lines.append(f"  {'total':<{width}}  {verdict:<7}  {total_rows:>8}  {total_rejected:>8}  {total_seconds:>7.1f}")
        return "\n".join(lines)


def _value(meta: Mapping[str, object], key: str):
    v = meta.get(key)
    return getattr(v, "value", v)


_QUALIFIED_ERROR = re.compile(r"^(?:[\w]+\.)*(\w+): ")


def _one_line(text: str) -> str:
    """First line of an error, with Dagster's ``Failure`` wrapper and module paths stripped."""
    line = text.strip().splitlines()[0] if text.strip() else "unknown error"
    m = _QUALIFIED_ERROR.match(line)
    if m:
        rest = line[m.end() :]
        line = rest if m.group(1) == "Failure" else f"{m.group(1)}: {rest}"
    return line


def _failure_reason(result: dg.ExecuteInJobResult) -> tuple[str, str]:
    """One line for the operator, and the full error (with its stack) for --debug; both scrubbed of secrets."""
    for ev in result.get_asset_check_evaluations():
        if not ev.passed and ev.severity == dg.AssetCheckSeverity.ERROR:
            return scrub(f"{ev.asset_key.to_user_string()} check {ev.check_name} failed: {ev.description}"), ""
    for ev in result.all_events:
        if ev.event_type_value == "STEP_FAILURE":
            err = ev.event_specific_data.error
            text = (err.cause.message if err and err.cause else err.message if err else "") or ""
            return scrub(f"{ev.step_key} failed: {_one_line(text)}"), scrub(err.to_string() if err else "")
    return "run failed", ""


# What to do about a failure, by the error class or the text of its one-line reason. First match wins.
FIXES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), fix)
    for pattern, fix in (
        (
            r"BreakerOpen|circuit breaker open",
            "the service failed repeatedly and is paused until the half-open time shown; fix the cause in parentheses, "
            "then run again after that time",
        ),
        (
            r"AERIES_BASE_URL uses plain http",
            "set AERIES_BASE_URL to the district's https:// address (plain http:// only reaches this machine)",
        ),
        (
            r"AeriesAuthError|HTTP 40[13]\b",
            "check AERIES_CERT (the district's 32-character certificate) and that it may read this endpoint in Aeries",
        ),
        (
            r"AeriesMaintenance|HTTP 503",
            "Aeries is down for maintenance; run again later (the published tables are unchanged)",
        ),
        (
            r"Aeries(Unavailable|Connection|Timeout|Server|RateLimited)",
            "check AERIES_BASE_URL and that Aeries answers from this machine, then run again",
        ),
        (
            r"AeriesResponseError",
            "Aeries answered in an unexpected shape; check AERIES_BASE_URL points at the district's Aeries root",
        ),
        (
            r"SFTPHostKeyError|host key",
            "trust the server's key once: ssh-keyscan into a file, check its fingerprint, "
            "set IREADY_SFTP_KNOWN_HOSTS (README)",
        ),
        (
            r"SFTPAuthentication|Authentication failed",
            "check IREADY_SFTP_USERNAME and IREADY_SFTP_PASSWORD or IREADY_SFTP_PRIVATE_KEY",
        ),
        (
            r"SFTPFileTooLarge|IREADY_SFTP_MAX_FILE_MB",
            "check the file's size with the vendor; if it is genuine, raise IREADY_SFTP_MAX_FILE_MB",
        ),
        (
            r"SFTP(Unavailable|Transient)|Connection refused|timed out",
            "check IREADY_SFTP_HOST and IREADY_SFTP_PORT and that the server answers from this machine, then run again",
        ),
        (
            r"check file_accepted",
            "the file is quarantined with a .reason.txt under APTOOL_LANDING_DIR/quarantine/iready; "
            "ask the vendor for a corrected export (the published results are unchanged)",
        ),
        (
            r"check summary_reconciles_with_aeries",
            "compare the named student IDs in Aeries; differences within APTOOL_RECONCILE_TOLERANCE_DAYS "
            "are only a warning",
        ),
        (
            r"Could not set lock|database is locked|conflicting lock",
            "another process holds the DuckDB file (e.g. dagster dev); stop it or point APTOOL_DATABASE_URL elsewhere",
        ),
        (
            r"APTOOL_DATABASE_URL is not a valid|unsupported database URL",
            "correct APTOOL_DATABASE_URL as the message says (the password is never shown)",
        ),
        (
            r"psycopg|OperationalError|connection to server",
            "check APTOOL_DATABASE_URL and that the database accepts connections from this machine",
        ),
        (
            r"Permission denied|No space left",
            "check the permissions and free space of APTOOL_LANDING_DIR and DAGSTER_HOME",
        ),
    )
)
DEFAULT_FIX = "run again with --debug for Dagster's log and the traceback"


def fix_for(reason: str) -> str:
    return next((fix for pattern, fix in FIXES if pattern.search(reason)), DEFAULT_FIX)


def _int(meta: Mapping[str, object], key: str) -> int | None:
    v = _value(meta, key)
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


CONSOLE_LOG_LEVEL = "CRITICAL"  # progress comes from our own lines; --debug shows Dagster's log


def _materialize(selection, partition_key, resources, instance, tags) -> dg.ExecuteInJobResult:
    return dg.materialize(
        run_config={"loggers": {"console": {"config": {"log_level": CONSOLE_LOG_LEVEL}}}},
        assets=[*definitions.ASSETS, *definitions.ASSET_CHECKS],
        selection=selection,
        partition_key=partition_key,
        resources=resources,
        instance=instance,
        raise_on_error=False,
        tags=tags,
    )


def check_school_years(years) -> None:
    """Refuse years that have no partition, naming the range that has."""
    if outside := sorted(set(years) - set(known_school_years(years))):
        raise PipelineError(
            f"school year(s) {outside} have no partition: school years run from {FIRST_SCHOOL_YEAR} through the "
            "next one"
        )


def run_pipeline(
    *,
    only: str | None = None,
    year: int | None = None,
    instance: dg.DagsterInstance,
    resources: Mapping[str, object] | None = None,
    echo: Callable[[str], None] | None = None,
) -> RunSummary:
    """Aeries first (the roster and attendance), then i-Ready (every year on the server), then the
    metrics of the school year ``year`` (default: the current one).

    A past year is pulled with its own DatabaseYear and computed as of its last day; its roster is kept
    apart (``aptool.past_year_students``), so the current year's published roster stays as it is.
    """
    echo = echo or (lambda line: print(line, flush=True))  # flushed: cron logs show progress as it happens
    resources = dict(resources or definitions.build_resources())
    settings = resources["platform"].settings()
    year = settings.school_year if year is None else year
    check_school_years([year])
    runner = _Runner(RunSummary(year), resources, instance, echo)
    _run_year(runner, year, clip_to_school_year(year, settings.as_of_date), only, iready_years=None)
    return runner.summary


def backfill(
    years: list[int],
    *,
    only: str | None = None,
    instance: dg.DagsterInstance,
    resources: Mapping[str, object] | None = None,
    echo: Callable[[str], None] | None = None,
) -> list[RunSummary]:
    """Load ``years`` oldest first, each as ``run_pipeline(year=…, only=…)`` does but with only that year's
    i-Ready files: each past year with its DatabaseYear into its own partitions, its roster kept apart, so the current
    year's roster, codes and calendars are never replaced. Stops at the first year that fails (a later year
    compares with it); the years before it stay loaded."""
    echo = echo or (lambda line: print(line, flush=True))
    resources = dict(resources or definitions.build_resources())
    settings = resources["platform"].settings()
    years = sorted(set(years))
    check_school_years(years)
    summaries = []
    for year in years:
        echo(f"\n== school year {year}-{str(year + 1)[-2:]}" + (" (current)" if year == settings.school_year else ""))
        runner = _Runner(RunSummary(year), resources, instance, echo)
        _run_year(runner, year, clip_to_school_year(year, settings.as_of_date), only, iready_years={year})
        summaries.append(runner.summary)
        if not runner.summary.ok:
            break
    return summaries


def _run_year(runner: _Runner, year: int, as_of, only: str | None, iready_years: set[int] | None) -> None:
    """The sources, then the metrics of ``year``; i-Ready files of ``iready_years`` (None: every year)."""
    echo = runner.echo
    if only in (None, "aeries"):
        runner.aeries(year, as_of)
    if only in (None, "iready"):
        runner.iready(year, iready_years)
    if runner.summary.failures:
        # Metrics over partly refreshed inputs would publish a misleading picture: keep the last one.
        runner.skip("academic risk", "student_academic_risk")
        runner.skip("growth and projection", "chronic_absence_projection")
        runner.skip("intervention ranking", "student_intervention_ranking")
        if only in (None, "aeries"):
            runner.skip("dashboard preview", "chronic_absenteeism_indicator")
        echo("  [skipped] academic risk and ranking: an earlier step failed; the published metrics are unchanged")
        return
    year_key = str(year)
    if runner.stage(
        "academic risk",
        "student_academic_risk",
        dg.AssetSelection.assets(ACADEMIC_RISK_KEY),
        year_key,
        lambda m: f"{_value(m, 'dagster/row_count')} students",
    ):
        outlook = {None: [IREADY_GROWTH_KEY, PROJECTION_KEY], "aeries": [PROJECTION_KEY], "iready": [IREADY_GROWTH_KEY]}
        runner.stage(
            "growth and projection",
            "chronic_absence_projection",
            dg.AssetSelection.assets(*outlook[only]),
            year_key,
            lambda m: f"{m.get('rows_by_table') or _value(m, 'dagster/row_count')} rows",
        )
        runner.stage(
            "intervention ranking",
            "student_intervention_ranking",
            dg.AssetSelection.assets(INTERVENTION_RANKING_KEY),
            year_key,
            lambda m: f"{_value(m, 'dagster/row_count')} students ranked in {_value(m, 'schools')} schools",
        )
    else:
        runner.skip("growth and projection", "chronic_absence_projection")
        runner.skip("intervention ranking", "student_intervention_ranking")
    if only in (None, "aeries"):
        runner.stage(
            "dashboard preview",
            "chronic_absenteeism_indicator",
            dg.AssetSelection.assets(STUDENT_GROUPS_KEY, INDICATOR_KEY),
            year_key,
            lambda m: f"{m.get('rows_by_table') or _value(m, 'dagster/row_count')} rows",
        )


class _Runner:
    def __init__(self, summary: RunSummary, resources: dict, instance: dg.DagsterInstance, echo):
        self.summary, self.resources, self.instance, self.echo = summary, resources, instance, echo
        self.tags = {"aptool/trigger": "cli"}

    def skip(self, label: str, step: str) -> None:
        self.summary.steps.append(StepOutcome(step, "", False, "an earlier step failed", label=label, skipped=True))

    def stage(self, label, step, selection, partition_key=None, describe=None, tags=None) -> bool:
        started = time.monotonic()
        result = _materialize(selection, partition_key, self.resources, self.instance, {**self.tags, **(tags or {})})
        seconds = time.monotonic() - started
        partition_label = str(partition_key).replace("|", " ") if partition_key else ""
        if result.success:
            # A ranged run reports one materialization per partition with the same metadata: keep the
            # last per asset, and add up the rows and requests of the stage's assets.
            by_asset = {
                e.asset_key: e.event_specific_data.materialization.metadata
                for e in result.get_asset_materialization_events()
            }
            meta = dict(list(by_asset.values())[-1]) if by_asset else {}
            requests = [_value(m, "aeries_requests") for m in by_asset.values() if "aeries_requests" in m]
            if requests:
                meta["aeries_requests"] = sum(requests)
            per_table = {k.path[-1]: _int(m, "dagster/row_count") for k, m in by_asset.items()}
            counts = [c for c in per_table.values() if c is not None]
            rejected = [c for c in (_int(m, "rows_rejected") for m in by_asset.values()) if c is not None]
            if len(counts) > 1:  # several tables in one step: say how many rows each got
                meta["rows_by_table"] = ", ".join(f"{t} {n}" for t, n in per_table.items() if n is not None)
            detail = describe(meta) if describe else "ok"
            outcome = StepOutcome(
                step,
                partition_label,
                True,
                detail,
                meta,
                label=label,
                seconds=seconds,
                rows=sum(counts) if counts else None,
                rejected=sum(rejected) if rejected else None,
            )
        else:
            detail, error = _failure_reason(result)
            outcome = StepOutcome(
                step, partition_label, False, detail, label=label, seconds=seconds, fix=fix_for(detail), error=error
            )
        self.summary.steps.append(outcome)
        self.echo(f"  [{outcome.status}] {label}: {detail} ({seconds:.1f} s)")
        return result.success

    def aeries(self, year: int, as_of) -> None:
        aeries = self.resources["aeries"]
        if not aeries.is_configured():
            raise PipelineError("Aeries is not configured: set AERIES_BASE_URL and AERIES_CERT (see README)")
        first = school_year_bounds(year)[0]
        last = max(first, as_of)
        self.echo(f"Aeries: school year {year}, attendance {first}..{last}")

        def rows(m) -> str:
            counts = m.get("rows_by_table") or _value(m, "dagster/row_count")
            return f"{counts} rows, {_value(m, 'aeries_requests')} requests"

        ok = self.stage(
            "schools, students",
            "aeries_reference",
            dg.AssetSelection.assets(SCHOOLS_KEY, STUDENTS_KEY),
            str(year),
            rows,
        )
        ok = ok and self.stage(
            YEAR_STAGE_LABEL,
            "aeries_year",
            dg.AssetSelection.assets(
                ABSENCE_CODES_KEY, CALENDAR_KEY, ENROLLMENT_KEY, HISTORY_KEY, STUDENT_PROGRAMS_KEY
            ),
            str(year),
            rows,
        )
        ok = ok and self.stage(
            f"attendance {first}..{last}",
            "attendance_days",
            dg.AssetSelection.assets(ATTENDANCE_DAYS_KEY),
            None,
            rows,
            tags={RANGE_START: first.isoformat(), RANGE_END: last.isoformat()},
        )
        if not ok:
            ran = {s.step for s in self.summary.steps}
            later = (
                (YEAR_STAGE_LABEL, "aeries_year"),
                (f"attendance {first}..{last}", "attendance_days"),
            )
            for label, step in later:
                if step not in ran:
                    self.skip(label, step)
            self.skip("attendance summary", "student_attendance_summary")
            self.echo(
                "  [skipped] attendance summary: an earlier Aeries step failed; the published summary is unchanged"
            )
            return
        self.stage(
            "attendance summary",
            "student_attendance_summary",
            dg.AssetSelection.assets(STUDENT_ATTENDANCE_SUMMARY_KEY),
            str(year),
            lambda m: (
                f"{_value(m, 'dagster/row_count')} student-school rows, "
                f"{_value(m, 'chronically_absent')} chronically absent"
            ),
        )

    def iready(self, school_year: int, only_years: set[int] | None = None) -> None:
        """Every diagnostic file on the server (or those of ``only_years``), ``school_year``'s first."""
        sftp = self.resources["iready_sftp"]
        if not sftp.is_configured():
            raise PipelineError(
                "i-Ready SFTP is not configured: set IREADY_SFTP_HOST, IREADY_SFTP_USERNAME and "
                "IREADY_SFTP_PASSWORD or IREADY_SFTP_PRIVATE_KEY (see README)"
            )
        # The vendor's Current_Year folder is the district's current year, whichever year this run is for.
        current = self.resources["platform"].settings().school_year
        files = [
            f
            for f in diagnostic_files(sftp.list_files(), current)
            if f.remote.size > 0 and (only_years is None or f.school_year in only_years)
        ]
        partitions = sorted(
            {(f.school_year, f.subject) for f in files}, key=lambda p: (p[0] != school_year, -p[0], p[1])
        )
        self.echo(f"i-Ready: {len(files)} diagnostic file(s) on the server → {len(partitions)} partition(s)")
        held = set(known_school_years(y for y, _ in partitions))
        if outside := sorted({y for y, _ in partitions} - held):
            self.echo(
                f"  i-Ready files of school year(s) {outside} skipped: school years run from {FIRST_SCHOOL_YEAR} "
                "through the next one"
            )
            partitions = [p for p in partitions if p[0] in held]
        for y, subject in partitions:
            self.stage(
                f"i-Ready {y} {subject}",
                "iready_diagnostic_results",
                dg.AssetSelection.groups("iready"),
                year_subject_key(y, subject),
                lambda m: f"{_value(m, 'dagster/row_count')} rows loaded, {_value(m, 'rows_rejected')} rejected",
            )
