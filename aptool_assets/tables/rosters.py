"""Which roster a school year reads: its own past-year copy, or the current roster.

``aptool.students`` and ``aptool.student_demographics`` hold the district's current school year (the
change feed and webhooks keep them fresh). A backfill of a past year keeps that year's roster apart, in
``aptool.past_year_students``, so loading history never replaces what the AP Tool shows today.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from aptool_assets.storage.warehouse import Warehouse
from aptool_assets.tables.aeries import PAST_YEAR_STUDENTS, STUDENT_DEMOGRAPHICS, STUDENTS


def holds_past_roster(wh: Warehouse, school_year: int) -> bool:
    """Whether a backfill stored ``school_year``'s own roster."""
    return wh.read_table(PAST_YEAR_STUDENTS, where={"school_year": school_year}, columns=["student_id"]).height > 0


def roster_of_year(wh: Warehouse, school_year: int, columns: Sequence[str]) -> pl.DataFrame:
    """The student records of ``school_year`` (``columns`` of ``aptool.students``, names excepted): the year's
    own copy when a backfill loaded it, else the current roster."""
    past = wh.read_table(PAST_YEAR_STUDENTS, where={"school_year": school_year}, columns=columns)
    return past if past.height else wh.read_table(STUDENTS, columns=columns)


def demographics_of_year(wh: Warehouse, school_year: int) -> pl.DataFrame:
    """``aptool.student_demographics`` as of ``school_year`` (the year's own copy when a backfill loaded it)."""
    columns = list(STUDENT_DEMOGRAPHICS.columns)
    past = wh.read_table(PAST_YEAR_STUDENTS, where={"school_year": school_year}, columns=columns)
    return past if past.height else wh.read_table(STUDENT_DEMOGRAPHICS)
