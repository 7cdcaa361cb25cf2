"""A Python subprocess whose stdout lines can be awaited and which can be killed with SIGKILL.

The kill -9 tests (publishing atomicity, the faults suite) start real processes, wait until they
print that they reached a point (e.g. "HOLDING … before COMMIT"), and kill them there.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


class ChildProcess:
    """``python -c code plan-as-json``; stdout lines queue up, stderr is kept for failure messages."""

    name = "child"

    def __init__(self, code: str, plan: dict[str, Any], env: dict[str, str] | None = None):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, json.dumps(plan)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.pid = self.proc.pid
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        for stream, sink in ((self.proc.stdout, self.lines.put), (self.proc.stderr, self.stderr.append)):
            threading.Thread(target=self._pump, args=(stream, sink), daemon=True).start()

    @staticmethod
    def _pump(stream, sink) -> None:
        for line in stream:
            sink(line.rstrip("\n"))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_for_line(self, prefix: str, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.05)
            except queue.Empty:
                if not self.alive() and self.lines.empty():
                    pytest.fail(f"{self.name} exited ({self.proc.returncode}) before {prefix!r}: {self.err()}")
                continue
            if line.startswith(prefix):
                return line
        pytest.fail(f"{self.name} did not print {prefix!r} within {timeout}s: {self.err()}")

    def kill9(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        assert self.proc.wait(timeout=30) == -signal.SIGKILL

    def finish(self, timeout: float = 600.0) -> None:
        rc = self.proc.wait(timeout=timeout)
        time.sleep(0.05)  # let the pump threads drain
        assert rc == 0, f"{self.name} failed ({rc}): {self.err()}"

    def err(self, tail: int | None = 30) -> str:
        """The child's stderr: its last ``tail`` lines (all of it with ``tail=None``)."""
        time.sleep(0.1)
        return "\n".join(self.stderr if tail is None else self.stderr[-tail:])

    def cleanup(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()
