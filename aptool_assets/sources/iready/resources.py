"""SFTP client for the i-Ready exports (contract §2 ``IREADY_SFTP_*``; reference iready-exports.md §2-4).

Security posture: host keys come only from a known_hosts file and unknown or changed keys are refused
(never auto-added); the SSH agent and ``~/.ssh`` keys are ignored so behaviour depends on configuration
alone; passwords and key material never appear in messages or logs.

Only network failures are retried (``call_with_retry`` with the original design's linear policy); a
rejected credential or host key fails at once, because retrying cannot fix it and may lock the account.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import os
import posixpath
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, TypeVar

import dagster as dg
import paramiko
from pydantic import Field

from aptool_assets.resilience.errors import AuthError, PermanentError, ServiceError, TransientError
from aptool_assets.resilience.guard import ServiceGuard, call_guarded
from aptool_assets.resilience.policy import IREADY_POLICY, ResiliencePolicy
from aptool_assets.resilience.retry import RetryExhausted
from aptool_assets.resources import GuardedResource
from aptool_assets.sources.iready.sftp_tree import RemoteFile, list_tree
from aptool_assets.storage.private_files import private_dir

T = TypeVar("T")

log = dg.get_dagster_logger("aptool_assets.sources.iready.sftp")

_CHUNK = 1024 * 1024
DEFAULT_SFTP_MAX_FILE_MB = 512.0  # IREADY_SFTP_MAX_FILE_MB: files above it are refused, never downloaded


@dataclass(frozen=True)
class LandedFile:
    """A downloaded file, stored content-addressed as ``<sha256><suffix>`` in the landing dir."""

    remote_path: str
    local_path: Path
    size: int
    sha256: str
    mtime: int


class SFTPError(ServiceError):
    """Any i-Ready SFTP failure. Messages never include passwords or key material."""


class SFTPAuthenticationError(SFTPError, AuthError):
    """The server rejected the credentials, or the key file is unusable. Never retried; the credential
    is blocked for the auth back-off."""


class SFTPHostKeyError(SFTPError, AuthError):
    """The server's host key is unknown or differs from known_hosts. Never retried or auto-added; the
    credential is not to blame, so it is not blocked."""

    blocks_credential = False


class SFTPTransientError(SFTPError, TransientError):
    """A network-level failure (refused, reset, timeout, dropped connection) that a retry may fix."""


class SFTPFileTooLargeError(SFTPError, PermanentError):
    """The file is larger than ``IREADY_SFTP_MAX_FILE_MB``: refused before a byte is downloaded, never retried."""


class SFTPUnavailableError(RetryExhausted, SFTPError):
    """Every attempt failed transiently; callers may catch it as ``RetryExhausted`` or ``SFTPError``."""


def _fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return f"{key.get_name()} SHA256:{base64.b64encode(digest).decode().rstrip('=')}"


def _keyscan_hint(host: str, port: int, known_hosts: Path) -> str:
    port_opt = f"-p {port} " if port != 22 else ""
    return (
        f"run `ssh-keyscan {port_opt}{host} > /tmp/iready_host_key`, check `ssh-keygen -lf /tmp/iready_host_key` "
        f"against the fingerprint the SFTP provider gives you, then append that file to {known_hosts}"
    )


class _RejectUnknownHost(paramiko.RejectPolicy):
    """RejectPolicy that raises our error with the presented fingerprint and how to trust it."""

    def __init__(self, host: str, port: int, known_hosts: Path):
        self._host, self._port, self._known_hosts = host, port, known_hosts

    def missing_host_key(self, client, hostname, key):
        missing = "" if self._known_hosts.is_file() else " (the file does not exist)"
        raise SFTPHostKeyError(
            f"host key for {hostname} is not in the known_hosts file {self._known_hosts}{missing}; "
            f"the server presented {_fingerprint(key)}. Unknown host keys are never trusted automatically: "
            f"{_keyscan_hint(self._host, self._port, self._known_hosts)} (or point IREADY_SFTP_KNOWN_HOSTS at a "
            "file that already has it)."
        )


class IReadySFTPResource(GuardedResource):
    """Connection settings for the i-Ready SFTP server; ``session()`` opens one reusable connection."""

    host: str | None = None
    port: int = 22
    username: str | None = None
    password: str | None = Field(default=None, repr=False, description="IREADY_SFTP_PASSWORD")
    private_key_path: str | None = Field(default=None, description="path to an ed25519/rsa/ecdsa private key")
    known_hosts_path: str = "~/.ssh/known_hosts"
    remote_dir: str = "/exports"
    connect_timeout_s: float = 15.0
    max_file_mb: float = Field(
        default=DEFAULT_SFTP_MAX_FILE_MB,
        gt=0,
        description="IREADY_SFTP_MAX_FILE_MB: larger files are refused before downloading",
    )
    resilience: ResiliencePolicy = IREADY_POLICY

    def is_configured(self) -> bool:
        return bool(self.host and self.username and (self.password or self.private_key_path))

    def credential_parts(self) -> tuple[object, ...]:
        key_material: object = self.private_key_path
        if self.private_key_path:
            with contextlib.suppress(OSError):  # the key's content: a replaced key file is a new credential
                key_material = hashlib.sha256(Path(self.private_key_path).expanduser().read_bytes()).hexdigest()
        return (self.host, self.port, self.username, self.password, key_material)

    @contextmanager
    def session(self) -> Iterator[SFTPSession]:
        """Connect (with retries) and yield a session; the connection is closed on exit."""
        if not self.is_configured():
            missing = [
                name
                for name, value in (
                    ("IREADY_SFTP_HOST", self.host),
                    ("IREADY_SFTP_USERNAME", self.username),
                    ("IREADY_SFTP_PASSWORD or IREADY_SFTP_PRIVATE_KEY", self.password or self.private_key_path),
                )
                if not value
            ]
            raise SFTPError(f"i-Ready SFTP is not configured: set {', '.join(missing)}")
        guard = self.guard()
        sftp_session = SFTPSession(self, guard)
        try:
            sftp_session._call("connect", self._where, lambda _sftp: None)
            yield sftp_session
        finally:
            sftp_session.close()
            if guard is not None:
                guard.store.close()

    def list_files(self, root: str | None = None) -> list[RemoteFile]:
        with self.session() as s:
            return s.list_files(root)

    def download(self, remote_path: str, landing_dir: Path) -> LandedFile:
        with self.session() as s:
            return s.download(remote_path, landing_dir)

    # -- internals -------------------------------------------------------------------------------

    @property
    def _where(self) -> str:
        return f"{self.host}:{self.port}"

    def _retry(self, fn: Callable[[], T], operation: str, guard: ServiceGuard | None = None) -> T:
        return call_guarded(
            fn,
            guard=guard,
            policy=self.resilience.retry(),
            operation=f"{operation} on {self._where}",
            what=f"i-Ready SFTP {operation} on {self._where}",
            context={"operation": operation, "server": self._where},
            unavailable=SFTPUnavailableError,
            logger=log,
        )

    def _load_private_key(self) -> paramiko.PKey | None:
        if not self.private_key_path:
            return None
        path = Path(self.private_key_path).expanduser()
        try:
            return paramiko.PKey.from_path(path)
        except FileNotFoundError:
            raise SFTPAuthenticationError(f"private key file {path} does not exist (IREADY_SFTP_PRIVATE_KEY)") from None
        except TypeError:  # cryptography: encrypted key and no passphrase
            raise SFTPAuthenticationError(
                f"private key file {path} is passphrase-protected; provide an unencrypted key file"
            ) from None
        except Exception as exc:  # noqa: BLE001 - any parse failure; the library text could quote the file
            raise SFTPAuthenticationError(
                f"could not load private key file {path} ({type(exc).__name__}); expected an OpenSSH or PEM "
                "ed25519, rsa or ecdsa key"
            ) from None

    def _connect(self) -> tuple[paramiko.SSHClient, paramiko.SFTPClient]:
        assert self.host is not None
        pkey = self._load_private_key()
        known_hosts = Path(self.known_hosts_path).expanduser()
        client = paramiko.SSHClient()
        if known_hosts.is_file():
            try:
                # HostKeys.load (not client.load_host_keys) so paramiko never considers saving to it.
                client.get_host_keys().load(str(known_hosts))
            except Exception as exc:
                raise SFTPHostKeyError(
                    f"could not read the known_hosts file {known_hosts} ({type(exc).__name__}: {exc})"
                ) from exc
        client.set_missing_host_key_policy(_RejectUnknownHost(self.host, self.port, known_hosts))
        timeout = self.connect_timeout_s
        try:
            client.connect(
                hostname=self.host,
                port=self.port,
                username=self.username,
                password=self.password,
                pkey=pkey,
                allow_agent=False,
                look_for_keys=False,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                channel_timeout=timeout,
            )
            sftp = client.open_sftp()
            sftp.get_channel().settimeout(timeout)  # a stalled server must not hang a run forever
        except Exception as exc:
            client.close()
            translated = self._translate_connect_error(exc, known_hosts)
            if translated is exc:
                raise
            raise translated from exc
        log.debug("connected to i-Ready SFTP %s as %s", self._where, self.username)
        return client, sftp

    def _translate_connect_error(self, exc: Exception, known_hosts: Path) -> Exception:
        if isinstance(exc, SFTPError):
            return exc
        if isinstance(exc, paramiko.BadHostKeyException):
            name = f"[{self.host}]:{self.port}" if self.port != 22 else str(self.host)
            return SFTPHostKeyError(
                f"host key for {name} does NOT match the known_hosts file {known_hosts}: the server presented "
                f"{_fingerprint(exc.key)}, expected {_fingerprint(exc.expected_key)}. This may be an attack or the "
                f"provider may have replaced its key; confirm the new fingerprint with the provider, remove the old "
                f"entry (`ssh-keygen -R '{name}' -f {known_hosts}`), then "
                f"{_keyscan_hint(self.host or '', self.port, known_hosts)}."
            )
        if isinstance(exc, paramiko.BadAuthenticationType):
            return SFTPAuthenticationError(
                f"{self._where} does not accept this authentication method for user {self.username!r} "
                f"(it allows: {', '.join(exc.allowed_types) or 'nothing'})"
            )
        if isinstance(exc, paramiko.AuthenticationException):
            method = "private key" if self.private_key_path else "password"
            if self.private_key_path and self.password:
                method = "private key and password"
            return SFTPAuthenticationError(f"{self._where} rejected the {method} for user {self.username!r}")
        if isinstance(exc, (OSError, EOFError, paramiko.SSHException, paramiko.SFTPError)):
            return SFTPTransientError(f"could not connect to {self._where}: {type(exc).__name__}: {exc}")
        return exc


class SFTPSession:
    """One connection reused for many calls; after a transient failure the next attempt reconnects."""

    def __init__(self, resource: IReadySFTPResource, guard: ServiceGuard | None = None):
        self._resource = resource
        self._guard = guard
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = self._sftp = None

    def list_files(self, root: str | None = None) -> list[RemoteFile]:
        """Every regular file under ``root`` (default ``remote_dir``), recursively, sorted by path."""
        root = self._absolute(root or self._resource.remote_dir)
        files = self._call("list", root, lambda sftp: self._walk(sftp, root))
        log.info(
            "listed %d files (%d bytes) under %s on %s",
            len(files),
            sum(f.size for f in files),
            root,
            self._resource._where,
        )
        return files

    def download(self, remote_path: str, landing_dir: Path) -> LandedFile:
        """Stream one file into ``landing_dir`` as ``<sha256><suffix>``; a retry restarts from byte 0."""
        remote_path = self._absolute(remote_path)
        landing_dir = Path(landing_dir)
        try:
            private_dir(landing_dir)  # new directories 0700; the download itself is created 0600 (mkstemp)
        except OSError as exc:
            raise SFTPError(f"could not create landing directory {landing_dir}: {exc.strerror}") from exc
        landed = self._call("download", remote_path, lambda sftp: self._download_once(sftp, remote_path, landing_dir))
        log.info(
            "downloaded %s from %s: %d bytes, sha256 %s",
            remote_path,
            self._resource._where,
            landed.size,
            landed.sha256,
        )
        return landed

    # -- internals -------------------------------------------------------------------------------

    def _absolute(self, path: str) -> str:
        if not path.startswith("/"):
            path = posixpath.join(self._resource.remote_dir, path)
        return posixpath.normpath(path)

    def _connection_alive(self) -> bool:
        if self._client is None or self._sftp is None:
            return False
        transport = self._client.get_transport()
        return bool(transport and transport.is_active() and not self._sftp.get_channel().closed)

    def _call(self, operation: str, target: str, fn: Callable[[paramiko.SFTPClient], T]) -> T:
        def attempt() -> T:
            try:
                if self._sftp is None:
                    self._client, self._sftp = self._resource._connect()
                return fn(self._sftp)
            except Exception as exc:
                translated = self._translate(exc, operation, target)
                if isinstance(translated, SFTPTransientError):
                    self.close()
                if translated is exc:
                    raise
                raise translated from exc

        return self._resource._retry(attempt, operation, self._guard)

    def _translate(self, exc: Exception, operation: str, target: str) -> Exception:
        """Classify an error raised while using an open connection."""
        where = self._resource._where
        if isinstance(exc, SFTPError):
            return exc
        # paramiko.SFTPError is a protocol failure (garbage or out-of-order packets): the channel is unusable.
        if isinstance(exc, (TimeoutError, EOFError, ConnectionError, paramiko.SSHException, paramiko.SFTPError)):
            return SFTPTransientError(f"{operation} of {target} on {where} failed: {type(exc).__name__}: {exc}")
        if isinstance(exc, OSError):
            # paramiko reports SFTP status codes as OSError too; they are final only while the link is up.
            if not self._connection_alive():
                return SFTPTransientError(f"connection to {where} lost during {operation} of {target}: {exc}")
            if exc.errno == errno.ENOENT:
                return SFTPError(f"{operation} on {where}: {target} does not exist")
            if exc.errno == errno.EACCES:
                return SFTPError(f"{operation} on {where}: permission denied for {target}")
            return SFTPError(f"{operation} of {target} on {where} failed: {exc}")
        return exc

    def _walk(self, sftp: paramiko.SFTPClient, root: str) -> list[RemoteFile]:
        where = self._resource._where
        try:
            root_attr = sftp.stat(root)
        except FileNotFoundError:
            raise SFTPError(
                f"remote directory {root!r} does not exist on {where}; check IREADY_SFTP_REMOTE_DIR"
            ) from None
        if not stat.S_ISDIR(root_attr.st_mode or 0):
            raise SFTPError(f"remote path {root!r} on {where} is not a directory; check IREADY_SFTP_REMOTE_DIR")
        return list_tree(sftp, root, where, log)

    def _download_once(self, sftp: paramiko.SFTPClient, remote_path: str, landing_dir: Path) -> LandedFile:
        where = self._resource._where
        before = sftp.stat(remote_path)
        if not stat.S_ISREG(before.st_mode or 0):
            raise SFTPError(f"download from {where}: {remote_path} is not a regular file")
        expected = int(before.st_size or 0)
        self._refuse_if_too_large(remote_path, expected)
        try:
            fd, part_name = tempfile.mkstemp(prefix=".", suffix=".part", dir=landing_dir)  # mode 0600
        except OSError as exc:
            raise SFTPError(f"could not create a file in {landing_dir}: {exc.strerror}") from exc
        part = Path(part_name)
        try:
            with os.fdopen(fd, "wb") as out, sftp.open(remote_path, "rb") as src:
                sha256, received = self._copy_bounded(src, out, part, remote_path, expected)
            after = sftp.stat(remote_path)
            if received != expected or after.st_size != before.st_size or after.st_mtime != before.st_mtime:
                # Caught mid-rewrite (the vendor rewrites nightly): a retry starts the file over.
                raise SFTPTransientError(
                    f"{remote_path} on {where} changed during download "
                    f"(expected {expected} bytes, received {received}, now {after.st_size})"
                )
            final = landing_dir / f"{sha256}{PurePosixPath(remote_path).suffix}"
            try:
                os.replace(part, final)
                _fsync_dir(landing_dir)
            except OSError as exc:
                raise SFTPError(f"could not move the download into {final}: {exc.strerror}") from exc
        finally:
            part.unlink(missing_ok=True)
        return LandedFile(
            remote_path=remote_path,
            local_path=final,
            size=received,
            sha256=sha256,
            mtime=int(before.st_mtime or 0),
        )

    def _refuse_if_too_large(self, remote_path: str, size: int) -> None:
        limit_mb = self._resource.max_file_mb
        if size > limit_mb * 1024 * 1024:
            raise SFTPFileTooLargeError(
                f"{remote_path} on {self._resource._where} is {size} bytes ({size / 1048576:.1f} MB), more than "
                f"IREADY_SFTP_MAX_FILE_MB={limit_mb:g} allows; it was not downloaded. If the vendor's file is "
                "really this large, raise IREADY_SFTP_MAX_FILE_MB"
            )

    def _copy_bounded(
        self, src: paramiko.SFTPFile, out: BinaryIO, part: Path, remote_path: str, expected: int
    ) -> tuple[str, int]:
        """Copy ``src`` into ``out`` (fsynced): its sha256 and byte count. Never more than ``expected`` bytes
        plus one chunk are read: a file still being written, or an endless one, cannot fill the disk."""
        digest = hashlib.sha256()
        received = 0
        if expected:
            src.prefetch(expected)
        while chunk := src.read(_CHUNK):
            received += len(chunk)
            if received > expected:
                # Refused; a retry starts over from the size the server then reports, within the same maximum.
                raise SFTPTransientError(
                    f"{remote_path} on {self._resource._where} refused: it grew beyond its listed size of "
                    f"{expected} bytes during the download"
                )
            digest.update(chunk)
            try:
                out.write(chunk)
            except OSError as exc:
                raise SFTPError(f"could not write {part}: {exc.strerror}") from exc
        try:
            out.flush()
            os.fsync(out.fileno())
        except OSError as exc:
            raise SFTPError(f"could not write {part}: {exc.strerror}") from exc
        return digest.hexdigest(), received


def _fsync_dir(directory: Path) -> None:
    """Persist a rename: the directory entry must reach the disk too."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = [
    "DEFAULT_SFTP_MAX_FILE_MB",
    "IReadySFTPResource",
    "LandedFile",
    "RemoteFile",
    "SFTPAuthenticationError",
    "SFTPError",
    "SFTPFileTooLargeError",
    "SFTPHostKeyError",
    "SFTPSession",
    "SFTPTransientError",
    "SFTPUnavailableError",
]
