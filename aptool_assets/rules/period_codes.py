"""Period codes between the rules' columnar form and the contract's JSON object.

The rules work on ``List(Struct{period, section_number, code})``; ``aptool.attendance_days`` stores
``{"1": "A", "2": "T"}`` (contract §3). Both directions are vectorised polars expressions: period
keys and codes are short tokens, so a strict regex over our own serialisation is enough.
"""

from __future__ import annotations

import polars as pl

PERIOD_CODE = pl.Struct({"period": pl.Utf8, "section_number": pl.Int64, "code": pl.Utf8})
_ESCAPE = r'(["\\])'
_PAIR = r'"(?:[^"\\]|\\.)*":"(?:[^"\\]|\\.)*"'


def to_json(col: pl.Expr) -> pl.Expr:
    """``[{period, code}, …]`` → ``'{"1":"A","2":"T"}'``; null when the day has no period codes."""
    pairs = col.list.eval(
        pl.concat_str(
            pl.lit('"'),
            pl.element().struct.field("period").str.replace_all(_ESCAPE, r"\$1"),
            pl.lit('":"'),
            pl.element().struct.field("code").str.replace_all(_ESCAPE, r"\$1"),
            pl.lit('"'),
        )
    )
    return pl.when(col.list.len() > 0).then(pl.concat_str(pl.lit("{"), pairs.list.join(","), pl.lit("}")))


def from_json(col: pl.Expr) -> pl.Expr:
    """The inverse of :func:`to_json` (section numbers are not stored, so they come back null)."""

    def unescape(e: pl.Expr) -> pl.Expr:
        return e.str.replace_all(r"\\(.)", "$1")

    return (
        col.fill_null("{}")
        .str.extract_all(_PAIR)
        .list.eval(
            pl.struct(
                unescape(pl.element().str.extract(r'^"((?:[^"\\]|\\.)*)":', 1)).alias("period"),
                pl.lit(None, pl.Int64).alias("section_number"),
                unescape(pl.element().str.extract(r':"((?:[^"\\]|\\.)*)"$', 1)).alias("code"),
            )
        )
        .cast(pl.List(PERIOD_CODE))
    )
