"""Webhook events (contract §5): signatures, what a valid event is, and the ASGI receiver.

The durable inbox the receiver writes is storage (:mod:`aptool_assets.storage.inbox`), re-exported
here. ``aptool_assets.events.app`` (starlette/uvicorn) is imported on demand, so code that only reads
the inbox (the applying sensor, ``aptool dead-letters``) does not load the web stack.
"""

from aptool_assets.events.signatures import sign, verify
from aptool_assets.events.validation import REQUIRED_DATA, SUPPORTED_EVENT_TYPES, data_problem
from aptool_assets.storage.inbox import (
    Inbox,
    InboxEvent,
    PostgresInbox,
    SqliteInbox,
    default_inbox_path,
    open_inbox,
)

__all__ = [
    "REQUIRED_DATA",
    "SUPPORTED_EVENT_TYPES",
    "Inbox",
    "InboxEvent",
    "PostgresInbox",
    "SqliteInbox",
    "data_problem",
    "default_inbox_path",
    "open_inbox",
    "sign",
    "verify",
]
