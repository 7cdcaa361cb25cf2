"""Files and directories only the platform's own user may open: 0600 and 0700.

The DuckDB warehouse, the SQLite breaker and inbox files and the i-Ready landing area hold student data
or operational state. What the platform creates there is private from its first byte: a file is created
with mode 0600 (never created with the default mode and tightened afterwards, which would leave a moment
in which another user could open it and keep reading), a directory with 0700. Existing files and
directories keep their mode: nothing is ever loosened, and an operator who deliberately shared a
directory is not overridden. The process umask can only make these modes stricter.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def private_opener(path: str | os.PathLike[str], flags: int) -> int:
    """``open(path, mode, opener=private_opener)``: a file the call creates gets mode 0600."""
    return os.open(path, flags, PRIVATE_FILE)


def private_dir(path: str | os.PathLike[str]) -> Path:
    """``mkdir -p`` in which every directory created is 0700; existing ones are left as they are.

    (``Path.mkdir(parents=True, mode=...)`` would give the missing parents the default mode.)
    """
    path = Path(path)
    missing: list[Path] = []
    current = path
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, PRIVATE_DIR)
        except FileExistsError:
            if not directory.is_dir():  # a file (or a dangling symlink) in the way
                raise
    return path


def create_private_file(path: str | os.PathLike[str]) -> bool:
    """Create ``path`` empty with mode 0600 unless something exists there; True when it was created."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        return False
    os.close(fd)
    return True
