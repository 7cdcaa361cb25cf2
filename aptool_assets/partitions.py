"""Partitions shared across sources.

School years are dynamic: a year exists once a source delivers data for it (an i-Ready archive
folder, the configured Aeries year), so the graph does not change every July.
"""

from __future__ import annotations

import dagster as dg

SUBJECTS = ("ela", "math")

school_year_partitions = dg.DynamicPartitionsDefinition(name="school_year")
subject_partitions = dg.StaticPartitionsDefinition(list(SUBJECTS))
school_year_subject_partitions = dg.MultiPartitionsDefinition(
    {"school_year": school_year_partitions, "subject": subject_partitions}
)


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
