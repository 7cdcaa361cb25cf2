"""The webhook inbox as a Dagster resource: the same store the receiver writes (contract §5)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import dagster as dg

from aptool_assets.events.inbox import Inbox, PostgresInbox, SqliteInbox, default_inbox_path
from aptool_assets.settings import postgres_url_or_none


class WebhookInboxResource(dg.ConfigurableResource):
    """PostgreSQL when the platform database is PostgreSQL (``APTOOL_DATABASE_URL``), else the
    embedded SQLite inbox (``APTOOL_INBOX_PATH`` or ``$DAGSTER_HOME/inbox.sqlite``) — exactly where
    ``aptool webhooks serve`` started with the same environment stores events."""

    database_url: Optional[str] = None
    inbox_path: Optional[str] = None

    def open(self) -> Inbox:
        url = postgres_url_or_none(self.database_url or "")
        if url:
            return PostgresInbox(url, pool_size=2)
        return SqliteInbox(Path(self.inbox_path) if self.inbox_path else default_inbox_path())

    @contextmanager
    def session(self) -> Iterator[Inbox]:
        """The inbox, set up (idempotent) and closed afterwards."""
        box = self.open()
        try:
            box.setup()
            yield box
        finally:
            box.close()
