"""Dagster resources shared by the sources: the platform's (non-secret) configuration, so tests can set
it directly, and the base of every resource that calls an outside service through a circuit breaker."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import dagster as dg
from pydantic import Field

from aptool_assets.resilience.guard import ServiceGuard, credential_id
from aptool_assets.resilience.policy import ResiliencePolicy
from aptool_assets.rules.student_ids import DEFAULT_ID_FIELD
from aptool_assets.settings import DEFAULT_TIMEZONE, Settings, read_env
from aptool_assets.storage.breakers import open_breaker_store
from aptool_assets.vocabulary import DEFAULT_FOSTER_PROGRAM_CODE


class PlatformResource(dg.ConfigurableResource):
    """School year, as-of date, time zone, landing area (and its retention) and data-test thresholds (contract §2).

    The defaults are declared here, once; :meth:`from_env` overrides the ones the environment sets
    (``settings.ENV_FIELDS`` names the variables).
    """

    timezone: str = DEFAULT_TIMEZONE
    school_year: int | None = None
    as_of_date: str | None = None
    landing_dir: str | None = None
    assessment_windows: str | None = None  # "MM-DD,MM-DD": last day of BOY and of MOY
    iready_max_rejected_ratio: float = 0.05
    iready_freshness_hours: float = 48.0
    reconcile_tolerance_days: int = 2
    recent_attendance_school_days: int = 14
    priority_weights: str | None = None  # "enrolled=10000,tier=1000,risk=100,absence_rate=99" (contract order)
    iready_id_field: str = DEFAULT_ID_FIELD  # the students column i-Ready's "Student ID" holds (contract §2)
    foster_program_code: str = DEFAULT_FOSTER_PROGRAM_CODE  # the district's Aeries foster-youth program (§4.5)
    unknown_student_retry_hours: float = 24.0  # webhook events for students the roster lacks wait this long
    landing_retention_days: int = Field(default=30, ge=1)  # landed/quarantined files older than this are pruned

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PlatformResource:
        return cls(**read_env(environ))

    def settings(self, today: dt.date | None = None) -> Settings:
        """The settings resolved for ``today`` (default: today in the district's time zone)."""
        return Settings.resolve(**self.model_dump(), today=today)


class GuardedResource(dg.ConfigurableResource):
    """A resource for an outside service, called with the design's resilience: its ``resilience`` policy
    (retries, breaker, back-offs) and the service's breaker shared by every run, sensor and process."""

    resilience: ResiliencePolicy

    def credential_parts(self) -> tuple[object, ...] | None:
        """What identifies the credential in use (hashed, never shown); None while unconfigured."""
        raise NotImplementedError

    def guard(self) -> ServiceGuard | None:
        """The shared breaker, credential block and dead letters (None when the breaker is switched off);
        the caller closes ``guard.store``."""
        policy = self.resilience
        if not policy.circuit_breaker:
            return None
        parts = self.credential_parts()
        return ServiceGuard(
            policy.breaker(),
            open_breaker_store(),
            credential=credential_id(*parts) if parts is not None else None,
            maintenance_backoff_s=policy.maintenance_backoff_s,
            auth_backoff_s=policy.auth_backoff_s,
        )

    def blocked_reason(self) -> str | None:
        """Why a sensor should not poll this service now (its breaker or credential block is open), or None."""
        guard = self.guard()
        if guard is None:
            return None
        try:
            status = guard.blocked()
        finally:
            guard.store.close()
        return None if status is None else f"{status.describe()}; not polling"
