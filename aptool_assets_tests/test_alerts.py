"""Alerts: Slack-compatible POSTs to a real loopback HTTP server, from the real run-status sensors.

The jobs here are small but run for real on a test instance; the sensors read that instance's event
log exactly as the daemon's would. No alert may carry a student's name: a failing step deliberately
puts demo-district names into its exception, and every captured body is scanned for them.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest

from aptool_assets.alerts.reports import dead_letters_pending, describe_error, processing_report
from aptool_assets.alerts.sensors import alert_on_run_failure, processing_report_on_success
from aptool_assets.alerts.slack import Alert, AlertResource
from aptool_assets.sources.aeries.client import AeriesAuthError
from aptool_assets.storage.breakers import open_breaker_store
from aptool_assets_tests.conftest import evaluate_sensor
from aptool_demo.district import FIRST_NAMES, LAST_NAMES

NAMES = re.compile(r"\b(" + "|".join(FIRST_NAMES + LAST_NAMES) + r")\b")


class Inbox(ThreadingHTTPServer):
    """A webhook receiver on loopback: keeps every POST; answers with the statuses queued in ``fail``."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.posts: list[dict] = []
        self.raw: list[bytes] = []
        self.fail: list[int] = []
        self.url = f"http://127.0.0.1:{self.server_port}/services/T000/B000/secret-token"


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server: Inbox = self.server  # type: ignore[assignment]
        status = server.fail.pop(0) if server.fail else 200
        if status == 200:
            assert self.headers["Content-Type"] == "application/json"
            server.raw.append(body)
            server.posts.append(json.loads(body))
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    server = Inbox()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _no_names(server: Inbox) -> None:
    for body in server.raw:
        assert not NAMES.search(body.decode()), body


def _text(payload: dict) -> str:
    return json.dumps(payload)


# -- the poster -----------------------------------------------------------------------------------------


def test_alert_is_posted_as_slack_json(webhook):
    alerts = AlertResource(webhook_url=webhook.url, ui_url="http://dagster.local:3000/")
    assert alerts.send(
        Alert("Processing report: iready_sync", "warning", {"rows loaded": 12}, ("x",), alerts.run_link("abc"))
    )
    (payload,) = webhook.posts
    assert payload["text"].startswith("[WARNING] Processing report: iready_sync")
    assert payload["blocks"][0]["text"]["type"] == "mrkdwn"
    assert {"type": "mrkdwn", "text": "*rows loaded*\n12"} in payload["blocks"][1]["fields"]
    assert "http://dagster.local:3000/runs/abc" in _text(payload)


def test_a_transient_webhook_error_is_retried(webhook):
    webhook.fail = [503]
    assert AlertResource(webhook_url=webhook.url).send(Alert("t"))
    assert len(webhook.posts) == 1


def test_a_refused_or_unreachable_webhook_never_raises_nor_logs_the_url(webhook, caplog):
    caplog.set_level(logging.DEBUG)
    webhook.fail = [404]
    assert not AlertResource(webhook_url=webhook.url).send(Alert("t"))
    assert "HTTP 404" in caplog.text
    dead = "http://127.0.0.1:9/services/T000/B000/secret-token"  # discard port
    assert not AlertResource(webhook_url=dead, timeout_s=1).send(Alert("t"))
    assert "secret-token" not in caplog.text and webhook.posts == []


def test_without_a_webhook_alerts_go_to_the_log(caplog):
    caplog.set_level(logging.INFO)
    assert not AlertResource().send(Alert("Run failed: x", "error", {"run": "1234"}))
    assert "[ERROR] Run failed: x | run: 1234" in caplog.text


# -- run failure ----------------------------------------------------------------------------------------


@dg.op
def pull_students():
    raise dg.Failure(description="wrapped", allow_retries=False) from AeriesAuthError(
        "GET /api/v5/schools/101/students: HTTP 401; the certificate (AERIES_CERT) was refused"
    )


@dg.op
def parse_row():
    raise ValueError(f"row 7: bad scale score for {FIRST_NAMES[0]} {LAST_NAMES[0]}")  # a library-style message


@dg.job(tags={"aptool/trigger": "test"})
def failing_job():
    pull_students()
    parse_row()


@contextmanager
def _failure_context(instance, result, resources) -> Iterator[dg.RunFailureSensorContext]:
    """The run-failure context the daemon would build; both contexts (and the resources they open) are
    closed afterwards."""
    run = instance.get_run_by_id(result.run_id)
    failure_event = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
    with (
        dg.build_run_status_sensor_context(
            sensor_name="alert_on_run_failure",
            dagster_event=failure_event,
            dagster_instance=instance,
            dagster_run=run,
            resources=resources,
        ) as status_context,
        status_context.for_run_failure() as failure_context,
    ):
        yield failure_context


def test_run_failure_alert_names_steps_and_our_errors_but_withholds_other_messages(webhook):
    with dg.instance_for_test() as instance:
        result = failing_job.execute_in_process(instance=instance, raise_on_error=False)
        assert not result.success
        with _failure_context(instance, result, {"alerts": AlertResource(webhook_url=webhook.url)}) as context:
            alert_on_run_failure(context)
    (payload,) = webhook.posts
    text = _text(payload)
    assert payload["text"].startswith("[ERROR] Run failed: failing_job")
    assert "pull_students: AeriesAuthError: GET /api/v5/schools/101/students: HTTP 401" in text
    assert "parse_row: ValueError (message withheld" in text
    assert "*failed steps*\\n2" in text and "*trigger*\\ntest" in text
    _no_names(webhook)


def test_describe_error_follows_the_cause_chain():
    with dg.instance_for_test() as instance:
        result = failing_job.execute_in_process(instance=instance, raise_on_error=False)
        errors = {e.step_key: e.event_specific_data.error for e in result.all_events if e.is_step_failure}
    assert describe_error(errors["pull_students"]).startswith("AeriesAuthError: GET /api/v5/schools/101")
    assert FIRST_NAMES[0] not in describe_error(errors["parse_row"])


# -- processing report ----------------------------------------------------------------------------------


@dg.asset(key=["iready", "raw_diagnostic_files"])
def raw_files():
    return dg.MaterializeResult(metadata={"selected_files": 2, "files": dg.MetadataValue.md("| a |")})


@dg.asset(key=["aptool", "iready_diagnostic_results"], deps=[raw_files])
def results():
    return dg.MaterializeResult(metadata={"dagster/row_count": dg.MetadataValue.int(1200), "rows_rejected": 7})


@dg.asset(key=["aptool", "student_academic_risk"], deps=[results])
def risk():
    return dg.MaterializeResult(metadata={"dagster/row_count": dg.MetadataValue.int(300)})


@dg.asset_check(asset=results, blocking=False)
def scale_scores_in_range():
    return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN, metadata={"rows": 3})


report_job = dg.define_asset_job("report_job", selection=[raw_files, results, risk])


def test_processing_report_after_a_successful_run(webhook):
    store = open_breaker_store()
    try:
        store.add_failed_operation("aeries", "GET /api/v5/schools/101/calendar", "AeriesResponseError", "not JSON")
    finally:
        store.close()
    defs = dg.Definitions(assets=[raw_files, results, risk], asset_checks=[scale_scores_in_range], jobs=[report_job])
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("report_job").execute_in_process(instance=instance)
        run = instance.get_run_by_id(result.run_id)
        report = processing_report(instance, run)
        assert (report.files_processed, report.rows_loaded, report.rows_rejected) == (2, 1500, 7)
        assert report.checks_failed == ["aptool/iready_diagnostic_results:scale_scores_in_range"]
        assert report.dead_letters_pending == dead_letters_pending() == 1
        success_event = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_SUCCESS)
        with dg.build_run_status_sensor_context(
            sensor_name="processing_report_on_success",
            dagster_event=success_event,
            dagster_instance=instance,
            dagster_run=run,
            resources={"alerts": AlertResource(webhook_url=webhook.url)},
        ) as context:
            processing_report_on_success(context)
    (payload,) = webhook.posts
    fields = {
        f["text"].split("\n")[0].strip("*"): f["text"].split("\n")[1]
        for block in payload["blocks"]
        for f in block.get("fields", [])
    }
    assert fields["files processed"] == "2" and fields["rows loaded"] == "1500"
    assert fields["rows rejected"] == "7" and fields["dead letters pending"] == "1"
    assert fields["assets materialized"] == "3"
    assert payload["text"].startswith("[WARNING] Processing report: report_job")
    assert "scale_scores_in_range" in _text(payload)
    _no_names(webhook)


def test_issues_only_reports_skip_a_clean_run(webhook):
    defs = dg.Definitions(assets=[raw_files, risk], jobs=[dg.define_asset_job("clean", selection=[raw_files, risk])])
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("clean").execute_in_process(instance=instance)
        run = instance.get_run_by_id(result.run_id)
        event = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_SUCCESS)
        with dg.build_run_status_sensor_context(
            sensor_name="processing_report_on_success",
            dagster_event=event,
            dagster_instance=instance,
            dagster_run=run,
            resources={"alerts": AlertResource(webhook_url=webhook.url, reports="issues_only")},
        ) as context:
            outcome = processing_report_on_success(context)
    assert isinstance(outcome, dg.SkipReason) and webhook.posts == []


def test_the_report_reads_the_metadata_keys_the_real_assets_write():
    """A renamed metadata key in the assets would silently zero a report column."""
    root = Path(__file__).parents[1] / "aptool_assets"
    iready = (root / "sources/iready/assets.py").read_text()
    assert '"selected_files"' in iready and '"rows_rejected"' in iready
    assert '"dagster/row_count"' in (root / "metadata.py").read_text()


def test_breaker_alerts_go_to_the_webhook_when_a_breaker_opens(webhook):
    from aptool_assets.alerts.breakers import circuit_breakers_sensor
    from aptool_assets.sources.aeries.client import AeriesResource
    from aptool_assets.sources.iready.resources import IReadySFTPResource

    aeries = AeriesResource(base_url="http://127.0.0.1:9/aeries", cert="c" * 32)
    resources = {
        "aeries": aeries,
        "iready_sftp": IReadySFTPResource(),
        "alerts": AlertResource(webhook_url=webhook.url),
    }
    with dg.instance_for_test() as instance:
        first = evaluate_sensor(circuit_breakers_sensor, instance=instance, resources=resources)
        assert webhook.posts == []  # all closed: nothing to say
        guard = aeries.guard()
        guard.maintenance("HTTP 503 with a long Retry-After on GET /api/v5/schools")
        guard.store.close()
        evaluate_sensor(circuit_breakers_sensor, instance=instance, resources=resources, cursor=first.cursor)
    (payload,) = webhook.posts
    assert payload["text"].startswith("[ERROR] Circuit breaker open: aeries")
    assert "maintenance" in _text(payload)
    _no_names(webhook)
