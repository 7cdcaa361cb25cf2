"""Platform-wide (non-secret) configuration as a Dagster resource, so tests can set it directly."""

from __future__ import annotations

import datetime as dt
import os
from typing import Optional

import dagster as dg

from aptool_assets.settings import DEFAULT_TIMEZONE, Settings


class PlatformResource(dg.ConfigurableResource):
    """School year, as-of date, time zone, landing area and data-test thresholds (contract §2).

    Unset fields fall back to the environment, then to the contract's defaults.
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
    def from_env(cls) -> PlatformResource:
        env = os.environ
        return cls(
            timezone=env.get("APTOOL_TIMEZONE") or DEFAULT_TIMEZONE,
            school_year=int(env["APTOOL_SCHOOL_YEAR"]) if env.get("APTOOL_SCHOOL_YEAR", "").isdigit() else None,
            as_of_date=env.get("APTOOL_AS_OF_DATE") or None,
            landing_dir=env.get("APTOOL_LANDING_DIR") or None,
            assessment_windows=env.get("APTOOL_ASSESSMENT_WINDOWS") or None,
            iready_max_rejected_ratio=float(env.get("APTOOL_IREADY_MAX_REJECTED_RATIO") or 0.05),
            iready_freshness_hours=float(env.get("APTOOL_IREADY_FRESHNESS_HOURS") or 48.0),
            reconcile_tolerance_days=int(env.get("APTOOL_RECONCILE_TOLERANCE_DAYS") or 2),
            recent_attendance_school_days=int(env.get("APTOOL_RECENT_ATTENDANCE_DAYS") or 14),
            priority_weights=env.get("APTOOL_PRIORITY_WEIGHTS") or None,
            unknown_student_retry_hours=float(env.get("APTOOL_UNKNOWN_STUDENT_RETRY_HOURS") or 24.0),
        )

    def settings(self, today: dt.date | None = None) -> Settings:
        env = {"APTOOL_TIMEZONE": self.timezone}
        if self.school_year is not None:
            env["APTOOL_SCHOOL_YEAR"] = str(self.school_year)
        if self.as_of_date:
            env["APTOOL_AS_OF_DATE"] = self.as_of_date
        if self.landing_dir:
            env["APTOOL_LANDING_DIR"] = self.landing_dir
        if self.assessment_windows:
            env["APTOOL_ASSESSMENT_WINDOWS"] = self.assessment_windows
        return Settings.from_env(env, today=today)
