"""Materialize the platform in dependency order without the Dagster daemon (``aptool run``/``demo``).

It runs the very asset definitions the daemon would, one partition at a time, against the
resources configured in the environment, and reports progress and a one-line reason on failure.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import dagster as dg

from aptool_assets import definitions
from aptool_assets.metrics.assets import ACADEMIC_RISK_KEY, INTERVENTION_RANKING_KEY, STUDENT_ATTENDANCE_SUMMARY_KEY
from aptool_assets.partitions import school_year_partitions, year_subject_key
from aptool_assets.settings import school_year_bounds
from aptool_assets.sources.aeries.assets import (
    ABSENCE_CODES_KEY,
    ATTENDANCE_DAYS_KEY,
    CALENDAR_KEY,
    ENROLLMENT_KEY,
    HISTORY_KEY,
    SCHOOLS_KEY,
    STUDENTS_KEY,
)
from aptool_assets.sources.aeries.schedules import RANGE_END, RANGE_START
from aptool_assets.sources.iready.files import diagnostic_files

class PipelineError(RuntimeError):
    """A step failed; the message is one line an operator can act on."""


@dataclass
class StepOutcome:
    step: str
    partition: str
    ok: bool
    detail: str
    metadata: dict[str, object] = field(default_factory=dict)


@dataclass
class RunSummary:
    school_year: int
    steps: list[StepOutcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)

    @property
    def failures(self) -> list[StepOutcome]:
        return [s for s in self.steps if not s.ok]


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


def _failure_reason(result: dg.ExecuteInJobResult) -> str:
    for ev in result.get_asset_check_evaluations():
        if not ev.passed and ev.severity == dg.AssetCheckSeverity.ERROR:
            return f"{ev.asset_key.to_user_string()} check {ev.check_name} failed: {ev.description}"
    for ev in result.all_events:
        if ev.event_type_value == "STEP_FAILURE":
            err = ev.event_specific_data.error
            text = (err.cause.message if err and err.cause else err.message if err else "") or ""
            return f"{ev.step_key} failed: {_one_line(text)}"
    return "run failed"


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


def run_pipeline(
    *,
    only: str | None = None,
    year: int | None = None,
    instance: dg.DagsterInstance,
    resources: Mapping[str, object] | None = None,
    echo: Callable[[str], None] = print,
) -> RunSummary:
    """Aeries first (the roster and attendance), then i-Ready (every year on the server), then the
    metrics of the school year."""
    resources = dict(resources or definitions.build_resources())
    platform = resources["platform"]
    if year is not None:
        platform = platform.model_copy(update={"school_year": year})
        resources["platform"] = platform
    settings = platform.settings()
    runner = _Runner(RunSummary(settings.school_year), resources, instance, echo)
    runner.ensure_school_years([settings.school_year])
    if only in (None, "aeries"):
        runner.aeries(settings)
    if only in (None, "iready"):
        runner.iready(settings.school_year)
    if runner.summary.failures:
        # Metrics over partly refreshed inputs would publish a misleading picture: keep the last one.
        echo("  [skipped] academic risk and ranking: an earlier step failed; the published metrics are unchanged")
        return runner.summary
    year_key = str(settings.school_year)
    if runner.stage("academic risk", "student_academic_risk", dg.AssetSelection.assets(ACADEMIC_RISK_KEY), year_key,
                    lambda m: f"{_value(m, 'dagster/row_count')} students"):  # fmt: skip
        runner.stage(
            "intervention ranking", "student_intervention_ranking",
            dg.AssetSelection.assets(INTERVENTION_RANKING_KEY), year_key,
            lambda m: f"{_value(m, 'dagster/row_count')} students ranked in {_value(m, 'schools')} schools",
        )  # fmt: skip
    return runner.summary


class _Runner:
    def __init__(self, summary: RunSummary, resources: dict, instance: dg.DagsterInstance, echo):
        self.summary, self.resources, self.instance, self.echo = summary, resources, instance, echo
        self.tags = {"aptool/trigger": "cli"}

    def ensure_school_years(self, years) -> None:
        wanted = {str(y) for y in years}
        known = set(self.instance.get_dynamic_partitions(school_year_partitions.name))
        if wanted - known:
            self.instance.add_dynamic_partitions(school_year_partitions.name, sorted(wanted - known))

    def stage(self, label, step, selection, partition_key=None, describe=None, tags=None) -> bool:
        result = _materialize(selection, partition_key, self.resources, self.instance, {**self.tags, **(tags or {})})
        partition_label = str(partition_key).replace("|", " ") if partition_key else ""
        if result.success:
            # A ranged run reports one materialization per partition with the same metadata: keep the
            # last per asset, and add up the requests of the stage's assets.
            by_asset = {
                e.asset_key: e.event_specific_data.materialization.metadata
                for e in result.get_asset_materialization_events()
            }
            meta = dict(list(by_asset.values())[-1]) if by_asset else {}
            requests = [_value(m, "aeries_requests") for m in by_asset.values() if "aeries_requests" in m]
            if requests:
                meta["aeries_requests"] = sum(requests)
            detail = describe(meta) if describe else "ok"
            self.summary.steps.append(StepOutcome(step, partition_label, True, detail, meta))
        else:
            detail = _failure_reason(result)
            self.summary.steps.append(StepOutcome(step, partition_label, False, detail))
        self.echo(f"  [{'ok' if result.success else 'FAILED'}] {label}: {detail}")
        return result.success

    def aeries(self, settings) -> None:
        aeries = self.resources["aeries"]
        if not aeries.is_configured():
            raise PipelineError("Aeries is not configured: set AERIES_BASE_URL and AERIES_CERT (see README)")
        year = settings.school_year
        first = school_year_bounds(year)[0]
        last = max(first, settings.as_of_date)
        self.echo(f"Aeries: school year {year}, attendance {first}..{last}")
        rows = lambda m: f"{_value(m, 'dagster/row_count')} rows, {_value(m, 'aeries_requests')} requests"  # noqa: E731
        ok = self.stage("schools, absence codes, students", "aeries_reference",
                        dg.AssetSelection.assets(SCHOOLS_KEY, ABSENCE_CODES_KEY, STUDENTS_KEY), None, rows)  # fmt: skip
        ok = ok and self.stage("calendar, enrollment, Aeries totals", "aeries_year",
                               dg.AssetSelection.assets(CALENDAR_KEY, ENROLLMENT_KEY, HISTORY_KEY), str(year), rows)  # fmt: skip
        ok = ok and self.stage(f"attendance {first}..{last}", "attendance_days",
                               dg.AssetSelection.assets(ATTENDANCE_DAYS_KEY), None, rows,
                               tags={RANGE_START: first.isoformat(), RANGE_END: last.isoformat()})  # fmt: skip
        if not ok:
            self.echo("  [skipped] attendance summary: an earlier Aeries step failed; the published summary is unchanged")
            return
        self.stage(
            "attendance summary", "student_attendance_summary",
            dg.AssetSelection.assets(STUDENT_ATTENDANCE_SUMMARY_KEY), str(year),
            lambda m: f"{_value(m, 'dagster/row_count')} student-school rows, {_value(m, 'chronically_absent')} chronically absent",
        )  # fmt: skip

    def iready(self, school_year: int) -> None:
        sftp = self.resources["iready_sftp"]
        if not sftp.is_configured():
            raise PipelineError(
                "i-Ready SFTP is not configured: set IREADY_SFTP_HOST, IREADY_SFTP_USERNAME and "
                "IREADY_SFTP_PASSWORD or IREADY_SFTP_PRIVATE_KEY (see README)"
            )
        files = [f for f in diagnostic_files(sftp.list_files(), school_year) if f.remote.size > 0]
        partitions = sorted({(f.school_year, f.subject) for f in files}, key=lambda p: (p[0] != school_year, -p[0], p[1]))
        self.echo(f"i-Ready: {len(files)} diagnostic file(s) on the server → {len(partitions)} partition(s)")
        self.ensure_school_years(y for y, _ in partitions)
        for y, subject in partitions:
            self.stage(
                f"i-Ready {y} {subject}", "iready_diagnostic_results", dg.AssetSelection.groups("iready"),
                year_subject_key(y, subject),
                lambda m: f"{_value(m, 'dagster/row_count')} rows loaded, {_value(m, 'rows_rejected')} rejected",
            )  # fmt: skip
