"""What the Dashboard's student groups (contract §4.5) are built from, in the simulated Aeries: the demographic
mix of the student records and each student's program records.

Both passes draw from random generators of their own, seeded from the district seed, and never from the
``rng`` that builds the students and their attendance: adding them left every attendance figure of the
demo unchanged. Quotas (a share of the students, at least one) rather than coin flips, so even the small
demo district has every group: e.g. 120 students give 14 with special education, 72 with free or
reduced-price meals, 2 homeless, 1 foster youth.

Demographics keep the codes the student records were built with and add a California-like mix on top:
a few students with no race reported, Filipino and Pacific Islander students, students of two races,
about 20% English learners (``LanguageFluencyCode`` ``L``, from Spanish speakers), one ``T`` (to be
determined) and some ``ParentEdLevelCode`` ``15`` (declined to state). A student's records at several
schools carry the same codes.

Programs (shape assumed, see ``records``): about 12% special education (144), 60% free (181) or
reduced-price (182) meals, 2% homeless (191), 0.5% foster (190), 2% migrant (135), plus 504 plans (101)
and GATE (127); homeless, foster and migrant students also get free meals. Some stints began years ago,
some began or ended mid-year (each such change is in the ``program`` change feed at its date), one
student moved from reduced-price to free meals mid-year, one left special education last year (a record
outside the school year), and one GATE record has no dates at all.
"""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta

from aptool_demo.calendars import first_school_day, instructional_days
from aptool_demo.district import SCHOOLS
from aptool_demo.records import program_record
from aptool_demo.sim_district import SimDistrict

DEMOGRAPHIC_KEYS = (
    "CorrespondenceLanguageCode",
    "EthnicityCode",
    "RaceCode1",
    "RaceCode2",
    "RaceCode3",
    "RaceCode4",
    "RaceCode5",
    "LanguageFluencyCode",
    "HomeLanguageCode",
    "ParentEdLevelCode",
)
"""The keys of a student record that say which groups the student is in (the same on all their records)."""

_RACE_GROUPS = {"100": "AI", "201": "AS", "203": "AS", "303": "PI", "400": "FI", "600": "AA", "700": "WH"}
EL_SHARE = 0.20


def _quota(n: int, share: float) -> int:
    """``share`` of ``n`` students, at least one."""
    return max(1, round(n * share))


def _primary_records(sim: SimDistrict) -> dict[int, dict]:
    """Each student's first record (the one built with the student), by StudentID."""
    primary: dict[int, dict] = {}
    for record in sim.students:
        primary.setdefault(record["StudentID"], record)
    return dict(sorted(primary.items()))


def _pick(rng: random.Random, pool: list[int], k: int, taken: set[int] | None = None) -> list[int]:
    """``k`` students of ``pool`` (fewer when it is small), none of ``taken``, in StudentID order."""
    free = [s for s in pool if not taken or s not in taken]
    return sorted(rng.sample(free, min(max(k, 0), len(free))))


# -- demographics ------------------------------------------------------------------------------------


def add_demographics(sim: SimDistrict, seed: int) -> None:
    """Lay the California-like mix of the module docstring over the student records (deterministic)."""
    rng = random.Random(f"aeries-demographics:{seed}")
    primary = _primary_records(sim)
    ids = list(primary)
    n = len(ids)
    non_hispanic = [s for s in ids if primary[s]["EthnicityCode"] == "N"]
    hispanic = [s for s in ids if primary[s]["EthnicityCode"] == "Y"]

    not_reported = _pick(rng, non_hispanic, _quota(n, 0.02))
    for sid in not_reported:
        primary[sid].update({f"RaceCode{i}": "" for i in range(1, 6)})
    changed = set(not_reported)
    for code, share in (("400", 0.03), ("303", 0.01)):
        chosen = _pick(rng, non_hispanic, _quota(n, share), changed)
        for sid in chosen:
            primary[sid]["RaceCode1"] = code
        changed |= set(chosen)
    two_races = _pick(rng, non_hispanic, _quota(n, 0.04), set(not_reported)) + _pick(rng, hispanic, _quota(n, 0.02))
    for sid in two_races:
        first = primary[sid]["RaceCode1"]
        primary[sid]["RaceCode2"] = rng.choice([c for c, g in _RACE_GROUPS.items() if g != _RACE_GROUPS.get(first)])

    spanish = [s for s in ids if primary[s]["HomeLanguageCode"] == "01"]
    learners = sum(primary[s]["LanguageFluencyCode"] == "L" for s in ids)
    reclassified = [s for s in spanish if primary[s]["LanguageFluencyCode"] in ("R", "I")]
    for sid in _pick(rng, reclassified, max(0, round(n * EL_SHARE) - learners)):
        primary[sid]["LanguageFluencyCode"] = "L"
    for sid in _pick(rng, [s for s in spanish if primary[s]["LanguageFluencyCode"] in ("R", "I")], 1):
        primary[sid]["LanguageFluencyCode"] = "T"
    for sid in _pick(rng, ids, _quota(n, 0.04)):
        primary[sid]["ParentEdLevelCode"] = "15"

    for record in sim.students:
        record.update({key: primary[record["StudentID"]][key] for key in DEMOGRAPHIC_KEYS})


# -- programs ------------------------------------------------------------------------------------------


class _Dates:
    """The dates program stints start and end on: years back, or school days of this year so far."""

    def __init__(self, sim: SimDistrict, rng: random.Random, through: date):
        self.rng, self.year = rng, sim.school_year
        self.year_start = date(self.year, 7, 1)
        self.first_day = first_school_day(self.year)
        # An elementary calendar: its school days are school days at every school (population._milestones).
        days = instructional_days(sim.calendars[SCHOOLS[0][0]])
        elapsed = [d for d in days if d <= through]
        self.days = elapsed if len(elapsed) >= 40 else days

    def years_ago(self, years: int) -> date:
        """A day in the first months of the school year ``years`` before this one."""
        return first_school_day(self.year - years) + timedelta(days=self.rng.randint(0, 90))

    def mid_year(self) -> date:
        """A school day between a quarter and three quarters of the days entered so far."""
        return self.days[self.rng.randrange(len(self.days) // 4, len(self.days) * 3 // 4)]

    def next_school_day(self, day: date) -> date:
        return next(d for d in self.days + [day + timedelta(days=1)] if d > day)


class _Builder:
    """Appends program stints to the district; a stint starting or ending this year after the first school
    day is logged in the ``program`` change feed on that day, for every record of the student."""

    def __init__(self, sim: SimDistrict, dates: _Dates):
        self.sim, self.dates = sim, dates

    def stint(
        self,
        sid: int,
        code: str,
        start: date | None,
        end: date | None = None,
        *,
        eligibility_start: date | None = None,
        participation: bool = True,
    ) -> None:
        eligibility = eligibility_start or start
        self.sim.programs.append(
            program_record(
                sid,
                code,
                eligibility_start=eligibility,
                eligibility_end=end,
                participation_start=start if participation else None,
                participation_end=end if participation else None,
            )
        )
        for day in (start, end):
            if day is not None and self.dates.first_day < day <= self.dates.days[-1]:
                for record in (r for r in self.sim.students if r["StudentID"] == sid):
                    self.sim.record_change(
                        "program", record, datetime.combine(day, datetime.min.time()).replace(hour=9)
                    )


def add_programs(sim: SimDistrict, seed: int, through: date) -> None:
    """The program records of the module docstring, for every student of the district (deterministic)."""
    rng = random.Random(f"aeries-programs:{seed}")
    primary = _primary_records(sim)
    ids = list(primary)
    n = len(ids)
    dates = _Dates(sim, rng, through)
    build = _Builder(sim, dates)

    homeless = _pick(rng, ids, _quota(n, 0.02))
    foster = _pick(rng, ids, _quota(n, 0.005), set(homeless))
    hispanic = [s for s in ids if primary[s]["EthnicityCode"] == "Y"]
    migrant = _pick(rng, hispanic or ids, _quota(n, 0.02), set(homeless) | set(foster))
    _homeless_stints(build, dates, homeless)
    for sid in foster:
        build.stint(sid, "190", dates.years_ago(rng.randint(0, 3)), participation=False)
    for sid in migrant:
        build.stint(sid, "135", dates.first_day, eligibility_start=dates.year_start)
    _meal_stints(build, dates, rng, ids, sorted({*homeless, *foster, *migrant}))

    swd = _pick(rng, ids, _quota(n, 0.12))
    _special_education_stints(build, dates, rng, primary, swd)
    past_swd = _pick(rng, ids, 1, set(swd))
    build.stint(past_swd[0], "144", dates.years_ago(3), date(dates.year, 5, 29))  # left special education last year
    plans = _pick(rng, ids, _quota(n, 0.03), set(swd))
    for i, sid in enumerate(plans):
        ended = dates.mid_year() if i == len(plans) - 1 and len(plans) > 1 else None
        build.stint(sid, "101", dates.years_ago(rng.randint(1, 3)), ended)
    gate = _pick(rng, [s for s in ids if primary[s]["Grade"] >= 3], _quota(n, 0.06))
    for i, sid in enumerate(gate):
        if i == 0:
            build.stint(sid, "127", None)  # a legacy record without any date
        else:
            build.stint(sid, "127", dates.years_ago(rng.randint(0, max(0, primary[sid]["Grade"] - 3))))


def _homeless_stints(build: _Builder, dates: _Dates, homeless: list[int]) -> None:
    """Eligibility only (no participation dates): the first became homeless mid-year, the last (when there
    are two or more) was housed mid-year, the others are homeless all year."""
    for i, sid in enumerate(homeless):
        if i == 0:
            build.stint(sid, "191", dates.mid_year(), participation=False)
        elif i == len(homeless) - 1:
            build.stint(sid, "191", dates.years_ago(1), dates.mid_year(), participation=False)
        else:
            build.stint(sid, "191", dates.year_start, participation=False)


def _meal_stints(build: _Builder, dates: _Dates, rng: random.Random, ids: list[int], categorical: list[int]) -> None:
    """45% free (categorically eligible students first), 15% reduced-price; a tenth applied mid-year, and one
    reduced-price student moved to free meals mid-year."""
    free = categorical + _pick(rng, ids, round(len(ids) * 0.45) - len(categorical), set(categorical))
    reduced = _pick(rng, ids, round(len(ids) * 0.15), set(free))
    switcher = reduced[0] if reduced else None
    late = set(_pick(rng, free + reduced[1:], max(1, len(free + reduced) // 10)))
    for code, students in (("181", sorted(free)), ("182", reduced)):
        for sid in students:
            start = dates.mid_year() if sid in late else dates.first_day
            eligibility = start if sid in late else dates.year_start
            if sid == switcher:
                moved = dates.mid_year()
                build.stint(sid, "182", start, moved, eligibility_start=eligibility)
                build.stint(sid, "181", dates.next_school_day(moved))
            else:
                build.stint(sid, code, start, eligibility_start=eligibility)


def _special_education_stints(
    build: _Builder, dates: _Dates, rng: random.Random, primary: dict[int, dict], swd: list[int]
) -> None:
    """Identified years ago (eligibility three weeks before participation), one newly this year, and about a
    tenth exited mid-year."""
    exited = set(_pick(rng, swd[1:], max(1, len(swd) // 10)))
    for i, sid in enumerate(swd):
        years = rng.randint(1, max(1, primary[sid]["Grade"] + 1))
        start = dates.mid_year() if i == 0 else dates.years_ago(years)
        end = dates.mid_year() if sid in exited else None
        if end is not None and end <= start:
            end = dates.next_school_day(start)
        build.stint(sid, "144", start, end, eligibility_start=start - timedelta(days=21))
