"""Retry policies and circuit breakers from the environment, as resource fields (README, "Resilience").

``APTOOL_AERIES_RETRY="attempts=5,base_s=1,max_s=30"``, ``APTOOL_IREADY_RETRY`` (``APTOOL_DATABASE_RETRY`` is
read by ``retry.DATABASE_RETRY``, the warehouse's default);
``APTOOL_AERIES_BREAKER="failures=10,window_s=300,half_open_s=60"``, ``APTOOL_IREADY_BREAKER``;
``APTOOL_MAINTENANCE_BACKOFF_S`` and ``APTOOL_AUTH_BACKOFF_S`` (both 1800). Missing keys keep the
original design's defaults, so a district sets only what it changes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from aptool_assets.resilience.breaker import (
    AERIES_BREAKER,
    AUTH_BACKOFF_S,
    IREADY_BREAKER,
    MAINTENANCE_BACKOFF_S,
    settings_from_env,
)
from aptool_assets.resilience.retry import AERIES_RETRY, SFTP_RETRY, retry_from_env


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name, "").strip()
    return float(text) if text else default


def _service_config(service: str, retry_default, breaker_default, environ: Mapping[str, str] | None) -> dict:
    """A client resource's fields for its retry policy, breaker and credential back-off."""
    env = os.environ if environ is None else environ
    retry = retry_from_env(service, retry_default, env)
    breaker = settings_from_env(breaker_default, env)
    return {
        "retry_max_attempts": retry.max_attempts,
        "retry_base_delay_s": retry.base_delay_s,
        "retry_max_delay_s": retry.max_delay_s,
        "breaker_failure_threshold": breaker.failure_threshold,
        "breaker_window_s": breaker.window_s,
        "breaker_half_open_after_s": breaker.half_open_after_s,
        "auth_backoff_s": _seconds(env, "APTOOL_AUTH_BACKOFF_S", AUTH_BACKOFF_S),
    }


def aeries_resource_config(environ: Mapping[str, str] | None = None) -> dict:
    """AeriesResource fields for its retry policy and breaker (plus the maintenance back-off)."""
    env = os.environ if environ is None else environ
    return {
        **_service_config("aeries", AERIES_RETRY, AERIES_BREAKER, env),
        "maintenance_backoff_s": _seconds(env, "APTOOL_MAINTENANCE_BACKOFF_S", MAINTENANCE_BACKOFF_S),
    }


def iready_resource_config(environ: Mapping[str, str] | None = None) -> dict:
    """IReadySFTPResource fields for its retry policy and breaker."""
    return _service_config("iready", SFTP_RETRY, IREADY_BREAKER, environ)

