"""Student groups (contract §4.5): every race/ethnicity code boundary, Hispanic ethnicity first, multiple
races only across different groups, English learners, each program and the five routes into SED, the
program window of the school year through the as-of date, the record entered last, and a comparison with a
plain per-student reference on seeded random rosters."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest

from aptool_assets.rules.student_groups import STUDENT_GROUPS_SCHEMA, student_groups
from aptool_assets_tests.indicator_helpers import AS_OF, YEAR, demo, groups_of, one_student, program

# --- race and ethnicity ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "group"),
    [
        ("100", "AI"),
        ("199", "NR"),
        ("200", "NR"),
        ("201", "AS"),
        ("250", "AS"),
        ("299", "AS"),
        ("300", "NR"),
        ("301", "PI"),
        ("399", "PI"),
        ("400", "FI"),
        ("500", "NR"),
        ("600", "AA"),
        ("700", "WH"),
        ("800", "NR"),
        (" 700 ", "WH"),
        ("0201", "AS"),
        ("7x0", "NR"),
    ],
)
def test_each_race_code_boundary(code, group):
    assert one_student([demo(races=[code])])["race_ethnicity"] == group


@pytest.mark.parametrize(
    ("codes", "group"),
    [
        (["201", "700"], "MR"),
        (["100", "600", "700"], "MR"),
        (["201", "205"], "AS"),  # two Asian codes: one group, not multiple races
        (["301", "399"], "PI"),
        (["700", "700"], "WH"),
        (["700", "800"], "WH"),  # an unlisted code adds no group
        (["", "", "", "", "600"], "AA"),  # the fifth code counts
        (["", None, "  "], "NR"),
        ([], "NR"),
    ],
)
def test_several_codes(codes, group):
    assert one_student([demo(races=codes)])["race_ethnicity"] == group


@pytest.mark.parametrize("ethnicity", ["Y", "y", " Y "])
def test_hispanic_ethnicity_wins_over_any_race(ethnicity):
    assert one_student([demo(races=["201", "700"], ethnicity=ethnicity)])["race_ethnicity"] == "HI"
    assert one_student([demo(races=[], ethnicity=ethnicity)])["race_ethnicity"] == "HI"


@pytest.mark.parametrize("ethnicity", ["N", "", None, "X"])
def test_other_ethnicity_codes_leave_race_to_the_race_codes(ethnicity):
    assert one_student([demo(races=["400"], ethnicity=ethnicity)])["race_ethnicity"] == "FI"


# --- English learners and programs -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fluency", "el"), [("L", True), ("l", True), ("E", False), ("R", False), ("", False), (None, False)]
)
def test_english_learner_is_fluency_code_l(fluency, el):
    assert one_student([demo(fluency=fluency)])["is_english_learner"] is el


@pytest.mark.parametrize(
    ("code", "column"),
    [("144", "is_student_with_disability"), ("191", "is_homeless"), ("190", "is_foster_youth")],
)
def test_each_program_group(code, column):
    flags = one_student([demo()], [program(code)])
    assert flags[column] is True
    others = {"is_student_with_disability", "is_homeless", "is_foster_youth"} - {column}
    assert not any(flags[c] for c in others)


def test_no_program_no_group():
    flags = one_student([demo()], [program("999")])
    assert not any(flags[c] for c in STUDENT_GROUPS_SCHEMA if c.startswith("is_"))


@pytest.mark.parametrize(
    ("programs", "parent_ed"),
    [
        ([program("181")], None),  # free meals
        ([program("182")], None),  # reduced-price meals
        ([], "14"),  # parents not high school graduates
        ([program("135")], None),  # migrant
        ([program("191")], None),  # homeless
        ([program("190")], None),  # foster
    ],
)
def test_each_route_into_sed(programs, parent_ed):
    assert one_student([demo(parent_ed=parent_ed)], programs)["is_socioeconomically_disadvantaged"] is True


@pytest.mark.parametrize("parent_ed", [None, "", "10", "13", "15", "140"])
def test_other_parent_education_is_not_sed(parent_ed):
    assert one_student([demo(parent_ed=parent_ed)])["is_socioeconomically_disadvantaged"] is False


def test_foster_code_is_configurable():
    records, programs = [demo()], [program("188")]
    assert one_student(records, programs)["is_foster_youth"] is False
    flags = one_student(records, programs, foster_program_code="188")
    assert flags["is_foster_youth"] is True and flags["is_socioeconomically_disadvantaged"] is True
    # With another code configured, 190 means nothing.
    assert one_student(records, [program("190")], foster_program_code="188")["is_foster_youth"] is False


@pytest.mark.parametrize(
    ("start", "end", "counted"),
    [
        (date(2024, 9, 1), date(2025, 6, 30), False),  # ended before the year
        (date(2024, 9, 1), date(2025, 7, 1), True),  # ended on the year's first day
        (date(2024, 9, 1), date(2025, 9, 15), True),  # ended mid-year: active at some time this year
        (date(2025, 10, 1), None, True),  # starts on the as-of date
        (date(2025, 10, 2), None, False),  # starts after the as-of date
        (None, None, True),  # no dates: open
        (None, date(2025, 6, 1), False),
        (date(2026, 3, 1), date(2026, 4, 1), False),  # later this year, after the as-of date
    ],
)
def test_program_window_is_the_year_through_the_as_of_date(start, end, counted):
    assert one_student([demo()], [program("144", start=start, end=end)])["is_student_with_disability"] is counted


def test_as_of_date_after_the_year_is_capped_at_its_end():
    late = [program("144", start=date(2026, 7, 1))]  # next school year
    assert one_student([demo()], late, as_of_date=date(2026, 9, 1))["is_student_with_disability"] is False
    june = [program("144", start=date(2026, 6, 30))]
    assert one_student([demo()], june, as_of_date=date(2026, 9, 1))["is_student_with_disability"] is True


def test_programs_of_other_students_do_not_leak():
    out = groups_of([demo(1), demo(2)], [program("144", student_id=2)])
    assert out["is_student_with_disability"].to_list() == [False, True]


# --- several records -------------------------------------------------------------------------------


def test_the_record_entered_last_decides():
    records = [
        demo(races=["700"], fluency="L", parent_ed="14", school_code=101, entered=date(2025, 8, 13)),
        demo(races=["201"], fluency="E", parent_ed=None, school_code=202, entered=date(2025, 11, 3)),
        demo(races=["600"], fluency="L", parent_ed="14", school_code=303, entered=None),
    ]
    flags = one_student(records)
    assert flags["race_ethnicity"] == "AS"
    assert flags["is_english_learner"] is False
    assert flags["is_socioeconomically_disadvantaged"] is False


def test_same_enter_date_latest_update_decides_and_row_order_does_not():
    old = demo(races=["700"], school_code=202, updated=datetime(2025, 8, 1, tzinfo=UTC))
    new = demo(races=["600"], school_code=101, updated=datetime(2025, 9, 1, tzinfo=UTC))
    assert one_student([old, new])["race_ethnicity"] == "AA"
    assert one_student([new, old])["race_ethnicity"] == "AA"
    assert one_student([new, old])["source_updated_at"] == datetime(2025, 9, 1, tzinfo=UTC)


def test_source_updated_at_is_the_latest_of_the_students_records():
    chosen = demo(races=["600"], entered=date(2025, 11, 1), updated=datetime(2025, 8, 1, tzinfo=UTC))
    other = demo(races=["700"], school_code=202, entered=date(2025, 8, 1), updated=datetime(2025, 12, 1, tzinfo=UTC))
    flags = one_student([chosen, other])
    assert flags["race_ethnicity"] == "AA"
    assert flags["source_updated_at"] == datetime(2025, 12, 1, tzinfo=UTC)


def test_naive_timestamps_are_read_as_utc():
    flags = one_student([demo(updated=datetime(2025, 8, 1, 7, 30))])
    assert flags["source_updated_at"] == datetime(2025, 8, 1, 7, 30, tzinfo=UTC)


# --- shape -----------------------------------------------------------------------------------------


def test_shape_one_row_per_student_sorted():
    out = groups_of([demo(3), demo(1), demo(2), demo(1, school_code=202)], [program("144", student_id=9)])
    assert out.schema == pl.Schema(STUDENT_GROUPS_SCHEMA)
    assert out["student_id"].to_list() == [1, 2, 3]  # student 9 has programs but no record: no row
    assert out["school_year"].unique().to_list() == [YEAR]


def test_empty_inputs_give_an_empty_table():
    demographics = pl.DataFrame([demo()]).clear()
    programs = pl.DataFrame([program("144")]).clear()
    out = student_groups(demographics, programs, school_year=YEAR, as_of_date=AS_OF)
    assert out.height == 0
    assert out.schema == pl.Schema(STUDENT_GROUPS_SCHEMA)


def test_missing_column_is_named():
    record = demo()
    del record["race_code_3"]
    with pytest.raises(ValueError, match="race_code_3"):
        groups_of([record])


# --- random rosters against a plain reference ------------------------------------------------------

RANGES = [(100, 100, "AI"), (201, 299, "AS"), (301, 399, "PI"), (400, 400, "FI"), (600, 600, "AA"), (700, 700, "WH")]
CODES = ["100", "199", "200", "201", "250", "299", "300", "301", "399", "400", "500", "600", "700", "800", "", None]


def reference_race(record: dict) -> str:
    if (record["ethnicity_code"] or "").strip().upper() == "Y":
        return "HI"
    found = set()
    for i in range(1, 6):
        text = (record[f"race_code_{i}"] or "").strip()
        if text.isdigit():
            found |= {group for low, high, group in RANGES if low <= int(text) <= high}
    return "NR" if not found else found.pop() if len(found) == 1 else "MR"


def reference_groups(records: list[dict], programs: list[dict]) -> dict[int, tuple]:
    year_start = date(YEAR, 7, 1)
    active = defaultdict(set)
    for p in programs:
        if (p["start_date"] is None or p["start_date"] <= AS_OF) and (
            p["end_date"] is None or p["end_date"] >= year_start
        ):
            active[p["student_id"]].add(p["program_code"])
    by_student = defaultdict(list)
    for r in records:
        by_student[r["student_id"]].append(r)
    out = {}
    for student_id, mine in by_student.items():
        last = max(mine, key=lambda r: (r["school_enter_date"] or date.min, r["source_updated_at"], r["school_code"]))
        codes = active[student_id]
        swd, hom, fos = "144" in codes, "191" in codes, "190" in codes
        sed = bool(codes & {"181", "182", "135"}) or last["parent_ed_level_code"] == "14" or hom or fos
        el = last["language_fluency_code"] == "L"
        newest = max(r["source_updated_at"] for r in mine)
        out[student_id] = (reference_race(last), el, sed, swd, fos, hom, newest)
    return out


@pytest.mark.parametrize("seed", range(5))
def test_matches_a_plain_reference_on_random_rosters(seed):
    rng = random.Random(seed)
    for _ in range(20):
        records, programs = [], []
        for student_id in range(1, rng.randint(2, 80)):
            for school_code in rng.sample([101, 202, 303], rng.choice([1, 1, 1, 2, 3])):
                races = [rng.choice(CODES) for _ in range(rng.randint(0, 5))]
                entered = rng.choice([None, date(2024, 8, 12), date(2025, 8, 13), date(2025, 8, 13), date(2026, 1, 5)])
                updated = datetime(2025, 8, 1, tzinfo=UTC) + timedelta(days=rng.randint(0, 3))
                records.append(
                    demo(
                        student_id,
                        races=races,
                        ethnicity=rng.choice(["Y", "N", "", None]),
                        fluency=rng.choice(["L", "E", "R", "I", None]),
                        parent_ed=rng.choice(["14", "10", None]),
                        school_code=school_code,
                        entered=entered,
                        updated=updated,
                    )
                )
            for _ in range(rng.choice([0, 0, 1, 2, 3])):
                start = rng.choice([None, date(2023, 9, 1), date(2025, 9, 1), date(2025, 10, 2), date(2026, 2, 1)])
                end = rng.choice([None, None, date(2025, 6, 30), date(2025, 7, 1), date(2025, 12, 1)])
                code = rng.choice(["144", "181", "182", "135", "190", "191", "999"])
                programs.append(program(code, student_id, start, end))
        got = {r[1]: (*r[2:8], r[8]) for r in groups_of(records, programs).iter_rows()}
        assert got == reference_groups(records, programs)
