"""Webhook events (contract §5): signatures, the durable inbox, and the ASGI receiver.

``aptool_assets.events.app`` (starlette/uvicorn) is imported on demand, so code that only reads
the inbox (the applying sensor, ``aptool dead-letters``) does not load the web stack.
"""

from aptool_assets.events.inbox import (
    REQUIRED_DATA,
    SUPPORTED_EVENT_TYPES,
    Inbox,
    InboxEvent,
    PostgresInbox,
    SqliteInbox,
    data_problem,
    default_inbox_path,
    open_inbox,
)
from aptool_assets.events.signatures import sign, verify

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
