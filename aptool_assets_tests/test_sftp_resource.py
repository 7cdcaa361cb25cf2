"""The i-Ready SFTP resource against a real sshd (and the paramiko fallback server)."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import socket
import traceback
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from aptool_assets.resilience.policy import IREADY_POLICY
from aptool_assets.resilience.retry import RetryExhausted
from aptool_assets.sources.iready.resources import (
    IReadySFTPResource,
    RemoteFile,
    SFTPAuthenticationError,
    SFTPError,
    SFTPHostKeyError,
    SFTPTransientError,
    SFTPUnavailableError,
)
from aptool_demo.sftp_server import LocalSFTPServer, start_local_sftp_server

FAST = {"resilience": IREADY_POLICY.but(retry_base_delay_s=0.01, retry_max_delay_s=0.01), "connect_timeout_s": 5.0}


@pytest.fixture
def connect_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts SSH connection attempts (one per retry attempt)."""
    calls: list[int] = []
    original = paramiko.SSHClient.connect

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(paramiko.SSHClient, "connect", counting)
    return calls


@pytest.fixture(scope="module")
def paramiko_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSFTPServer]:
    base = tmp_path_factory.mktemp("paramiko-sftp")
    (base / "served").mkdir()
    server = start_local_sftp_server(
        base / "served", base / "work", prefer_openssh=False, password=secrets.token_urlsafe(18)
    )
    with server:
        yield server


@pytest.fixture
def password_server(request: pytest.FixtureRequest) -> LocalSFTPServer:
    """sshd when it can check passwords (root); otherwise the paramiko server, so the client path is still tested."""
    if os.geteuid() == 0:
        return request.getfixturevalue("sftp_server")
    return request.getfixturevalue("paramiko_server")


def _new_key(tmp_path: Path) -> tuple[Path, str]:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "other_ed25519_key"
    path.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption()))
    path.chmod(0o600)
    return path, key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_tree(root: Path) -> None:
    (root / "region" / "Current_Year").mkdir(parents=True)
    (root / "region" / "2024").mkdir()
    (root / "region" / "2023").mkdir()  # empty year folders exist on the real server
    (root / "region" / "Current_Year" / "x.csv").write_text("Student ID,Academic Year\n1,2025-2026\n")
    (root / "region" / "2024" / "y.csv").write_text("Student ID,Academic Year\n2,2024-2025\n3,2024-2025\n")
    (root / "region" / "Current_Year" / "empty.csv").write_bytes(b"")
    (root / "region" / "loop").symlink_to(root)  # a symlink loop must not hang the scan


def _expected_listing(server: LocalSFTPServer, root: Path) -> list[RemoteFile]:
    files = [root / "region/2024/y.csv", root / "region/Current_Year/empty.csv", root / "region/Current_Year/x.csv"]
    return [RemoteFile(server.remote_path(f), f.stat().st_size, int(f.stat().st_mtime)) for f in files]


# -- listing and download ----------------------------------------------------------------------------


@pytest.mark.sftp
def test_lists_regular_files_recursively_sorted(sftp_server: LocalSFTPServer, sftp_test_dir: Path) -> None:
    _write_tree(sftp_test_dir)
    listing = sftp_server.resource(**FAST).list_files(sftp_server.remote_path(sftp_test_dir))
    assert listing == _expected_listing(sftp_server, sftp_test_dir)
    assert listing[0].path.endswith("/region/2024/y.csv")
    assert listing[1].size == 0


@pytest.mark.sftp
def test_download_records_size_and_sha256_and_is_idempotent(
    sftp_server: LocalSFTPServer, sftp_test_dir: Path, tmp_path: Path, connect_calls: list[int]
) -> None:
    _write_tree(sftp_test_dir)
    landing = tmp_path / "landing"
    with sftp_server.resource(**FAST).session() as session:
        files = session.list_files(sftp_server.remote_path(sftp_test_dir))
        landed = [session.download(f.path, landing) for f in files]
        again = session.download(files[2].path, landing)
    assert len(connect_calls) == 1, "one session reuses one connection"
    for remote, got in zip(files, landed, strict=True):
        data = got.local_path.read_bytes()
        assert got.remote_path == remote.path
        assert got.size == remote.size == len(data)
        assert got.mtime == remote.mtime
        assert got.sha256 == hashlib.sha256(data).hexdigest()
        assert got.local_path == landing / f"{got.sha256}.csv"
    assert again == landed[2]
    assert landed[2].local_path.read_bytes() == (sftp_test_dir / "region/Current_Year/x.csv").read_bytes()
    assert sorted(p.name for p in landing.iterdir()) == sorted(f"{g.sha256}.csv" for g in landed)


@pytest.mark.sftp
def test_relative_path_is_resolved_against_remote_dir(
    sftp_server: LocalSFTPServer, sftp_test_dir: Path, tmp_path: Path
) -> None:
    (sftp_test_dir / "a.csv").write_text("x\n")
    resource = sftp_server.resource(remote_dir=sftp_server.remote_path(sftp_test_dir), **FAST)
    landed = resource.download("a.csv", tmp_path)
    assert landed.remote_path == f"{sftp_server.remote_path(sftp_test_dir)}/a.csv"
    assert landed.sha256 == hashlib.sha256(b"x\n").hexdigest()


@pytest.mark.sftp
def test_rewritten_file_shows_new_size_and_mtime(sftp_server: LocalSFTPServer, sftp_test_dir: Path) -> None:
    target = sftp_test_dir / "diagnostic_results_ela.csv"
    target.write_text("a\n")
    os.utime(target, (1_760_000_000, 1_760_000_000))
    resource = sftp_server.resource(**FAST)
    remote = sftp_server.remote_path(sftp_test_dir)
    assert resource.list_files(remote) == [RemoteFile(f"{remote}/diagnostic_results_ela.csv", 2, 1_760_000_000)]
    target.write_text("a\nb\n")
    os.utime(target, (1_760_086_400, 1_760_086_400))
    assert resource.list_files(remote) == [RemoteFile(f"{remote}/diagnostic_results_ela.csv", 4, 1_760_086_400)]


@pytest.mark.sftp
def test_missing_remote_root_is_a_clear_error(sftp_server: LocalSFTPServer, connect_calls: list[int]) -> None:
    missing = f"{sftp_server.remote_root}/no-such-dir"
    with pytest.raises(SFTPError, match="does not exist") as caught:
        sftp_server.resource(remote_dir=missing, **FAST).list_files()
    assert missing in str(caught.value) and "IREADY_SFTP_REMOTE_DIR" in str(caught.value)
    assert not isinstance(caught.value, RetryExhausted)
    assert len(connect_calls) == 1


@pytest.mark.sftp
def test_failed_download_leaves_no_file(sftp_server: LocalSFTPServer, sftp_test_dir: Path, tmp_path: Path) -> None:
    resource = sftp_server.resource(**FAST)
    absent = f"{sftp_server.remote_path(sftp_test_dir)}/absent.csv"
    with pytest.raises(SFTPError, match=f"{re.escape(absent)} does not exist"):
        resource.download(absent, tmp_path)
    with pytest.raises(SFTPError, match="not a regular file"):
        resource.download(sftp_server.remote_path(sftp_test_dir), tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.sftp
def test_interrupted_download_restarts_from_scratch(
    sftp_server: LocalSFTPServer,
    sftp_test_dir: Path,
    tmp_path: Path,
    connect_calls: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)
    (sftp_test_dir / "big.csv").write_bytes(payload)
    original = paramiko.SFTPFile.read
    reads: list[int] = []

    def flaky(self, size=None):
        reads.append(1)
        if len(reads) == 2:  # after one chunk has been written to the .part file
            raise EOFError("connection dropped")
        return original(self, size)

    monkeypatch.setattr(paramiko.SFTPFile, "read", flaky)
    landed = sftp_server.resource(**FAST).download(f"{sftp_server.remote_path(sftp_test_dir)}/big.csv", tmp_path)
    assert landed.size == len(payload)
    assert landed.local_path.read_bytes() == payload
    assert len(connect_calls) == 2, "the dropped connection is replaced"
    assert [p.name for p in tmp_path.iterdir()] == [landed.local_path.name]


@pytest.mark.sftp
def test_exhausted_download_retries_leave_no_partial_file(
    sftp_server: LocalSFTPServer, sftp_test_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (sftp_test_dir / "big.csv").write_bytes(b"x" * (2 * 1024 * 1024))
    original = paramiko.SFTPFile.read

    def failing_after_first_chunk(self, size=None):
        if self._realpos > 0:
            raise EOFError("connection dropped")
        return original(self, size)

    monkeypatch.setattr(paramiko.SFTPFile, "read", failing_after_first_chunk)
    with pytest.raises(SFTPUnavailableError) as caught:
        sftp_server.resource(**FAST).download(f"{sftp_server.remote_path(sftp_test_dir)}/big.csv", tmp_path)
    assert caught.value.attempts == 3
    assert list(tmp_path.iterdir()) == []


# -- host keys ---------------------------------------------------------------------------------------


@pytest.mark.sftp
@pytest.mark.parametrize("known_hosts", ["empty", "missing"])
def test_unknown_host_key_is_refused(
    sftp_server: LocalSFTPServer, tmp_path: Path, connect_calls: list[int], known_hosts: str
) -> None:
    path = tmp_path / "known_hosts"
    if known_hosts == "empty":
        path.write_text("")
    with pytest.raises(SFTPHostKeyError) as caught:
        sftp_server.resource(known_hosts_path=str(path), **FAST).list_files()
    message = str(caught.value)
    assert f"[127.0.0.1]:{sftp_server.port}" in message
    assert "ssh-keyscan -p" in message and "SHA256:" in message
    assert len(connect_calls) == 1, "never retried"
    if known_hosts == "empty":
        assert path.read_text() == "", "never auto-added"
    else:
        assert not path.exists(), "never auto-added"


@pytest.mark.sftp
def test_changed_host_key_is_refused(sftp_server: LocalSFTPServer, tmp_path: Path, connect_calls: list[int]) -> None:
    _, other_public = _new_key(tmp_path)
    path = tmp_path / "known_hosts"
    path.write_text(f"[127.0.0.1]:{sftp_server.port} {other_public}\n")
    with pytest.raises(SFTPHostKeyError, match="does NOT match") as caught:
        sftp_server.resource(known_hosts_path=str(path), **FAST).list_files()
    assert f"[127.0.0.1]:{sftp_server.port}" in str(caught.value)
    assert len(connect_calls) == 1
    assert path.read_text() == f"[127.0.0.1]:{sftp_server.port} {other_public}\n"


# -- authentication ----------------------------------------------------------------------------------


@pytest.mark.sftp
def test_key_auth_works_without_password(sftp_server: LocalSFTPServer) -> None:
    resource = sftp_server.resource(password=None, **FAST)
    assert resource.is_configured()
    assert isinstance(resource.list_files(), list)


@pytest.mark.sftp
def test_wrong_key_is_refused_without_retry(
    sftp_server: LocalSFTPServer, tmp_path: Path, connect_calls: list[int]
) -> None:
    other_key, _ = _new_key(tmp_path)
    with pytest.raises(SFTPAuthenticationError):
        sftp_server.resource(private_key_path=str(other_key), password=None, **FAST).list_files()
    assert len(connect_calls) == 1
    with pytest.raises(SFTPAuthenticationError, match="does not exist"):
        sftp_server.resource(private_key_path=str(tmp_path / "absent"), **FAST).list_files()


@pytest.mark.sftp
def test_password_auth_works(password_server: LocalSFTPServer) -> None:
    resource = password_server.resource(private_key_path=None, password=password_server.password, **FAST)
    assert isinstance(resource.list_files(), list)


@pytest.mark.sftp
def test_wrong_password_is_refused_without_retry(
    password_server: LocalSFTPServer, connect_calls: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    resource = password_server.resource(
        private_key_path=None,
        password="not-" + (password_server.password or ""),
        resilience=IREADY_POLICY.but(retry_base_delay_s=0.01),
    )
    with pytest.raises(SFTPAuthenticationError) as caught:
        resource.list_files()
    assert not isinstance(caught.value, RetryExhausted)
    assert len(connect_calls) == 1
    assert "retrying" not in caplog.text


def test_unconfigured_resource_says_what_to_set() -> None:
    resource = IReadySFTPResource(host="sftp.example.org")
    assert not resource.is_configured()
    with pytest.raises(SFTPError, match="IREADY_SFTP_USERNAME, IREADY_SFTP_PASSWORD or IREADY_SFTP_PRIVATE_KEY"):
        resource.list_files()


# -- retries -----------------------------------------------------------------------------------------


def test_refused_connection_is_retried_then_gives_up(
    tmp_path: Path, connect_calls: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    port = _closed_port()
    resource = IReadySFTPResource(
        host="127.0.0.1",
        port=port,
        username="nobody",
        password="unused-secret",
        known_hosts_path=str(tmp_path / "known_hosts"),
        **FAST,
    )
    with pytest.raises(RetryExhausted) as caught:
        resource.list_files()
    assert caught.value.attempts == 3
    assert isinstance(caught.value, SFTPError) and isinstance(caught.value.last, SFTPTransientError)
    assert len(connect_calls) == 3
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 2
    assert all(f"127.0.0.1:{port}" in m and "connect" in m for m in retries)


# -- secrets -----------------------------------------------------------------------------------------


def _exception_texts(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc)


@pytest.mark.sftp
def test_password_never_appears_in_errors_or_logs(
    password_server: LocalSFTPServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert password_server.password
    wrong = f"wrong-{secrets.token_urlsafe(12)}"
    texts: list[str] = []
    good = password_server.resource(private_key_path=None, password=password_server.password, **FAST)
    good.list_files()
    texts.append(repr(good))
    for resource in (
        password_server.resource(private_key_path=None, password=wrong, **FAST),
        good.model_copy(update={"port": _closed_port()}),
        good.model_copy(update={"known_hosts_path": str(tmp_path / "none")}),
        good.model_copy(update={"remote_dir": "/no/such/dir"}),
    ):
        with pytest.raises(SFTPError) as caught:
            resource.list_files()
        texts.append(_exception_texts(caught.value))
    texts += [r.getMessage() for r in caplog.records] + [r.exc_text or "" for r in caplog.records]
    joined = "\n".join(texts)
    assert "Authentication failed" in joined or "rejected" in joined  # the wrong-password case was seen
    assert password_server.password not in joined
    assert wrong not in joined


# -- paramiko fallback -------------------------------------------------------------------------------


def test_paramiko_fallback_server_lists_and_downloads(paramiko_server: LocalSFTPServer, tmp_path: Path) -> None:
    assert paramiko_server.kind == "paramiko"
    root = Path(paramiko_server.remote_root) / "fallback"
    root.mkdir()
    _write_tree(root)
    for resource in (
        paramiko_server.resource(**FAST),
        paramiko_server.resource(private_key_path=None, password=paramiko_server.password, **FAST),
    ):
        listing = resource.list_files(paramiko_server.remote_path(root))
        assert listing == _expected_listing(paramiko_server, root)
        landed = resource.download(listing[-1].path, tmp_path)
        assert landed.sha256 == hashlib.sha256((root / "region/Current_Year/x.csv").read_bytes()).hexdigest()
        assert landed.size == listing[-1].size and landed.mtime == listing[-1].mtime
    with pytest.raises(SFTPAuthenticationError):
        paramiko_server.resource(private_key_path=None, password="wrong", **FAST).list_files()
    with pytest.raises(SFTPError):  # outside the served directory
        paramiko_server.resource(**FAST).list_files("/etc")
