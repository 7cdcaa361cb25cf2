"""Turn permanent client errors into Dagster failures that a step RetryPolicy does not retry.

A refused certificate, a wrong SFTP password or an untrusted host key will not fix itself: retrying
the step only delays the alert (and hammers the district's server). Transient errors keep
propagating as they are, so the step's RetryPolicy still applies to them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import dagster as dg

from aptool_assets.resilience.errors import NO_STEP_RETRY

F = TypeVar("F", bound=Callable)


def fail_fast_on(*permanent: type[BaseException]) -> Callable[[F], F]:
    """Decorate an asset's compute function: ``permanent`` errors end the step without retries."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except permanent as exc:
                raise dg.Failure(description=str(exc), allow_retries=False) from exc

        return wrapper  # type: ignore[return-value]

    return decorate


fail_fast = fail_fast_on(*NO_STEP_RETRY)
"""The taxonomy's refused credentials and permanent errors (whichever client raised them) end the step."""
