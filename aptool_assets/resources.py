"""Platform-wide (non-secret) configuration as a Dagster resource, so tests can set it directly."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Optional

import dagster as dg

from aptool_assets.settings import DEFAULT_TIMEZONE, Settings, read_env


class PlatformResource(dg.ConfigurableResource):
    """School year, as-of date, time zone, landing area and data-test thresholds (contract §2).

    The defaults are declared here, once; :meth:`from_env` overrides the ones the environment sets
    (``settings.ENV_FIELDS`` names the variables).
    """

    timezone: str = DEFAULT_TIMEZONE
    school_year: Optional[int] = None
    as_of_date: Optional[str] = None
    landing_dir: Optional[str] = None
    assessment_windows: Optional[str] = None  # "MM-DD,MM-DD": last day of BOY and of MOY
    iready_max_rejected_ratio: float = 0.05
    iready_freshness_hours: float = 48.0
    reconcile_tolerance_days: int = 2
    recent_attendance_school_days: int = 14
    priority_weights: Optional[str] = None  # "tier=1000,risk=100,absence_rate=99" (contract order by default)
    unknown_student_retry_hours: float = 24.0  # webhook events for students the roster lacks wait this long

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PlatformResource:
        return cls(**read_env(environ))

    def settings(self, today: dt.date | None = None) -> Settings:
        """The settings resolved for ``today`` (default: today in the district's time zone)."""
        return Settings.resolve(**self.model_dump(), today=today)
