"""Non-secret configuration from the environment (contract §2), validated once.

Secrets (database URL with password, SFTP password, Aeries certificate, webhook secret) are not
read here: the definitions hand them to resources through ``dagster.EnvVar`` so they never appear
in code, logs or Dagster metadata.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aptool_assets.rules.academic import DEFAULT_WINDOWS, AssessmentWindows

DEFAULT_TIMEZONE = "America/Los_Angeles"
# Schedules are evaluated in the district's time zone; read once when the definitions load.
DISTRICT_TIMEZONE = os.environ.get("APTOOL_TIMEZONE") or DEFAULT_TIMEZONE


class ConfigurationError(ValueError):
    """A configuration value is malformed; the message names the variable and the fix."""


def parse_windows(text: str | None) -> AssessmentWindows:
    """``"11-15,03-01"`` → the last day (MM-DD) of BOY and of MOY; EOY runs to June 30 (contract §4.3)."""
    if not text:
        return DEFAULT_WINDOWS
    try:
        boy, moy = (tuple(int(x) for x in part.strip().split("-")) for part in text.split(","))
        return AssessmentWindows(boy_last_day=boy, moy_last_day=moy)  # type: ignore[arg-type]
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"APTOOL_ASSESSMENT_WINDOWS={text!r} must be the last day of BOY and of MOY as MM-DD,MM-DD "
            f"(default 11-15,03-01): {exc}"
        ) from exc


def school_year_of(day: dt.date) -> int:
    """School year (as its start year) that contains ``day``: the year runs July 1 – June 30."""
    return day.year if day.month >= 7 else day.year - 1


def school_year_bounds(school_year: int) -> tuple[dt.date, dt.date]:
    return dt.date(school_year, 7, 1), dt.date(school_year + 1, 6, 30)


def aptool_home() -> Path:
    """Where local state lives: $DAGSTER_HOME, else ``.aptool`` under the working directory."""
    home = os.environ.get("DAGSTER_HOME")
    return Path(home) if home else Path(".aptool").resolve()


@dataclass(frozen=True)
class Settings:
    timezone: str
    school_year: int
    as_of_date: dt.date
    landing_dir: Path
    windows: AssessmentWindows = DEFAULT_WINDOWS

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, today: dt.date | None = None) -> Settings:
        env = os.environ if environ is None else environ
        tz_name = env.get("APTOOL_TIMEZONE") or DEFAULT_TIMEZONE
        try:
            tz = ZoneInfo(tz_name)
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # a folder name such as "Pacific" is an OSError
            raise ConfigurationError(
                f"APTOOL_TIMEZONE={tz_name!r} is not an IANA time zone (e.g. America/Los_Angeles)"
            ) from exc
        today = today or dt.datetime.now(tz).date()

        raw_year = env.get("APTOOL_SCHOOL_YEAR")
        if raw_year:
            if not raw_year.isdigit() or not 2000 <= int(raw_year) <= 2100:
                raise ConfigurationError(
                    f"APTOOL_SCHOOL_YEAR={raw_year!r} must be the school year's start year, e.g. 2025 for 2025-26"
                )
            school_year = int(raw_year)
        else:
            school_year = school_year_of(today)

        first_day, last_day = school_year_bounds(school_year)
        raw_as_of = env.get("APTOOL_AS_OF_DATE")
        if raw_as_of:
            try:
                as_of = dt.date.fromisoformat(raw_as_of)
            except ValueError as exc:
                raise ConfigurationError(f"APTOOL_AS_OF_DATE={raw_as_of!r} must be a date as YYYY-MM-DD") from exc
        else:
            as_of = today
        # Metrics count days up to the as-of date, capped at the year's end (contract §2).
        as_of = min(max(as_of, first_day), last_day)

        landing = Path(env.get("APTOOL_LANDING_DIR") or (aptool_home() / "landing"))
        windows = parse_windows(env.get("APTOOL_ASSESSMENT_WINDOWS"))
        return cls(timezone=tz_name, school_year=school_year, as_of_date=as_of, landing_dir=landing, windows=windows)
