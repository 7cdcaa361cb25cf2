"""Pytest plugin: a real OpenSSH SFTP server for the whole session (loaded by conftest's pytest_plugins).

The base directory is made with ``mkdtemp`` and opened to 0755 rather than taken from ``tmp_path_factory``:
as root, sshd serves files and reads authorized_keys as a dedicated unprivileged user, who cannot enter
pytest's 0700 basetemp.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from aptool_demo.sftp_server import LocalSFTPServer, find_sshd, start_local_sftp_server


@pytest.fixture(scope="session")
def sftp_server() -> Iterator[LocalSFTPServer]:
    """OpenSSH sshd on 127.0.0.1 with key auth, plus password auth when the tests run as root."""
    if find_sshd() is None:  # never a skip: `make test-fast` is the run without it
        pytest.fail(
            "OpenSSH sshd is not installed; the SFTP tests need it. Install it with: "
            "sudo apt-get update && sudo apt-get install -y openssh-server openssh-client "
            "(as root, tools/bootstrap-test-machine.sh does it; `make test-fast` runs the tests that need no sshd)",
            pytrace=False,
        )
    base = Path(tempfile.mkdtemp(prefix="aptool-sftp-"))
    try:
        base.chmod(0o755)
        served, work = base / "served", base / "work"
        served.mkdir(mode=0o755)
        work.mkdir(mode=0o755)
        password = secrets.token_urlsafe(18) if os.geteuid() == 0 else None
        with start_local_sftp_server(served, work, prefer_openssh=True, password=password) as server:
            yield server
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def sftp_served_dir(sftp_server: LocalSFTPServer) -> Path:
    """The local directory the server shows at ``sftp_server.remote_root``."""
    return Path(sftp_server.remote_root)


@pytest.fixture
def sftp_test_dir(sftp_served_dir: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A fresh subdirectory of the served dir for one test; its remote path is ``sftp_server.remote_path(it)``."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:60]
    path = sftp_served_dir / f"{name}-{secrets.token_hex(3)}"
    path.mkdir(mode=0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)
