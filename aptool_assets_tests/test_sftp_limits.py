"""The SFTP client stays inside its bounds, against the real sshd: the listing never follows a symlink out of
the remote root or round a loop, and downloads are bounded (a maximum size, checked before the first byte,
and a file that grows past its listed size while being read is refused at once)."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from aptool_assets.resilience.errors import PermanentError
from aptool_assets.resilience.policy import IREADY_POLICY
from aptool_assets.sources.iready.resources import (
    SFTPError,
    SFTPFileTooLargeError,
    SFTPUnavailableError,
)
from aptool_demo.sftp_server import LocalSFTPServer

FAST = {"resilience": IREADY_POLICY.but(retry_base_delay_s=0.01, retry_max_delay_s=0.01), "connect_timeout_s": 5.0}
ELA = "diagnostic_results_ela_CONFIDENTIAL.csv"


@pytest.fixture
def outside_dir(sftp_served_dir: Path) -> Iterator[Path]:
    """A directory beside the served one, readable by the SFTP user: reachable only through a symlink."""
    path = sftp_served_dir.parent / f"outside-{secrets.token_hex(3)}"
    path.mkdir(mode=0o755)
    path.chmod(0o755)
    secret = path / ELA
    secret.write_text("Student ID,Academic Year\n1,2025-2026\n")
    secret.chmod(0o644)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def connect_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = paramiko.SSHClient.connect

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(paramiko.SSHClient, "connect", counting)
    return calls


def _skips(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "skipping" in r.getMessage()]


# -- listing ------------------------------------------------------------------------------------------


def test_symlinks_out_of_the_root_are_not_followed(
    sftp_server: LocalSFTPServer,
    sftp_test_dir: Path,
    outside_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (sftp_test_dir / "region" / "Current_Year").mkdir(parents=True, mode=0o755)
    (sftp_test_dir / "region" / "Current_Year" / ELA).write_text("a\n")
    (sftp_test_dir / "region" / "2024").symlink_to(outside_dir)  # a directory outside
    (sftp_test_dir / "region" / "also.csv").symlink_to(outside_dir / ELA)  # a file outside
    (sftp_test_dir / "region" / "up").symlink_to("../..")  # relative, climbing out
    for d in (sftp_test_dir / "region", sftp_test_dir / "region" / "Current_Year"):
        d.chmod(0o755)
    root = sftp_server.remote_path(sftp_test_dir)
    caplog.set_level(logging.WARNING)

    listing = sftp_server.resource(**FAST).list_files(root)

    assert [f.path for f in listing] == [f"{root}/region/Current_Year/{ELA}"]
    skipped = _skips(caplog)
    for name in ("region/2024", "region/also.csv", "region/up"):
        assert any(f"{root}/{name} " in m and "outside the remote root" in m for m in skipped), (name, skipped)


def test_symlink_loops_are_skipped_with_a_warning(
    sftp_server: LocalSFTPServer, sftp_test_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    year = sftp_test_dir / "region" / "2025"
    year.mkdir(parents=True, mode=0o755)
    (sftp_test_dir / "region").chmod(0o755)
    (year / ELA).write_text("a\n")
    (year / "again").symlink_to(sftp_test_dir)  # back to the root
    (year / "self").symlink_to(".")  # back to its own directory
    (sftp_test_dir / "ping").symlink_to(sftp_test_dir / "pong")  # a loop of links, no directory at all
    (sftp_test_dir / "pong").symlink_to(sftp_test_dir / "ping")
    root = sftp_server.remote_path(sftp_test_dir)
    caplog.set_level(logging.WARNING)

    listing = sftp_server.resource(**FAST).list_files(root)

    assert [f.path for f in listing] == [f"{root}/region/2025/{ELA}"]
    skipped = _skips(caplog)
    assert any(f"{root}/region/2025/again " in m and "loop" in m for m in skipped), skipped
    assert any(f"{root}/region/2025/self " in m and "loop" in m for m in skipped), skipped
    assert any(f"{root}/ping " in m and "does not resolve" in m for m in skipped), skipped


def test_symlinked_directory_inside_the_root_is_still_listed(sftp_server: LocalSFTPServer, sftp_test_dir: Path) -> None:
    real = sftp_test_dir / "archive" / "2025-2026"
    real.mkdir(parents=True, mode=0o755)
    (sftp_test_dir / "archive").chmod(0o755)
    (real / ELA).write_text("a\n")
    (sftp_test_dir / "Current_Year").symlink_to(real)
    root = sftp_server.remote_path(sftp_test_dir)
    listing = sftp_server.resource(**FAST).list_files(root)
    assert len(listing) == 1  # one view of the directory, not two
    assert listing[0].path in {f"{root}/Current_Year/{ELA}", f"{root}/archive/2025-2026/{ELA}"}


# -- bounded downloads ---------------------------------------------------------------------------------


def test_file_over_the_maximum_is_refused_before_downloading(
    sftp_server: LocalSFTPServer,
    sftp_test_dir: Path,
    tmp_path: Path,
    connect_calls: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limit_mb = 0.01  # 10,485 bytes
    (sftp_test_dir / "big.csv").write_bytes(b"x" * 10_486)
    (sftp_test_dir / "at_limit.csv").write_bytes(b"y" * 10_485)
    opened: list[str] = []
    original_open = paramiko.SFTPClient.open
    monkeypatch.setattr(
        paramiko.SFTPClient,
        "open",
        lambda self, path, *a, **k: opened.append(path) or original_open(self, path, *a, **k),
    )
    resource = sftp_server.resource(max_file_mb=limit_mb, **FAST)
    remote = sftp_server.remote_path(sftp_test_dir)

    with pytest.raises(SFTPFileTooLargeError) as caught:
        resource.download(f"{remote}/big.csv", tmp_path / "landing")
    message = str(caught.value)
    assert f"{remote}/big.csv" in message and "10486 bytes" in message
    assert "IREADY_SFTP_MAX_FILE_MB=0.01" in message
    assert isinstance(caught.value, PermanentError), "never retried, neither the call nor the step"
    assert len(connect_calls) == 1 and opened == [], "refused from its size alone, before any byte was read"
    assert list((tmp_path / "landing").iterdir()) == []

    landed = resource.download(f"{remote}/at_limit.csv", tmp_path / "landing")  # the limit itself is allowed
    assert landed.size == 10_485


def test_file_that_grows_during_the_download_is_refused_and_fetched_again(
    sftp_server: LocalSFTPServer,
    sftp_test_dir: Path,
    tmp_path: Path,
    connect_calls: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    served = sftp_test_dir / "growing.csv"
    served.write_bytes(os.urandom(300_000))
    original = paramiko.SFTPFile.read
    grown: list[int] = []

    def growing_once(self, size=None):
        if not grown:  # the vendor appends while the first attempt reads
            grown.append(1)
            with served.open("ab") as fh:
                fh.write(os.urandom(2_000_000))
        return original(self, size)

    monkeypatch.setattr(paramiko.SFTPFile, "read", growing_once)
    landed = sftp_server.resource(**FAST).download(sftp_server.remote_path(served), tmp_path)
    assert landed.size == 2_300_000
    assert landed.sha256 == hashlib.sha256(served.read_bytes()).hexdigest()
    assert len(connect_calls) == 2, "the refused attempt is dropped and the file fetched again from byte 0"
    assert [p.name for p in tmp_path.iterdir()] == [landed.local_path.name]


def test_file_that_keeps_growing_is_never_read_past_its_listed_size(
    sftp_server: LocalSFTPServer, sftp_test_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = sftp_test_dir / "endless.csv"
    served.write_bytes(b"z" * 100_000)
    attempts: list[dict[str, int]] = []  # per attempt: the size it started from, the bytes it read
    original_open, original_read = paramiko.SFTPClient.open, paramiko.SFTPFile.read

    def opening(self, path, *args, **kwargs):
        attempts.append({"size": served.stat().st_size, "read": 0})
        return original_open(self, path, *args, **kwargs)

    def growing(self, size=None):
        if attempts[-1]["read"] == 0:  # the vendor appends 3 MB while each attempt reads
            with served.open("ab") as fh:
                fh.write(b"z" * 3_000_000)
        data = original_read(self, size)
        attempts[-1]["read"] += len(data)
        return data

    monkeypatch.setattr(paramiko.SFTPClient, "open", opening)
    monkeypatch.setattr(paramiko.SFTPFile, "read", growing)
    with pytest.raises(SFTPUnavailableError) as caught:
        sftp_server.resource(**FAST).download(sftp_server.remote_path(served), tmp_path)
    assert "grew beyond its listed size" in str(caught.value)
    assert [a["size"] for a in attempts] == [100_000, 3_100_000, 6_100_000]
    for attempt in attempts:  # stopped within one read (1 MiB) past the listed size, not at the end of the file
        assert attempt["size"] < attempt["read"] <= attempt["size"] + 1024 * 1024, attempt
    assert list(tmp_path.iterdir()) == []


def test_max_file_size_must_be_positive() -> None:
    from aptool_assets.sources.iready.resources import IReadySFTPResource

    with pytest.raises(ValueError, match="max_file_mb"):
        IReadySFTPResource(max_file_mb=0)
    assert issubclass(SFTPFileTooLargeError, SFTPError)
