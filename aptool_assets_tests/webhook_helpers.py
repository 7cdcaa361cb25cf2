"""Helpers for the webhook receiver tests: the receiver on a loopback port, configured exactly as
``aptool webhooks serve`` configures uvicorn, and signed deliveries."""

from __future__ import annotations

import datetime as dt
import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
import uvicorn

from aptool_assets.events.app import create_app, server_config
from aptool_assets.events.server import ServerLimits
from aptool_assets.events.signatures import sign

REPO = Path(__file__).resolve().parents[1]
SECRET = "whsec-test-7c1d9e-0123456789abcdef-rotate"  # at least 32 characters (contract §2)
PATH = "/webhooks/aeries"
UTC = dt.UTC
SENTINEL = "PAYLOAD-SENTINEL-q8Zx"  # a payload value that must never show up in logs or errors


# -- the server ---------------------------------------------------------------------------------
class ThreadedServer:
    """uvicorn serving ``app`` on a free loopback port, in a background thread, with the configuration
    of ``aptool webhooks serve`` (:func:`server_config`: read deadline, connection limit, keep-alive)."""

    def __init__(self, app, limits: ServerLimits | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = server_config(app, "127.0.0.1", self.port, limits=limits, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()


@pytest.fixture
def server(inbox):
    with ThreadedServer(create_app(inbox, SECRET)) as running:
        yield running


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


# -- helpers ----------------------------------------------------------------------------------
def make_event(
    event_type: str = "attendance.updated",
    event_id: str | None = None,
    ts: dt.datetime | str | None = None,
    data: dict | None = None,
) -> dict:
    if data is None:
        data = {
            "attendance.updated": {
                "studentId": 1001,
                "schoolId": 994,
                "date": "2025-10-01",
                "period": None,
                "attendanceCode": "A",
                "minutes": 0,
            },
            "attendance.corrected": {
                "studentId": 1001,
                "schoolId": 994,
                "date": "2025-10-01",
                "period": "2",
                "originalCode": "A",
                "newCode": "E",
                "reason": SENTINEL,
                "correctedBy": "clerk7",
            },
            "student.enrolled": {"studentId": 1001, "schoolId": 994, "grade": 9, "enterDate": "2025-08-14"},
            "student.withdrawn": {"studentId": 1001, "schoolId": 994, "leaveDate": "2025-12-19"},
        }.get(event_type, {"studentId": 1001, "note": SENTINEL})
    ts = ts if ts is not None else dt.datetime.now(UTC)
    return {
        "eventId": event_id or f"evt-{uuid.uuid4().hex}",
        "eventType": event_type,
        "timestamp": ts if isinstance(ts, str) else ts.isoformat(),
        "data": data,
    }


def encode(event) -> bytes:
    return event if isinstance(event, bytes) else json.dumps(event).encode()


def post(
    client: httpx.Client, event, *, signature: str | None = "sign", secret: str = SECRET, headers: dict | None = None
) -> httpx.Response:
    body = encode(event)
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    if signature == "sign":
        hdrs["X-Aeries-Signature"] = sign(body, secret)
    elif signature is not None:
        hdrs["X-Aeries-Signature"] = signature
    return client.post(PATH, content=body, headers=hdrs)


def stored_ids(box) -> set[str]:
    ids = {e.event_id for e in box.pending(limit=1_000_000)}
    ids |= {d["event_id"] for d in box.dead_letters(include_replayed=True)}
    return ids


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the receiver as an operator runs it -------------------------------------------------------
class ReceiverProcess:
    """``aptool webhooks serve`` in a subprocess on a free port: started, awaited on ``/healthz``,
    terminated afterwards. ``log()`` is what it wrote (stdout and stderr)."""

    def __init__(self, env: dict[str, str], log_path, *extra_args: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - the receiver writes to it until stopped
        args = ["webhooks", "serve", "--port", str(self.port), *extra_args]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aptool_assets.cli", *args],
            env=env,
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self, timeout: float = 30.0) -> ReceiverProcess:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            assert self.proc.poll() is None, f"receiver exited ({self.proc.returncode}): {self.log()}"
            assert time.monotonic() < deadline, f"receiver did not come up: {self.log()}"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()

    def __enter__(self) -> ReceiverProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
