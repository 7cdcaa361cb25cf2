"""Partitions shared across sources, the webhook path and the metrics, and their time zone.

Both cadences are time windows in the district's time zone: a day for attendance, a school year
(July 1 to June 30, keyed by its start year, ``2025`` = 2025-26) for everything computed per year.
Dagster maps between the two (``TimeWindowPartitionMapping``), so an attendance pull of some days
makes only their school year's summary stale, never the other years a district keeps.

The time zone is configuration (``APTOOL_TIMEZONE``): assets are declared at import with
:data:`school_years` in the default zone, and :func:`in_time_zone` rebinds them to the district's
zone when the definitions are built.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

import dagster as dg

from aptool_assets.settings import DEFAULT_TIMEZONE
from aptool_assets.vocabulary import SUBJECTS

FIRST_SCHOOL_YEAR = 2020
"""The first school year a partition exists for (a district keeps a few past years, not decades)."""
ATTENDANCE_START = f"{FIRST_SCHOOL_YEAR}-07-01"
"""The first day an attendance partition exists: the first school year's first day."""

YEAR_CRON = "0 0 1 7 *"  # a school year starts on July 1 at midnight, district time
YEAR_FORMAT = "%Y"  # partition key: the start year


def school_year_partitions(timezone: str) -> dg.TimeWindowPartitionsDefinition:
    """One partition per school year from :data:`FIRST_SCHOOL_YEAR` through the next one (the year in progress
    and the one a district prepares in June: its calendar and roster exist in Aeries before July 1)."""
    return dg.TimeWindowPartitionsDefinition(
        cron_schedule=YEAR_CRON,
        start=dt.datetime(FIRST_SCHOOL_YEAR, 7, 1),
        fmt=YEAR_FORMAT,
        timezone=timezone,
        end_offset=2,
    )


def year_subject_partitions(years: dg.PartitionsDefinition) -> dg.MultiPartitionsDefinition:
    """School year × subject: one i-Ready diagnostic file's partition."""
    return dg.MultiPartitionsDefinition(
        {"school_year": years, "subject": dg.StaticPartitionsDefinition(list(SUBJECTS))}
    )


def attendance_day_partitions(timezone: str) -> dg.DailyPartitionsDefinition:
    """One partition per calendar day in the district's time zone, today included, so any window of
    attendance can be re-pulled (the time zone is configuration: see ``PlatformResource``)."""
    return dg.DailyPartitionsDefinition(start_date=ATTENDANCE_START, timezone=timezone, end_offset=1)


school_years = school_year_partitions(DEFAULT_TIMEZONE)
"""The school years as declared at import (default time zone); :func:`in_time_zone` rebinds them."""
school_year_subject_partitions = year_subject_partitions(school_years)

EACH_DAY_TO_ITS_YEAR = dg.TimeWindowPartitionMapping()
"""A year-partitioned asset over daily attendance depends on the days of its own year only."""
THIS_YEAR_AND_THE_PREVIOUS = dg.TimeWindowPartitionMapping(start_offset=-1, allow_nonexistent_upstream_partitions=True)
"""A year that compares with the previous one (the Dashboard's change from the prior year)."""
YEAR_OF_A_FILE = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="school_year")
"""Between a year-partitioned asset and the (school year, subject) partitions of the i-Ready files."""


def in_time_zone(assets: Sequence[dg.AssetsDefinition], timezone: str) -> list[dg.AssetsDefinition]:
    """``assets`` with their school-year partitions in ``timezone`` (the days are built in it already).

    Partition mappings carry no time zone, so the dependencies stay as declared; Dagster maps between
    the days and the years only when both are in the same zone.
    """
    if timezone == DEFAULT_TIMEZONE:
        return list(assets)
    years = school_year_partitions(timezone)
    by_declared = {school_years: years, school_year_subject_partitions: year_subject_partitions(years)}

    def rebind(spec: dg.AssetSpec) -> dg.AssetSpec:
        bound = by_declared.get(spec.partitions_def) if spec.partitions_def is not None else None
        return spec.replace_attributes(partitions_def=bound) if bound is not None else spec

    return [a.map_asset_specs(rebind) if a.partitions_def in by_declared else a for a in assets]


def known_school_years(years: Iterable[int], partitions: dg.PartitionsDefinition = school_years) -> list[int]:
    """The years among ``years`` that have a partition (from :data:`FIRST_SCHOOL_YEAR` through the next school
    year), sorted; a file or a configured year outside that range has no partition to land in."""
    keys = set(partitions.get_partition_keys())
    return sorted({y for y in years if str(y) in keys})


def year_subject_key(school_year: int, subject: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"school_year": str(school_year), "subject": subject})


def split_year_subject_key(key: str | dg.MultiPartitionKey) -> tuple[int, str]:
    if not isinstance(key, dg.MultiPartitionKey):
        key = school_year_subject_partitions.get_partition_key_from_str(key)
    dims = key.keys_by_dimension
    return int(dims["school_year"]), dims["subject"]


def school_year_slice(context: dg.AssetCheckExecutionContext) -> dict[str, int]:
    """A check's rows: the school year just materialized, or every year when it runs on its own."""
    return {"school_year": int(context.partition_key)} if context.has_partition_key else {}
