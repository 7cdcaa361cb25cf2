"""Non-secret configuration from the environment (contract §2): each variable parsed and validated in
one place, each default declared once.

Two steps, because a long-running code server must not freeze "today": :func:`read_env` turns the
``APTOOL_*`` variables that are set into typed values once (the definitions do it when they load), and
:meth:`Settings.resolve` derives what depends on the date (school year, as-of date) whenever a run,
sensor or schedule asks.

Secrets (database URL with password, SFTP password, Aeries certificate, webhook secret) are not
read here: the definitions hand them to resources through ``dagster.EnvVar`` so they never appear
in code, logs or Dagster metadata.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aptool_assets.rules.academic import DEFAULT_WINDOWS, AssessmentWindows
from aptool_assets.rules.student_ids import ID_FIELDS
from aptool_assets.vocabulary import clip_to_school_year, school_year_of

DEFAULT_TIMEZONE = "America/Los_Angeles"


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


def parse_timezone(name: str) -> str:
    """An IANA time zone name, checked against the zone database."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # a folder name such as "Pacific" is an OSError
        raise ConfigurationError(
            f"APTOOL_TIMEZONE={name!r} is not an IANA time zone (e.g. America/Los_Angeles)"
        ) from exc
    return name


def parse_school_year(text: str) -> int:
    if not text.isdigit() or not 2000 <= int(text) <= 2100:
        raise ConfigurationError(
            f"APTOOL_SCHOOL_YEAR={text!r} must be the school year's start year, e.g. 2025 for 2025-26"
        )
    return int(text)


def parse_as_of_date(text: str) -> str:
    try:
        dt.date.fromisoformat(text)
    except ValueError as exc:
        raise ConfigurationError(f"APTOOL_AS_OF_DATE={text!r} must be a date as YYYY-MM-DD") from exc
    return text


def _number(variable: str, kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return kind(text)
        except ValueError:
            raise ConfigurationError(f"{variable}={text!r} must be a number") from None

    return parse


def positive_number(variable: str, kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """A parser for ``variable``: a number of ``kind`` above zero, or ConfigurationError naming it."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value > 0:
            raise ConfigurationError(f"{variable}={text!r} must be a number above zero")
        return value

    return parse


def parse_iready_id_field(text: str) -> str:
    value = text.strip().lower()
    if value not in ID_FIELDS:
        raise ConfigurationError(
            f"APTOOL_IREADY_ID_FIELD={text!r} must be the Aeries identifier the district rosters into i-Ready as "
            f"Student ID: one of {', '.join(ID_FIELDS)}"
        )
    return value


def parse_program_code(text: str) -> str:
    value = text.strip()
    if not value.isdigit() or len(value) > 4:
        raise ConfigurationError(
            f"APTOOL_FOSTER_PROGRAM_CODE={text!r} must be the district's Aeries program code for foster youth, "
            "digits such as 190"
        )
    return value


def _checked_windows(text: str) -> str:
    parse_windows(text)
    return text


ENV_FIELDS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "timezone": ("APTOOL_TIMEZONE", parse_timezone),
    "school_year": ("APTOOL_SCHOOL_YEAR", parse_school_year),
    "as_of_date": ("APTOOL_AS_OF_DATE", parse_as_of_date),
    "landing_dir": ("APTOOL_LANDING_DIR", str),
    "assessment_windows": ("APTOOL_ASSESSMENT_WINDOWS", _checked_windows),
    "iready_max_rejected_ratio": (
        "APTOOL_IREADY_MAX_REJECTED_RATIO",
        _number("APTOOL_IREADY_MAX_REJECTED_RATIO", float),
    ),
    "iready_freshness_hours": ("APTOOL_IREADY_FRESHNESS_HOURS", _number("APTOOL_IREADY_FRESHNESS_HOURS", float)),
    "reconcile_tolerance_days": ("APTOOL_RECONCILE_TOLERANCE_DAYS", _number("APTOOL_RECONCILE_TOLERANCE_DAYS", int)),
    "recent_attendance_school_days": ("APTOOL_RECENT_ATTENDANCE_DAYS", _number("APTOOL_RECENT_ATTENDANCE_DAYS", int)),
    "priority_weights": ("APTOOL_PRIORITY_WEIGHTS", str),
    "iready_id_field": ("APTOOL_IREADY_ID_FIELD", parse_iready_id_field),
    "foster_program_code": ("APTOOL_FOSTER_PROGRAM_CODE", parse_program_code),
    "unknown_student_retry_hours": (
        "APTOOL_UNKNOWN_STUDENT_RETRY_HOURS",
        _number("APTOOL_UNKNOWN_STUDENT_RETRY_HOURS", float),
    ),
    "landing_retention_days": (
        "APTOOL_LANDING_RETENTION_DAYS",
        positive_number("APTOOL_LANDING_RETENTION_DAYS", int),
    ),
}
"""Platform setting → (environment variable, parser). Unset or empty variables keep the setting's default
(declared once, on ``PlatformResource``)."""


def read_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The platform settings that the environment sets, parsed (a malformed one raises ConfigurationError)."""
    env = os.environ if environ is None else environ
    return {field: parse(env[var]) for field, (var, parse) in ENV_FIELDS.items() if env.get(var)}


def aptool_home() -> Path:
    """Where local state lives: $DAGSTER_HOME, else ``.aptool`` under the working directory."""
    home = os.environ.get("DAGSTER_HOME")
    return Path(home) if home else Path(".aptool").resolve()


@dataclass(frozen=True)
class Settings:
    """The date-dependent settings, resolved for one day: which school year, counted up to which date."""

    timezone: str
    school_year: int
    as_of_date: dt.date
    landing_dir: Path
    windows: AssessmentWindows = DEFAULT_WINDOWS

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @classmethod
    def resolve(
        cls,
        *,
        timezone: str = DEFAULT_TIMEZONE,
        school_year: int | None = None,
        as_of_date: str | dt.date | None = None,
        landing_dir: str | Path | None = None,
        assessment_windows: str | None = None,
        today: dt.date | None = None,
        **_other: Any,
    ) -> Settings:
        """Settings for ``today`` (default: today in the district's time zone). The school year defaults to
        the one containing today; the as-of date to today, capped into the school year (contract §2).
        Other platform settings (thresholds) are accepted and ignored, so ``read_env()`` output fits."""
        today = today or dt.datetime.now(ZoneInfo(parse_timezone(timezone))).date()
        year = school_year if school_year is not None else school_year_of(today)
        as_of = dt.date.fromisoformat(parse_as_of_date(as_of_date)) if isinstance(as_of_date, str) else as_of_date
        return cls(
            timezone=timezone,
            school_year=year,
            as_of_date=clip_to_school_year(year, as_of or today),
            landing_dir=Path(landing_dir) if landing_dir else aptool_home() / "landing",
            windows=parse_windows(assessment_windows),
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, today: dt.date | None = None) -> Settings:
        return cls.resolve(**read_env(environ), today=today)
