"""One service's resilience settings as one nested Dagster config object: its retry policy, its circuit
breaker and its back-offs (README "Resilience").

Both source resources carry a ``resilience: ResiliencePolicy`` field, so the same settings are declared
once. The environment overrides them per service: ``APTOOL_<SERVICE>_RETRY="attempts=5,base_s=0.5,
max_s=30"``, ``APTOOL_<SERVICE>_BREAKER="failure_rate=0.5,window=20,min_calls=10,max_age_s=300,
half_open_s=60"``, and for every service ``APTOOL_AUTH_BACKOFF_S`` and ``APTOOL_MAINTENANCE_BACKOFF_S``
(1800 s). Missing keys keep the default, so a district sets only what it changes; the count-based
breaker's keys (``failures``, ``window_s``) are refused with what replaced them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

import dagster as dg
from pydantic import Field

from aptool_assets.resilience.breaker import (
    AERIES_BREAKER,
    AUTH_BACKOFF_S,
    IREADY_BREAKER,
    MAINTENANCE_BACKOFF_S,
    BreakerSettings,
    settings_from_env,
)
from aptool_assets.resilience.retry import AERIES_RETRY, SFTP_RETRY, RetrySettings, retry_from_env


class ResiliencePolicy(dg.Config):
    """How one service is retried, when its circuit breaker opens, and how long it backs off."""

    service: str = Field(description="the breaker's name: aeries or iready")
    retry_max_attempts: int
    retry_base_delay_s: float
    retry_max_delay_s: float
    retry_backoff: Literal["linear", "exponential"] = "exponential"
    retry_jitter: bool = False
    circuit_breaker: bool = Field(default=True, description="use the service's shared circuit breaker")
    breaker_failure_rate: float = Field(description="open when at least this share of the window's calls failed")
    breaker_window: int = Field(description="the window: the service's last N calls")
    breaker_min_calls: int = Field(description="no opening on fewer calls than this in the window")
    breaker_max_age_s: float = Field(description="calls older than this have left the window")
    breaker_half_open_after_s: float
    auth_backoff_s: float = AUTH_BACKOFF_S
    maintenance_backoff_s: float = MAINTENANCE_BACKOFF_S

    @classmethod
    def of(
        cls, retry: RetrySettings, breaker: BreakerSettings, environ: Mapping[str, str] | None = None
    ) -> ResiliencePolicy:
        """The policy from the design's ``retry`` and ``breaker`` settings, with the environment's overrides."""
        env = os.environ if environ is None else environ
        retry = retry_from_env(breaker.service, retry, env)
        breaker = settings_from_env(breaker, env)
        return cls(
            service=breaker.service,
            retry_max_attempts=retry.max_attempts,
            retry_base_delay_s=retry.base_delay_s,
            retry_max_delay_s=retry.max_delay_s,
            retry_backoff=retry.backoff,
            retry_jitter=retry.jitter,
            breaker_failure_rate=breaker.failure_rate,
            breaker_window=breaker.window,
            breaker_min_calls=breaker.min_calls,
            breaker_max_age_s=breaker.max_age_s,
            breaker_half_open_after_s=breaker.half_open_after_s,
            auth_backoff_s=_seconds(env, "APTOOL_AUTH_BACKOFF_S", AUTH_BACKOFF_S),
            maintenance_backoff_s=_seconds(env, "APTOOL_MAINTENANCE_BACKOFF_S", MAINTENANCE_BACKOFF_S),
        )

    def but(self, **changes: object) -> ResiliencePolicy:
        """A copy with some settings changed (``policy.but(retry_base_delay_s=0.01)``)."""
        return self.model_copy(update=changes)

    def retry(self) -> RetrySettings:
        return RetrySettings(
            max_attempts=self.retry_max_attempts,
            base_delay_s=self.retry_base_delay_s,
            max_delay_s=self.retry_max_delay_s,
            backoff=self.retry_backoff,
            jitter=self.retry_jitter,
        )

    def breaker(self) -> BreakerSettings:
        return BreakerSettings(
            self.service,
            failure_rate=self.breaker_failure_rate,
            window=self.breaker_window,
            min_calls=self.breaker_min_calls,
            half_open_after_s=self.breaker_half_open_after_s,
            max_age_s=self.breaker_max_age_s,
        )


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {text!r}") from None


def aeries_policy(environ: Mapping[str, str] | None = None) -> ResiliencePolicy:
    """Aeries: 5 attempts, exponential 0.5–30 s with jitter; breaker at 50 % of the last 20 calls failed (at
    least 10, within 5 min), half-open after 60 s."""
    return ResiliencePolicy.of(AERIES_RETRY, AERIES_BREAKER, environ)


def iready_policy(environ: Mapping[str, str] | None = None) -> ResiliencePolicy:
    """i-Ready SFTP: 3 attempts, linear 5–60 s; breaker at 50 % of the last 10 calls failed (at least 7, within
    10 min), half-open after 5 min."""
    return ResiliencePolicy.of(SFTP_RETRY, IREADY_BREAKER, environ)


AERIES_POLICY = aeries_policy({})
"""The design's Aeries policy, without the environment's overrides (``aeries_policy()`` applies them)."""
IREADY_POLICY = iready_policy({})
"""The design's i-Ready SFTP policy, without the environment's overrides."""
