"""Materialize the platform in dependency order without the Dagster daemon (``aptool run``/``demo``).

It runs the very asset definitions the daemon would, one partition at a time, against the
resources configured in the environment, and reports progress and a one-line reason on failure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import dagster as dg

from aptool_assets import definitions
from aptool_assets.metrics.assets import ACADEMIC_RISK_KEY
from aptool_assets.partitions import school_year_partitions, year_subject_key
from aptool_assets.sources.iready.files import diagnostic_files

SOURCES = ("iready", "aeries")


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


def _failure_reason(result: dg.ExecuteInJobResult) -> str:
    for ev in result.get_asset_check_evaluations():
        if not ev.passed and ev.severity == dg.AssetCheckSeverity.ERROR:
            return f"{ev.asset_key.to_user_string()} check {ev.check_name} failed: {ev.description}"
    for ev in result.all_events:
        if ev.event_type_value == "STEP_FAILURE":
            err = ev.event_specific_data.error
            text = (err.cause.message if err and err.cause else err.message if err else "").strip()
            if err and "Failure" in err.cls_name:
                text = err.message.strip()
            return f"step {ev.step_key} failed: {text.splitlines()[0] if text else 'unknown error'}"
    return "run failed"


CONSOLE_LOG_LEVEL = "WARNING"


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
    resources = dict(resources or definitions.build_resources())
    platform = resources["platform"]
    if year is not None:
        platform = platform.model_copy(update={"school_year": year})
        resources["platform"] = platform
    school_year = platform.settings().school_year
    summary = RunSummary(school_year)
    tags = {"aptool/trigger": "cli"}

    if only in (None, "iready"):
        _run_iready(summary, school_year, resources, instance, tags, echo)
    if only == "aeries":
        raise PipelineError("the Aeries source is not available in this version yet")
    return summary


def _run_iready(summary, school_year, resources, instance, tags, echo) -> None:
    sftp = resources["iready_sftp"]
    if not sftp.is_configured():
        raise PipelineError(
            "i-Ready SFTP is not configured: set IREADY_SFTP_HOST, IREADY_SFTP_USERNAME and "
            "IREADY_SFTP_PASSWORD or IREADY_SFTP_PRIVATE_KEY (see README)"
        )
    files = [f for f in diagnostic_files(sftp.list_files(), school_year) if f.remote.size > 0]
    partitions = sorted({(f.school_year, f.subject) for f in files}, key=lambda p: (p[0] != school_year, -p[0], p[1]))
    echo(f"i-Ready: {len(files)} diagnostic file(s) on the server → {len(partitions)} partition(s)")
    years = {str(y) for y, _ in partitions} | {str(school_year)}
    known = set(instance.get_dynamic_partitions(school_year_partitions.name))
    if years - known:
        instance.add_dynamic_partitions(school_year_partitions.name, sorted(years - known))

    for y, subject in partitions:
        label = f"{y} {subject}"
        result = _materialize(
            dg.AssetSelection.groups("iready"), year_subject_key(y, subject), resources, instance, tags
        )
        if result.success:
            meta = result.asset_materializations_for_node("aptool__iready_diagnostic_results")[-1].metadata
            loaded, rejected = _value(meta, "dagster/row_count"), _value(meta, "rows_rejected")
            detail = f"{loaded} rows loaded, {rejected} rejected"
            summary.steps.append(StepOutcome("iready_diagnostic_results", label, True, detail, dict(meta)))
        else:
            detail = _failure_reason(result)
            summary.steps.append(StepOutcome("iready_diagnostic_results", label, False, detail))
        echo(f"  [{'ok' if result.success else 'FAILED'}] i-Ready {label}: {detail}")

    result = _materialize(dg.AssetSelection.assets(ACADEMIC_RISK_KEY), str(school_year), resources, instance, tags)
    if result.success:
        meta = result.asset_materializations_for_node("aptool__student_academic_risk")[-1].metadata
        detail = f"{_value(meta, 'dagster/row_count')} students"
        summary.steps.append(StepOutcome("student_academic_risk", str(school_year), True, detail, dict(meta)))
    else:
        detail = _failure_reason(result)
        summary.steps.append(StepOutcome("student_academic_risk", str(school_year), False, detail))
    echo(f"  [{'ok' if result.success else 'FAILED'}] academic risk {school_year}: {detail}")
