"""Negative attendance for the simulated Aeries: the codes a real district enters, deterministic for a seed.

Students get fixed absence profiles (a few severe, more chronic, some at risk, most rarely absent); a few
carry the special cases the rules care about (truancy levels, suspensions in and out of school, days not
enrolled); middle-school days carry period codes; the latest days are often still unverified. Then a
class trip at the alternate-letter school and the back-dated corrections entered after the nightly job.
Every draw comes from one ``rng`` in a fixed order, so the same seed gives the same attendance.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date

from aptool_demo.calendars import PERIOD_SCHOOL_PERIODS, instructional_days
from aptool_demo.codes import ALTERNATE_LETTER_SCHOOL, DISTRICT_LETTERS, letters_for
from aptool_demo.records import PERIOD_ATTENDANCE_SCHOOL
from aptool_demo.sim_district import SimDistrict


@dataclass
class _Profile:
    absence_rate: float
    tardy_rate: float
    partial_rate: float  # period-only days (middle school) or late-30 days (daily schools)
    unexcused_share: float


@dataclass
class _Specials:
    """Students with scripted full-day runs, placed before the random absences."""

    truants: dict[int, int]  # StudentID → full unexcused days: truancy letter levels 1, 2, 3
    suspended_out: list[int]
    suspended_in: list[int]
    not_enrolled: list[int]


@dataclass
class _Sheet:
    """One stint's attendance being generated: its school days, the codes so far, the day indexes taken."""

    days: list[date]
    letters: dict[str, str]
    period_school: bool
    out: dict[date, dict] = field(default_factory=dict)
    taken: set[int] = field(default_factory=set)

    def full_day(self, i: int, meaning: str) -> None:
        letter = self.letters.get(meaning) or DISTRICT_LETTERS[meaning]
        periods = dict.fromkeys(PERIOD_SCHOOL_PERIODS, letter) if self.period_school else {}
        self.out[self.days[i]] = {"all_day": letter, "periods": periods}


def generate_attendance(sim: SimDistrict, rng: random.Random, through: date) -> None:
    """Negative attendance for every current-year stint, deterministic for a seed."""
    year = str(sim.school_year)
    stints = sorted(
        (r for r in sim.enrollment if r["AcademicYear"] == year), key=lambda r: (r["StudentID"], r["EnterDate"])
    )
    profiles = _profiles(sorted({r["StudentID"] for r in stints}), rng)
    for left in _left_the_district(stints):
        profiles[left] = _WITHDRAWN_PROFILE  # a withdrawn student who missed a lot: the ranking must not lead with them
    candidates = sorted({r["StudentID"] for r in stints})
    specials = _choose_specials(rng, candidates)
    recent_by_school = {
        code: set([d for d in instructional_days(cal) if d <= through][-3:]) for code, cal in sim.calendars.items()
    }
    for stint in stints:
        code, sid = stint["SchoolCode"], stint["StudentID"]
        last = min(stint["LeaveDate"] or through, through)
        days = [d for d in instructional_days(sim.calendars[code]) if stint["EnterDate"] <= d <= last]
        if not days:
            continue
        sheet = _Sheet(days, letters_for(code), code == PERIOD_ATTENDANCE_SCHOOL)
        # Specials first, so random absences fill around them; each is a run of consecutive school days.
        _add_specials(rng, sheet, sid, specials)
        _add_absences(rng, sheet, profiles[sid], recent_by_school[code])
        _add_tardies(rng, sheet, profiles[sid])
        _add_partial_days(rng, sheet, profiles[sid])
        if sheet.out:
            sim.attendance.setdefault(code, {})[sid] = dict(sorted(sheet.out.items()))
    _field_trip(sim, rng, through)


_WITHDRAWN_PROFILE = _Profile(absence_rate=0.3, tardy_rate=0.04, partial_rate=0.04, unexcused_share=0.5)


def _left_the_district(stints: list[dict]) -> list[int]:
    """Students whose stint ended with a move out of the district (exit reason T200)."""
    return sorted({r["StudentID"] for r in stints if r["LeaveDate"] and r.get("ExitReasonCode") == "T200"})


def _profiles(student_ids: list[int], rng: random.Random) -> dict[int, _Profile]:
    """Fixed shares: ~3% severe (≥20%), ~10% more chronic (≥10%), ~15% at risk, the rest rarely absent."""
    ids = list(student_ids)
    rng.shuffle(ids)
    n = len(ids)
    n_severe, n_chronic, n_risk = max(1, round(n * 0.03)), max(1, round(n * 0.10)), round(n * 0.15)
    out = {}
    for i, sid in enumerate(ids):
        if i < n_severe:
            out[sid] = _Profile(rng.uniform(0.23, 0.32), rng.uniform(0.03, 0.08), rng.uniform(0.03, 0.08), 0.45)
        elif i < n_severe + n_chronic:
            out[sid] = _Profile(rng.uniform(0.12, 0.18), rng.uniform(0.02, 0.06), rng.uniform(0.02, 0.06), 0.35)
        elif i < n_severe + n_chronic + n_risk:
            out[sid] = _Profile(rng.uniform(0.05, 0.085), rng.uniform(0.01, 0.04), rng.uniform(0.0, 0.04), 0.2)
        else:
            out[sid] = _Profile(rng.uniform(0.0, 0.035), rng.uniform(0.0, 0.03), rng.uniform(0.0, 0.02), 0.1)
    return out


def _choose_specials(rng: random.Random, candidates: list[int]) -> _Specials:
    specials = rng.sample(candidates, min(10, len(candidates)))
    return _Specials(
        truants=dict(zip(specials[0:3], (4, 7, 10), strict=False)),
        suspended_out=specials[3:6],
        suspended_in=specials[6:8],
        not_enrolled=specials[8:10],
    )


def _add_specials(rng: random.Random, sheet: _Sheet, sid: int, specials: _Specials) -> None:
    """Truancy runs, then suspensions and days not enrolled (their lengths are drawn for every stint)."""
    if sid in specials.truants:
        remaining = specials.truants[sid]
        while remaining > 0:
            run = _streak(rng, len(sheet.days), min(remaining, rng.randint(2, 4)), sheet.taken)
            if not run:
                break
            for i in run:
                sheet.full_day(i, "unexcused")
            remaining -= len(run)
    # The first out-of-school suspension is entered under the code only the district table defines.
    oss = "oss_district" if specials.suspended_out[:1] == [sid] else "oss"
    for members, meaning, length in (
        (specials.suspended_out, oss, rng.randint(2, 3)),
        (specials.suspended_in, "iss", rng.randint(1, 2)),
        (specials.not_enrolled, "tne", 3),
    ):
        if sid in members:
            for i in _streak(rng, len(sheet.days), length, sheet.taken):
                sheet.full_day(i, meaning)


def _add_absences(rng: random.Random, sheet: _Sheet, profile: _Profile, recent: set[date]) -> None:
    """Full-day absences in short runs; the last three days entered are often not verified yet."""
    n_absent = round(profile.absence_rate * len(sheet.days))
    for run in _runs(rng, len(sheet.days), n_absent, sheet.taken):
        excused_share = 1 - profile.unexcused_share
        meaning = rng.choices(
            ["illness", "excused", "unexcused"],
            weights=[0.6 * excused_share, 0.4 * excused_share, profile.unexcused_share],
        )[0]
        for i in run:
            sheet.full_day(i, "unverified" if sheet.days[i] in recent and rng.random() < 0.7 else meaning)


def _add_tardies(rng: random.Random, sheet: _Sheet, profile: _Profile) -> None:
    """Tardies: a first-period code at the period school, an all-day code elsewhere."""
    tardy = sheet.letters["tardy"]
    for i in sorted(_pick(rng, len(sheet.days), round(profile.tardy_rate * len(sheet.days)), sheet.taken)):
        if sheet.period_school:
            sheet.out[sheet.days[i]] = {"all_day": "", "periods": {"1": tardy}}
        else:
            sheet.out[sheet.days[i]] = {"all_day": tardy, "periods": {}}


def _add_partial_days(rng: random.Random, sheet: _Sheet, profile: _Profile) -> None:
    """Partial days: one to three periods cut or excused (no all-day code), or a late-30 at daily schools."""
    for i in sorted(_pick(rng, len(sheet.days), round(profile.partial_rate * len(sheet.days)), sheet.taken)):
        if sheet.period_school:
            count = rng.randint(1, 3)
            first = rng.randint(0, len(PERIOD_SCHOOL_PERIODS) - count)
            meaning = rng.choice(["unexcused", "unexcused", "excused", "late30"])
            if meaning == "late30":
                count, first = 1, 0
            periods = {PERIOD_SCHOOL_PERIODS[first + k]: sheet.letters[meaning] for k in range(count)}
            sheet.out[sheet.days[i]] = {"all_day": "", "periods": periods}
        else:
            sheet.out[sheet.days[i]] = {"all_day": sheet.letters["late30"], "periods": {}}


def _runs(rng: random.Random, n_days: int, count: int, taken: set[int]) -> list[list[int]]:
    """``count`` day indexes in runs of 1-3 consecutive school days (illness comes in streaks)."""
    runs: list[list[int]] = []
    placed, attempts = 0, 0
    while placed < count and attempts < 50 * (count + 1):
        attempts += 1
        length = min(rng.choices([1, 2, 3], weights=[60, 25, 15])[0], count - placed)
        start = rng.randrange(n_days)
        run = [i for i in range(start, min(start + length, n_days)) if i not in taken]
        if len(run) == length:
            runs.append(run)
            taken.update(run)
            placed += length
    return runs


def _streak(rng: random.Random, n_days: int, length: int, taken: set[int]) -> list[int]:
    """``length`` consecutive free day indexes (fewer if the span is short), or [] when none fit."""
    length = min(length, n_days)
    starts = [i for i in range(n_days - length + 1) if not taken.intersection(range(i, i + length))]
    if not starts:
        return []
    start = rng.choice(starts)
    run = list(range(start, start + length))
    taken.update(run)
    return run


def _pick(rng: random.Random, n_days: int, count: int, taken: set[int]) -> list[int]:
    free = [i for i in range(n_days) if i not in taken]
    chosen = rng.sample(free, min(count, len(free)))
    taken.update(chosen)
    return chosen


def _enrolled_on(sim: SimDistrict, row: dict, code: int, day: date) -> bool:
    """Whether an enrollment row is a current-year stint at ``code`` that covers ``day``."""
    return (
        row["SchoolCode"] == code
        and row["AcademicYear"] == str(sim.school_year)
        and row["EnterDate"] <= day
        and (row["LeaveDate"] is None or row["LeaveDate"] >= day)
    )


def _field_trip(sim: SimDistrict, rng: random.Random, through: date) -> None:
    """A class trip at the alternate-letter school: ``A`` there means Activity (not absent), not Unverified."""
    code = ALTERNATE_LETTER_SCHOOL
    days = [d for d in instructional_days(sim.calendars[code]) if d <= through]
    if len(days) < 10:
        return
    day = days[len(days) // 3]
    enrolled = sorted(r["StudentID"] for r in sim.enrollment if _enrolled_on(sim, r, code, day))
    for sid in rng.sample(enrolled, min(6, len(enrolled))):
        if day not in sim.attendance.get(code, {}).get(sid, {}):
            sim.set_attendance(code, sid, day, letters_for(code)["activity"])


def back_dated_corrections(sim: SimDistrict, through: date) -> None:
    """Edits to past days made after the nightly job: a rolling re-pull sees them, the summaries do not."""
    elementary, alternate, middle = 101, ALTERNATE_LETTER_SCHOOL, PERIOD_ATTENDANCE_SCHOOL
    recent = [d for d in instructional_days(sim.calendars[elementary]) if d <= through][-10:]
    if len(recent) < 10:
        return

    def correct(code: int, sid: int, day: date, after: dict | None) -> None:
        before = sim.attendance.get(code, {}).get(sid, {}).get(day)
        new = after or {"all_day": "", "periods": {}}
        sim.set_attendance(code, sid, day, new["all_day"], new["periods"])
        sim.corrections.append({"school_code": code, "student_id": sid, "date": day, "before": before, "after": after})

    # 1. An absence at 101 verified as excused days later (a parent's note arrived).
    table = sim.code_table(elementary)
    for sid, days in sorted(sim.attendance.get(elementary, {}).items()):
        hits = [d for d in recent[:-2] if d in days and table.get(days[d]["all_day"], {}).get("TypeCode") in (1, 3)]
        if hits:
            correct(elementary, sid, hits[-1], {"all_day": letters_for(elementary)["excused"], "periods": {}})
            break
    # 2. A missed absence entered three school days late at 102.
    day = recent[-4]
    for row in sorted(sim.enrollment, key=lambda r: r["StudentID"]):
        if _enrolled_on(sim, row, alternate, day) and day not in sim.attendance.get(alternate, {}).get(
            row["StudentID"], {}
        ):
            correct(alternate, row["StudentID"], day, {"all_day": letters_for(alternate)["unexcused"], "periods": {}})
            break
    # 3. A period cut at 201 cleared: the teacher had marked the wrong student.
    cut = letters_for(middle)["unexcused"]
    for sid, days in sorted(sim.attendance.get(middle, {}).items()):
        cuts = [d for d in recent[:-1] if d in days and not days[d]["all_day"] and cut in days[d]["periods"].values()]
        if cuts:
            correct(middle, sid, cuts[-1], None)
            break
