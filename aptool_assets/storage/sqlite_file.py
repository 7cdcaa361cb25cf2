"""One way to open the platform's small SQLite files (breaker state, the embedded webhook inbox).

A new file is created 0600 in directories created 0700 (``storage.private_files``) before SQLite opens
it; SQLite gives its ``-wal``, ``-shm`` and journal files the database file's mode, so they are private
too.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from aptool_assets.storage.private_files import create_private_file, private_dir


def open_sqlite_wal(path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    """An autocommit connection in WAL mode with ``synchronous=FULL`` and a busy timeout.

    Several processes (runs, sensors, the receiver) may open a fresh file at the same moment. SQLite
    answers a concurrent switch to WAL with "database is locked" at once, without waiting on its busy
    handler, so the switch is retried here until ``busy_timeout_s``; once a file is WAL it stays WAL.
    """
    private_dir(path.parent)
    create_private_file(path)  # an existing file keeps its mode
    con = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
    try:
        con.row_factory = sqlite3.Row
        con.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        deadline = time.monotonic() + busy_timeout_s
        delay = 0.01
        while True:
            try:
                if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    con.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                transient = "locked" in str(exc) or "busy" in str(exc)
                if not transient or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.25)
        con.execute("PRAGMA synchronous=FULL")
    except BaseException:
        con.close()
        raise
    return con
