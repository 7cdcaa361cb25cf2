"""Attendance rules (contract §4.1) around enrollment: transfers, withdrawals and overlapping stints,
the school year and the as-of date, per-school code tables and unknown codes, and the output shape."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

from aptool_assets.rules.attendance import (
    ABSENCE_CODES_SCHEMA,
    ATTENDANCE_SCHEMA,
    SUMMARY_SCHEMA,
    categorize_attendance,
    student_attendance_summary,
)
from aptool_assets.rules.enrollment import CALENDAR_SCHEMA, ENROLLMENT_SCHEMA
from aptool_assets_tests.attendance_helpers import (
    AS_OF,
    FIRST_DAY,
    S1,
    S2,
    YEAR,
    attendance_frame,
    calendar_frame,
    codes_frame,
    enrollment_frame,
    one_school,
    summarize,
    weekdays,
)

# --- enrollment ------------------------------------------------------------------------------


def test_mid_year_transfer_gives_one_row_per_school():
    days = weekdays(40)
    cal = pl.concat([calendar_frame(S1, days), calendar_frame(S2, days)])
    enr = enrollment_frame([(1, S1, FIRST_DAY, days[14]), (1, S2, days[15], None)])
    att = attendance_frame(
        [
            (1, S1, days[3], "U", None),
            (1, S1, days[14], "E", None),
            (1, S1, days[20], "U", None),  # coded at the old school after leaving: ignored
            (1, S2, days[10], "U", None),  # coded at the new school before entering: ignored
            (1, S2, days[15], "A", None),
            (1, S2, days[39], "S", None),
        ]
    )
    codes = pl.concat([codes_frame(S1), codes_frame(S2)])
    result = summarize(calendar=cal, enrollment=enr, attendance=att, codes=codes)
    assert set(result) == {(1, S1), (1, S2)}
    old, new = result[(1, S1)], result[(1, S2)]
    assert (old["days_enrolled"], old["days_absent"], old["days_unexcused"], old["days_excused"]) == (15, 2, 1, 1)
    assert (new["days_enrolled"], new["days_absent"], new["days_unverified"]) == (25, 2, 1)
    assert new["days_suspension_out_of_school"] == 1


def test_withdrawal_leave_date_is_inclusive_and_later_days_do_not_count():
    days = weekdays(40)
    att = attendance_frame([(1, S1, days[9], "U", None), (1, S1, days[10], "U", None)])
    row = summarize(
        calendar=calendar_frame(S1, days), attendance=att, enrollment=enrollment_frame([(1, S1, days[0], days[9])])
    )[(1, S1)]
    assert (row["days_enrolled"], row["days_absent"], row["truancy_count"]) == (10, 1, 1)


def test_enter_date_is_inclusive():
    days = weekdays(10)
    att = attendance_frame([(1, S1, days[3], "U", None), (1, S1, days[4], "U", None)])
    row = summarize(
        calendar=calendar_frame(S1, days), attendance=att, enrollment=enrollment_frame([(1, S1, days[4], None)])
    )[(1, S1)]
    assert (row["days_enrolled"], row["days_absent"]) == (6, 1)


def test_overlapping_stints_count_each_day_once():
    days = weekdays(30)
    enr = enrollment_frame(
        [(1, S1, days[0], days[19]), (1, S1, days[10], None), (1, S1, days[5], days[8]), (1, S1, days[0], days[19])]
    )
    att = attendance_frame([(1, S1, days[12], "U", None)])
    result = summarize(calendar=calendar_frame(S1, days), enrollment=enr, attendance=att)
    assert len(result) == 1
    assert (result[(1, S1)]["days_enrolled"], result[(1, S1)]["days_absent"]) == (30, 1)


def test_gap_between_stints_is_not_enrolled():
    days = weekdays(30)
    enr = enrollment_frame([(1, S1, days[0], days[9]), (1, S1, days[20], None)])
    att = attendance_frame([(1, S1, days[15], "U", None), (1, S1, days[25], "U", None)])
    row = summarize(calendar=calendar_frame(S1, days), enrollment=enr, attendance=att)[(1, S1)]
    assert (row["days_enrolled"], row["days_absent"]) == (20, 1)


def test_school_year_clipping_and_roster():
    cal = calendar_frame(
        S1,
        [date(2025, 6, 20), date(2025, 6, 30), date(2025, 7, 1), date(2025, 9, 2), date(2026, 6, 30), date(2026, 7, 1)],
    )
    enr = enrollment_frame(
        [
            (1, S1, date(2024, 8, 15), None),  # enrolled since last year: counted from July 1
            (2, S1, date(2024, 8, 15), date(2025, 6, 30)),  # left before the year: no row
            (3, S1, date(2026, 7, 1), None),  # next year: no row
            (4, S1, date(2025, 6, 1), date(2025, 7, 1)),  # overlaps the year by one day
        ]
    )
    att = attendance_frame(
        [
            (1, S1, date(2025, 6, 30), "U", None),
            (1, S1, date(2026, 7, 1), "U", None),
            (1, S1, date(2025, 7, 1), "E", None),
        ]
    )
    result = summarize(calendar=cal, enrollment=enr, attendance=att)
    assert set(result) == {(1, S1), (4, S1)}
    assert (result[(1, S1)]["days_enrolled"], result[(1, S1)]["days_absent"]) == (3, 1)
    assert result[(4, S1)]["days_enrolled"] == 1


def test_codes_after_as_of_date_are_ignored():
    days = weekdays(40)
    as_of = days[19]
    row = one_school(
        40, [(5, "U", None), (19, "U", None), (20, "U", None), (30, "S", None), (25, None, ["U"])], as_of=as_of
    )
    assert row["days_enrolled"] == 20
    assert (row["days_absent"], row["truancy_count"]) == (2, 2)
    assert row["as_of_date"] == as_of


def test_student_entering_after_as_of_date_has_no_row():
    days = weekdays(20)
    enr = enrollment_frame([(1, S1, days[0], None), (2, S1, days[11], None), (3, S1, days[10], None)])
    result = summarize(calendar=calendar_frame(S1, days), enrollment=enr, as_of=days[10])
    assert set(result) == {(1, S1), (3, S1)}
    assert result[(3, S1)]["days_enrolled"] == 1


def test_as_of_date_after_year_end_is_capped():
    days = weekdays(10, start=date(2026, 6, 22))  # runs into July 2026
    result = summarize(
        calendar=calendar_frame(S1, days),
        enrollment=enrollment_frame([(1, S1, days[0], None)]),
        as_of=date(2026, 12, 31),
    )
    assert result[(1, S1)]["days_enrolled"] == 7  # June 22-30 weekdays
    assert result[(1, S1)]["as_of_date"] == date(2026, 6, 30)


def test_zero_enrolled_days_gives_null_rate():
    saturday = date(2025, 9, 6)
    cal = calendar_frame(S1, weekdays(5), {saturday: "@"})
    enr = enrollment_frame([(1, S1, saturday, None), (2, S2, FIRST_DAY, None)])  # S2 sent no calendar
    result = summarize(calendar=cal, enrollment=enr, as_of=saturday)
    for key in [(1, S1), (2, S2)]:
        row = result[key]
        assert row["days_enrolled"] == 0
        assert row["absence_rate"] is None
        assert row["is_chronically_absent"] is False
        assert row["attendance_tier"] == "satisfactory"
        assert row["truancy_letter_level"] == 0


def test_every_enrolled_day_not_enrolled_gives_null_rate():
    row = one_school(2, [(0, "G", None), (1, "G", None)])
    assert (row["days_enrolled"], row["absence_rate"]) == (0, None)


# --- per-school code tables ------------------------------------------------------------------


def test_same_letter_means_different_things_at_two_schools():
    days = weekdays(40)
    cal = pl.concat([calendar_frame(S1, days), calendar_frame(S2, days)])
    codes = pl.concat(
        [
            codes_frame(S1, [("X", 3, False, False, False, False)]),  # unexcused at S1
            codes_frame(S2, [("X", 6, True, True, False, False)]),  # in-school suspension at S2
        ]
    )
    enr = enrollment_frame([(1, S1, FIRST_DAY, None), (2, S2, FIRST_DAY, None)])
    att = attendance_frame(
        [(1, S1, days[i], "X", None) for i in range(4)] + [(2, S2, days[i], "X", None) for i in range(4)]
    )
    result = summarize(calendar=cal, enrollment=enr, attendance=att, codes=codes)
    a, b = result[(1, S1)], result[(2, S2)]
    assert (a["days_unexcused"], a["days_absent"], a["truancy_count"], a["is_chronically_absent"]) == (4, 4, 4, True)
    assert (b["days_suspension_in_school"], b["days_absent"], b["truancy_count"]) == (4, 0, 0)


def test_unknown_all_day_code_is_unknown_code_counted_as_unverified():
    """Contract §4.1 (changed): an all-day code in no table is no longer a null category left out of the
    counts; it is ``unknown_code``, a full-day absence counted as unverified, never truancy by itself. An
    unknown period code still only names itself in ``unknown_code``: the day keeps its category."""
    codes = codes_frame(S1)
    att = attendance_frame(
        [
            (1, S1, FIRST_DAY, "Z", None),
            (1, S1, FIRST_DAY + timedelta(1), None, ["Q", "T"]),
            (1, S1, FIRST_DAY + timedelta(2), "U", None),
        ]
    )
    out = categorize_attendance(att, codes)
    assert out["absence_category"].to_list() == ["unknown_code", "partial", "absent_unexcused"]
    assert out["unknown_code"].to_list() == ["Z", "Q", None]
    assert out["is_truancy_day"].to_list() == [False, False, True]
    assert out["is_full_day_absence"].to_list() == [True, False, True]

    row = summarize(
        calendar=calendar_frame(S1, weekdays(10)),
        enrollment=enrollment_frame([(1, S1, FIRST_DAY, None)]),
        attendance=att,
        codes=codes,
    )[(1, S1)]
    assert (row["days_enrolled"], row["days_absent"], row["truancy_count"]) == (10, 2, 1)
    assert (row["days_unverified"], row["days_unexcused"]) == (1, 1)


def test_code_defined_only_at_another_school_is_unknown_code():
    """Another school's table is never borrowed (only the district's, SchoolCode 0, is): the code is
    ``unknown_code`` (contract §4.1, changed from a null category), a full-day absence without truancy."""
    codes = codes_frame(S2)  # S1 has no table at all
    out = categorize_attendance(attendance_frame([(1, S1, FIRST_DAY, "U", ["U"])]), codes)
    assert out["absence_category"].to_list() == ["unknown_code"]
    assert out["is_full_day_absence"].to_list() == [True]
    assert out["is_truancy_day"].to_list() == [False]
    assert out["unknown_code"].to_list() == ["U"]


# --- output shape ----------------------------------------------------------------------------


def test_summary_columns_and_dtypes():
    out = student_attendance_summary(
        calendar=calendar_frame(S1, weekdays(5)),
        enrollment=enrollment_frame([(2, S1, FIRST_DAY, None), (1, S1, FIRST_DAY, None)]),
        attendance=attendance_frame([]),
        absence_codes=codes_frame(S1),
        school_year=YEAR,
        as_of_date=AS_OF,
    )
    assert out.schema == pl.Schema(SUMMARY_SCHEMA)
    assert out["student_id"].to_list() == [1, 2]
    assert out["school_year"].to_list() == [YEAR, YEAR]


def test_empty_inputs():
    out = student_attendance_summary(
        calendar=pl.DataFrame(schema=CALENDAR_SCHEMA),
        enrollment=pl.DataFrame(schema=ENROLLMENT_SCHEMA),
        attendance=pl.DataFrame(schema=ATTENDANCE_SCHEMA),
        absence_codes=pl.DataFrame(schema=ABSENCE_CODES_SCHEMA),
        school_year=YEAR,
        as_of_date=AS_OF,
    )
    assert out.height == 0
    assert out.schema == pl.Schema(SUMMARY_SCHEMA)
