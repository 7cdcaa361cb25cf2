"""Faults the Aeries simulator injects on request, so clients' retries and error handling meet real failures.

Tests set counters on a running server's ``FaultPlan`` (the next N requests get a 429, a 503, a dropped
connection, a truncated body or bad JSON), optionally only for paths matching a pattern, plus latency.
A steady mix of faults is set with the ``*_every`` fields: every Nth request (counting the requests the
pattern matches, from 1) gets that fault, e.g. the flaky API of issue #12 §4::

    sim.faults.retry_after_s = 1.0
    sim.faults.rate_limit_every, sim.faults.unavailable_every, sim.faults.drop_every = 7, 11, 17

and a hard outage is ``drop_every = 1`` (every request dropped). The "next N" counters go first; where
several ``*_every`` fall on the same request, a drop wins over a 429, a 429 over a 503.

``school_programs_refusal`` is not a transport fault but a district whose Aeries does not serve the
whole-school programs call (``/schools/{sc}/students/programs``): set it to 400 or 404 and that call is
refused with a ``Message`` while the per-student ``/students/{StudentID}/programs`` calls still answer.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

FAULTS = ("drop", "rate_limit", "unavailable", "truncate", "invalid_json")
EVERY = ("drop", "rate_limit", "unavailable")


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
    rate_limit_every: int = 0  # every Nth request a 429 with Retry-After (0: never)
    unavailable_every: int = 0  # every Nth request a 503 without Retry-After
    drop_every: int = 0  # every Nth request dropped without a response
    seen: int = 0  # requests the pattern matched so far (what the *_every fields count)
    school_programs_refusal: int = 0  # 400 or 404: the whole-school programs call is refused (0: served)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def take(self, path: str) -> tuple[str | None, float]:
        """The fault (if any) for one request to ``path``, and the latency to add."""
        with self._lock:
            if self.paths_matching and not re.search(self.paths_matching, path, re.IGNORECASE):
                return None, 0.0
            self.seen += 1
            for name in FAULTS:
                attr = f"{name}_next"
                if getattr(self, attr) > 0:
                    setattr(self, attr, getattr(self, attr) - 1)
                    return name, self.latency_s
            for name in EVERY:
                every = getattr(self, f"{name}_every")
                if every > 0 and self.seen % every == 0:
                    return name, self.latency_s
            return None, self.latency_s
