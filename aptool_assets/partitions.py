"""Partitions shared across sources, the webhook path and the metrics.

School years are dynamic: a year exists once a source delivers data for it (an i-Ready archive
folder, the configured Aeries year), so the graph does not change every July.
"""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg

from aptool_assets.vocabulary import SUBJECTS

ATTENDANCE_START = "2020-07-01"
"""The first day an attendance partition exists (a district loads at most a few past years)."""

school_year_partitions = dg.DynamicPartitionsDefinition(name="school_year")
subject_partitions = dg.StaticPartitionsDefinition(list(SUBJECTS))
school_year_subject_partitions = dg.MultiPartitionsDefinition(
    {"school_year": school_year_partitions, "subject": subject_partitions}
)


def attendance_day_partitions(timezone: str) -> dg.DailyPartitionsDefinition:
    """One partition per calendar day in the district's time zone, today included, so any window of
    attendance can be re-pulled (the time zone is configuration: see ``PlatformResource``)."""
    return dg.DailyPartitionsDefinition(start_date=ATTENDANCE_START, timezone=timezone, end_offset=1)


def school_year_requests(instance: dg.DagsterInstance, years: Iterable[int]) -> list[dg.AddDynamicPartitionsRequest]:
    """Partitions to add for school years the instance does not know yet."""
    known = set(instance.get_dynamic_partitions(school_year_partitions.name))
    missing = sorted({str(y) for y in years} - known)
    return [dg.AddDynamicPartitionsRequest(school_year_partitions.name, missing)] if missing else []


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
