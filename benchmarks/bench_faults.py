"""What a flaky Aeries API costs a full ``aptool run``, and how fast a hard outage opens the breaker (issue #12 §4).

One script, one synthetic district (``aptool_demo``: 3 schools, i-Ready files on a local SFTP server,
the Aeries simulator), each run the real ``aptool run`` command in its own process with its own
Dagster home, warehouse (DuckDB) and breaker store, so every run starts with a closed breaker:

* **fault-free** and **faulty** runs, interleaved (A B A B …) so the machine's load falls on both alike.
  Faulty: every 7th Aeries request answers 429 with Retry-After 1, every 11th 503, every 17th connection
  is dropped (about one request in four fails; a retry recovers each). Every published table of every
  faulty run must equal the fault-free run's (load stamps such as ``*_at`` and ``run_id`` and the landing
  paths left out). Target: median faulty time ≤ 2.5 × median fault-free time.
* **hard outage**: every Aeries request fails (connections dropped by default). Reports the seconds
  from the first failed request until the breaker opened (target ≤ 30 s) and the requests Aeries
  received after it opened (the half-open trials only: target ≤ 1 per half-open period).

    .venv/bin/python benchmarks/bench_faults.py [--rounds 2] [--outage drop|unavailable|none]

(``--rounds 0`` measures only the outage; ``--outage unavailable`` answers every request with a 503, which
the maintenance rule catches first: a 503 on all 5 attempts of a request opens the breaker for 30 min.)
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from aptool_assets.storage.breakers import SqliteBreakerStore  # noqa: E402 - the module puts the repository on sys.path first
from aptool_assets.storage.warehouse import open_warehouse  # noqa: E402 - the module puts the repository on sys.path first
from aptool_demo.district import build_district, write_iready_exports  # noqa: E402 - the module puts the repository on sys.path first
from aptool_demo.sftp_server import start_local_sftp_server  # noqa: E402 - the module puts the repository on sys.path first
from aptool_demo.simulator import build_sim_district, start_simulator  # noqa: E402 - the module puts the repository on sys.path first

YEAR = 2025
THROUGH = dt.date(2026, 6, 30)  # the whole school year, as the nightly full-year sync pulls it
RATIO_TARGET = 2.5
OPEN_TARGET_S = 30.0
MIX = {"rate_limit_every": 7, "unavailable_every": 11, "drop_every": 17}
APTOOL = Path(sys.executable).parent / "aptool"
# Columns stamped at load time or naming this run's own folders: equal loads differ only there.
VOLATILE = {"run_id", "local_path", "cursor", "last_modified", "source_updated_at"}


def published_state(url: str) -> dict[str, tuple[int, str]]:
    """Every table of schema ``aptool``: (rows, sha256 of the sorted rows without volatile columns)."""
    warehouse = open_warehouse(url)
    tables = warehouse.query("SELECT table_name FROM information_schema.tables WHERE table_schema = 'aptool'")
    state = {}
    for table in sorted(tables.get_column("table_name").to_list()):
        df = warehouse.query(f'SELECT * FROM aptool."{table}"')
        df = df.drop([c for c in df.columns if c in VOLATILE or c.endswith("_at")])
        df = df.sort(df.columns, nulls_last=True) if df.columns else df
        state[table] = (df.height, hashlib.sha256(df.write_csv().encode()).hexdigest())
    return state


class Bench:
    """The district's servers, and one directory per run."""

    def __init__(self, work: Path):
        self.work = work
        district = build_district(YEAR)
        write_iready_exports(district, work / "sftp")
        self.sftp = start_local_sftp_server(work / "sftp", work / "sftp-server")
        self.sim = start_simulator(build_sim_district(district, through=THROUGH))
        self.runs = 0

    def close(self) -> None:
        self.sim.stop()
        self.sftp.stop()

    def env(self, home: Path) -> dict[str, str]:
        (home / "dagster").mkdir(parents=True)
        (home / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("APTOOL_", "AERIES_", "IREADY_"))}
        return {
            **keep,
            **self.sftp.env(),
            "AERIES_BASE_URL": self.sim.base_url,
            "AERIES_CERT": self.sim.cert,
            "APTOOL_SCHOOL_YEAR": str(YEAR),
            "APTOOL_AS_OF_DATE": THROUGH.isoformat(),
            "DAGSTER_HOME": str(home / "dagster"),
            "APTOOL_DATABASE_URL": f"duckdb:///{home / 'warehouse.duckdb'}",
            "APTOOL_LANDING_DIR": str(home / "landing"),
            "APTOOL_BREAKER_PATH": str(home / "breakers.sqlite"),
        }

    def start(self, faults: dict, *args: str) -> tuple[subprocess.Popen, Path]:
        """``aptool run`` with ``faults`` set on the simulator (a fresh plan), in a new home."""
        self.runs += 1
        home = self.work / f"run{self.runs}"
        env = self.env(home)
        self.sim.faults.__init__(**faults)
        self.sim.reset_stats()
        log = open(home / "aptool.log", "w")  # noqa: SIM115 - closed when the process ends (finish)
        proc = subprocess.Popen([str(APTOOL), "run", *args], env=env, stdout=log, stderr=subprocess.STDOUT)
        proc.log = log  # type: ignore[attr-defined]
        return proc, home

    def full_run(self, faulty: bool) -> dict:
        faults = {**MIX, "retry_after_s": 1.0} if faulty else {}
        started = time.monotonic()
        proc, home = self.start(faults)
        rc = proc.wait(timeout=1800)
        seconds = time.monotonic() - started
        proc.log.close()
        statuses = Counter(status for _, _, status in self.sim.requests)
        return {
            "faulty": faulty,
            "rc": rc,
            "seconds": seconds,
            "home": home,
            "requests": sum(statuses.values()),
            "failed": sum(n for s, n in statuses.items() if s in (0, 429, 503)),
            "statuses": dict(sorted(statuses.items())),
        }


def measure_ratio(bench: Bench, rounds: int) -> tuple[bool, list[str]]:
    print(f"full `aptool run`, school year {YEAR} through {THROUGH}, fault mix {MIX} (429 Retry-After 1 s)")
    runs = []
    for i in range(rounds):
        for faulty in (False, True):
            run = bench.full_run(faulty)
            runs.append(run)
            kind = "faulty    " if faulty else "fault-free"
            print(
                f"  round {i + 1} {kind}: {run['seconds']:6.1f} s  exit {run['rc']}  Aeries requests "
                f"{run['requests']} (failed {run['failed']}: {run['statuses']})",
                flush=True,
            )
    problems = []
    for run in runs:
        if run["rc"] != 0:
            problems.append(f"a {'faulty' if run['faulty'] else 'fault-free'} run failed: see {run['home']}/aptool.log")
    reference = published_state(f"duckdb:///{runs[0]['home'] / 'warehouse.duckdb'}")
    for run in runs[1:]:
        state = published_state(f"duckdb:///{run['home'] / 'warehouse.duckdb'}")
        differ = sorted(t for t in reference.keys() | state.keys() if reference.get(t) != state.get(t))
        if differ:
            problems.append(f"{run['home'].name} published different tables: {', '.join(differ)}")
    clean = statistics.median(r["seconds"] for r in runs if not r["faulty"])
    faulty = statistics.median(r["seconds"] for r in runs if r["faulty"])
    ratio = faulty / clean
    print(f"  published tables compared: {len(reference)} ({', '.join(reference)})")
    print(f"  identical in every run: {'yes' if not any('published' in p for p in problems) else 'NO'}")
    print(
        f"  median fault-free {clean:.1f} s, median faulty {faulty:.1f} s: ratio {ratio:.2f} (target ≤ {RATIO_TARGET})"
    )
    if ratio > RATIO_TARGET:
        problems.append(f"ratio {ratio:.2f} > {RATIO_TARGET}")
    return not problems, problems


def _watch_breaker(path: Path, stop: threading.Event, seen: list[dict]) -> None:
    """Poll the breaker store (another process writes it) and keep each row where the breaker is open."""
    store = SqliteBreakerStore(path)
    try:
        while not stop.is_set():
            if path.exists():
                row = store.read("aeries")
                is_new = row is not None and all(r["opened_at"] != row["opened_at"] for r in seen)
                if is_new and row["state"] == "open":
                    seen.append(row)
            stop.wait(0.05)
    finally:
        store.close()


def measure_outage(bench: Bench, fault: str) -> tuple[bool, list[str]]:
    """``aptool run --only aeries`` while every Aeries request fails; when did the breaker open, and what followed."""
    proc, home = bench.start({f"{fault}_every": 1}, "--only", "aeries")
    stop, opened = threading.Event(), []
    watcher = threading.Thread(target=_watch_breaker, args=(home / "breakers.sqlite", stop, opened), daemon=True)
    watcher.start()
    started = time.monotonic()
    rc = proc.wait(timeout=1800)
    seconds = time.monotonic() - started
    stop.set()
    watcher.join()
    proc.log.close()
    arrivals = sorted(m["at"] for m in bench.sim.request_meta)
    problems = []
    if rc == 0:
        problems.append("the run succeeded although every request failed")
    if not opened or not arrivals:
        print(f"  hard outage ({fault}): breaker never opened ({len(arrivals)} requests, exit {rc}, {seconds:.0f} s)")
        return False, [*problems, f"hard outage ({fault}): the breaker never opened"]
    first_open = opened[0]["opened_at"]
    to_open = first_open - arrivals[0]
    before = sum(1 for t in arrivals if t <= first_open)
    after = len(arrivals) - before
    print(
        f"  hard outage ({fault}): breaker open {to_open:.1f} s after the first failed request (target ≤ "
        f"{OPEN_TARGET_S:g} s), after {before} requests; {after} requests after it opened (half-open trials), "
        f"run ended after {seconds:.0f} s with exit {rc}"
    )
    said = [line for line in (home / "aptool.log").read_text().splitlines() if line.startswith("aptool: error:")]
    print(f"    the run said: {said[-1] if said else '(no error line)'}")
    if to_open > OPEN_TARGET_S:
        problems.append(f"breaker opened after {to_open:.1f} s > {OPEN_TARGET_S:g} s")
    trials_allowed = max(1, int((arrivals[-1] - first_open) // 60) + 1)  # one per half-open period (60 s)
    if after > trials_allowed:
        problems.append(f"{after} requests after the breaker opened (at most {trials_allowed} trials expected)")
    return not problems, problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="fault-free/faulty pairs, interleaved")
    parser.add_argument("--outage", default="drop", choices=["drop", "unavailable", "none"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aptool-bench-faults-") as tmp:
        bench = Bench(Path(tmp))
        try:
            ok, problems = measure_ratio(bench, args.rounds) if args.rounds > 0 else (True, [])
            if args.outage != "none":
                outage_ok, more = measure_outage(bench, args.outage)
                ok, problems = ok and outage_ok, problems + more
        finally:
            bench.close()
    for problem in problems:
        print(f"  MISSED: {problem}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
