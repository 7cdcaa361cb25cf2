"""Which ``AERIES_BASE_URL`` the Aeries certificate may be sent to.

The certificate travels in a request header on every call, so it is only ever sent over TLS: ``https://``
to any host, or plain ``http://`` to this machine (``127.0.0.1`` and the rest of 127/8, ``localhost``,
``[::1]``), where the bundled simulator listens. Anything else is refused before a connection is made.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

LOOPBACK_NAMES = frozenset({"localhost"})
EXAMPLE = "https://district.aeries.net/admin"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, without brackets) is this machine."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name, not an address
        return False


def base_url_problem(base_url: str | None) -> str | None:
    """Why ``base_url`` must not be used, naming the variable (scheme and host only: never the path or
    user info); None when it may."""
    if not base_url or not re.match(r"^https?://", base_url, re.IGNORECASE):
        return f"AERIES_BASE_URL must be an http(s) URL such as {EXAMPLE}"
    parts = urlsplit(base_url)
    try:
        host = parts.hostname
        _ = parts.port  # a malformed port raises ValueError
    except ValueError:
        host = None
    if not host:
        return f"AERIES_BASE_URL has no valid host; expected e.g. {EXAMPLE}"
    if parts.scheme.lower() == "http" and not is_loopback(host):
        return (
            f"AERIES_BASE_URL uses plain http:// to {host}: the Aeries certificate (AERIES-CERT header) would "
            "travel in clear text. Use https:// (plain http:// is accepted only for this machine: "
            "127.0.0.1, localhost, [::1])"
        )
    return None
