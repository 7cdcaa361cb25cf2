"""What a circuit breaker needs from the store that shares its state between processes.

Resilience defines the interface; the implementations (SQLite, PostgreSQL) live in
:mod:`aptool_assets.storage.breakers`, which the callers that build breakers and guards open and
hand in. Resilience never imports storage.

A breaker row is a plain dict with the keys :data:`BREAKER_FIELDS`: times are epoch-second floats
(or None) and ``outcomes`` is the sliding window of recent calls, oldest first, each an :data:`Outcome`
``(epoch seconds, succeeded, call)`` (``call`` names a request, so that its retries can be told apart), so
:mod:`.breaker` holds all the logic once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

Outcome = tuple[float, bool, str]

BREAKER_FIELDS = (
    "service",
    "state",
    "outcomes",
    "opened_at",
    "half_open_at",
    "reason",
    "trial_started_at",
    "times_opened",
    "updated_at",
)


class BreakerStore(ABC):
    """Breaker rows and failed operations; every write is one committed transaction."""

    @abstractmethod
    def describe(self) -> str: ...

    @abstractmethod
    def read(self, service: str) -> dict | None:
        """The breaker row of ``service`` (None if it never failed), without locking."""

    @abstractmethod
    def read_all(self) -> list[dict]: ...

    @abstractmethod
    def update(self, service: str, change: Callable[[dict | None], dict | None]) -> dict | None:
        """Atomically replace the row with ``change(current)``; ``None`` from ``change`` keeps it."""

    @abstractmethod
    def add_failed_operation(
        self, service: str, operation: str, error_type: str, message: str, context: dict | None = None
    ) -> int: ...

    @abstractmethod
    def failed_operations(self, pending_only: bool = True) -> list[dict]: ...

    @abstractmethod
    def resolve_failed_operations(self, ids: list[int] | None = None) -> int:
        """Mark dead letters handled (all pending ones when ``ids`` is None); returns how many."""

    def close(self) -> None:  # noqa: B027 - optional
        pass
