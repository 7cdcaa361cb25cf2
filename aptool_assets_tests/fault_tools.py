"""Real-part fault injectors for the ``faults`` suite (test_faults.py).

- :func:`table_state`: what a published table holds (rows + sha256 of its content, load-time stamps left
  out), so a test can say "exactly the old version or exactly the new one".
- :class:`CuttingProxy`: a loopback TCP proxy in front of the real sshd that cuts connections after N
  bytes from the server.
- the throw-away PostgreSQL cluster that a test may restart or stop is
  :class:`aptool_assets_tests.private_postgres.PrivatePostgres` (also the session's server when the machine has none).
- :func:`tmpfs`: a real, small file system for the landing area (ENOSPC).
- :class:`ChildRun`: a real materialization in a subprocess that announces its publish and holds the
  transaction open, so SIGKILL lands mid-publish deterministically.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aptool_assets.storage.warehouse import TableSpec, Warehouse
from aptool_assets_tests.child_process import ChildProcess

REPO = Path(__file__).resolve().parents[1]


def disable_step_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make in-process runs ignore step retries (``RetryPolicy`` and ``RetryRequested``): the faults suite
    tests the clients' own retries and the publish, so a failing step fails its run at once.

    ``materialize``/``execute_in_process`` always use Dagster's ``execute_in_process_executor`` with retries
    enabled and ignore executor config, so the executor it creates is swapped for the test.
    """
    # Private: no public API turns off step retries for materialize()/execute_in_process (executor config is ignored).
    from dagster._core.definitions.executor_definition import execute_in_process_executor
    from dagster._core.execution.retries import RetryMode
    from dagster._core.executor.in_process import InProcessExecutor

    monkeypatch.setattr(
        execute_in_process_executor,
        "_executor_creation_fn",
        lambda _ctx: InProcessExecutor(retries=RetryMode.DISABLED, marker_to_close=None),
    )


# Columns stamped at load time (when, by which run): two loads of the same source differ only there.
LOAD_STAMPS = frozenset(
    {
        "source_updated_at",
        "last_sync_at",
        "landed_at",
        "quarantined_at",
        "rejected_at",
        "computed_at",
        "loaded_at",
        "run_id",
    }
)


def table_state(wh: Warehouse, table: TableSpec, where: dict | None = None) -> tuple[int, str]:
    """(rows, sha256 of the rows sorted, load stamps dropped): equal states hold exactly the same data."""
    df = wh.read_table(table, where=where)
    df = df.drop([c for c in df.columns if c in LOAD_STAMPS])
    df = df.sort(df.columns, nulls_last=True)
    return df.height, hashlib.sha256(df.write_csv().encode()).hexdigest()


def tables_state(wh: Warehouse, tables: dict[str, tuple[TableSpec, dict | None]]) -> dict[str, tuple[int, str]]:
    return {name: table_state(wh, spec, where) for name, (spec, where) in tables.items()}


def step_errors(result) -> str:
    """Every step failure's message of a run, joined (for asserting what the run said)."""
    out = []
    for event in result.all_events:
        if event.is_step_failure:
            err = event.step_failure_data.error
            while err is not None:
                out.append(err.message)
                err = err.cause
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# SFTP: a proxy that cuts connections
# ---------------------------------------------------------------------------------------------


class CuttingProxy:
    """Forward 127.0.0.1:<port> to ``upstream``; cut the next ``cuts_left`` connections after ``cut_after``
    bytes from the server (both sockets closed with RST, like a dropped link), pass the rest untouched."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.cut_after: int | None = None
        self.cuts_left = 0
        self.connections = 0
        self.cuts = 0
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, name="cutting-proxy", daemon=True).start()

    def cut(self, after_bytes: int, connections: int) -> None:
        with self._lock:
            self.cut_after, self.cuts_left = after_bytes, connections

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self.connections += 1
                budget = self.cut_after if self.cuts_left > 0 else None
                if budget is not None:
                    self.cuts_left -= 1
                self._socks |= {client, server}
            threading.Thread(target=self._pump, args=(client, server, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, budget), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, budget: int | None) -> None:
        sent = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if budget is not None and sent + len(data) >= budget:
                    dst.sendall(data[: budget - sent])
                    with self._lock:
                        self.cuts += 1
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                self._reset(s)

    def _reset(self, s: socket.socket) -> None:
        with contextlib.suppress(OSError):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        with contextlib.suppress(OSError):
            s.close()
        with self._lock:
            self._socks.discard(s)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            self._reset(s)


def known_hosts_for_port(known_hosts: Path, port: int, dest: Path) -> Path:
    """The server's host key, listed for the proxy's port (the client checks ``[host]:port``)."""
    entries = []
    for line in known_hosts.read_text().splitlines():
        if line.strip():
            _, rest = line.split(" ", 1)
            entries.append(f"[127.0.0.1]:{port} {rest}")
    dest.write_text("\n".join(entries) + "\n")
    return dest


def landing_files(landing: Path) -> list[Path]:
    return sorted(p for p in landing.rglob("*") if p.is_file())


def assert_landing_clean(landing: Path) -> None:
    """No partial download anywhere, and every landed file is named by the sha256 of its whole content."""
    for path in landing_files(landing):
        assert not path.name.endswith(".part"), f"partial download left behind: {path}"
        if "quarantine" in path.parts:
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert path.name.split(".")[0] == digest, f"{path} is not the complete file its name promises"


# ---------------------------------------------------------------------------------------------
# Landing area: a real small file system
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(mount_point: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` at ``mount_point`` (needs CAP_SYS_ADMIN); skip the test if not allowed."""
    mount_point.mkdir(parents=True, exist_ok=True)
    mount = shutil.which("mount")
    if mount is None:
        pytest.skip("no mount(8): cannot make a small file system for the landing area")
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the ENOSPC test needs CAP_SYS_ADMIN")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def fill(directory: Path, leave_free: int) -> Path:
    """Fill the file system of ``directory`` until about ``leave_free`` bytes remain; returns the filler."""
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    filler = directory / "filler.bin"
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(0, free - leave_free))
    return filler


# ---------------------------------------------------------------------------------------------
# A real materialization in a subprocess, held open mid-publish
# ---------------------------------------------------------------------------------------------


def run_materialization(plan: dict[str, Any]) -> None:
    """Runs in the child: materialize ``plan["keys"]`` (of ``plan["partition_key"]``, if any) against the Aeries
    simulator and warehouse of the plan.

    With ``hold_publish_of`` set, the transaction publishing that table announces itself (``HOLDING ...``)
    once every statement has run and then waits, uncommitted, for the parent's SIGKILL.
    """
    import dagster as dg

    from aptool_assets import definitions
    from aptool_assets.resilience.policy import AERIES_POLICY
    from aptool_assets.resources import PlatformResource
    from aptool_assets.sources.aeries.client import AeriesResource
    from aptool_assets.storage.resources import WarehouseResource
    from aptool_assets_tests.conftest import with_default_resources

    target = plan.get("hold_publish_of")
    if target:
        _hold_publish(target)
    resources = with_default_resources(
        aeries=AeriesResource(
            base_url=plan["aeries_url"], cert=plan["aeries_cert"], resilience=AERIES_POLICY.but(retry_base_delay_s=0.01)
        ),
        warehouse=WarehouseResource(database_url=plan["warehouse_url"]),
        platform=PlatformResource(school_year=plan["school_year"], as_of_date=plan["as_of"]),
    )
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            assets=[*definitions.ASSETS, *definitions.ASSET_CHECKS],
            selection=dg.AssetSelection.assets(*(dg.AssetKey.from_user_string(k) for k in plan["keys"])),
            partition_key=plan.get("partition_key"),
            resources=resources,
            instance=instance,
            raise_on_error=False,
        )
    print("DONE" if result.success else "FAILED", flush=True)


def _hold_publish(table: str) -> None:
    """Wrap the backends so the transaction that publishes ``aptool.<table>`` stops, open, before COMMIT."""
    import duckdb

    from aptool_assets.storage.warehouse.postgres import PostgresWarehouse

    real_apply = PostgresWarehouse._apply  # every statement of the publishing transaction (fails loudly if renamed)

    def apply_then_hold(self, con, prepared, *args, **kwargs):
        real_apply(self, con, prepared, *args, **kwargs)
        if any(w.table.name == table for w, _ in prepared):
            print(f"HOLDING aptool.{table} before COMMIT backend_pid={con.info.backend_pid}", flush=True)
            time.sleep(3600)

    PostgresWarehouse._apply = apply_then_hold
    real_connect = duckdb.connect

    class Holding:
        def __init__(self, con):
            self._con, self._loaded = con, False

        def __getattr__(self, name):
            return getattr(self._con, name)

        def execute(self, sql, *args, **kwargs):
            head = sql.strip().upper()
            if head.startswith(f"INSERT INTO APTOOL.{table.upper()} "):
                self._loaded = True
            if head == "COMMIT" and self._loaded:
                print(f"HOLDING aptool.{table} before COMMIT", flush=True)
                time.sleep(3600)
            return self._con.execute(sql, *args, **kwargs)

    duckdb.connect = lambda *a, **k: Holding(real_connect(*a, **k))


_CHILD = r"""
import json, sys
from aptool_assets_tests.fault_tools import run_materialization
run_materialization(json.loads(sys.argv[1]))
"""


class ChildRun(ChildProcess):
    """A materialization subprocess whose stdout lines can be awaited and which can be SIGKILLed."""

    def __init__(self, plan: dict[str, Any], env: dict[str, str] | None = None):
        super().__init__(_CHILD, plan, env)

    wait_for = ChildProcess.wait_for_line
