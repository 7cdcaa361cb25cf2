"""The error taxonomy of the original design, as base classes the clients' own errors subclass.

Each class says what the platform does about an outside service's failure, whichever service it is:

- :class:`RateLimitedError` (HTTP 429): wait (Retry-After) and retry; flow control, not a breaker failure.
- :class:`TransientError` (5xx, timeout, dropped connection): retry with the service's policy; counts
  towards its breaker.
- :class:`AuthError` (401/403, a refused SFTP login): no retry; the credential is blocked for a while; alert.
- :class:`MaintenanceError` (503 with a long Retry-After): no retry; the breaker opens for the maintenance
  back-off.
- :class:`NotFoundError` (404 on one object): log the ID and skip.
- :class:`PermanentError` (a malformed response, an untrusted host key): no retry, neither of the call nor
  of the Dagster step; kept as a failed operation.

Messages name endpoints, servers and IDs only: never a credential, never a student's name.
"""

from __future__ import annotations


class ServiceError(RuntimeError):
    """A failure of an outside service (Aeries, the i-Ready SFTP server)."""


class TransientError(ServiceError):
    """A failure a retry may fix; ``retry_after_s`` carries the server's own hint, if any."""

    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RateLimitedError(TransientError):
    """The service asked us to slow down: wait and retry, never count it against the service."""


class AuthError(ServiceError):
    """The service refused the credential: retrying cannot fix it and may lock the account.

    ``blocks_credential``: whether the credential itself was refused (then it is not tried again for the
    auth back-off), as opposed to a credential that works but may not do this (HTTP 403) or a server
    that is not trusted (an unknown host key). ``refusal`` says which, for the block's reason.
    """

    blocks_credential: bool = True
    refusal: str = "credential refused"


class MaintenanceError(ServiceError):
    """The service is down for maintenance: stop calling it for a while instead of retrying.
    ``reason`` says how it announced it, for the breaker's reason."""

    reason: str = "maintenance"


class NotFoundError(ServiceError):
    """One object does not exist (a school, a student record): skip it."""


class PermanentError(ServiceError):
    """The answer or the setup is wrong in a way no retry fixes (a malformed response, an untrusted host key)."""


NO_STEP_RETRY: tuple[type[ServiceError], ...] = (AuthError, PermanentError)
"""Failures a Dagster step retry cannot fix either (see ``resilience.failures.retry_as_fits``)."""
