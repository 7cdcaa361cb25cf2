"""Files the platform creates are private: the DuckDB warehouse (and its log, lock and spill directory), the
SQLite breaker and inbox files and the i-Ready landing area are 0600, their new directories 0700, whatever
the umask; existing files and directories keep their mode."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from aptool_assets.resilience.store_api import BREAKER_FIELDS
from aptool_assets.sources.iready.files import DiagnosticFile
from aptool_assets.sources.iready.landing import LandingDecision, land_partition, quarantine
from aptool_assets.sources.iready.resources import LandedFile
from aptool_assets.sources.iready.sftp_tree import RemoteFile
from aptool_assets.storage.breakers import SqliteBreakerStore
from aptool_assets.storage.inbox import SqliteInbox
from aptool_assets.storage.private_files import private_dir
from aptool_assets.storage.warehouse import TableSpec, TableWrite
from aptool_assets.storage.warehouse.duckdb import DuckDBWarehouse

CLOSED = {"service": "aeries", "state": "closed", "outcomes": [], "times_opened": 0, "updated_at": 0.0}
T = TableSpec(name="private_test", columns={"id": pl.Int64, "note": pl.Utf8}, key=("id",))


@contextlib.contextmanager
def umask(value: int) -> Iterator[None]:
    """A permissive umask, so only the modes the code asks for protect the files (restored afterwards)."""
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def mode_of(path: str | os.PathLike[str]) -> int:
    return os.stat(path).st_mode & 0o777


def rows(start: int, n: int = 3) -> pl.DataFrame:
    return pl.DataFrame({"id": list(range(start, start + n)), "note": ["x"] * n}, schema=T.polars_schema)


def modes_below(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): mode_of(p) for p in sorted(root.rglob("*"))}


def test_private_dir_creates_every_missing_level_0700_and_leaves_existing_ones(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    with umask(0):
        private_dir(shared / "a" / "b" / "c")
    assert mode_of(shared) == 0o755
    assert [mode_of(shared / p) for p in ("a", "a/b", "a/b/c")] == [0o700] * 3
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError):
        private_dir(tmp_path / "file")


def test_new_duckdb_warehouse_and_everything_beside_it_is_private(tmp_path: Path) -> None:
    path = tmp_path / "new" / "deeper" / "warehouse.duckdb"
    with umask(0):  # with the old code: 0666 files, 0777 directories
        wh = DuckDBWarehouse(path)
        wh.write(TableWrite(T, rows(0)))
        with wh.exclusive("publish"):
            pass
        with wh._connect() as con:  # the log and the spill directory exist only while a connection is open
            con.execute("INSERT INTO aptool.private_test VALUES (100, 'y')")
            open_modes = (mode_of(f"{path}.wal"), mode_of(f"{path}.tmp"))
    assert open_modes == (0o600, 0o700)
    assert mode_of(tmp_path / "new") == 0o700
    assert modes_below(tmp_path / "new") == {
        "deeper": 0o700,
        "deeper/warehouse.duckdb": 0o600,
        "deeper/warehouse.duckdb.publish.lock": 0o600,
    }
    assert wh.read_table(T).height == 4


def test_duckdb_log_stays_private_while_threads_write_and_checkpoint(tmp_path: Path) -> None:
    """Writes of one process overlapping a checkpoint would make DuckDB start a new log with the default
    mode; connections to one file are serialised in a process, so no file beside it is ever looser."""
    path = tmp_path / "wh" / "warehouse.duckdb"
    ROUNDS = 15  # noqa: N806 - a constant of this test
    seen: set[tuple[str, int]] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for entry in os.scandir(path.parent):
                with contextlib.suppress(FileNotFoundError):
                    seen.add((entry.name, entry.stat(follow_symlinks=False).st_mode & 0o777))
            time.sleep(0.0005)

    def writer(offset: int) -> None:
        wh = DuckDBWarehouse(path)
        for i in range(ROUNDS):
            wh.write(TableWrite(T, rows(offset + 10 * i, 10), replace_where=None))
            wh.execute("CHECKPOINT")

    with umask(0):
        DuckDBWarehouse(path).ensure_table(T)
        watcher = threading.Thread(target=watch)
        watcher.start()
        writers = [threading.Thread(target=writer, args=(k * 100_000,)) for k in range(3)]
        for t in writers:
            t.start()
        for t in writers:
            t.join()
        done.set()
        watcher.join()
    assert any(name.endswith(".wal") for name, _ in seen), "the watcher never saw the log: the test proves nothing"
    loose = {(name, oct(mode)) for name, mode in seen if mode & 0o077}
    assert not loose
    assert DuckDBWarehouse(path).read_table(T).height == 3 * ROUNDS * 10


def test_existing_duckdb_file_and_directory_keep_their_mode(tmp_path: Path) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(0o750)
    path = directory / "warehouse.duckdb"
    DuckDBWarehouse(path).write(TableWrite(T, rows(0)))
    path.chmod(0o640)  # e.g. an operator lets the AP Tool's group read it
    DuckDBWarehouse(path).write(TableWrite(T, rows(10)))
    assert (mode_of(directory), mode_of(path)) == (0o750, 0o640)


@pytest.mark.parametrize("kind", ["breakers", "inbox"])
def test_sqlite_files_and_their_wal_are_private(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "state" / "nested" / f"{kind}.sqlite"
    with umask(0):
        if kind == "breakers":
            store = SqliteBreakerStore(path)
            store.update("aeries", lambda current: {**dict.fromkeys(BREAKER_FIELDS), **CLOSED})
            store.read_all()
        else:
            store = SqliteInbox(path)
            store.setup()
            store.store("evt-1", "attendance.updated", dt.datetime(2026, 1, 5, 8, tzinfo=dt.UTC), {"a": 1}, b"{}")
        try:
            names = sorted(p.name for p in path.parent.iterdir())
            assert {f"{kind}.sqlite", f"{kind}.sqlite-wal", f"{kind}.sqlite-shm"} <= set(names)
            assert {name: mode_of(path.parent / name) for name in names} == dict.fromkeys(names, 0o600)
        finally:
            store.close()
    assert (mode_of(tmp_path / "state"), mode_of(tmp_path / "state" / "nested")) == (0o700, 0o700)


def test_existing_sqlite_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "breakers.sqlite"
    SqliteBreakerStore(path).close()
    store = SqliteBreakerStore(path)
    store.read_all()
    store.close()
    path.chmod(0o640)
    store = SqliteBreakerStore(path)
    store.read_all()
    store.close()
    assert mode_of(path) == 0o640


class _LocalDownloader:
    """Lands a local file the way the SFTP session does (content-addressed, 0600 via mkstemp)."""

    def __init__(self, source: Path):
        self.source = source

    def download(self, remote_path: str, landing_dir: Path) -> LandedFile:
        import hashlib
        import tempfile

        data = self.source.read_bytes()
        fd, part = tempfile.mkstemp(dir=landing_dir)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        sha = hashlib.sha256(data).hexdigest()
        final = landing_dir / f"{sha}.csv"
        os.replace(part, final)
        return LandedFile(remote_path, final, len(data), sha, 0)


def test_landing_and_quarantine_areas_are_private(tmp_path: Path) -> None:
    source = tmp_path / "diagnostic_results_ela.csv"
    source.write_text("not,a,diagnostic,file\n1,2,3,4\n")
    remote = RemoteFile("/exports/Current_Year/diagnostic_results_ela.csv", source.stat().st_size, 1_760_000_000)
    landing = tmp_path / "landing"
    with umask(0):
        result = land_partition(
            _LocalDownloader(source), [DiagnosticFile(remote, "ela", 2025, "Current_Year", "")], landing, 2025, "ela"
        )
        (decision,) = result.decisions
        assert decision.status == "unreadable"
        dest = quarantine(decision, landing / "quarantine" / "iready")
    assert modes_below(landing) == {
        "iready": 0o700,
        "iready/2025": 0o700,
        "iready/2025/ela": 0o700,
        f"iready/2025/ela/{decision.landed.sha256}.csv": 0o600,
        "quarantine": 0o700,
        "quarantine/iready": 0o700,
        f"quarantine/iready/{dest.name}": 0o600,
        f"quarantine/iready/{dest.name}.reason.txt": 0o600,
    }
    assert dest.read_bytes() == source.read_bytes()


def test_quarantine_of_an_unreadable_file_keeps_an_existing_looser_area(tmp_path: Path) -> None:
    landed_file = tmp_path / "abc.csv"
    landed_file.write_text("x\n")
    area = tmp_path / "quarantine"
    area.mkdir(mode=0o750)
    area.chmod(0o750)
    remote = RemoteFile("/exports/x.csv", 2, 0)
    decision = LandingDecision(
        DiagnosticFile(remote, "ela", 2025, None, ""), LandedFile(remote.path, landed_file, 2, "abc", 0), "stale", "why"
    )
    dest = quarantine(decision, area)
    assert mode_of(area) == 0o750
    assert mode_of(dest) == 0o600


def test_sftp_download_lands_private(sftp_server, sftp_test_dir: Path, tmp_path: Path) -> None:
    (sftp_test_dir / "diagnostic_results_ela.csv").write_text("Student ID\n1\n")
    landing = tmp_path / "landing" / "iready" / "2025" / "ela"
    with umask(0):
        landed = sftp_server.resource().download(
            sftp_server.remote_path(sftp_test_dir / "diagnostic_results_ela.csv"), landing
        )
    assert modes_below(tmp_path / "landing") == {
        "iready": 0o700,
        "iready/2025": 0o700,
        "iready/2025/ela": 0o700,
        f"iready/2025/ela/{landed.local_path.name}": 0o600,
    }
