"""Dagster metadata helpers that keep student data out of the UI: IDs and counts only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import dagster as dg
import polars as pl

from aptool_assets.storage.warehouse import TableSpec

PREVIEW_IDS = 5
ID_SAMPLE = 10


def id_preview(df: pl.DataFrame, column: str = "student_id", n: int = PREVIEW_IDS) -> list[int]:
    """A few IDs so an operator can spot-check a load; never names."""
    if column not in df.columns or df.height == 0:
        return []
    return df.get_column(column).unique(maintain_order=True).head(n).to_list()


def id_sample(df: pl.DataFrame, column: str = "student_id", n: int = ID_SAMPLE) -> list:
    """The smallest few distinct IDs of ``df`` (sorted, so a check names the same ones every run)."""
    return df.get_column(column).unique().sort().head(n).to_list() if df.height else []


def duplicate_keys(df: pl.DataFrame, key: Sequence[str]) -> pl.DataFrame:
    """The keys that occur more than once in ``df``, with their count (``len``)."""
    return df.group_by(list(key)).len().filter(pl.col("len") > 1)


def column_schema(table: TableSpec) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(name, str(dtype)) for name, dtype in table.columns.items()],
    )


def table_metadata(table: TableSpec, row_count: int, extra: Mapping[str, object] | None = None) -> dict:
    meta: dict[str, object] = {
        "dagster/row_count": dg.MetadataValue.int(row_count),
        "dagster/table_name": dg.MetadataValue.text(table.qualified),
        "table_key": dg.MetadataValue.text(", ".join(table.key)),
    }
    meta.update(extra or {})
    return meta


def counts_table(counts: Mapping[str, int], label: str = "reason") -> dg.MetadataValue:
    """A markdown table of counts (e.g. rejected rows by reason)."""
    if not counts:
        return dg.MetadataValue.md("_none_")
    lines = [f"| {label} | rows |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    return dg.MetadataValue.md("\n".join(lines))
