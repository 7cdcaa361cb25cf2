"""Turn permanent errors into Dagster failures that a step RetryPolicy does not retry, with messages
scrubbed of secrets.

A refused certificate, a wrong SFTP password, an untrusted host key or a malformed setting (a
``ConfigurationError``, e.g. an ``APTOOL_DATABASE_URL`` libpq cannot read) will not fix itself: retrying
the step only delays the alert (and hammers the district's server). Transient errors keep propagating
as they are, so the step's RetryPolicy still applies to them. Every error leaving a decorated compute
function is scrubbed (:func:`aptool_assets.redaction.scrubbed`) first: the step's failure, its
description and its causes are what Dagster keeps in the event log.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import dagster as dg

from aptool_assets.redaction import scrub, scrubbed
from aptool_assets.resilience.errors import NO_STEP_RETRY
from aptool_assets.settings import ConfigurationError

F = TypeVar("F", bound=Callable)


def fail_fast_on(*permanent: type[BaseException]) -> Callable[[F], F]:
    """Decorate an asset's compute function: ``permanent`` errors end the step without retries; every
    error leaves scrubbed of secrets."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                clean = scrubbed(exc)
                if isinstance(clean, dg.Failure) and clean.description:
                    clean.description = scrub(clean.description)
                if isinstance(exc, permanent):
                    raise dg.Failure(description=scrub(str(clean)), allow_retries=False) from clean
                if clean is exc:
                    raise
                raise clean from None

        return wrapper  # type: ignore[return-value]

    return decorate


fail_fast = fail_fast_on(*NO_STEP_RETRY, ConfigurationError)
"""The taxonomy's refused credentials and permanent errors (whichever client raised them) and malformed
settings end the step."""
