"""How the webhook receiver is served: uvicorn with bounded connections and read deadlines, so slow or
idle clients cannot hold it, and the warning for plain HTTP on a public interface.

uvicorn alone has no deadline for reading a request: its keep-alive timer only runs between
requests and restarts on every byte, so a client trickling one byte a second holds a connection
(and a slot of ``limit_concurrency``) forever. :func:`deadline_protocol` adds one: the request line,
headers and body must all arrive within ``ServerLimits.read_timeout`` seconds of the connection (or
of the request's first byte on a kept-alive connection), else the connection is closed -- with a
``408`` when the headers never completed. Together with ``limit_concurrency`` (beyond it uvicorn
answers 503) this bounds what slow clients can take: at most ``max_connections`` sockets, each for
at most ``read_timeout`` seconds per request, while the event loop keeps answering everyone else.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

REQUEST_TIMEOUT_RESPONSE = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


@dataclass(frozen=True)
class ServerLimits:
    """What one receiver process admits (``aptool webhooks serve`` uses the defaults)."""

    max_connections: int = 500
    """uvicorn ``limit_concurrency``: open connections (or requests in progress) beyond this get 503."""
    read_timeout: float = 10.0
    """Seconds for a whole request (request line, headers, body of at most 64 KiB) to arrive."""
    keep_alive_timeout: float = 15.0
    """Seconds an idle kept-alive connection stays open between requests."""


def deadline_protocol(read_timeout: float, on_timeout: Callable[[], None] | None = None) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with a per-request read deadline (see the module docstring);
    ``on_timeout`` is called for each connection closed by it (the receiver counts them)."""

    class DeadlineHttpToolsProtocol(HttpToolsProtocol):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self._read_deadline: asyncio.TimerHandle | None = None
            self._headers_pending = True  # no request line and headers complete since the deadline was armed

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._read_deadline is None:  # a further request on a kept-alive connection
                self._arm()

        def on_headers_complete(self) -> None:
            self._headers_pending = False
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._disarm()  # the request is in; answering it is the application's business
            super().on_message_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._headers_pending = True
            self._read_deadline = self.loop.call_later(read_timeout, self._read_timed_out)

        def _disarm(self) -> None:
            if self._read_deadline is not None:
                self._read_deadline.cancel()
                self._read_deadline = None

        def _read_timed_out(self) -> None:
            self._read_deadline = None
            if self.transport.is_closing():
                return
            if self._headers_pending:
                # No application task has this request: say why before closing.
                self.transport.write(REQUEST_TIMEOUT_RESPONSE)
            # Otherwise the body is late (the application sees a disconnect), or it is the rest of a body
            # already answered (e.g. 413 on its Content-Length): close without a second answer.
            self.transport.close()
            if on_timeout is not None:
                on_timeout()

    return DeadlineHttpToolsProtocol


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[] ")).is_loopback
    except ValueError:
        return False


def plain_http_warning(host: str, port: int) -> str | None:
    """The warning for serving plain HTTP beyond this machine (None on loopback)."""
    if is_loopback(host):
        return None
    return (
        f"serving plain HTTP on {host}:{port}, beyond this machine: signatures protect integrity, not "
        "confidentiality (payloads carry student IDs). Serve on 127.0.0.1 behind a TLS-terminating reverse "
        "proxy (docs/deployment.md, 'The webhook receiver')"
    )
