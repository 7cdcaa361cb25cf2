"""The Aeries frames (JSON records to typed frames) on the recorded demo responses and on the real
loopback simulator's responses: schemas, required and unknown fields, and value conventions.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest

from aptool_assets.sources.aeries.client import AeriesResponseError
from aptool_assets.sources.aeries.frames import (
    ABSENCE_CODES_SCHEMA,
    ATTENDANCE_SCHEMA,
    CALENDAR_SCHEMA,
    DATA_CHANGES_SCHEMA,
    ENROLLMENT_SCHEMA,
    HISTORY_SUMMARY_SCHEMA,
    SCHOOLS_SCHEMA,
    STUDENTS_SCHEMA,
    absence_codes_frame,
    attendance_frame,
    calendar_frame,
    data_changes_frame,
    enrollment_frame,
    history_summary_frame,
    is_real_school,
    is_real_school_code,
    schools_frame,
    students_frame,
)
from aptool_assets_tests.aeries_sim_helpers import (  # noqa: F401 - the fixtures; _clean_simulator is autouse
    REAL_SCHOOLS,
    THROUGH,
    YEAR,
    _clean_simulator,
    district,
    make_client,
    sim,
)

FIXTURES = Path("/work/shared/fixtures/aeries-demo")


def recorded(name: str):
    path = FIXTURES / name
    if not path.is_file():
        pytest.skip(f"recorded Aeries demo responses not available at {FIXTURES}")
    return json.loads(path.read_text())


# -- frames ---------------------------------------------------------------------------------------


def test_recorded_demo_responses_parse():
    students = students_frame(recorded("students.json"))
    assert students.schema == pl.Schema(STUDENTS_SCHEMA)
    assert students.get_column("student_id").to_list() == [99400001 + i for i in range(5)]
    assert students.get_column("school_leave_date").null_count() == 5 and students.get_column("is_active").all()
    assert students_frame(recorded("student.json")).height == 1
    assert students_frame(recorded("students_by_grade.json")).get_column("grade").unique().to_list() == [12]
    schools = schools_frame(recorded("schools.json"))
    assert schools.schema == pl.Schema(SCHOOLS_SCHEMA)
    assert schools.filter(is_real_school()).get_column("school_code").to_list() == [884, 894, 990]
    old_shape = schools_frame(recorded("school.json"))  # 25 keys, recorded years earlier
    assert old_shape.get_column("school_code").to_list() == [990]


def test_frames_on_simulator_responses(sim, district, make_client):
    client = make_client()
    schools = schools_frame(client.schools())
    assert schools.schema == pl.Schema(SCHOOLS_SCHEMA)
    assert schools.filter(is_real_school()).get_column("school_code").to_list() == REAL_SCHOOLS
    assert not is_real_school_code(999) and not is_real_school_code(103, "I") and is_real_school_code(201)
    students = pl.concat([students_frame(client.students(code)) for code in REAL_SCHOOLS])
    assert students.schema == pl.Schema(STUDENTS_SCHEMA)
    assert students.select("student_id", "school_code").is_duplicated().sum() == 0
    assert students.filter(pl.col("inactive_status_code") == "*").height == 1
    assert students.filter(~pl.col("is_active") & pl.col("school_leave_date").is_not_null()).height >= 2
    enrollment = enrollment_frame(client.enrollment(102, YEAR))
    assert enrollment.schema == pl.Schema(ENROLLMENT_SCHEMA) and enrollment.get_column(
        "academic_year"
    ).unique().to_list() == [YEAR]
    calendar = calendar_frame(client.calendar(201))
    assert calendar.schema == pl.Schema(CALENDAR_SCHEMA)
    assert calendar.filter(pl.col("holiday_code").is_in(["", "%"])).height == 180
    codes = absence_codes_frame(client.absence_codes(102))
    assert codes.schema == pl.Schema(ABSENCE_CODES_SCHEMA)
    assert codes.filter(pl.col("is_suspension") & ~pl.col("counts_for_ada")).height == 1
    history = history_summary_frame(client.attendance_history_summary(101, YEAR))
    assert history.schema == pl.Schema(HISTORY_SUMMARY_SCHEMA)
    assert history.get_column("school_year").unique().to_list() == [YEAR]
    assert (history["days_present"] + history["days_absence"] == history["days_enrolled"]).all()


def test_attendance_for_a_school_and_window(district, make_client):
    client = make_client()
    per_student = district.attendance[201]
    sid, day = next((s, d) for s, days in sorted(per_student.items()) for d, e in days.items() if not e["all_day"])
    start, end = day - timedelta(days=14), day
    frame = attendance_frame(client.attendance(201, start, end), 201)
    assert frame.schema == pl.Schema(ATTENDANCE_SCHEMA)
    assert client.request_count == 1
    expected = {
        (s, d): (e["all_day"] or None, e["periods"])
        for s, days in per_student.items()
        for d, e in days.items()
        if start <= d <= end
    }
    got = {
        (row["student_id"], row["calendar_date"]): (
            row["all_day_code"],
            {p["period"]: p["code"] for p in row["period_codes"]},
        )
        for row in frame.iter_rows(named=True)
    }
    assert got == expected
    period_only = frame.filter((pl.col("student_id") == sid) & (pl.col("calendar_date") == day)).row(0, named=True)
    assert period_only["all_day_code"] is None and period_only["period_codes"]
    assert all(isinstance(p["section_number"], int) for p in period_only["period_codes"])
    assert frame.get_column("school_code").unique().to_list() == [201]


def test_missing_required_fields_name_the_field(sim, make_client):
    client = make_client()
    students = client.students(101)
    del students[3]["StudentID"]
    with pytest.raises(AeriesResponseError, match=r"/schools/101/students: required field StudentID missing"):
        students_frame(students, endpoint="/api/v5/schools/101/students")
    bad_grade = client.students(101)
    bad_grade[0]["Grade"] = "sixth"
    with pytest.raises(AeriesResponseError, match="field Grade"):
        students_frame(bad_grade)
    attendance = client.attendance(201, date(2025, 8, 1), THROUGH)
    del attendance[0]["AttendanceDays"][0]["CalendarDate"]
    with pytest.raises(AeriesResponseError, match=r"attendance: required field AttendanceDays\[\]\.CalendarDate"):
        attendance_frame(attendance, 201)
    history = client.attendance_history_summary(201, YEAR)
    del history[0]["HistorySummaries"][0]["DaysAbsence"]
    with pytest.raises(AeriesResponseError, match="DaysAbsence"):
        history_summary_frame(history)
    codes = client.absence_codes(201)
    del codes[0]["IsSuspension"]
    with pytest.raises(AeriesResponseError, match="IsSuspension"):
        absence_codes_frame(codes)
    with pytest.raises(AeriesResponseError, match="expected a JSON array"):
        calendar_frame("not a list")


def test_unknown_fields_are_ignored_and_empty_responses_keep_their_schema(make_client):
    client = make_client()
    students = client.students(201)
    drifted = [r | {"EarlyWarningPoints": 12.5, "Extended": {"a": [1, 2]}} for r in students]
    assert students_frame(drifted).equals(students_frame(students))
    attendance = client.attendance(201, date(2025, 8, 1), THROUGH)
    drifted_att = [
        r
        | {
            "Extra": 1,
            "AttendanceDays": [
                d | {"Minutes": 30, "Classes": [c | {"Teacher": "x"} for c in d["Classes"]]}
                for d in r["AttendanceDays"]
            ],
        }
        for r in attendance
    ]
    assert attendance_frame(drifted_att, 201).equals(attendance_frame(attendance, 201))
    for frame_fn, schema in [
        (schools_frame, SCHOOLS_SCHEMA),
        (students_frame, STUDENTS_SCHEMA),
        (enrollment_frame, ENROLLMENT_SCHEMA),
        (calendar_frame, CALENDAR_SCHEMA),
        (absence_codes_frame, ABSENCE_CODES_SCHEMA),
        (history_summary_frame, HISTORY_SUMMARY_SCHEMA),
        (data_changes_frame, DATA_CHANGES_SCHEMA),
        (lambda records: attendance_frame(records, 101), ATTENDANCE_SCHEMA),
    ]:
        empty = frame_fn([])
        assert empty.is_empty() and empty.schema == pl.Schema(schema)
    assert attendance_frame([{"StudentID": 1, "AttendanceDays": []}], 101).schema == pl.Schema(ATTENDANCE_SCHEMA)


def test_frame_value_conventions():
    """Codes as strings, AcademicYear as a string, decimals as 34.0000, null and 0001-01-01 dates."""
    enrollment = enrollment_frame(
        [
            {
                "StudentID": 5,
                "SchoolCode": 101,
                "AcademicYear": "2025",
                "Grade": 3,
                "EnterDate": "2025-08-13T00:00:00",
                "LeaveDate": None,
                "ExitReasonCode": "",
            },
            {
                "StudentID": 6,
                "SchoolCode": "102",
                "AcademicYear": 2025,
                "Grade": "4.0000",
                "EnterDate": "2025-08-13T00:00:00",
                "LeaveDate": "0001-01-01T00:00:00",
                "ExitReasonCode": "T160",
            },
        ]
    )
    assert enrollment.get_column("academic_year").to_list() == [2025, 2025]
    assert enrollment.get_column("school_code").to_list() == [101, 102]
    assert enrollment.get_column("grade").to_list() == [3, 4]
    assert enrollment.get_column("leave_date").to_list() == [None, None]
    with pytest.raises(AeriesResponseError, match="EnterDate"):
        enrollment_frame(
            [
                {
                    **enrollment.row(0, named=True),
                    "StudentID": 1,
                    "SchoolCode": 1,
                    "AcademicYear": "2025",
                    "Grade": 1,
                    "EnterDate": None,
                    "LeaveDate": None,
                    "ExitReasonCode": "",
                }
            ]
        )
