"""The durable webhook inbox (:mod:`.base`): PostgreSQL (:mod:`.postgres`) or SQLite (:mod:`.sqlite`),
opened to follow the platform database (:func:`open_inbox`) so the receiver, the applying sensor and
the CLI started with the same environment share one inbox. It stores events; what makes an event
valid is :mod:`aptool_assets.events.validation`'s business."""

from __future__ import annotations

import os
from pathlib import Path

from aptool_assets.storage.backends import database_target, default_inbox_path
from aptool_assets.storage.inbox.base import Inbox, InboxEvent, InboxMissing, utcnow
from aptool_assets.storage.inbox.postgres import PostgresInbox
from aptool_assets.storage.inbox.sqlite import SqliteInbox

__all__ = [
    "Inbox",
    "InboxEvent",
    "InboxMissing",
    "PostgresInbox",
    "SqliteInbox",
    "default_inbox_path",
    "open_inbox",
    "utcnow",
]


def open_inbox(database_url: str | None = None, *, path: str | os.PathLike | None = None, pool_size: int = 32) -> Inbox:
    """The inbox that goes with the AP Tool database.

    ``postgresql://…`` → :class:`PostgresInbox` in that database (schema ``aptool``, an async pool of
    ``pool_size``); ``duckdb:///…`` → the embedded :class:`SqliteInbox` at ``path``, else
    :func:`default_inbox_path`. ``None`` means the configured database, ``APTOOL_DATABASE_URL``, and
    the embedded inbox when that is unset, so a receiver and a sensor started with the same
    environment always share one inbox.
    """
    url = database_target(database_url).postgres_url
    if url:
        return PostgresInbox(url, pool_size=pool_size)
    return SqliteInbox(Path(path) if path else default_inbox_path())
