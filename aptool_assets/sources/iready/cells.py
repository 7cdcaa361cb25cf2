"""Cell conversion for the i-Ready parser: every published cell read as text and converted with vectorised
polars expressions (IDs, years, dates, grades, flags, integers); a cell that does not convert becomes null
and its column is reported, so the parser can set the row aside with a reason. Never logs cell values.
"""

from __future__ import annotations

import polars as pl

from aptool_assets.sources.iready.schemas import (
    ACADEMIC_YEAR_MAX,
    ACADEMIC_YEAR_MIN,
    CELL_COLUMNS,
    GRADE_MAX,
    GRADE_MIN,
    VENDOR_ID_PATTERN,
)
from aptool_assets.tables.iready import DOMAINS, GROWTH_INT_COLUMNS, PUBLISHED_COLUMNS

# Clean files take a fast path (plain casts, no trimming). A column falls back to the slower,
# tolerant conversion only when the fast one left a cell unexplained, so odd files cost more
# and typical ones do not. Low-cardinality columns (years, dates, grades, flags) are parsed once
# per distinct value and mapped back.

_INT_FIELDS: tuple[str, ...] = (
    "duration_min",
    "overall_scale_score",
    "percentile",
    "grouping",
    *GROWTH_INT_COLUMNS,
    *(f"{d}_scale_score" for d in DOMAINS),
)
_TEXT_FIELDS: tuple[str, ...] = tuple(
    c for c in CELL_COLUMNS if PUBLISHED_COLUMNS[c] == pl.Utf8 and c != "vendor_student_id"
)
_DISTINCT_FIELDS: dict[str, pl.DataType] = {
    "academic_year": pl.Int32(),
    "start_date": pl.Date(),
    "completion_date": pl.Date(),
    "student_grade": pl.Int32(),
    "is_baseline": pl.Boolean(),
    "is_most_recent": pl.Boolean(),
}


def _strip(raw: pl.Expr) -> pl.Expr:
    """Trimmed text, blank → null."""
    s = raw.str.strip_chars()
    return pl.when(s.str.len_bytes() > 0).then(s)


def _int_tolerant(raw: pl.Expr, dtype: pl.DataType = pl.Int32) -> pl.Expr:
    """Integer from text; trims, accepts "12.0" (spreadsheet re-saves), rejects "12.5" and words."""
    f = _strip(raw).cast(pl.Float64, strict=False)
    ok = f.is_finite() & (f == f.floor()) & (f.abs() < 2**31)
    return pl.when(ok).then(f).cast(dtype)


def _id_fast(raw: pl.Expr) -> pl.Expr:
    """The vendor's Student ID as delivered when it is digits (leading zeros kept), else null."""
    return pl.when(raw.str.contains(VENDOR_ID_PATTERN)).then(raw)


def _id_tolerant(raw: pl.Expr) -> pl.Expr:
    """Digits, trimmed, "123.0" from a spreadsheet re-save read as "123"."""
    return _id_fast(_strip(raw).str.strip_suffix(".0"))


def parse_year(raw: pl.Expr) -> pl.Expr:
    """Start year of 'YYYY-YYYY' (end = start + 1); anything else is null."""
    parts = _strip(raw).str.extract_groups(r"^(\d{4})\s*-\s*(\d{4})$")
    start = parts.struct.field("1").cast(pl.Int32, strict=False)
    end = parts.struct.field("2").cast(pl.Int32, strict=False)
    return pl.when((end == start + 1) & start.is_between(ACADEMIC_YEAR_MIN, ACADEMIC_YEAR_MAX)).then(start)


def _parse_date(raw: pl.Expr) -> pl.Expr:
    """M/D/YYYY with or without zero padding, '/' or '-' separators (reference §8).

    A two-digit year would parse as year 24 AD, hence the sanity bound.
    """
    d = _strip(raw).str.replace_all("-", "/", literal=True).str.to_date("%m/%d/%Y", strict=False)
    return pl.when(d.dt.year().is_between(ACADEMIC_YEAR_MIN, ACADEMIC_YEAR_MAX + 1)).then(d)


def _parse_grade(raw: pl.Expr) -> pl.Expr:
    """K (or KG) → 0, TK (transitional kindergarten) → -1 as in Aeries, else 1..12."""
    u = _strip(raw).str.to_uppercase()
    g = (
        pl.when(u.is_in(["K", "KG"]))
        .then(pl.lit(0, pl.Int32))
        .when(u == "TK")
        .then(pl.lit(-1, pl.Int32))
        .otherwise(_int_tolerant(u))
    )
    return pl.when(g.is_between(GRADE_MIN, GRADE_MAX)).then(g)


def _parse_flag(raw: pl.Expr) -> pl.Expr:
    u = _strip(raw).str.to_uppercase()
    return pl.when(u.is_in(["Y", "YES", "TRUE"])).then(True).when(u.is_in(["N", "NO", "FALSE"])).then(False)


_DISTINCT_PARSERS = {
    "academic_year": parse_year,
    "start_date": _parse_date,
    "completion_date": _parse_date,
    "student_grade": _parse_grade,
    "is_baseline": _parse_flag,
    "is_most_recent": _parse_flag,
}


def _map_distinct(src: pl.DataFrame, fields: list[str]) -> list[pl.Series]:
    """Parse each distinct value once and map it back (these columns hold a few hundred values)."""
    if not fields:
        return []
    distinct = src.select(pl.col(f).unique().drop_nulls().implode() for f in fields).row(0, named=True)
    mappings = {
        f: pl.DataFrame({"v": values}, schema={"v": pl.Utf8}).select(_DISTINCT_PARSERS[f](pl.col("v"))).to_series()
        for f, values in distinct.items()
    }
    return src.select(
        pl.col(f).replace_strict(
            pl.Series(distinct[f], dtype=pl.Utf8), mappings[f], default=None, return_dtype=_DISTINCT_FIELDS[f]
        )
        for f in fields
    ).get_columns()


def _needs_trim(col: str) -> pl.Expr:
    """Some cell is blank-but-not-null or padded. Cheap: the minimum of a text column sorts
    empty and leading-whitespace cells first, so only trailing padding needs a scan."""
    c = pl.col(col)
    return ((c.min() < "!") | c.str.ends_with(" ").any() | c.str.ends_with("\t").any()).fill_null(False).alias(col)


def convert_cells(src: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, set[str]]:
    """Typed published cells from their text.

    Returns the text as used (trimmed, blank → null, wherever that mattered), the typed cells,
    and the fields where some non-blank cell did not convert (only their row check is built).
    """
    c = pl.col
    typed = src.select(
        _id_fast(c("vendor_student_id")).alias("vendor_student_id"),
        *(c(f).cast(PUBLISHED_COLUMNS[f], strict=False).alias(f) for f in _INT_FIELDS),
    ).with_columns(_map_distinct(src, list(_DISTINCT_FIELDS)))

    # A conversion left something unexplained exactly where it produced more nulls than the text had.
    failed = {f for f in typed.columns if typed.get_column(f).null_count() != src.get_column(f).null_count()}
    padded = {f for f, v in src.select(_needs_trim(f) for f in _TEXT_FIELDS).row(0, named=True).items() if v}
    if not failed and not padded:
        return src, pl.concat([typed, src.select(_TEXT_FIELDS)], how="horizontal").select(CELL_COLUMNS), failed

    src = src.with_columns(_strip(c(f)).alias(f) for f in failed | padded)
    vendor_id = "vendor_student_id"
    tolerant = [_id_tolerant(c(vendor_id)).alias(vendor_id)] if vendor_id in failed else []
    tolerant += [_int_tolerant(c(f), PUBLISHED_COLUMNS[f]).alias(f) for f in _INT_FIELDS if f in failed]
    typed = typed.with_columns(
        *src.select(tolerant).get_columns(),
        *_map_distinct(src, [f for f in _DISTINCT_FIELDS if f in failed]),
    )
    failed = {f for f in failed if typed.get_column(f).null_count() != src.get_column(f).null_count()}
    return src, pl.concat([typed, src.select(_TEXT_FIELDS)], how="horizontal").select(CELL_COLUMNS), failed
