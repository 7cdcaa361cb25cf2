"""Chronic Absenteeism Indicator suppression (contract §4.5) and CDE's download layout: fewer than 11
eligible this year or last, CDE's complementary NR rule, the one more group that keeps a lone suppressed
race/NR count from being recovered by subtraction, and the rows as CDE's ``chronicabsenteeism`` file."""

from __future__ import annotations

import polars as pl
import pytest

from aptool_assets.rules.indicator import CDE_COLUMNS, cde_layout
from aptool_assets_tests.indicator_helpers import S1, S2, YEAR, cohort, indicator, row

PUBLISHED = ("chronic_count", "rate_pct", "status_level")
CHANGE = ("change_pct", "change_level")


def published(got: dict) -> bool:
    return got["chronic_count"] is not None


def assert_suppressed(got: dict) -> None:
    for col in (*PUBLISHED, *CHANGE):
        assert got[col] is None, col


# --- fewer than 11 eligible ------------------------------------------------------------------------


@pytest.mark.parametrize(("eligible", "shown"), [(10, False), (11, True)])
def test_fewer_than_11_eligible_suppresses_this_years_figures(eligible, shown):
    got = row(indicator(cohort(1, eligible, 1), cohort(1, 40, 1, year=YEAR - 1)))
    assert got["eligible_count"] == eligible  # the denominator is always published
    assert got["n_size_met"] is False
    assert (got["prior_eligible_count"], got["prior_chronic_count"], got["prior_rate_pct"]) == (40, 1, 2.5)
    if shown:
        assert (got["chronic_count"], got["rate_pct"], got["status_level"]) == (1, 9.1, "medium")
        assert (got["change_pct"], got["change_level"]) == (6.6, "increased_significantly")
    else:
        assert_suppressed(got)


@pytest.mark.parametrize(("prior_eligible", "shown"), [(10, False), (11, True)])
def test_fewer_than_11_eligible_last_year_suppresses_the_prior_figures_and_the_change(prior_eligible, shown):
    got = row(indicator(cohort(1, 40, 1), cohort(1, prior_eligible, 1, year=YEAR - 1)))
    assert (got["chronic_count"], got["rate_pct"], got["status_level"]) == (1, 2.5, "very_low")
    assert got["prior_eligible_count"] == prior_eligible
    if shown:
        assert (got["prior_chronic_count"], got["prior_rate_pct"], got["change_pct"]) == (1, 9.1, -6.6)
        assert got["change_level"] == "declined_significantly"
    else:
        assert (got["prior_chronic_count"], got["prior_rate_pct"], got["change_pct"], got["change_level"]) == (
            None,
            None,
            None,
            None,
        )


# --- complementary suppression ---------------------------------------------------------------------


def school(at: int = S1, **sizes: int) -> list[dict]:
    """A school with ``sizes[group]`` eligible students per race group (one chronic in each); student IDs
    are unique across schools."""
    rows, first = [], at * 100_000
    for race, n in sizes.items():
        rows += cohort(first, n, 1, race=race, school=at)
        first += 1000
    return rows


def null_groups(table: pl.DataFrame, *, level: str = "school", school_code: int = S1) -> list[str]:
    code = 0 if level == "district" else school_code
    unit = table.filter((pl.col("level") == level) & (pl.col("school_code") == code))
    return unit.filter(pl.col("chronic_count").is_null())["student_group"].to_list()


@pytest.mark.parametrize("level", ["school", "district"])
def test_a_suppressed_race_group_suppresses_nr_too(level):
    table = indicator(school(HI=30, WH=5, NR=12))
    assert null_groups(table, level=level) == ["WH", "NR"]
    nr = row(table, "NR", level=level)
    assert nr["eligible_count"] == 12 and nr["n_size_met"] is False
    assert_suppressed(nr)
    assert published(row(table, "HI", level=level)) and published(row(table, level=level))


def test_nr_is_published_when_no_race_group_is_suppressed():
    table = indicator(school(HI=30, WH=11, NR=12))
    assert null_groups(table) == []


def test_a_small_program_group_does_not_suppress_nr():
    rows = [*school(HI=30, NR=12), *cohort(5000, 5, 1, race="HI", is_english_learner=True)]
    assert null_groups(indicator(rows)) == ["EL"]


def test_a_lone_suppressed_nr_takes_the_smallest_published_race_group_with_it():
    table = indicator(school(HI=30, WH=20, AS=25, NR=5))
    assert null_groups(table) == ["WH", "NR"]
    assert row(table, "WH")["eligible_count"] == 20


def test_a_lone_suppressed_race_group_without_nr_takes_the_smallest_published_one_with_it():
    table = indicator(school(HI=30, AS=20, WH=5))
    assert null_groups(table) == ["AS", "WH"]
    assert published(row(table))


def test_ties_for_the_smallest_go_by_group_order():
    assert null_groups(indicator(school(WH=20, HI=20, AA=5))) == ["AA", "HI"]


def test_two_suppressed_race_groups_need_nothing_more():
    assert null_groups(indicator(school(HI=30, AA=4, WH=5))) == ["AA", "WH"]


def test_all_is_suppressed_when_the_only_race_group_is_and_nothing_else_can_be():
    # Five students with groups, ten without: ALL minus nothing would be the WH count.
    rows = [*cohort(1, 5, 1, race="WH"), *cohort(100, 10, 0, groups=False)]
    table = indicator(rows)
    assert null_groups(table) == ["ALL", "WH"]
    assert row(table)["eligible_count"] == 15


def test_suppression_is_per_level_and_school():
    table = indicator([*school(HI=30, WH=5, NR=12), *school(S2, HI=30, WH=12, NR=12)])
    assert null_groups(table) == ["WH", "NR"]
    assert null_groups(table, school_code=S2) == []
    assert null_groups(table, level="district") == []  # WH 17, NR 24 across the district


def test_the_prior_year_is_suppressed_the_same_way_within_itself():
    prior = [{**r, "school_year": YEAR - 1} for r in school(HI=30, WH=5, NR=12)]
    table = indicator(school(HI=30, WH=12, NR=12), prior)
    assert null_groups(table) == []
    for group in ("WH", "NR"):
        got = row(table, group)
        assert got["prior_chronic_count"] is None and got["prior_rate_pct"] is None and got["change_pct"] is None
    assert row(table, "NR")["prior_eligible_count"] == 12
    assert row(table, "HI")["prior_chronic_count"] == 1


# --- CDE's layout ----------------------------------------------------------------------------------


def cde(current: list[dict], prior: list[dict] | None = None) -> pl.DataFrame:
    return cde_layout(indicator(current, prior))


def test_cde_layout_columns_codes_and_rows():
    rows = [*school(HI=40, NR=12), *cohort(9000, 12, 2, school=S2, race="AA", is_homeless=True)]
    out = cde(rows)
    assert out.columns == list(CDE_COLUMNS)
    assert "NR" not in out["studentgroup"].to_list()  # not a CDE group
    keys = out.select("cds", "rtype", "studentgroup").rows()
    assert keys == [
        ("00000000000000", "D", "ALL"),
        ("00000000000000", "D", "AA"),
        ("00000000000000", "D", "HI"),
        ("00000000000000", "D", "HOM"),
        ("00000000000101", "S", "ALL"),
        ("00000000000101", "S", "HI"),
        ("00000000000202", "S", "ALL"),
        ("00000000000202", "S", "AA"),
        ("00000000000202", "S", "HOM"),
    ]
    first = out.row(4, named=True)
    assert (first["currnumer"], first["currdenom"], first["currstatus"], first["currnsizemet"]) == (2, 52, 3.8, "Y")
    assert out.row(6, named=True)["currnsizemet"] == "N"


@pytest.mark.parametrize(
    ("eligible", "chronic", "statuslevel"),
    [(40, 1, 5), (40, 2, 4), (40, 4, 3), (40, 8, 2), (40, 9, 1)],
)
def test_cde_status_level_numbers_run_from_very_high_1_to_very_low_5(eligible, chronic, statuslevel):
    assert cde(cohort(1, eligible, chronic))["statuslevel"][0] == statuslevel


@pytest.mark.parametrize(
    ("prior_chronic", "changelevel"),
    [(8, 5), (3, 4), (2, 3), (1, 2), (0, 1)],  # current 2/40 = 5.0 against 20.0, 7.5, 5.0, 2.5, 0.0
)
def test_cde_change_level_numbers_run_from_increased_significantly_1_to_declined_significantly_5(
    prior_chronic, changelevel
):
    assert cde(cohort(1, 40, 2), cohort(1, 40, prior_chronic, year=YEAR - 1))["changelevel"][0] == changelevel


def test_cde_layout_leaves_suppressed_and_missing_values_blank():
    out = cde(cohort(1, 10, 1), cohort(1, 40, 1, year=YEAR - 1))
    got = out.row(0, named=True)
    assert got["currdenom"] == 10 and got["priordenom"] == 40 and got["priornumer"] == 1
    for col in ("currnumer", "currstatus", "change", "statuslevel", "changelevel"):
        assert got[col] is None, col
    text = out.head(1).write_csv(separator="\t", null_value="", include_header=False)
    assert text == "00000000000000\tD\tALL\t\t10\t\t1\t40\t2.5\t\t\t\tN\n"


def test_cde_layout_without_a_prior_year():
    got = cde(cohort(1, 40, 1)).row(0, named=True)
    assert (got["priornumer"], got["priordenom"], got["priorstatus"], got["change"], got["changelevel"]) == (
        None,
        None,
        None,
        None,
        None,
    )
    assert got["statuslevel"] == 5
