"""The local SFTP server's fallback when no OpenSSH sshd is installed: an in-process paramiko server.

It serves the real absolute path of ``served_dir`` (so ``remote_root`` means the same as with sshd),
read-only, and refuses anything outside it or any write; key auth always, password auth if asked.
"""

from __future__ import annotations

import hmac
import os
import posixpath
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import paramiko

from aptool_demo.sftp_local import HOST, LocalSFTPServer, write_ed25519_keypair, write_known_hosts


class _Auth(paramiko.ServerInterface):
    def __init__(self, username: str, password: str | None, authorized_key: paramiko.PKey):
        self._username, self._password, self._key = username, password, authorized_key

    def get_allowed_auths(self, username: str) -> str:
        return "publickey,password" if self._password else "publickey"

    def check_auth_password(self, username: str, password: str) -> int:
        if (
            self._password is not None
            and username == self._username
            and hmac.compare_digest(password.encode(), self._password.encode())
        ):
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if username == self._username and key.asbytes() == self._key.asbytes():
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED


class _ReadOnlyHandle(paramiko.SFTPHandle):
    def stat(self) -> paramiko.SFTPAttributes | int:
        try:
            return paramiko.SFTPAttributes.from_stat(os.fstat(self.readfile.fileno()))
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)


class _ServedDir(paramiko.SFTPServerInterface):
    """Read-only view of one directory, addressed by its real absolute path like OpenSSH without chroot."""

    def __init__(self, server: paramiko.ServerInterface, root: str):
        super().__init__(server)
        self._root = os.path.realpath(root)

    def _local(self, path: str, *, follow: bool = True) -> str | None:
        absolute = posixpath.normpath(path if path.startswith("/") else posixpath.join(self._root, path))
        if follow:
            resolved = os.path.realpath(absolute)
        else:
            resolved = os.path.join(os.path.realpath(os.path.dirname(absolute)), os.path.basename(absolute))
        inside = resolved == self._root or resolved.startswith(self._root + os.sep)
        return absolute if inside else None

    def canonicalize(self, path: str) -> str:
        absolute = posixpath.normpath(path if path.startswith("/") else posixpath.join(self._root, path))
        return os.path.realpath(absolute) if self._local(absolute) else absolute

    def list_folder(self, path: str) -> list[paramiko.SFTPAttributes] | int:
        local = self._local(path)
        if local is None:
            return paramiko.SFTP_PERMISSION_DENIED
        try:
            entries = []
            for name in sorted(os.listdir(local)):
                attr = paramiko.SFTPAttributes.from_stat(os.lstat(os.path.join(local, name)), name)
                entries.append(attr)
            return entries
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)

    def _stat(self, path: str, follow: bool) -> paramiko.SFTPAttributes | int:
        local = self._local(path, follow=follow)
        if local is None:
            return paramiko.SFTP_PERMISSION_DENIED
        try:
            return paramiko.SFTPAttributes.from_stat(os.stat(local) if follow else os.lstat(local))
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)

    def stat(self, path: str) -> paramiko.SFTPAttributes | int:
        return self._stat(path, follow=True)

    def lstat(self, path: str) -> paramiko.SFTPAttributes | int:
        return self._stat(path, follow=False)

    def open(self, path: str, flags: int, attr: paramiko.SFTPAttributes) -> paramiko.SFTPHandle | int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND):
            return paramiko.SFTP_PERMISSION_DENIED
        local = self._local(path)
        if local is None:
            return paramiko.SFTP_PERMISSION_DENIED
        try:
            readfile = open(local, "rb")  # noqa: SIM115 - the handle owns it and closes it
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)
        handle = _ReadOnlyHandle(flags)
        handle.filename = local
        handle.readfile = readfile
        return handle


class _ParamikoServer:
    """Accept loop on a background thread; each connection gets its own paramiko Transport."""

    def __init__(self, served_dir: Path, host_key: paramiko.PKey, auth: Callable[[], _Auth]):
        self._served_dir, self._host_key, self._auth = served_dir, host_key, auth
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((HOST, 0))
        self._listener.listen(16)
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._transports: list[paramiko.Transport] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"local-sftp-{self.port}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            transport = paramiko.Transport(conn)
            transport.add_server_key(self._host_key)
            transport.set_subsystem_handler("sftp", paramiko.SFTPServer, _ServedDir, str(self._served_dir))
            try:
                transport.start_server(event=threading.Event(), server=self._auth())
            except (paramiko.SSHException, EOFError, OSError):
                transport.close()
                continue
            self._transports = [t for t in self._transports if t.is_active()] + [transport]

    def stop(self) -> None:
        self._stopping.set()
        self._listener.close()
        self._thread.join(timeout=5)
        for transport in self._transports:
            transport.close()


def start_paramiko(served_dir: Path, work_dir: Path, username: str | None, password: str | None) -> LocalSFTPServer:
    """Serve ``served_dir`` from a thread of this process on a free loopback port."""
    username = username or "aptool-sftp"
    host_key_path = work_dir / "paramiko_host_ed25519_key"
    host_public = write_ed25519_keypair(host_key_path, "aptool-local-sftp-host")
    client_key = work_dir / "client_ed25519_key"
    write_ed25519_keypair(client_key, "aptool-local-sftp-client")
    authorized = paramiko.PKey.from_path(client_key)
    server = _ParamikoServer(
        served_dir, paramiko.PKey.from_path(host_key_path), lambda: _Auth(username, password, authorized)
    )
    return LocalSFTPServer(
        kind="paramiko",
        host=HOST,
        port=server.port,
        username=username,
        password=password,
        private_key_path=client_key,
        known_hosts_path=write_known_hosts(work_dir, server.port, host_public),
        remote_root=str(served_dir),
        _stop_callback=server.stop,
    )
