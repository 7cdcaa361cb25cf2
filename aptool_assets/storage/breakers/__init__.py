"""The circuit-breaker store: SQLite (:mod:`.sqlite`) or PostgreSQL (:mod:`.postgres`), opened to
follow the platform database (:func:`open_breaker_store`). Both implement
:class:`~aptool_assets.resilience.store_api.BreakerStore`; callers hand the opened store to the
breakers and guards they build, and close it when done."""

from __future__ import annotations

from aptool_assets.storage.backends import database_target, default_breaker_path
from aptool_assets.storage.breakers.base import BreakerStore
from aptool_assets.storage.breakers.postgres import PostgresBreakerStore
from aptool_assets.storage.breakers.sqlite import SqliteBreakerStore

__all__ = [
    "BreakerStore",
    "PostgresBreakerStore",
    "SqliteBreakerStore",
    "default_breaker_path",
    "open_breaker_store",
]


def open_breaker_store(database_url: str | None = None) -> BreakerStore:
    """The store that goes with the AP Tool database (``None``: ``APTOOL_DATABASE_URL``), like the inbox."""
    url = database_target(database_url).postgres_url
    return PostgresBreakerStore(url) if url else SqliteBreakerStore(default_breaker_path())
