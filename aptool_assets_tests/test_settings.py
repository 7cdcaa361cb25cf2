"""Configuration from the environment (contract §2): defaults, derivations and clear errors."""

from __future__ import annotations

import datetime as dt

import pytest

from aptool_assets.resources import PlatformResource
from aptool_assets.settings import ConfigurationError, Settings, parse_windows
from aptool_assets.vocabulary import school_year_of


@pytest.mark.parametrize(
    ("day", "year"),
    [
        (dt.date(2026, 6, 30), 2025),
        (dt.date(2026, 7, 1), 2026),
        (dt.date(2026, 11, 29), 2026),
        (dt.date(2027, 1, 5), 2026),
    ],
)
def test_school_year_starts_on_july_first(day, year):
    assert school_year_of(day) == year


def test_defaults_derive_from_today_in_the_district_time_zone():
    s = Settings.from_env({}, today=dt.date(2026, 11, 29))
    assert (s.timezone, s.school_year, s.as_of_date) == ("America/Los_Angeles", 2026, dt.date(2026, 11, 29))
    assert s.windows.boy_last_day == (11, 15)


def test_as_of_date_is_capped_at_the_years_end():
    s = Settings.from_env({"APTOOL_SCHOOL_YEAR": "2024", "APTOOL_AS_OF_DATE": "2026-11-29"})
    assert s.as_of_date == dt.date(2025, 6, 30)


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"APTOOL_SCHOOL_YEAR": "2025-26"}, "APTOOL_SCHOOL_YEAR"),
        ({"APTOOL_AS_OF_DATE": "11/29/2026"}, "APTOOL_AS_OF_DATE"),
        ({"APTOOL_TIMEZONE": "Pacific"}, "APTOOL_TIMEZONE"),
        ({"APTOOL_ASSESSMENT_WINDOWS": "03-01,11-15"}, "APTOOL_ASSESSMENT_WINDOWS"),
    ],
)
def test_malformed_values_name_the_variable(env, names):
    with pytest.raises(ConfigurationError, match=names):
        Settings.from_env(env)


def test_district_windows_are_configurable():
    w = parse_windows("11-30,03-15")
    assert (w.boy_last_day, w.moy_last_day) == ((11, 30), (3, 15))
    assert PlatformResource(assessment_windows="11-30,03-15", school_year=2026).settings().windows == w


def test_landing_retention_days_default_and_environment():
    assert PlatformResource().landing_retention_days == 30
    assert PlatformResource.from_env({"APTOOL_LANDING_RETENTION_DAYS": "7"}).landing_retention_days == 7


@pytest.mark.parametrize("text", ["0", "-3", "thirty", "1.5"])
def test_landing_retention_days_must_be_a_whole_number_of_days(text):
    with pytest.raises(ConfigurationError, match="APTOOL_LANDING_RETENTION_DAYS"):
        PlatformResource.from_env({"APTOOL_LANDING_RETENTION_DAYS": text})


def test_sftp_max_file_size_comes_from_the_environment(monkeypatch):
    from aptool_assets.definitions import build_resources

    assert build_resources(PlatformResource())["iready_sftp"].max_file_mb == 512
    monkeypatch.setenv("IREADY_SFTP_MAX_FILE_MB", "64")
    assert build_resources(PlatformResource())["iready_sftp"].max_file_mb == 64
    for bad in ("0", "-1", "lots"):
        monkeypatch.setenv("IREADY_SFTP_MAX_FILE_MB", bad)
        with pytest.raises(ConfigurationError, match="IREADY_SFTP_MAX_FILE_MB"):
            build_resources(PlatformResource())
