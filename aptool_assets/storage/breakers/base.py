"""Where circuit-breaker state and failed operations (dead letters) live, shared by every process.

Each Dagster run is its own process, and sensors run in the code server: an in-memory breaker would
forget every failure when the run ends. So the state lives in the platform's database, chosen like the
webhook inbox (``open_inbox``):

* **PostgreSQL** (``APTOOL_DATABASE_URL=postgresql://…``, :mod:`.postgres`): ``aptool.circuit_breakers``
  and ``aptool.failed_operations`` in the AP Tool database. Updates lock the service's row
  (``SELECT … FOR UPDATE``), so two processes never both take the half-open trial.
* **SQLite** otherwise (:mod:`.sqlite`; the embedded DuckDB warehouse admits one writer process, so not
  there): ``$DAGSTER_HOME/breakers.sqlite`` (``.aptool/`` without DAGSTER_HOME; ``APTOOL_BREAKER_PATH``
  overrides), WAL mode, updates under ``BEGIN IMMEDIATE``.

Both implement :class:`~aptool_assets.resilience.store_api.BreakerStore`, the interface the breakers
need. A table of the count-based breaker (before issue #12: a ``failures`` column of failure times) is
migrated in place when a store first opens it, under the store's write lock: the column becomes
``outcomes`` and its windows start empty (an open breaker stays open until its half-open time; the
rows hold no business data). Rows are plain dicts with epoch-second floats (this module converts the stored form), so
:mod:`aptool_assets.resilience.breaker` holds all the logic once.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from aptool_assets.resilience.store_api import BREAKER_FIELDS, BreakerStore

__all__ = [
    "BREAKER_FIELDS",
    "MAX_MESSAGE",
    "RETIRED_COLUMN",
    "BreakerStore",
    "as_datetime",
    "as_epoch",
    "row_from_db",
]

_TIME_FIELDS = ("opened_at", "half_open_at", "trial_started_at", "updated_at")
MAX_MESSAGE = 500
RETIRED_COLUMN = "failures"  # the count-based breaker's column, renamed to ``outcomes`` when found


def as_datetime(value: float | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromtimestamp(value, dt.UTC)


def as_epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.timestamp()
    return float(value)


def row_from_db(raw: dict) -> dict:
    """A stored breaker row (either backend's types) as the breaker's plain dict."""
    row = {k: raw[k] for k in BREAKER_FIELDS}
    outcomes = row["outcomes"]
    parsed = (json.loads(outcomes) if isinstance(outcomes, str) else outcomes) or []  # NULL / 'null': none
    row["outcomes"] = [(float(t), bool(ok), str(call or "")) for t, ok, call in parsed]
    for name in _TIME_FIELDS:
        row[name] = as_epoch(row[name])
    row["times_opened"] = int(row["times_opened"] or 0)
    return row
