"""Faults the Aeries simulator injects on request, so clients' retries and error handling meet real failures.

Tests set counters on a running server's ``FaultPlan`` (the next N requests get a 429, a 503, a dropped
connection, a truncated body or bad JSON), optionally only for paths matching a pattern, plus latency.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field


@dataclass
class FaultPlan:
    """Faults for the next requests; tests change it while the server runs (a lock guards the counters)."""

    rate_limit_next: int = 0
    retry_after_s: float = 1.0
    unavailable_next: int = 0
    drop_next: int = 0  # close the connection without any response
    latency_s: float = 0.0
    invalid_json_next: int = 0
    truncate_next: int = 0  # send headers and half the body, then close (an incomplete read)
    paths_matching: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def take(self, path: str) -> tuple[str | None, float]:
        """The fault (if any) for one request to ``path``, and the latency to add."""
        with self._lock:
            if self.paths_matching and not re.search(self.paths_matching, path, re.IGNORECASE):
                return None, 0.0
            for name in ("drop", "rate_limit", "unavailable", "truncate", "invalid_json"):
                attr = f"{name}_next"
                if getattr(self, attr) > 0:
                    setattr(self, attr, getattr(self, attr) - 1)
                    return name, self.latency_s
            return None, self.latency_s
