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
connect with strict host-key checking exactly as in production. The implementations live in
``sftp_openssh`` and ``sftp_paramiko``; ``LocalSFTPServer`` in ``sftp_local``.
"""

from __future__ import annotations

import atexit
import os
import shutil
from pathlib import Path

from aptool_demo.sftp_local import LocalSFTPServer
from aptool_demo.sftp_openssh import start_openssh
from aptool_demo.sftp_paramiko import start_paramiko

__all__ = ["LocalSFTPServer", "find_sshd", "start_local_sftp_server"]


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
        server = start_openssh(sshd, served_dir, work_dir, username, password)
    else:
        server = start_paramiko(served_dir, work_dir, username, password)
    atexit.register(server.stop)  # no orphaned sshd or system user if a caller forgets stop()
    return server
