"""Build alerts from what a run recorded: a processing report after success, a failure summary.

Both read only Dagster's event log (materialization metadata, check results, step failures) and the
dead-letter counts, never the published tables, so nothing from a student row can reach an alert.
Failure messages are quoted only for our own exception classes, whose messages are written to name
endpoints, IDs and counts, and scrubbed of secrets all the same; any other message (a library's, which
could quote a CSV cell or a connection string) is withheld.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import dagster as dg

from aptool_assets.alerts.slack import Alert
from aptool_assets.redaction import scrub

log = logging.getLogger("aptool_assets.alerts")

# Metadata the assets write (aptool_assets/sources/*/assets.py, metadata.table_metadata).
ROW_COUNT = "dagster/row_count"
ROWS_REJECTED = "rows_rejected"
FILES_SELECTED = "selected_files"
MAX_MESSAGE = 300


@dataclass
class ProcessingReport:
    """Counts for one run; every field is a number or a name from the asset graph."""

    run_id: str
    job_name: str
    partition: str | None = None
    assets: list[str] = field(default_factory=list)
    files_processed: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    checks_failed: list[str] = field(default_factory=list)
    dead_letters_pending: int = 0

    @property
    def has_issues(self) -> bool:
        return bool(self.rows_rejected or self.checks_failed or self.dead_letters_pending)

    def alert(self, link: str | None = None) -> Alert:
        fields: dict[str, object] = {
            "job": self.job_name,
            "run": self.run_id[:8],
            "assets materialized": len(self.assets),
            "files processed": self.files_processed,
            "rows loaded": self.rows_loaded,
            "rows rejected": self.rows_rejected,
            "dead letters pending": self.dead_letters_pending,
        }
        if self.partition:
            fields["partition"] = self.partition
        lines = []
        if self.checks_failed:
            lines.append("failed checks: " + ", ".join(sorted(self.checks_failed)[:20]))
        return Alert(
            title=f"Processing report: {self.job_name}",
            severity="warning" if self.has_issues else "info",
            fields=fields,
            lines=tuple(lines),
            link=link,
        )


def _value(entry: object) -> object:
    return getattr(entry, "value", entry)


def _int(entry: object) -> int:
    value = _value(entry)
    try:
        return int(value) if value is not None else 0
    except (TypeError, ValueError):
        return 0


def processing_report(
    instance: dg.DagsterInstance, run: dg.DagsterRun, dead_letters: int | None = None
) -> ProcessingReport:
    """Sum the run's materialization metadata: rows loaded (row counts), rows rejected, files selected."""
    report = ProcessingReport(run.run_id, run.job_name, partition=run.tags.get("dagster/partition"))
    mats = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    for record in mats:
        mat = record.event_log_entry.asset_materialization
        if mat is None:
            continue
        report.assets.append(mat.asset_key.to_user_string())
        meta = mat.metadata
        report.rows_loaded += _int(meta.get(ROW_COUNT))
        report.rows_rejected += _int(meta.get(ROWS_REJECTED))
        report.files_processed += _int(meta.get(FILES_SELECTED))
    checks = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    for record in checks:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        if evaluation is not None and not evaluation.passed:
            report.checks_failed.append(f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}")
    report.dead_letters_pending = dead_letters_pending() if dead_letters is None else dead_letters
    return report


def dead_letters_pending() -> int:
    """Unresolved failed operations (Aeries, SFTP) plus webhook events still dead-lettered."""
    from aptool_assets.storage.breakers import open_breaker_store

    total = 0
    store = open_breaker_store()
    try:
        total += len(store.failed_operations(pending_only=True))
    except Exception as exc:  # noqa: BLE001 - a report without this count is still useful
        log.warning("could not count failed operations in %s (%s)", store.describe(), type(exc).__name__)
    finally:
        store.close()
    try:
        from aptool_assets.storage.inbox import open_inbox

        inbox = open_inbox()
        try:
            total += len(inbox.dead_letters())
        finally:
            inbox.close()
    except Exception as exc:  # noqa: BLE001 - no inbox set up (webhooks unused) is normal
        log.debug("no webhook dead letters counted (%s)", type(exc).__name__)
    return total


def _safe_error_classes() -> set[str]:
    from aptool_assets.resilience.breaker import BreakerOpen
    from aptool_assets.resilience.retry import RetryExhausted
    from aptool_assets.settings import ConfigurationError  # names the setting, never its secret value
    from aptool_assets.sources.aeries.client import AeriesError
    from aptool_assets.sources.iready.resources import SFTPError

    names: set[str] = set()
    stack: list[type] = [AeriesError, SFTPError, BreakerOpen, RetryExhausted, ConfigurationError]
    while stack:
        cls = stack.pop()
        names.add(cls.__name__)
        stack.extend(cls.__subclasses__())
    return names


def describe_error(error) -> str:  # SerializableErrorInfo
    """``Class: message`` for our own errors (anywhere in the cause chain), else the class names only."""
    safe = _safe_error_classes()
    chain, info = [], error
    while info is not None and len(chain) < 5:
        chain.append(info)
        info = info.cause or getattr(info, "context", None)
    for info in chain:
        if info.cls_name in safe:
            message = scrub(" ".join(str(info.message).split()))
            message = re.sub(rf"^[\w.]*\b{re.escape(info.cls_name)}:\s*", "", message)  # "pkg.mod.Cls: …"
            return f"{info.cls_name}: {message[:MAX_MESSAGE]}"
    names = [i.cls_name or "Error" for i in chain]
    shown = [n for n in names if n != "DagsterExecutionStepExecutionError"] or names  # Dagster's own wrapper
    return " <- ".join(shown) + " (message withheld: see the run in Dagster)"


def failure_alert(instance: dg.DagsterInstance, run: dg.DagsterRun, link: str | None = None) -> Alert:
    """Job, run, partition and each failed step with its error class (and our own messages)."""
    failures = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    lines = []
    for record in failures[:10]:
        event = record.event_log_entry.dagster_event
        error = getattr(event.event_specific_data, "error", None)
        lines.append(f"• {event.step_key}: {describe_error(error) if error else 'failed'}")
    if not lines:  # the run itself failed (worker crashed, monitoring, a run-level error)
        lines.append("the run failed outside any step (see the run in Dagster)")
    fields: dict[str, object] = {"job": run.job_name, "run": run.run_id[:8], "failed steps": len(failures)}
    if run.tags.get("dagster/partition"):
        fields["partition"] = run.tags["dagster/partition"]
    if run.tags.get("aptool/trigger"):
        fields["trigger"] = run.tags["aptool/trigger"]
    return Alert(title=f"Run failed: {run.job_name}", severity="error", fields=fields, lines=tuple(lines), link=link)
