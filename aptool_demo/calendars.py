"""School calendars as the simulated Aeries serves them (reference §6.6).

A California-style year (mid-August to early June, 180 instructional days) with the holidays, breaks,
staff-development and minimum days that make "days enrolled" harder than counting weekdays.
"""

from __future__ import annotations

from datetime import date, timedelta

INSTRUCTIONAL_DAYS = 180
PERIOD_SCHOOL_PERIODS = ("1", "2", "3", "4", "5", "6")


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    first = date(year, month, 1)
    return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))


def _last_weekday(year: int, month: int, weekday: int) -> date:
    last = (date(year, month + 1, 1) if month < 12 else date(year + 1, 1, 1)) - timedelta(days=1)
    return last - timedelta(days=(last.weekday() - weekday) % 7)


def _observed(day: date) -> date:
    return day - timedelta(days=1) if day.weekday() == 5 else day + timedelta(days=1) if day.weekday() == 6 else day


def first_school_day(school_year: int) -> date:
    """The Wednesday on or after August 12: mid-August, as California districts start."""
    start = date(school_year, 8, 12)
    return start + timedelta(days=(2 - start.weekday()) % 7)


def _closures(school_year: int, elementary: bool) -> dict[date, str]:
    """Non-instructional weekdays: ``#`` holidays, ``@`` breaks, ``$`` staff development, ``+`` conferences."""
    y, n = school_year, school_year + 1
    out: dict[date, str] = {}

    def span(first: date, days: int, code: str) -> None:
        for i in range(days):
            out[first + timedelta(days=i)] = code

    out[_nth_weekday(y, 9, 0, 1)] = "#"  # Labor Day
    out[_nth_weekday(y, 10, 0, 2)] = "#"  # Indigenous Peoples' Day
    out[_nth_weekday(y, 10, 4, 2)] = "$"  # staff development
    out[_observed(date(y, 11, 11))] = "#"  # Veterans Day
    thanksgiving = _nth_weekday(y, 11, 3, 4)
    span(thanksgiving - timedelta(days=3), 3, "@")
    span(thanksgiving, 2, "#")
    if elementary:
        out[thanksgiving - timedelta(days=6)] = "+"  # parent conferences, the Friday before
    winter = date(y, 12, 22) - timedelta(days=date(y, 12, 22).weekday())  # Monday of that week
    span(winter, 12, "@")
    out[_observed(date(y, 12, 25))] = "#"
    out[_observed(date(n, 1, 1))] = "#"
    out[winter + timedelta(days=14)] = "$"  # staff development, the Monday after winter break
    out[_nth_weekday(n, 1, 0, 3)] = "#"  # Martin Luther King Jr. Day
    out[_nth_weekday(n, 2, 4, 2)] = "#"  # Lincoln Day (observed Friday)
    out[_nth_weekday(n, 2, 0, 3)] = "#"  # Presidents' Day
    span(_nth_weekday(n, 4, 0, 1), 5, "@")  # spring break
    out[_observed(date(n, 3, 31))] = "#"  # Cesar Chavez Day
    out[_last_weekday(n, 5, 0)] = "#"  # Memorial Day
    return {day: code for day, code in out.items() if day.weekday() < 5}


def _minimum_days(school_year: int, closures: dict[date, str]) -> set[date]:
    """Short days (``%``): the first Wednesday of each school month and the Friday before winter break."""
    first_wednesdays = {_nth_weekday(school_year + (m < 7), m, 2, 1) for m in (9, 10, 11, 12, 1, 2, 3, 4, 5)}
    winter_start = min(d for d, c in closures.items() if c == "@" and d.month == 12)
    return first_wednesdays | {winter_start - timedelta(days=3)}


def build_calendar(school_year: int, school_code: int, *, elementary: bool, period_school: bool) -> list[dict]:
    """Weekdays from mid-August until the 180th instructional day (early June); weekends are absent."""
    closures = _closures(school_year, elementary)
    minimum_days = _minimum_days(school_year, closures)
    rows: list[dict] = []
    day, number, month = first_school_day(school_year), 0, 1
    while number < INSTRUCTIONAL_DAYS:
        if day.weekday() < 5:
            code = closures.get(day, "")
            if code == "":
                number += 1
                month = (number - 1) // 20 + 1
                if day in minimum_days or number == INSTRUCTIONAL_DAYS:
                    code = "%"
            rows.append(
                {
                    "SchoolCode": school_code,
                    "CalendarDayNumber": number if code in ("", "%") else 0,
                    "CalendarDate": day,
                    "HolidayCode": code,
                    "AttendanceMonth": month,
                    "TotalApportionment": 0,
                    "TotalEnrollment": 0,
                    "PeriodBlockPattern": "".join(PERIOD_SCHOOL_PERIODS) if period_school and code in ("", "%") else "",
                    "ABDay": "",
                    "AttendanceMonthLocked": False,
                    "TrackHolidays": [],
                }
            )
        day += timedelta(days=1)
    return rows


def instructional_days(calendar: list[dict]) -> list[date]:
    """The days of a calendar that count (regular and minimum days), in order."""
    return [row["CalendarDate"] for row in calendar if row["HolidayCode"] in ("", "%")]
