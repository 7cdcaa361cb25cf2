"""The Dagster UI tells an operator the story (issue #7).

Fast tests audit the definitions (every asset and check described, every asset owned, kinded and
grouped) and the attendance summary's metadata. The `browser` test runs the demo, serves its
instance with dagster-webserver and drives headless Chromium through the pages an operator opens
first, failing on any error boundary, GraphQL error or SEVERE console message.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import polars as pl
import pytest

from aptool_assets import definitions
from aptool_assets_tests.test_cli import clean_env

SOURCE_GROUPS = {"aeries", "iready"}
METRICS_GROUP = "metrics"
LOCATION = "aptool_assets.definitions"


@pytest.fixture
def asset_graph():
    return definitions.defs.resolve_asset_graph()


# --------------------------------------------------------------------------- definitions audit


def test_every_asset_is_described_owned_kinded_and_grouped(asset_graph):
    gaps = []
    for key in sorted(asset_graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = asset_graph.get(key)
        name = key.to_user_string()
        if not (node.description or "").strip():
            gaps.append(f"{name}: no description")
        if not node.owners:
            gaps.append(f"{name}: no owners")
        if not node.kinds:
            gaps.append(f"{name}: no kinds")
        if node.group_name in (None, "", "default"):
            gaps.append(f"{name}: in Dagster's default group")
    assert not gaps, "\n".join(gaps)
    groups = {asset_graph.get(k).group_name for k in asset_graph.get_all_asset_keys()}
    assert SOURCE_GROUPS | {METRICS_GROUP} <= groups  # one group per source, one for the metrics


def test_every_asset_check_is_described(asset_graph):
    checks = sorted(asset_graph.asset_check_keys, key=str)
    assert len(checks) >= 10  # a broken collection must not make this test vacuous
    missing = [
        f"{k.asset_key.to_user_string()}:{k.name}" for k in checks if not (asset_graph.get(k).description or "").strip()
    ]
    assert not missing, f"asset checks without a description: {missing}"


def test_every_job_sensor_and_schedule_is_described():
    repo = definitions.defs.get_repository_def()
    missing = [
        f"{kind} {d.name}"
        for kind, defs_ in (
            ("job", [j for j in repo.get_all_jobs() if not j.name.startswith("__")]),
            ("sensor", repo.sensor_defs),
            ("schedule", repo.schedule_defs),
        )
        for d in defs_
        if not (d.description or "").strip()
    ]
    assert not missing, f"without a description: {missing}"


# --------------------------------------------------------------------------- attendance summary metadata


def _summary(rows: list[tuple[int, int, int, str, float, bool]]) -> pl.DataFrame:
    """(student_id, school_code, days_enrolled, tier, rate, chronic) → the summary columns the metadata reads."""
    return pl.DataFrame(
        rows,
        schema={
            "student_id": pl.Int64,
            "school_code": pl.Int32,
            "days_enrolled": pl.Int32,
            "attendance_tier": pl.Utf8,
            "absence_rate": pl.Float64,
            "is_chronically_absent": pl.Boolean,
        },
        orient="row",
    ).with_columns(pl.lit(0, pl.Int32).alias("truancy_letter_level"))


def test_summary_metadata_breaks_chronic_absence_down_by_school_and_grade_with_counts_only():
    from aptool_assets.metrics.assets import summary_metadata

    summary = _summary(
        [
            (1, 101, 40, "severe_chronic", 0.25, True),
            (2, 101, 40, "satisfactory", 0.0, False),
            (3, 101, 40, "moderate_chronic", 0.12, True),
            (4, 101, 20, "moderate_chronic", 0.15, False),  # under 31 days: not eligible
            (5, 102, 40, "at_risk", 0.07, False),
            (6, 102, 40, "severe_chronic", 0.30, True),  # not in the roster: grade unknown
        ]
    )
    grades = pl.DataFrame(
        {"student_id": [1, 2, 3, 4, 5], "school_code": [101, 101, 101, 101, 102], "grade": [0, 0, 3, 3, 7]},
        schema={"student_id": pl.Int64, "school_code": pl.Int32, "grade": pl.Int32},
    )
    meta = summary_metadata(summary, grades, dt.date(2026, 10, 1))

    table = meta["chronic_absence_by_school_and_grade"].value
    assert "| 101 | K | 2 | 2 | 1 | 50.0% |" in table
    assert "| 101 | 3 | 2 | 1 | 1 | 100.0% |" in table
    assert "| 102 | 7 | 1 | 1 | 0 | 0.0% |" in table
    assert "| 102 | ? | 1 | 1 | 1 | 100.0% |" in table
    assert meta["chronically_absent"] == 3
    # Worst first, IDs only.
    assert meta["chronically_absent_id_preview"].value == [6, 1, 3]

    plot = meta["tier_distribution_by_school"].value
    m = re.fullmatch(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", plot)
    assert m, plot[:120]
    png = base64.b64decode(m.group(1))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) < 100_000  # small enough for the event log


def test_tier_counts_by_school_fill_missing_tiers_with_zero():
    from aptool_assets.metrics.plots import tier_counts_by_school

    wide = tier_counts_by_school(
        _summary(
            [
                (1, 201, 40, "at_risk", 0.06, False),
                (2, 101, 40, "at_risk", 0.06, False),
                (3, 101, 40, "severe_chronic", 0.4, True),
            ]
        )
    )
    assert wide.rows() == [(101, 0, 1, 0, 1), (201, 0, 1, 0, 0)]
    assert wide.columns == ["school_code", "satisfactory", "at_risk", "moderate_chronic", "severe_chronic"]


# --------------------------------------------------------------------------- the UI in a real browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

# Texts the Dagster UI shows when something broke: its error boundary, the GraphQL error toast,
# Next.js's crash page, a Python error surfaced from the server.
UI_ERROR_TEXTS = (
    "can't be displayed",
    "Something went wrong",
    "Unexpected GraphQL error",
    "Application error",
    "PythonError",
)

# Records every GraphQL response that failed or carried errors, before the app's own code runs.
RECORD_GRAPHQL_ERRORS = """
window.__aptoolGraphqlErrors = [];
const __fetch = window.fetch;
window.fetch = async (...args) => {
  const response = await __fetch(...args);
  const url = String(args[0] && args[0].url ? args[0].url : args[0]);
  if (url.includes('/graphql')) {
    response.clone().text().then((body) => {
      let problem = response.status >= 400 ? 'HTTP ' + response.status : null;
      try {
        const data = JSON.parse(body);
        if (data.errors && data.errors.length) problem = JSON.stringify(data.errors).slice(0, 500);
      } catch (e) {}
      if (!problem && body.includes('"__typename":"PythonError"')) problem = body.slice(0, 500);
      if (problem) window.__aptoolGraphqlErrors.push(problem);
    }).catch(() => {});
  }
  return response;
};
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(base: str, query: str) -> dict:
    req = urllib.request.Request(
        f"{base}/graphql", data=json.dumps({"query": query}).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


LOCATION_STATUS = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


@pytest.fixture(scope="module")
def school_year() -> int:
    from aptool_assets.settings import Settings

    return Settings.from_env({}).school_year


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory, school_year) -> Path:
    """A demo instance, made exactly as an operator makes one (`aptool demo --home DIR`)."""
    home = tmp_path_factory.mktemp("ui") / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "aptool_assets.cli", "demo", "--home", str(home), "--year", str(school_year)],
        cwd=home.parent,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return home


@pytest.fixture(scope="module")
def webserver(demo_home, school_year) -> str:
    """dagster-webserver on a free loopback port, with the demo's instance, warehouse and settings
    (its Aeries simulator and SFTP server are gone; nothing here calls them without the daemon)."""
    port = _free_port()
    env = clean_env(
        DAGSTER_HOME=str(demo_home / "dagster"),
        APTOOL_DATABASE_URL=f"duckdb:///{demo_home / 'warehouse.duckdb'}",
        APTOOL_LANDING_DIR=str(demo_home / "landing"),
        APTOOL_SCHOOL_YEAR=str(school_year),
    )
    log = (demo_home.parent / "webserver.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster_webserver", "-h", "127.0.0.1", "-p", str(port), "-m", LOCATION],
        cwd=demo_home,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"dagster-webserver exited with {proc.returncode}: {_tail(demo_home.parent / 'webserver.log')}"
                )
            try:
                entries = _graphql(base, LOCATION_STATUS)["data"]["workspaceOrError"]["locationEntries"]
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    errors = [
                        e["locationOrLoadError"]
                        for e in entries
                        if e["locationOrLoadError"]["__typename"] != "RepositoryLocation"
                    ]
                    assert not errors, f"code location failed to load: {errors}"
                    break
            except (OSError, KeyError, TypeError, json.JSONDecodeError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"dagster-webserver did not load {LOCATION} in 120 s: {_tail(demo_home.parent / 'webserver.log')}"
                )
            time.sleep(0.5)
        yield base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the webserver and the code server it started
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def _tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):  # never a skip: `make test-fast` is the run without it
        pytest.fail(
            f"{CHROMIUM} or {CHROMEDRIVER} is missing; the browser test needs both. Install them with: "
            "sudo apt-get update && sudo apt-get install -y chromium chromium-driver "
            "(as root, tools/bootstrap-test-machine.sh does it; `make test-fast` runs the tests that need no browser)",
            pytrace=False,
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)  # the system's browser: nothing is downloaded
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1600,1100",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(60)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_GRAPHQL_ERRORS})
    yield driver
    driver.quit()


class Page:
    """One page visit: wait for what it must show, then fail on any UI error."""

    def __init__(self, driver, base: str, shots: Path):
        self.driver, self.base, self.shots = driver, base, shots

    def open(self, path: str, *expected: str, absent: tuple[str, ...] = (), timeout: float = 45) -> str:
        self.driver.get(self.base + path)
        return self.wait_for_text(*expected, absent=absent, timeout=timeout)

    def body(self) -> str:
        return self.driver.find_element("tag name", "body").text

    def wait_for_text(self, *expected: str, absent: tuple[str, ...] = (), timeout: float = 45) -> str:
        """Until every expected text shows and the loading placeholders are gone."""
        deadline = time.monotonic() + timeout
        while True:
            self.dismiss_newsletter()
            text = self.body()
            missing = [e for e in expected if e not in text]
            self.fail_on_errors(text)
            missing += [f"no {a!r}" for a in ("fetching statuses", *absent) if a in text]
            if not missing:
                return text
            if time.monotonic() > deadline:
                self.screenshot("timeout")
                pytest.fail(f"{self.driver.current_url}: never showed {missing}; page text: {text[:1500]}")
            time.sleep(0.5)

    def dismiss_newsletter(self) -> None:
        """Dagster asks once per browser profile to join its newsletter; an operator clicks Skip."""
        for button in self.driver.find_elements("xpath", "//button[normalize-space()='Skip']"):
            if button.is_displayed():
                button.click()

    def fail_on_errors(self, text: str | None = None) -> None:
        text = self.body() if text is None else text
        shown = [t for t in UI_ERROR_TEXTS if t in text]
        graphql = self.driver.execute_script("return window.__aptoolGraphqlErrors || []")
        # SEVERE console messages of the app itself (they name its origin), e.g. "[GraphQL error]".
        severe = [
            e["message"] for e in self.driver.get_log("browser") if e["level"] == "SEVERE" and self.base in e["message"]
        ]
        if shown or graphql or severe:
            self.screenshot("error")
            pytest.fail(f"{self.driver.current_url}: UI errors {shown}, GraphQL errors {graphql}, console {severe}")

    def screenshot(self, name: str) -> Path:
        path = self.shots / f"{len(list(self.shots.iterdir())):02d}-{name}.png"
        self.driver.save_screenshot(str(path))
        return path


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_operator_pages_render_without_errors(webserver, browser, tmp_path):
    shots = tmp_path / "screenshots"
    shots.mkdir()
    page = Page(browser, webserver, shots)

    # The asset graph: one group per source and one for the metrics.
    page.open("/asset-groups", "Global asset lineage", *sorted(SOURCE_GROUPS), METRICS_GROUP)
    page.screenshot("asset-graph")
    # The group lists its assets in a virtualized list: the first ones render; each is opened below on its own.
    page.open(
        f"/locations/{LOCATION}/asset-groups/metrics",
        "chronic_absenteeism_indicator",
        "iready_growth",
        "Passed",
        absent=("Loading...",),
    )
    page.screenshot("metrics-group")

    # The attendance summary's latest materialization: description, owners, kinds, counts, metadata.
    asset = "/assets/aptool/student_attendance_summary"
    text = page.open(
        asset,
        "Latest materialization",
        "Latest check results",
        "Row count",
        "contract §4.1",
        "district-data",
        "Polars",
        "chronic_absence_by_school_and_grade",
        "tier_distribution_by_school",
        "chronically_absent_id_preview",
    )
    assert "school grade students" in text  # the by-grade table is rendered, not shown as raw markdown
    page.screenshot("attendance-summary")
    # The tier chart: a PNG the browser decoded (not a broken image or raw base64).
    row = browser.find_element("xpath", "//tr[.//span[normalize-space()='tier_distribution_by_school']]")
    row.find_element("xpath", ".//a[contains(., 'Show Markdown')]").click()
    deadline = time.monotonic() + 15
    while True:
        images = browser.execute_script(
            "return Array.from(document.images).filter(i => i.src.startsWith('data:image/png'))"
            ".map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])"
        )
        if images and all(c and w > 200 and h > 100 for _, c, w, h in images) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    time.sleep(0.5)  # the dialog fades in
    page.screenshot("attendance-tier-plot")
    assert images and images[0][0] == "attendance tiers per school" and images[0][2] > 200, images
    page.fail_on_errors()

    # Its checks, with their descriptions and latest results.
    # The first check (by name) is selected and shows its description.
    text = page.open(
        f"{asset}?view=checks",
        "summary_rates_valid",
        "attendance_has_enrollment",
        "has an enrollment record",
        "Evaluation result",
    )
    assert "Succeeded" in text or "Passed" in text
    page.screenshot("attendance-summary-checks")
    page.open("/assets/aptool/student_intervention_ranking?view=checks", "ranking_dense_and_monotone", "Passed")
    page.screenshot("ranking-checks")

    # The Dashboard preview: per-school status and change, the rate-by-group chart, the suppression check.
    indicator = "/assets/aptool/chronic_absenteeism_indicator"
    text = page.open(indicator, "chronic_absenteeism_indicator", "by_school", "rate_by_group", "prior_year_held")
    page.screenshot("dashboard-preview")
    page.fail_on_errors()
    page.open(f"{indicator}?view=checks", "indicator_suppression_respected", "Passed")
    page.screenshot("dashboard-preview-checks")

    # Sensors and schedules: every one listed, and one of each opens with its description.
    names = [s.name for s in list(definitions.defs.schedules)] + [s.name for s in list(definitions.defs.sensors)]
    page.open("/automation", *names)
    page.screenshot("automation")
    schedule, sensor = list(definitions.defs.schedules)[0], list(definitions.defs.sensors)[0]
    page.open(f"/locations/{LOCATION}/schedules/{schedule.name}", schedule.name, schedule.description[:40])
    page.screenshot("schedule")
    page.open(f"/locations/{LOCATION}/sensors/{sensor.name}", sensor.name, sensor.description[:40])
    page.screenshot("sensor")
    page.fail_on_errors()
    assert all(p.stat().st_size > 10_000 for p in shots.iterdir())  # real renders, not blank pages

    # The detector itself works: a GraphQL error from the page is caught (so this test can fail).
    status = browser.execute_script(
        "return fetch('/graphql', {method: 'POST', headers: {'Content-Type': 'application/json'},"
        " body: JSON.stringify({query: '{ noSuchField }'})}).then(r => r.status)"
    )
    time.sleep(0.5)
    caught = browser.execute_script(
        "const e = window.__aptoolGraphqlErrors; window.__aptoolGraphqlErrors = []; return e"
    )
    assert caught and "noSuchField" in caught[0], (status, caught)
