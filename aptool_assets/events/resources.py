"""The webhook inbox as a Dagster resource: the same store the receiver writes (contract §5)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from pydantic import Field

from aptool_assets.storage.inbox import Inbox, open_inbox


class WebhookInboxResource(dg.ConfigurableResource):
    """PostgreSQL when the platform database is PostgreSQL (``APTOOL_DATABASE_URL``), else the
    embedded SQLite inbox (``APTOOL_INBOX_PATH`` or ``$DAGSTER_HOME/inbox.sqlite``) — exactly where
    ``aptool webhooks serve`` started with the same environment stores events."""

    database_url: str | None = Field(default=None, repr=False, description="APTOOL_DATABASE_URL (secret)")
    inbox_path: str | None = None

    def open(self) -> Inbox:
        # "" rather than None: the configured URL only, never a fallback to the environment.
        return open_inbox(self.database_url or "", path=self.inbox_path, pool_size=2)

    @contextmanager
    def session(self) -> Iterator[Inbox]:
        """The inbox, set up (idempotent) and closed afterwards."""
        box = self.open()
        try:
            box.setup()
            yield box
        finally:
            box.close()
