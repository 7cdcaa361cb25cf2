"""Vendor-format i-Ready Diagnostic Results files, written from records.

Used by the demo's SFTP server, by tests (so the parser is exercised on every layout even
without the real sample files) and by the parser benchmark. Layouts follow the scrubbed vendor
samples (reference §6-7); columns are built with polars so 200,000 rows take about a second.

Records use the canonical field names of ``schemas.VENDOR_HEADERS``: the published cell fields
(``vendor_student_id``, or ``student_id`` for it, ``academic_year``, ``completion_date``, ...), the
personal fields ``last_name``, ``first_name`` (and optionally ``user_name``, ``sex``, ``classes``,
``class_teachers``, ...), and optionally ``lexile_range``/``quantile_range``. Typed values are formatted like the vendor
(M/D/YYYY dates, 'YYYY-YYYY' years, grade 'K', Y/N flags); a ``str`` value is written verbatim,
which is how tests plant malformed cells. Missing keys are written blank, except ``enrolled``
('Enrolled'), ``read_aloud`` ('Off'), ``assessment_language`` ('English') and ``user_name``
(derived from the names).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import date, datetime

import polars as pl

from aptool_assets.sources.iready.schemas import HEADER_ALIASES, header_key
from aptool_assets.tables.iready import ELA_DOMAINS, MATH_DOMAINS

__all__ = ["LAYOUTS", "layout_headers", "write_diagnostic_csv"]

LAYOUTS: tuple[str, ...] = ("2018-19", "2019-20", "2020-21", "2021-22", "2022-23", "2024-25", "2026-27")
"""Export layouts by school year of export. 2019-20 stands for files exported before the August
2020 release (``Time on Task (minutes)``); 2026-27 is the FY27 "Inform Results" rename."""

_PADDED_DATES = {"2020-21", "2021-22", "2022-23"}  # the samples of those years zero-pad M/D

_DOMAIN_TITLES = {
    "phonological_awareness": "Phonological Awareness",
    "phonics": "Phonics",
    "high_frequency_words": "High-Frequency Words",
    "vocabulary": "Vocabulary",
    "number_and_operations": "Number and Operations",
    "algebra_and_algebraic_thinking": "Algebra and Algebraic Thinking",
    "measurement_and_data": "Measurement and Data",
    "geometry": "Geometry",
}

_DEMOGRAPHICS = [
    "Hispanic or Latino",
    "Race",
    "English Language Learner",
    "Special Education",
    "Economically Disadvantaged",
    "Migrant",
    "Class(es)",
    "Class Teacher(s)",
    "Report Group(s)",
]
_PROJECTIONS = [
    "Proficiency if Student Shows No Additional Growth",
    "Projection if Student Achieves Typical Growth",
    "Projection if Student Achieves Stretch Growth",
]


def layout_headers(layout: str, subject: str) -> list[str]:
    """Header row of a layout, in vendor order (reference §6-7 and the fixture files)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    if subject not in ("ela", "math"):
        raise ValueError(f"subject must be 'ela' or 'math', not {subject!r}")
    era = LAYOUTS.index(layout)
    old, fy27 = era <= LAYOUTS.index("2019-20"), layout == "2026-27"
    current = era >= LAYOUTS.index("2024-25")
    ela = subject == "ela"

    h = ["Last Name", "First Name", "Student ID", "Student Grade", "Academic Year", "School"]
    if not old:
        if era >= LAYOUTS.index("2022-23"):
            h += ["Enrolled", "User Name", "Sex"]
        else:
            h += ["User Name", "Gender"]
        h += _DEMOGRAPHICS
    h += ["Start Date", "Completion Date"]
    h.append(
        "Baseline Assessment (Y/N)"
        if fy27
        else "Baseline Diagnostic (Y/N)"
        if era >= LAYOUTS.index("2022-23")
        else "Diagnostic used to establish Growth Measures (Y/N)"
    )
    h.append(
        "Most Recent Assessment YTD (Y/N)"
        if fy27
        else "Most Recent Diagnostic YTD (Y/N)"
        if current
        else "Most Recent Diagnostic (Y/N)"
    )
    h += ["Time on Task (minutes)" if layout == "2019-20" else "Duration (min)", "Rush Flag"]
    if current:
        h.append("Read Aloud")
    if fy27:
        h.append("Tactile Graphics")  # new in FY27; its position is not documented
    h += ["Overall Scale Score", "Overall Placement", "Overall Relative Placement", "Percentile", "Grouping"]
    h += ["Lexile Measure", "Lexile Range"] if ela else ["Quantile Measure", "Quantile Range"]

    h += _domain_headers(layout, ela, old=old, current=current)

    if not ela and era >= LAYOUTS.index("2022-23"):
        h.append("Assessment Language" if fy27 else "Diagnostic Language")
    if era >= LAYOUTS.index("2022-23"):
        h.append("Assessment Gain" if fy27 else "Diagnostic Gain")
    h += ["Annual Typical Growth Measure", "Annual Stretch Growth Measure"]
    if era >= LAYOUTS.index("2022-23"):
        h += ["Percent Progress to Annual Typical Growth (%)", "Percent Progress to Annual Stretch Growth (%)"]
    h.append("Mid On Grade Level Scale Score")
    if ela and era >= LAYOUTS.index("2021-22"):
        h.append("Reading Difficulty Indicator (Y/N)")
    if layout == "2024-25":
        h += _PROJECTIONS
    return h


def _domain_headers(layout: str, ela: bool, *, old: bool, current: bool) -> list[str]:
    """Scale score, placement (and, after 2019-20, relative placement) of each domain in the layout."""
    if ela:
        domains = [_DOMAIN_TITLES[d] for d in ELA_DOMAINS[:4]]
        if current:
            domains += ["Comprehension: Overall", "Comprehension: Literature", "Comprehension: Informational Text"]
        elif layout == "2022-23":
            domains += [f"Reading Comprehension: {p}" for p in ("Overall", "Literature", "Informational Text")]
        else:
            domains += ["Reading Comprehension: Literature", "Reading Comprehension: Informational Text"]
    else:
        domains = [_DOMAIN_TITLES[d] for d in MATH_DOMAINS]
    suffixes = ["Scale Score", "Placement"] + ([] if old else ["Relative Placement"])
    return [f"{d} {s}" for d in domains for s in suffixes]


# --- formatting -----------------------------------------------------------------------------

_DEFAULTS = {"enrolled": "Enrolled", "read_aloud": "Off", "assessment_language": "English"}


def _py_format(field: str, value: object, padded: bool) -> str | None:
    """Python formatting for columns of mixed types (list-of-dict input only)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "Y" if value else "N"
    if isinstance(value, (date, datetime)):
        return value.strftime("%m/%d/%Y") if padded else f"{value.month}/{value.day}/{value.year}"
    if field == "academic_year" and isinstance(value, int):
        return f"{value}-{value + 1}"
    if field == "student_grade" and value == 0:
        return "K"
    return str(value)


def _to_frame(records: Sequence[dict] | pl.DataFrame, padded: bool) -> pl.DataFrame:
    if isinstance(records, pl.DataFrame):
        return records
    fields = list(dict.fromkeys(k for r in records for k in r))
    columns = {}
    for f in fields:
        values = [r.get(f) for r in records]
        kinds = {type(v) for v in values if v is not None}
        if len(kinds) <= 1:
            columns[f] = pl.Series(f, values)
        else:  # e.g. a planted "950" among ints: format each cell so the good ones stay vendor-like
            columns[f] = pl.Series(f, [_py_format(f, v, padded) for v in values], dtype=pl.Utf8)
    return pl.DataFrame(columns, height=len(records))


def _format_expr(field: str, dtype: pl.DataType, padded: bool) -> pl.Expr:
    c = pl.col(field)
    if dtype == pl.Utf8:
        return c
    if dtype == pl.Null:
        return c.cast(pl.Utf8)
    if dtype == pl.Boolean:
        return pl.when(c).then(pl.lit("Y")).when(~c).then(pl.lit("N"))
    if dtype in (pl.Date, pl.Datetime) or isinstance(dtype, pl.Datetime):
        return c.dt.strftime("%m/%d/%Y" if padded else "%-m/%-d/%Y")
    if field == "academic_year" and dtype.is_integer():
        return pl.concat_str(c.cast(pl.Utf8), pl.lit("-"), (c + 1).cast(pl.Utf8))
    if field == "student_grade" and dtype.is_integer():
        return pl.when(c == 0).then(pl.lit("K")).otherwise(c.cast(pl.Utf8))
    return c.cast(pl.Utf8)


def write_diagnostic_csv(
    path: str | os.PathLike,
    records: Sequence[dict] | pl.DataFrame,
    *,
    subject: str,
    layout: str = "2024-25",
    bom: bool = False,
    crlf: bool = False,
    final_newline: bool = True,
) -> list[str]:
    """Write a Diagnostic Results CSV in a vendor layout; returns the header row written.

    ``records`` (dicts or a DataFrame) are read by canonical field name, see the module
    docstring: the published cell fields, ``last_name``/``first_name`` and any other field of
    ``VENDOR_HEADERS``; columns of the layout without a matching key are written blank.
    """
    headers = layout_headers(layout, subject)
    padded = layout in _PADDED_DATES
    frame = _to_frame(records, padded)
    if "vendor_student_id" not in frame.columns and "student_id" in frame.columns:
        frame = frame.rename({"student_id": "vendor_student_id"})  # the ID the vendor file carries
    if "user_name" not in frame.columns and {"first_name", "last_name"} <= set(frame.columns):
        frame = frame.with_columns(
            pl.concat_str(pl.col("first_name"), pl.col("last_name"), separator=".").alias("user_name")
        )
    exprs = []
    for header in headers:
        field = HEADER_ALIASES[header_key(header)]
        if field in frame.columns:
            expr = _format_expr(field, frame.schema[field], padded)
        else:
            expr = pl.lit(_DEFAULTS.get(field), dtype=pl.Utf8)
        exprs.append(expr.alias(header))
    out = frame.select(exprs) if frame.height else pl.DataFrame(schema=dict.fromkeys(headers, pl.Utf8))

    terminator = "\r\n" if crlf else "\n"
    out.write_csv(path, include_bom=bom, line_terminator=terminator, quote_style="necessary", null_value="")
    if not final_newline:
        size = os.path.getsize(path)
        os.truncate(path, size - len(terminator))
    return headers
