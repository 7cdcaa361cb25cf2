"""A local SFTP server for the demo and the tests, so the i-Ready client is exercised over real SSH.

Two implementations with one API:

* ``openssh`` (preferred): the machine's ``sshd`` with a throwaway config, host key and client key in
  ``work_dir``; files are served from their real absolute path (no chroot), read-only for the SFTP user.
  As non-root, sshd can only log in the current user, with the key. As root it logs in a dedicated system
  user created for this server (``useradd``; password set through ``chpasswd`` on stdin), because password
  login for a real account must not be touched; that user is deleted again on ``stop()``.
* ``paramiko`` (fallback when no sshd is installed): an in-process threaded server. It also serves the
  real absolute path of ``served_dir`` (so ``remote_root`` means the same for both) and refuses anything
  outside it or any write.

Either way ``known_hosts_path`` holds the server's real host key as ``[127.0.0.1]:<port>``, so clients
connect with strict host-key checking exactly as in production.
"""

from __future__ import annotations

import atexit
import hmac
import logging
import os
import posixpath
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from aptool_assets.sources.iready.resources import IReadySFTPResource

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
USER_COMMENT = "aptool local SFTP server (demo/tests)"
_START_TIMEOUT_S = 10.0


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


def find_sshd() -> str | None:
    """Absolute path of OpenSSH's sshd (it refuses to run from a relative path), or None."""
    found = shutil.which("sshd")
    if found:
        return os.path.abspath(found)
    return "/usr/sbin/sshd" if os.access("/usr/sbin/sshd", os.X_OK) else None


def start_local_sftp_server(
    served_dir: Path,
    work_dir: Path,
    *,
    prefer_openssh: bool = True,
    username: str | None = None,
    password: str | None = None,
) -> LocalSFTPServer:
    """Serve ``served_dir`` over SFTP on 127.0.0.1 with key auth (and password auth if ``password``)."""
    served_dir = Path(served_dir).resolve()
    work_dir = Path(work_dir).resolve()
    if not served_dir.is_dir():
        raise ValueError(f"served_dir {served_dir} is not a directory")
    if password is not None and ("\n" in password or not password):
        raise ValueError("password must be non-empty and on one line")
    work_dir.mkdir(parents=True, exist_ok=True)
    sshd = find_sshd() if prefer_openssh else None
    if sshd is not None:
        server = _start_openssh(sshd, served_dir, work_dir, username, password)
    else:
        server = _start_paramiko(served_dir, work_dir, username, password)
    atexit.register(server.stop)  # no orphaned sshd or system user if a caller forgets stop()
    return server


# -- keys -------------------------------------------------------------------------------------------


def _write_ed25519_keypair(path: Path, comment: str) -> str:
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


def _write_known_hosts(work_dir: Path, port: int, host_public_key: str) -> Path:
    known_hosts = work_dir / "known_hosts"
    known_hosts.write_text(f"[{HOST}]:{port} {host_public_key}\n")
    return known_hosts


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# -- OpenSSH ----------------------------------------------------------------------------------------


def _sshd_version(sshd: str) -> tuple[int, int]:
    result = subprocess.run([sshd, "-V"], capture_output=True, text=True, check=False)
    match = re.search(r"OpenSSH_(\d+)\.(\d+)", result.stdout + result.stderr)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def _run_admin(args: list[str], *, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, input=input_text, capture_output=True, text=True, check=False)


def _admin_tool(name: str) -> str:
    found = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise RuntimeError(f"{name} not found: running the local SFTP server as root needs the 'passwd' package")
    return found


def _prepare_system_user(username: str | None, password: str | None) -> tuple[str, Callable[[], None]]:
    """Create (or reuse one of ours) the SFTP account; return its name and how to clean it up."""
    created = False
    if username is None:
        username = f"aptool-sftp-{secrets.token_hex(3)}"
    try:
        entry = pwd.getpwnam(username)
    except KeyError:
        entry = None
    if entry is None:
        shell = next((s for s in ("/usr/sbin/nologin", "/sbin/nologin") if os.path.exists(s)), "/bin/false")
        result = _run_admin(
            [_admin_tool("useradd"), "--system", "--no-create-home", "--home-dir", "/nonexistent",
             "--shell", shell, "--comment", USER_COMMENT, username]
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"useradd {username} failed: {result.stderr.strip()}")
        created = True
    elif password is not None and entry.pw_gecos != USER_COMMENT:
        raise ValueError(f"refusing to set a password on existing account {username!r}: it was not created by aptool")
    # sshd (UsePAM no) refuses accounts whose password field is locked ("!"); "*" matches no password.
    if password is not None:
        result = _run_admin([_admin_tool("chpasswd")], input_text=f"{username}:{password}\n")
    else:
        result = _run_admin([_admin_tool("usermod"), "-p", "*", username])
    if result.returncode != 0:
        raise RuntimeError(f"could not set the login of {username}: {result.stderr.strip()}")

    def cleanup() -> None:
        if created:
            for _ in range(10):  # sshd's per-connection children may still be exiting
                if _run_admin([_admin_tool("userdel"), username]).returncode == 0:
                    return
                time.sleep(0.1)
            log.warning("could not delete SFTP user %s; disabling its password instead", username)
        if created or password is not None:
            _run_admin([_admin_tool("usermod"), "-p", "*", username])

    return username, cleanup


def _check_readable_by(username: str, paths: list[Path]) -> None:
    """sshd reads authorized_keys and serves files as the SFTP user: fail early and clearly if it can't."""
    test = shutil.which("test") or "/usr/bin/test"
    for path in paths:
        flags = ["-r", str(path), "-a", "-x", str(path)] if path.is_dir() else ["-r", str(path)]
        if subprocess.run([test, *flags], user=username, check=False).returncode != 0:
            raise PermissionError(
                f"{path} is not readable by the SFTP user {username!r}. As root, sshd serves files as that user, so "
                "served_dir and work_dir must be world-traversable (not under a 0700 directory such as /root or "
                "pytest's basetemp)"
            )


def _sshd_config(
    *, port: int, work_dir: Path, host_key: Path, authorized_keys: Path, username: str, password: bool,
    version: tuple[int, int],
) -> str:  # fmt: skip
    lines = [
        f"ListenAddress {HOST}",
        f"Port {port}",
        f"HostKey {host_key}",
        f"PidFile {work_dir / 'sshd.pid'}",
        f"AuthorizedKeysFile {authorized_keys}",
        f"AllowUsers {username}",
        "PubkeyAuthentication yes",
        f"PasswordAuthentication {'yes' if password else 'no'}",
        "PermitEmptyPasswords no",
        "KbdInteractiveAuthentication no" if version >= (8, 7) else "ChallengeResponseAuthentication no",
        f"PermitRootLogin {'prohibit-password' if username == 'root' else 'no'}",
        "UsePAM no",
        "StrictModes no",
        "UseDNS no",
        "PrintMotd no",
        "PermitTTY no",
        "PermitUserRC no",
        "AllowTcpForwarding no",
        "AllowAgentForwarding no",
        "X11Forwarding no",
        "Subsystem sftp internal-sftp",
        "ForceCommand internal-sftp",
        "LogLevel VERBOSE",
    ]
    if version >= (9, 8):
        # Tests deliberately fail auth and host-key checks from 127.0.0.1; penalties would then refuse us.
        lines.append("PerSourcePenalties no")
    return "\n".join(lines) + "\n"


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _start_openssh(
    sshd: str, served_dir: Path, work_dir: Path, username: str | None, password: str | None
) -> LocalSFTPServer:
    cleanups: list[Callable[[], None]] = []
    try:
        as_root = os.geteuid() == 0
        if as_root:
            Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)  # privilege separation dir
        if as_root and password is None and username in (None, "root"):
            # Key-only login of the invoking account, like the non-root case: no system account is
            # created on the operator's machine, and served files need not be world-readable.
            username = "root"
        elif as_root:
            username, cleanup_user = _prepare_system_user(username, password)
            cleanups.append(cleanup_user)
        else:
            current = pwd.getpwuid(os.getuid()).pw_name
            if username not in (None, current):
                raise ValueError(f"sshd running as {current!r} can only log in {current!r}, not {username!r}")
            if password is not None:
                raise ValueError("password login needs sshd running as root; as non-root use key auth only")
            username = current
        assert username is not None

        host_key = work_dir / "ssh_host_ed25519_key"
        host_public = _write_ed25519_keypair(host_key, "aptool-local-sftp-host")
        client_key = work_dir / "client_ed25519_key"
        client_public = _write_ed25519_keypair(client_key, "aptool-local-sftp-client")
        authorized_keys = work_dir / "authorized_keys"
        authorized_keys.write_text(f"{client_public}\n")
        authorized_keys.chmod(0o644)
        if as_root and username != "root":
            _check_readable_by(username, [served_dir, authorized_keys])

        version = _sshd_version(sshd)
        log_path = work_dir / "sshd.log"
        stderr_path = work_dir / "sshd.stderr"
        for _ in range(3):  # the port picked by binding 0 can be taken before sshd binds it
            port = _free_port()
            config = work_dir / "sshd_config"
            config.write_text(
                _sshd_config(
                    port=port, work_dir=work_dir, host_key=host_key, authorized_keys=authorized_keys,
                    username=username, password=password is not None, version=version,
                )
            )  # fmt: skip
            with stderr_path.open("ab") as stderr:
                proc = subprocess.Popen(
                    [sshd, "-D", "-e", "-f", str(config), "-E", str(log_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=stderr,
                    stderr=stderr,
                    start_new_session=True,
                )
            if _wait_for_port(port, proc):
                break
            detail = f"{_tail(stderr_path)}\n{_tail(log_path)}".strip()
            if "Address already in use" not in detail:
                raise RuntimeError(f"sshd exited with status {proc.returncode} before listening:\n{detail}")
        else:
            raise RuntimeError(f"sshd could not bind a free port:\n{_tail(log_path)}")
        cleanups.insert(0, lambda: _terminate(proc))
    except BaseException:
        for cleanup in cleanups:
            cleanup()
        raise

    def stop() -> None:
        for cleanup in cleanups:
            cleanup()

    return LocalSFTPServer(
        kind="openssh",
        host=HOST,
        port=port,
        username=username,
        password=password,
        private_key_path=client_key,
        known_hosts_path=_write_known_hosts(work_dir, port, host_public),
        remote_root=str(served_dir),
        log_path=log_path,
        _stop_callback=stop,
    )


def _wait_for_port(port: int, proc: subprocess.Popen[bytes]) -> bool:
    """True once sshd accepts connections; False if it exited first; raises if it never listens."""
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    _terminate(proc)
    raise RuntimeError(f"sshd did not listen on {HOST}:{port} within {_START_TIMEOUT_S:.0f}s")


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- paramiko fallback ------------------------------------------------------------------------------


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


def _start_paramiko(served_dir: Path, work_dir: Path, username: str | None, password: str | None) -> LocalSFTPServer:
    username = username or "aptool-sftp"
    host_key_path = work_dir / "paramiko_host_ed25519_key"
    host_public = _write_ed25519_keypair(host_key_path, "aptool-local-sftp-host")
    client_key = work_dir / "client_ed25519_key"
    _write_ed25519_keypair(client_key, "aptool-local-sftp-client")
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
        known_hosts_path=_write_known_hosts(work_dir, server.port, host_public),
        remote_root=str(served_dir),
        _stop_callback=server.stop,
    )
