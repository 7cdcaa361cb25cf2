"""Webhook signatures (contract §5): HMAC-SHA256 of the raw request body, hex encoded.

The sender puts ``X-Aeries-Signature: sha256=<hex>`` on each request; a bare hex digest is
accepted too. Verification recomputes the HMAC over the exact bytes received (never over a
re-serialized body) and compares in constant time with :func:`hmac.compare_digest`. During a
secret rotation two secrets are valid (:func:`verify_any`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

SIGNATURE_HEADER = "X-Aeries-Signature"
MIN_SECRET_LENGTH = 32  # contract §2: APTOOL_WEBHOOK_SECRET has at least 32 characters
_PREFIX = "sha256="
_HEX = frozenset("0123456789abcdefABCDEF")


def sign(body: bytes, secret: str) -> str:
    """The header value for ``body``: ``"sha256=<64 hex digits>"``."""
    return _PREFIX + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(body: bytes, header: str | None, secret: str) -> bool:
    """True when ``header`` carries the HMAC-SHA256 of ``body`` under ``secret``.

    Accepts ``sha256=<hex>`` (prefix case-insensitive) or a bare hex digest; a missing, empty or
    garbled header (wrong length, not hex, another algorithm) is simply False, never an exception.
    """
    if not header or not secret:
        return False
    value = header.strip()
    if value[: len(_PREFIX)].lower() == _PREFIX:
        value = value[len(_PREFIX) :]
    if len(value) != 64 or not _HEX.issuperset(value):
        return False
    expected = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, value.lower())


def verify_any(body: bytes, header: str | None, secrets: Sequence[str]) -> bool:
    """True when ``header`` is the signature of ``body`` under any of ``secrets`` (the current one and,
    during a rotation, the previous one). Every secret is checked, so the time taken does not say which."""
    results = [verify(body, header, secret) for secret in secrets]
    return any(results)
