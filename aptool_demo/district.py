"""A small deterministic synthetic district for the demo and the tests, and its i-Ready export tree.

The same students appear in every source (the i-Ready files written here, and the Aeries simulator,
which builds its district from this one), the files follow the real vendor layouts and names, and a
few rows carry the data-quality problems the reference warns about, so the demo shows the quarantine
at work.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from aptool_demo.diagnostics import synthetic_diagnostics
from aptool_demo.iready_files import write_diagnostic_csv

FIRST_NAMES = ["Ana", "Ben", "Cora", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lena", "Milo", "Nia"]
LAST_NAMES = ["Arroyo", "Baker", "Chen", "Diaz", "Evans", "Fong", "Garcia", "Hughes", "Ito", "Jones", "Khan", "Lopez"]

# School code, name, lowest and highest grade (elementary K-5, middle 6-8).
SCHOOLS = [
    (101, "Redwood Elementary School", 0, 5),
    (102, "Sequoia Elementary School", 0, 5),
    (201, "Manzanita Middle School", 6, 8),
]
REGION = "ca-demo_usd"


@dataclass(frozen=True)
class SyntheticDistrict:
    """The district's schools and students for one school year (start year)."""

    school_year: int
    schools: pl.DataFrame  # school_code, school_name, low_grade, high_grade
    students: pl.DataFrame  # student_id, school_code, school_name, grade, first_name, last_name


def build_district(school_year: int, students_per_school: int = 40, seed: int = 20251) -> SyntheticDistrict:
    """``students_per_school`` students at each school of ``SCHOOLS``, with random grades and names (seeded)."""
    rng = random.Random(seed)
    rows = []
    next_id = 100_001
    for code, name, low, high in SCHOOLS:
        for _ in range(students_per_school):
            rows.append(
                {
                    "student_id": next_id,
                    "school_code": code,
                    "school_name": name,
                    "grade": rng.randint(low, high),
                    "first_name": rng.choice(FIRST_NAMES),
                    "last_name": rng.choice(LAST_NAMES),
                }
            )
            next_id += rng.randint(1, 7)
    schools = pl.DataFrame(SCHOOLS, schema=["school_code", "school_name", "low_grade", "high_grade"], orient="row")
    return SyntheticDistrict(school_year, schools, pl.DataFrame(rows))


MOVED_AWAY_SHARE = 0.05
"""Of a past year's students at each school, about this share have moved away since (IDs of their own)."""


def past_year_district(district: SyntheticDistrict, school_year: int, *, seed: int = 20251) -> SyntheticDistrict:
    """The district ``k = district.school_year - school_year`` years earlier, as that year's Aeries database
    holds it (deterministic for ``seed`` and the year).

    Today's students who were there then, ``k`` grades younger, at their school or, when it did not teach that
    grade yet, at a school that does (a sixth grader was at an elementary school): those ``k`` grades younger
    than the lowest grade were not enrolled yet, and about ``MOVED_AWAY_SHARE`` of the others had not moved in.
    Then the students who have left since, with StudentIDs of their own: the classes that have aged out of the
    district's highest grade, and about ``MOVED_AWAY_SHARE`` who moved away.
    """
    k = district.school_year - school_year
    if k <= 0:
        raise ValueError(f"school year {school_year} is not before {district.school_year}")
    rng = random.Random(f"past-year:{seed}:{school_year}")
    spans = {code: (name, low, high) for code, name, low, high in district.schools.iter_rows()}
    top = max(high for _name, _low, high in spans.values())
    rows = []
    for row in district.students.sort("student_id").iter_rows(named=True):
        grade = row["grade"] - k
        _name, low, high = spans[row["school_code"]]
        school = row["school_code"]
        if not low <= grade <= high:
            teaching = sorted(code for code, (_n, lo, hi) in spans.items() if lo <= grade <= hi)
            if not teaching:
                continue  # not in school yet
            school = teaching[row["student_id"] % len(teaching)]
        if rng.random() < MOVED_AWAY_SHARE:
            continue  # moved in since
        rows.append(row | {"school_code": school, "school_name": spans[school][0], "grade": grade})
    ids = district.students.get_column("student_id")
    next_id = int(ids.max()) + 1 + (k - 1) * 8 * (ids.len() + 1)  # apart from every other year's leavers
    for code, (name, low, high) in sorted(spans.items()):
        here = district.students.filter(pl.col("school_code") == code).height
        per_grade = max(1, round(here / (high - low + 1)))
        aged_out = [g for g in range(low, high + 1) if g + k > top]
        grades = [g for g in aged_out for _ in range(per_grade)]
        grades += [rng.randint(low, high) for _ in range(max(1, round(here * MOVED_AWAY_SHARE)))]
        for grade in grades:
            rows.append(
                {
                    "student_id": next_id,
                    "school_code": code,
                    "school_name": name,
                    "grade": grade,
                    "first_name": rng.choice(FIRST_NAMES),
                    "last_name": rng.choice(LAST_NAMES),
                }
            )
            next_id += rng.randint(1, 7)
    students = pl.DataFrame(rows, schema=district.students.schema).sort("student_id")
    return SyntheticDistrict(school_year, district.schools, students)


def _records(
    district: SyntheticDistrict, academic_year: int, subject: str, seed: int, vendor_ids: Mapping[int, str] | None
) -> pl.DataFrame:
    """Diagnostics for most of the district's students, joined to their school, grade and names; with
    ``vendor_ids`` (StudentID → the identifier the district rosters into i-Ready) the file carries those."""
    tested = district.students.sample(fraction=0.9, seed=seed, shuffle=False)
    records = synthetic_diagnostics(
        n_students=tested.height,
        academic_year=academic_year,
        subject=subject,
        seed=seed,
        student_ids=tested.get_column("student_id").to_list(),
    )
    roster = tested.select(
        "student_id", "school_name", "first_name", "last_name", pl.col("grade").alias("student_grade")
    )
    records = records.drop(
        [c for c in ("school_name", "first_name", "last_name", "student_grade") if c in records.columns]
    ).join(roster, on="student_id", how="left")
    if vendor_ids is None:
        return records
    return records.with_columns(
        pl.col("student_id").replace_strict(dict(vendor_ids), return_dtype=pl.Utf8).alias("vendor_student_id")
    ).drop("student_id")


def append_invalid_rows(path: Path) -> None:
    """Append the data-quality cases of reference §9: two rows the parser must reject (a non-numeric ID, an
    impossible scale score) and a diagnostic delivered twice, the repeat spelling its date with dashes and
    carrying an impossible Percentile of 0 (collapsed into one row, that cell published as null)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    template = next(line for line in lines[1:] if '"' not in line).split(",")
    bad_id = list(template)
    bad_id[header.index("Student ID")] = "TEMP-0042"
    bad_score = list(template)
    bad_score[header.index("Overall Scale Score")] = "950"
    repeat = list(template)
    completed = header.index("Completion Date")
    repeat[completed] = repeat[completed].replace("/", "-")
    repeat[header.index("Percentile")] = "0"
    rows = [",".join(bad_id), ",".join(bad_score), ",".join(repeat)]
    path.write_text("\n".join([*lines, *rows]) + "\n", encoding="utf-8")


def write_iready_exports(
    district: SyntheticDistrict, sftp_root: Path, vendor_ids: Mapping[int, str] | None = None
) -> list[Path]:
    """Lay out the vendor's SFTP tree: ``exports/<region>/Current_Year`` plus last year's archive.

    The current year uses the names and layout of its era (FY27 names from 2026-27 on); the archive
    keeps the older names, as the vendor's folders do. ``vendor_ids`` (StudentID → identifier): files keyed
    by the StudentNumber or SSID instead of the StudentID (``APTOOL_IREADY_ID_FIELD``).
    """
    year = district.school_year
    current = sftp_root / "exports" / REGION / "Current_Year"
    archive = sftp_root / "exports" / REGION / str(year - 1)
    current.mkdir(parents=True, exist_ok=True)
    archive.mkdir(parents=True, exist_ok=True)
    fy27 = year >= 2026
    written = []
    for subject, seed in (("ela", 11), ("math", 12)):
        if fy27:
            name = (
                "i-ready_inform_results_reading_english_CONFIDENTIAL.csv"
                if subject == "ela"
                else ("i-ready_inform_results_math_CONFIDENTIAL.csv")
            )
            layout = "2026-27"
        else:
            name, layout = f"diagnostic_results_{subject}_CONFIDENTIAL.csv", "2024-25"
        path = current / name
        write_diagnostic_csv(path, _records(district, year, subject, seed, vendor_ids), subject=subject, layout=layout)
        append_invalid_rows(path)
        written.append(path)

        old = archive / f"diagnostic_results_{subject}_CONFIDENTIAL.csv"
        write_diagnostic_csv(
            old, _records(district, year - 1, subject, seed + 100, vendor_ids), subject=subject, layout="2024-25"
        )
        written.append(old)
    # Another export in the same folder that the name filter must ignore.
    (current / "personalized_instruction_by_lesson_math_CONFIDENTIAL.csv").write_text("Student ID,Lesson\n1,x\n")
    return written
