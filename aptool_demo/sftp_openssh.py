"""The local SFTP server on the machine's OpenSSH ``sshd`` (preferred): the real server clients meet.

A throwaway config, host key and client key live in ``work_dir``; files are served from their real
absolute path (no chroot), read-only for the SFTP user. As non-root, sshd can only log in the current
user, with the key. As root it logs in a dedicated system user created for this server (``useradd``;
password set through ``chpasswd`` on stdin), because password login for a real account must not be
touched; that user is deleted again on ``stop()``.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from aptool_demo.sftp_local import HOST, LocalSFTPServer, write_ed25519_keypair, write_known_hosts

log = logging.getLogger(__name__)

USER_COMMENT = "aptool local SFTP server (demo/tests)"
_START_TIMEOUT_S = 10.0


class _Keys(NamedTuple):
    host_key: Path
    host_public: str
    client_key: Path
    authorized_keys: Path


def start_openssh(
    sshd: str, served_dir: Path, work_dir: Path, username: str | None, password: str | None
) -> LocalSFTPServer:
    """Start ``sshd`` serving ``served_dir`` on a free loopback port; undo everything if that fails."""
    cleanups: list[Callable[[], None]] = []
    try:
        as_root = os.geteuid() == 0
        username = _login_user(as_root, username, password, cleanups)
        keys = _write_keys(work_dir)
        if as_root and username != "root":
            _check_readable_by(username, [served_dir, keys.authorized_keys])
        proc, port, log_path = _launch(sshd, work_dir, keys, username, password is not None)
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
        private_key_path=keys.client_key,
        known_hosts_path=write_known_hosts(work_dir, port, keys.host_public),
        remote_root=str(served_dir),
        log_path=log_path,
        _stop_callback=stop,
    )


def _login_user(as_root: bool, username: str | None, password: str | None, cleanups: list[Callable[[], None]]) -> str:
    """The account sshd will log in; a system user created for it adds its removal to ``cleanups``."""
    if as_root:
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)  # privilege separation dir
        if password is None and username in (None, "root"):
            # Key-only login of the invoking account, like the non-root case: no system account is
            # created on the operator's machine, and served files need not be world-readable.
            return "root"
        username, cleanup_user = _prepare_system_user(username, password)
        cleanups.append(cleanup_user)
        return username
    current = pwd.getpwuid(os.getuid()).pw_name
    if username not in (None, current):
        raise ValueError(f"sshd running as {current!r} can only log in {current!r}, not {username!r}")
    if password is not None:
        raise ValueError("password login needs sshd running as root; as non-root use key auth only")
    return current


def _write_keys(work_dir: Path) -> _Keys:
    """A fresh host key, a client key, and authorized_keys holding the client's public key."""
    host_key = work_dir / "ssh_host_ed25519_key"
    host_public = write_ed25519_keypair(host_key, "aptool-local-sftp-host")
    client_key = work_dir / "client_ed25519_key"
    client_public = write_ed25519_keypair(client_key, "aptool-local-sftp-client")
    authorized_keys = work_dir / "authorized_keys"
    authorized_keys.write_text(f"{client_public}\n")
    authorized_keys.chmod(0o644)
    return _Keys(host_key, host_public, client_key, authorized_keys)


def _launch(
    sshd: str, work_dir: Path, keys: _Keys, username: str, password: bool
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """sshd listening on a free port: (process, port, log path)."""
    version = _sshd_version(sshd)
    log_path = work_dir / "sshd.log"
    stderr_path = work_dir / "sshd.stderr"
    for _ in range(3):  # the port picked by binding 0 can be taken before sshd binds it
        port = _free_port()
        config = work_dir / "sshd_config"
        config.write_text(
            _sshd_config(
                port=port,
                work_dir=work_dir,
                host_key=keys.host_key,
                authorized_keys=keys.authorized_keys,
                username=username,
                password=password,
                version=version,
            )
        )
        with stderr_path.open("ab") as stderr:
            proc = subprocess.Popen(
                [sshd, "-D", "-e", "-f", str(config), "-E", str(log_path)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        if _wait_for_port(port, proc):
            return proc, port, log_path
        detail = f"{_tail(stderr_path)}\n{_tail(log_path)}".strip()
        if "Address already in use" not in detail:
            raise RuntimeError(f"sshd exited with status {proc.returncode} before listening:\n{detail}")
    raise RuntimeError(f"sshd could not bind a free port:\n{_tail(log_path)}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


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
            [
                _admin_tool("useradd"),
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                shell,
                "--comment",
                USER_COMMENT,
                username,
            ]
        )
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
    *,
    port: int,
    work_dir: Path,
    host_key: Path,
    authorized_keys: Path,
    username: str,
    password: bool,
    version: tuple[int, int],
) -> str:
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
