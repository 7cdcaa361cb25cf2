"""A running local SFTP server as its callers see it, and the keys both implementations write.

``LocalSFTPServer`` carries everything a client needs (host, port, login, key, known_hosts) and can
hand out a matching ``IReadySFTPResource`` or environment; the host key lands in ``known_hosts`` as
``[127.0.0.1]:<port>`` so clients connect with strict host-key checking exactly as in production.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from aptool_assets.sources.iready.resources import IReadySFTPResource

HOST = "127.0.0.1"


@dataclass
class LocalSFTPServer:
    """A running local SFTP server and everything a client needs to reach it."""

    kind: str
    host: str
    port: int
    username: str
    password: str | None = field(repr=False)
    private_key_path: Path | None
    known_hosts_path: Path
    remote_root: str
    log_path: Path | None = None
    _stop_callback: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    def resource(self, **overrides: Any) -> IReadySFTPResource:
        """A resource matching ``env()`` (key auth when there is a key, else password)."""
        settings: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "known_hosts_path": str(self.known_hosts_path),
            "remote_dir": self.remote_root,
        }
        if self.private_key_path is not None:
            settings["private_key_path"] = str(self.private_key_path)
        else:
            settings["password"] = self.password
        settings.update(overrides)
        return IReadySFTPResource(**settings)

    def env(self) -> dict[str, str]:
        env = {
            "IREADY_SFTP_HOST": self.host,
            "IREADY_SFTP_PORT": str(self.port),
            "IREADY_SFTP_USERNAME": self.username,
            "IREADY_SFTP_KNOWN_HOSTS": str(self.known_hosts_path),
            "IREADY_SFTP_REMOTE_DIR": self.remote_root,
        }
        if self.private_key_path is not None:
            env["IREADY_SFTP_PRIVATE_KEY"] = str(self.private_key_path)
        elif self.password is not None:
            env["IREADY_SFTP_PASSWORD"] = self.password
        return env

    def remote_path(self, local_path: Path) -> str:
        """The remote path under which a file or directory inside the served directory appears."""
        relative = Path(local_path).resolve().relative_to(self.remote_root)
        return posixpath.join(self.remote_root, relative.as_posix()) if relative.parts else self.remote_root

    def stop(self) -> None:
        callback, self._stop_callback = self._stop_callback, None
        if callback is not None:
            callback()

    def __enter__(self) -> LocalSFTPServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def write_ed25519_keypair(path: Path, comment: str) -> str:
    """Write a fresh OpenSSH-format ed25519 key (0600) and its .pub; return the public key line."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption())
    public = key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(private)
    Path(f"{path}.pub").write_text(f"{public} {comment}\n")
    return public


def write_known_hosts(work_dir: Path, port: int, host_public_key: str) -> Path:
    known_hosts = work_dir / "known_hosts"
    known_hosts.write_text(f"[{HOST}]:{port} {host_public_key}\n")
    return known_hosts
