"""Code tables the simulated Aeries serves: absence codes per school (reference §6.5) and two code sets.

Absence codes are per school and one letter each; one school keeps its own, clashing letters, so a
client that assumes one district-wide table is caught. The district-wide table (SchoolCode 0) holds the
standard letters plus one code no school table defines (``O``, an out-of-school suspension entered with
TypeCode 3), so a client that does not fall back to the district table is caught too. The meanings are
the simulator's own vocabulary.
"""

from __future__ import annotations

from aptool_demo.records import GRADE_LONG

# meaning: (Title, Abbreviation, TypeCode, CountsForADA, IsSuspension, IsPartialDayTruant, IsTemporarilyNotEnrolled)
_MEANINGS: dict[str, tuple[str, str, int, bool, bool, bool, bool]] = {
    "unverified": ("UNVERIFIED", "UNV", 1, False, False, False, False),
    "excused": ("EXCUSED", "EXC", 2, False, False, False, False),
    "illness": ("ILLNESS", "ILL", 2, False, False, False, False),
    "unexcused": ("UNEXCUSED", "UNX", 3, False, False, False, False),
    "tardy": ("TARDY", "TDY", 5, True, False, False, False),
    "late30": ("LATE 30+", "L30", 9, True, False, True, False),
    "oss": ("SUSPENDED", "SUS", 2, False, True, False, False),
    "iss": ("IN-SCH SUS", "ISS", 4, True, True, False, False),
    "tne": ("TMPNOTENR", "TNE", 2, False, False, False, True),
    "activity": ("ACTIVITY", "ACT", 4, True, False, False, False),
    "truant": ("TRUANT", "TRU", 3, False, False, False, False),
    "oss_district": ("SUSP-DIST", "SSD", 3, False, True, False, False),
}
_TYPE_DESCRIPTIONS = {
    1: "Unverified Absence",
    2: "Excused Absence",
    3: "Unexcused Absence",
    4: "Verified Not Absent",
    5: "Tardy",
    6: "Present",
    8: "Verified Excused Tardy",
    9: "Verified Unexcused Tardy",
}
STANDARD_LETTERS = {
    "unverified": "A",
    "excused": "E",
    "illness": "I",
    "unexcused": "U",
    "tardy": "T",
    "late30": "L",
    "oss": "S",
    "iss": "N",
    "tne": "G",
    "activity": "K",
}
# One school keeps its own table: same meanings, different (and clashing) letters.
ALTERNATE_LETTERS = {
    "unverified": "U",
    "excused": "X",
    "illness": "I",
    "unexcused": "N",
    "tardy": "L",
    "late30": "B",
    "oss": "S",
    "iss": "Q",
    "tne": "W",
    "activity": "A",
    "truant": "T",
}
ALTERNATE_LETTER_SCHOOL = 102
DISTRICT_SCHOOL = 0
DISTRICT_ONLY_LETTER = "O"
DISTRICT_LETTERS = {**STANDARD_LETTERS, "oss_district": DISTRICT_ONLY_LETTER}
"""SchoolCode 0's table: what the district copies to schools, plus a code only it defines."""


def absence_code_table(school_code: int, letters: dict[str, str]) -> list[dict]:
    """The school's AbsenceCodes rows, sorted by letter, in the shape of the recorded response."""
    rows = []
    for meaning, letter in letters.items():
        title, abbreviation, type_code, ada, suspension, truant, not_enrolled = _MEANINGS[meaning]
        rows.append(
            {
                "SchoolCode": school_code,
                "AbsenceCode": letter,
                "Title": title,
                "Abbreviation": abbreviation,
                "TypeCode": type_code,
                "TypeDescription": _TYPE_DESCRIPTIONS[type_code],
                "CountsForADA": ada,
                "IncludeOnLetters": type_code in (1, 3) or truant,
                "IncludeInParentNotifications": type_code in (1, 3, 9),
                "IncludeOnReports": True,
                "CountOnReportCard": type_code in (1, 2, 3, 5, 9),
                "IsSuspension": suspension,
                "IsPartialDayTruant": truant,
                "IsTemporarilyNotEnrolled": not_enrolled,
                "IndependentStudyCode": "",
                "ColorCode": "",
            }
        )
    return sorted(rows, key=lambda r: r["AbsenceCode"])


def letters_for(school_code: int) -> dict[str, str]:
    """The school's letter for each meaning (the simulator's own knowledge; clients must read the table)."""
    if school_code == DISTRICT_SCHOOL:
        return DISTRICT_LETTERS
    return ALTERNATE_LETTERS if school_code == ALTERNATE_LETTER_SCHOOL else STANDARD_LETTERS


_EXIT_REASONS = [
    ("T160", "Transfer to another California public school"),
    ("T165", "Transfer to a California public school, independent study"),
    ("T180", "Transfer to a private school"),
    ("T200", "Transfer out of the United States"),
    ("E150", "Mid-year update"),
    ("E230", "Completed the school year"),
]
# (table, field) as requested, lowercase → (table code, field code, [(code, description)]) for /codes/{table}/{field}
CODE_SETS: dict[tuple[str, str], tuple[str, str, list[tuple[str, str]]]] = {
    ("enrollmenthistory", "exitreason"): ("ENR", "ER", _EXIT_REASONS),
    ("student", "grade"): ("STU", "GR", [(str(g), d) for g, d in GRADE_LONG.items()]),
}
