"""Parser of i-Ready Diagnostic Results CSV exports into the published table.

Columnar end to end (polars): every cell is read as text, mapped by header name, converted
and checked with vectorised expressions. A row is set aside with a reason only when what identifies
the diagnostic or what risk is computed from is unusable (its key, overall scale score or overall
relative placement); any other unreadable cell is published as null and recorded as a cell problem
(line, column, reason). Rows repeating a diagnostic's key are one diagnostic (the later row's cells
win) unless their overall placements disagree. The pandera schema gates what is published. Nothing
here logs or raises with cell contents, because the files carry student names and demographics.
"""

from __future__ import annotations

import csv
import itertools
import os
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from aptool_assets.rules.academic import (
    DEFAULT_WINDOWS,
    RELATIVE_PLACEMENTS,
    AssessmentWindows,
    assessment_window_expr,
)
from aptool_assets.sources.iready.cells import convert_cells, parse_year
from aptool_assets.sources.iready.schemas import (
    CELL_COLUMNS,
    DOMAIN_RELATIVE_PLACEMENTS,
    HEADER_ALIASES,
    PERCENTILE_MAX,
    PERCENTILE_MIN,
    REQUIRED_FIELDS,
    SCALE_SCORE_MAX,
    SCALE_SCORE_MIN,
    describe_failures,
    header_key,
    required_header,
    schema_failure_cases,
)
from aptool_assets.tables.iready import (
    COLUMN_NAMES,
    DOMAINS,
    GROWTH_INT_COLUMNS,
    KEY_COLUMNS,
)
from aptool_assets.vocabulary import UTC_TS

__all__ = [
    "DiagnosticFileError",
    "ParsedDiagnostics",
    "StaleFileError",
    "normalise_subject",
    "parse_diagnostic_file",
    "peek_academic_years",
]

CELL_PROBLEM_SCHEMA: dict[str, pl.DataType] = {
    "source_file": pl.Utf8(),
    "line_number": pl.Int64(),
    "column_name": pl.Utf8(),
    "reason": pl.Utf8(),
}

REJECTED_SCHEMA: dict[str, pl.DataType] = {
    "source_file": pl.Utf8(),
    "line_number": pl.Int64(),
    "student_id_raw": pl.Utf8(),
    "reason": pl.Utf8(),
    "raw_record": pl.Utf8(),
}

_SUBJECT_TOKENS = {"ela": "ela", "reading": "ela", "reading_english": "ela", "math": "math"}


class DiagnosticFileError(ValueError):
    """The file as a whole cannot be loaded; the message names the file, never a student."""


class StaleFileError(DiagnosticFileError):
    """The file holds another academic year than the one it is loaded as (stale or rollover copy)."""


@dataclass
class ParsedDiagnostics:
    """Outcome of one file: publishable rows, set-aside rows and what was noticed on the way.

    ``total_rows`` counts the non-blank data records, so
    ``total_rows == len(results) + len(rejected) + duplicate_rows_collapsed``. ``cell_problems`` lists the
    cells of published rows that were set to null (line, column, reason; never the value).
    """

    results: pl.DataFrame
    rejected: pl.DataFrame
    total_rows: int
    duplicate_rows_collapsed: int
    academic_years: list[int]
    unknown_columns: list[str]
    cell_problems: pl.DataFrame

    @property
    def rejected_by_reason(self) -> dict[str, int]:
        """Rejected row counts keyed by reason code (the text before ':')."""
        codes = self.rejected.get_column("reason").str.split(":").list.first().str.strip_chars()
        return dict(Counter(codes.to_list()))


def normalise_subject(subject: str) -> str:
    """``ela``/``math`` from the subject tokens seen in file names (reading, reading_english, ...)."""
    token = subject.strip().lower().replace("-", "_")
    if token not in _SUBJECT_TOKENS:
        raise ValueError(f"unknown i-Ready subject {subject!r}: expected ela or math")
    return _SUBJECT_TOKENS[token]


def _format_year(start: int) -> str:
    return f"{start}-{start + 1}"


# --- reading --------------------------------------------------------------------------------


def _read_text_csv(source: bytes | str | os.PathLike, source_file: str) -> pl.DataFrame:
    """Every cell as text. Polars strips a UTF-8 BOM and accepts CRLF/LF and a missing final newline."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data: bytes | str = bytes(source)
        if not data.strip():
            raise DiagnosticFileError(f"{source_file}: the file is empty (no header row)")
    else:
        data = os.fspath(source)
        try:
            empty = os.path.getsize(data) == 0
        except OSError as exc:
            raise DiagnosticFileError(f"{source_file}: cannot be read ({type(exc).__name__})") from None
        if empty:
            raise DiagnosticFileError(f"{source_file}: the file is empty (no header row)")
    options = {"infer_schema": False, "quote_char": '"', "raise_if_empty": True}
    try:
        try:
            return pl.read_csv(data, encoding="utf8", **options)
        except pl.exceptions.ComputeError as exc:
            if "utf-8" not in str(exc).lower():
                raise
            # A re-saved file in another encoding: names may be mangled, but they are not published.
            return pl.read_csv(data, encoding="utf8-lossy", **options)
    except (pl.exceptions.PolarsError, OSError) as exc:
        # Polars messages can quote the offending line, which holds names: keep only the kind.
        kind = "records with more fields than the header" if "more fields" in str(exc) else type(exc).__name__
        raise DiagnosticFileError(f"{source_file}: not a readable CSV file ({kind})") from None


def _map_headers(columns: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """Canonical field → the file columns carrying it (file order), plus the unknown headers."""
    mapped: dict[str, list[str]] = {}
    unknown: list[str] = []
    for col in columns:
        original = col
        # polars suffixes repeated header names; the repeat maps like the original.
        base = col.split("_duplicated_")[0] if "_duplicated_" in col else col
        field = HEADER_ALIASES.get(header_key(base))
        if field is None:
            unknown.append(original.replace("\ufeff", "").strip())
        else:
            mapped.setdefault(field, []).append(original)
    return mapped, unknown


# --- row rules ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Check:
    """One rule: ``bad`` flags the row; ``reason`` is evaluated only on flagged rows. A cell rule names the
    ``column`` that is published as null instead of setting the row aside."""

    name: str
    bad: pl.Expr
    reason: pl.Expr
    column: str | None = None


def _text(*parts: str | pl.Expr) -> pl.Expr:
    """Concatenate literals and values as text. Not ``pl.format``: in polars 2.1 it panics on
    multi-chunk columns, which filtered frames often are."""
    return pl.concat_str([pl.lit(p) if isinstance(p, str) else p.cast(pl.Utf8) for p in parts])


def _value_reason(code: str, col: str) -> pl.Expr:
    return _text(f"{code}: {col}=", pl.col(col))


def _not_applicable_is_fine(checks: list[_Check]) -> list[_Check]:
    """A null comparison means "not applicable", never "bad"."""
    return [_Check(k.name, k.bad.fill_null(False), k.reason, k.column) for k in checks]


def _row_checks(failed: set[str], expected_academic_year: int | None) -> list[_Check]:
    """Rules that set a row aside, in reporting priority order (a rejected row reports its first failure):
    the diagnostic's key, its overall scale score and overall relative placement.

    A conversion rule is only built for fields where a conversion failed somewhere, because
    elsewhere it is false by construction.
    """
    c = pl.col
    checks: list[_Check] = []

    def missing(col: str) -> None:
        checks.append(_Check(f"missing_{col}", c(f"_raw_{col}").is_null(), pl.lit(f"missing_value: {col}")))

    def unconverted(col: str, code: str, detail: bool = True) -> None:
        if col in failed:
            text = f"{code}: {col}" if detail else code
            checks.append(_Check(f"unconverted_{col}", c(f"_raw_{col}").is_not_null() & c(col).is_null(), pl.lit(text)))

    missing("vendor_student_id")
    unconverted("vendor_student_id", "non_numeric_student_id", detail=False)
    missing("academic_year")
    unconverted("academic_year", "invalid_academic_year", detail=False)
    if expected_academic_year is not None:
        checks.append(
            _Check(
                "academic_year_mismatch",
                c("academic_year") != expected_academic_year,
                _text("academic_year_mismatch: ", c("academic_year")),
            )
        )
    missing("completion_date")
    unconverted("completion_date", "invalid_date")
    missing("overall_scale_score")
    unconverted("overall_scale_score", "invalid_integer")
    checks.append(
        _Check(
            "range_overall_scale_score",
            ~c("overall_scale_score").is_between(SCALE_SCORE_MIN, SCALE_SCORE_MAX),
            _value_reason("scale_score_out_of_range", "overall_scale_score"),
        )
    )
    missing("overall_relative_placement")
    checks.append(
        _Check(
            "vocabulary_overall_relative_placement",
            ~c("overall_relative_placement").is_in(RELATIVE_PLACEMENTS),
            pl.lit("invalid_relative_placement: overall_relative_placement"),
        )
    )
    return _not_applicable_is_fine(checks)


def _cell_checks(failed: set[str]) -> list[_Check]:
    """Rules on the other cells: a cell that breaks one is published as null and recorded (reason codes only,
    no values), so one bad secondary cell never costs the student a diagnostic."""
    c = pl.col
    checks: list[_Check] = []

    def unconverted(col: str, code: str) -> None:
        if col in failed:
            bad = c(f"_raw_{col}").is_not_null() & c(col).is_null()
            checks.append(_Check(f"unconverted_{col}", bad, pl.lit(code), col))

    def out_of_range(col: str, code: str, lo: int, hi: int) -> None:
        checks.append(_Check(f"range_{col}", ~c(col).is_between(lo, hi), pl.lit(code), col))

    def vocabulary(col: str, allowed: tuple[str, ...]) -> None:
        checks.append(_Check(f"vocabulary_{col}", ~c(col).is_in(allowed), pl.lit("invalid_relative_placement"), col))

    unconverted("start_date", "invalid_date")
    unconverted("student_grade", "invalid_grade")
    unconverted("is_baseline", "invalid_flag")
    unconverted("is_most_recent", "invalid_flag")
    for col in ("duration_min", "grouping", "percentile", *GROWTH_INT_COLUMNS):
        unconverted(col, "invalid_integer")
    out_of_range("percentile", "percentile_out_of_range", PERCENTILE_MIN, PERCENTILE_MAX)
    out_of_range("duration_min", "invalid_duration", 0, 2**31 - 1)
    for d in DOMAINS:
        unconverted(f"{d}_scale_score", "invalid_integer")
        out_of_range(f"{d}_scale_score", "scale_score_out_of_range", SCALE_SCORE_MIN, SCALE_SCORE_MAX)
        vocabulary(f"{d}_relative_placement", DOMAIN_RELATIVE_PLACEMENTS)
    return _not_applicable_is_fine(checks)


def _live_checks(checks: list[_Check], work: pl.DataFrame) -> list[_Check]:
    """The checks that flag some row of ``work``, so only those are evaluated row by row.

    Range and vocabulary rules are reduced to one boolean per column in a single parallel
    pass; "missing" rules are decided from null counts, which polars keeps for free.
    """
    aggregated = [k for k in checks if k.name.startswith(("range_", "vocabulary_"))]
    fired = work.select(k.bad.any().alias(k.name) for k in aggregated).row(0, named=True) if aggregated else {}
    live = []
    for k in checks:
        if k.name in fired:
            if fired[k.name]:
                live.append(k)
        elif k.name.startswith("missing_"):
            if work.get_column(f"_raw_{k.name.removeprefix('missing_')}").null_count():
                live.append(k)
        else:
            live.append(k)
    return live


_KEY = [c for c in KEY_COLUMNS if c not in ("subject", "source_file")]  # constant within a file


def _key_repeats(typed: pl.DataFrame) -> pl.Series:
    """Rows whose contract key (by hash) occurs more than once: a superset of the true repeats, so the
    exact grouping runs on these only."""
    return typed.select(pl.struct(_KEY).hash().is_duplicated()).to_series()


def _collapse_repeats(work: pl.DataFrame, source_file: str) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """(work, rejected, collapsed): rows sharing a key are one diagnostic delivered twice (other roster cells,
    another date spelling), so only the last of them is kept and the rest are counted as collapsed; a row
    whose overall relative placement differs from the first row of its key is a real conflict and is set
    aside with the reason."""
    repeats = _key_repeats(work)
    if not repeats.any():
        return work, _empty_rejected(), 0
    work = work.with_row_index("_pos")
    candidates = work.filter(repeats)
    first = pl.col("overall_relative_placement").first().over(_KEY)
    conflict = candidates.filter(pl.col("overall_relative_placement") != first)
    same = candidates.filter(pl.col("overall_relative_placement") == first)
    winners = same.group_by(_KEY).agg(pl.col("_pos").max()).get_column("_pos")
    dropped = candidates.filter(~pl.col("_pos").is_in(winners.implode())).get_column("_pos")
    rejected = _rejected_frame(
        conflict, pl.lit("duplicate_key_conflict: overall_relative_placement differs"), source_file
    )
    kept = work.filter(~pl.col("_pos").is_in(dropped.implode())).drop("_pos")
    return kept, rejected, dropped.len() - conflict.height


def _null_bad_cells(work: pl.DataFrame, checks: list[_Check], source_file: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(work, problems): cells breaking a cell rule set to null, and one problem row per such cell."""
    live = _live_checks(checks, work)
    if not live:
        return work, pl.DataFrame(schema=CELL_PROBLEM_SCHEMA)
    flags = work.select(pl.col("_line"), *(k.bad.alias(f"_bad{i}") for i, k in enumerate(live)))
    problems = pl.concat(
        [
            flags.filter(pl.col(f"_bad{i}")).select(
                pl.lit(source_file, pl.Utf8).alias("source_file"),
                pl.col("_line").cast(pl.Int64).alias("line_number"),
                pl.lit(k.column, pl.Utf8).alias("column_name"),
                k.reason.cast(pl.Utf8).alias("reason"),
            )
            for i, k in enumerate(live)
        ]
    ).unique(subset=["line_number", "column_name"], keep="first", maintain_order=True)
    masks: dict[str, pl.Series] = {}
    for i, k in enumerate(live):
        bad = flags.get_column(f"_bad{i}")
        masks[k.column] = masks[k.column] | bad if k.column in masks else bad
    nulled = work.with_columns(
        pl.when(pl.lit(mask)).then(None).otherwise(pl.col(col)).alias(col) for col, mask in masks.items()
    )
    return nulled, problems.sort("line_number", "column_name")


# --- the parser -----------------------------------------------------------------------------


def _empty_rejected() -> pl.DataFrame:
    return pl.DataFrame(schema=REJECTED_SCHEMA)


def _rejected_frame(rows: pl.DataFrame, reason: pl.Expr, source_file: str) -> pl.DataFrame:
    """Set-aside rows with only the published (non-personal) cells, as read, in raw_record."""
    if rows.is_empty():
        return _empty_rejected()
    raw_cols = [pl.col(f"_raw_{c}").alias(c) for c in CELL_COLUMNS]
    return rows.select(
        pl.lit(source_file, pl.Utf8).alias("source_file"),
        pl.col("_line").cast(pl.Int64).alias("line_number"),
        pl.col("_raw_vendor_student_id").alias("student_id_raw"),
        reason.cast(pl.Utf8).alias("reason"),
        pl.struct(raw_cols).struct.json_encode().alias("raw_record"),
    )


def _first_reason(checks: list[_Check]) -> pl.Expr:
    chain = pl.when(checks[0].bad).then(checks[0].reason)
    for k in checks[1:]:
        chain = chain.when(k.bad).then(k.reason)
    return chain.otherwise(pl.lit("schema_check"))


def _read_cells(source: bytes | str | os.PathLike, source_file: str) -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
    """(raw, src, unknown columns): the file's records without blank lines (``_line`` = line number), and
    the text of each published cell with old and new header names coalesced (first non-blank)."""
    raw = _read_text_csv(source, source_file)
    mapped, unknown = _map_headers(raw.columns)
    missing = [required_header(f) for f in REQUIRED_FIELDS if f not in mapped]
    if missing:
        raise DiagnosticFileError(f"{source_file}: required column(s) missing: {', '.join(missing)}")
    cells = raw.columns
    raw = raw.with_row_index("_line", offset=2)
    blank = raw.select(pl.all_horizontal(pl.col(cells).is_null())).to_series()
    if blank.any():
        raw = raw.filter(~blank)
    src = raw.select(
        (
            pl.coalesce(mapped[f])
            if len(mapped.get(f, ())) > 1
            else pl.col(mapped[f][0])
            if f in mapped
            else pl.lit(None, pl.Utf8)
        ).alias(f)
        for f in CELL_COLUMNS
    )
    return raw, src, unknown


def _refuse_stale(years: list[int], expected_academic_year: int | None, source_file: str) -> None:
    if expected_academic_year is not None and years and expected_academic_year not in years:
        held = ", ".join(_format_year(y) for y in years)
        raise StaleFileError(
            f"{source_file} holds Academic Year {held} but is being loaded as "
            f"{_format_year(expected_academic_year)}: refusing a stale or rollover file; "
            "the previously published data is kept"
        )


def _set_aside(work: pl.DataFrame, checks: list[_Check], source_file: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows failing a row check, moved out of ``work`` into a rejected frame."""
    live = _live_checks(checks, work)
    if live:
        bad = work.select(pl.any_horizontal(k.bad for k in live)).to_series()
        if bad.any():
            return work.filter(~bad), _rejected_frame(work.filter(bad), _first_reason(live), source_file)
    return work, _empty_rejected()


def _published(
    work: pl.DataFrame, subject: str, source_file: str, loaded_at: datetime, windows: AssessmentWindows
) -> pl.DataFrame:
    """The kept rows in the published columns, with the file's subject, lineage and assessment window."""
    constants = {
        "student_id": pl.lit(None, pl.Int64),  # mapped to the Aeries StudentID by the caller (rules.student_ids)
        "subject": pl.lit(subject, pl.Utf8),
        "source_file": pl.lit(source_file, pl.Utf8),
        "loaded_at": pl.lit(loaded_at, UTC_TS),
    }
    return work.select(
        constants[c].alias(c)
        if c in constants
        else assessment_window_expr(windows)
        if c == "assessment_window"
        else pl.col(c)
        for c in COLUMN_NAMES
    )


def parse_diagnostic_file(
    source: bytes | str | os.PathLike,
    *,
    subject: str,
    source_file: str,
    expected_academic_year: int | None = None,
    windows: AssessmentWindows = DEFAULT_WINDOWS,
    loaded_at: datetime | None = None,
) -> ParsedDiagnostics:
    """Parse one Diagnostic Results file (bytes, or a path given as str/PathLike).

    Raises DiagnosticFileError when the file cannot be loaded as a whole (unreadable, required
    columns missing) and StaleFileError when ``expected_academic_year`` is given and no row
    carries it. Row-level problems never raise: they end up in ``rejected``.
    """
    subject = normalise_subject(subject)
    loaded_at = loaded_at or datetime.now(UTC)
    loaded_at = loaded_at.replace(tzinfo=UTC) if loaded_at.tzinfo is None else loaded_at.astimezone(UTC)

    raw, src, unknown = _read_cells(source, source_file)
    total_rows = raw.height
    src, typed, failed = convert_cells(src)
    years = typed.get_column("academic_year").drop_nulls().unique().sort().to_list()
    _refuse_stale(years, expected_academic_year, source_file)

    work = pl.concat([raw.select("_line"), src.select(pl.all().name.prefix("_raw_")), typed], how="horizontal")
    del raw, src, typed

    work, unusable = _set_aside(work, _row_checks(failed, expected_academic_year), source_file)
    work, cell_problems = _null_bad_cells(work, _cell_checks(failed), source_file)
    work, conflicts, collapsed = _collapse_repeats(work, source_file)
    rejected_parts = [unusable, conflicts]
    results = _published(work, subject, source_file, loaded_at, windows)

    # The pandera gate: whatever the rules above missed is set aside, never published.
    failures = schema_failure_cases(results, key_unique=False)  # key repeats were settled above
    published_lines = work.get_column("_line")
    if failures is not None:
        results, gated = _apply_schema_gate(results, work, failures, source_file)
        rejected_parts.append(gated)
        published_lines = published_lines.filter(~published_lines.is_in(gated.get_column("line_number").implode()))
    # Only cells of published rows are problems to report: a collapsed or rejected row's are not.
    cell_problems = cell_problems.filter(pl.col("line_number").is_in(published_lines.cast(pl.Int64).implode()))

    parts = [p for p in rejected_parts if not p.is_empty()]
    rejected = pl.concat(parts).sort("line_number") if parts else _empty_rejected()
    return ParsedDiagnostics(
        results=results,
        rejected=rejected,
        total_rows=total_rows,
        duplicate_rows_collapsed=collapsed,
        academic_years=years,
        unknown_columns=unknown,
        cell_problems=cell_problems,
    )


def _apply_schema_gate(
    results: pl.DataFrame, work: pl.DataFrame, failures: pl.DataFrame, source_file: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Move rows failing a pandera row check to rejected; a table-level failure is a file error."""
    table_failures = failures.filter(pl.col("index").is_null())
    if not table_failures.is_empty():
        raise DiagnosticFileError(
            f"{source_file}: parsed table does not match the published schema: "
            + "; ".join(describe_failures(table_failures, max_examples=0))
        )
    reasons = (
        failures.group_by("index")
        .agg(
            pl.when(pl.col("schema_context") == "Column")
            .then(_text("schema_check: ", pl.col("column"), " ", pl.col("check")))
            .otherwise(_text("schema_check: ", pl.col("check")))
            .first()
            .alias("_reason")
        )
        .with_columns(pl.col("index").cast(pl.UInt32))
    )
    flagged = work.with_row_index("_i").join(reasons, left_on="_i", right_on="index", how="left", maintain_order="left")
    keep = flagged.get_column("_reason").is_null()
    gated = _rejected_frame(flagged.filter(~keep), pl.col("_reason"), source_file)
    results = results.filter(keep)
    still = schema_failure_cases(results, key_unique=False)
    if still is not None:
        raise DiagnosticFileError(
            f"{source_file}: parsed table does not match the published schema: "
            + "; ".join(describe_failures(still, max_examples=0))
        )
    return results, gated


def peek_academic_years(path: str | os.PathLike, max_rows: int = 200) -> set[int]:
    """Start years in the first ``max_rows`` records: a cheap stale-file check before a full load.

    Reads only the head of the file with the csv module, so it stays cheap on large files.
    """
    source_file = Path(path).name
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return set()
        positions = [i for i, h in enumerate(header) if HEADER_ALIASES.get(header_key(h)) == "academic_year"]
        if not positions:
            raise DiagnosticFileError(f"{source_file}: required column(s) missing: Academic Year")
        at = positions[0]
        values = [row[at] for row in itertools.islice(reader, max_rows) if at < len(row)]
    years = pl.DataFrame({"v": values}, schema={"v": pl.Utf8}).select(parse_year(pl.col("v"))).to_series()
    return set(years.drop_nulls().to_list())
