"""Aeries records in the exact shapes of the recorded demo responses: students, schools, staff, enrollment;
and program records, of which no response was recorded.

Every key of the recorded ``students.json``, ``schools.json`` and ``staff.json`` is present, in the same
order and with the same value types, so clients meet the real payloads; the values are fake but plausible.
Builders that take an ``rng`` draw from it in a fixed order: the same seed gives the same records.

Program records (``/schools/{sc}/students[/{StudentID}]/programs``) are an **assumption**: the reference
(aeries-api.md §2) marks their field names **[UNCERTAIN]**. The simulator serves ``StudentID`` (int),
``ProgramCode`` (a CALPADS program code as a string, e.g. ``"144"``), ``ProgramDescription``,
``EligibilityStartDate``, ``EligibilityEndDate``, ``ParticipationStartDate`` and ``ParticipationEndDate``
(dates as ``YYYY-MM-DDT00:00:00``, null when open or unknown), in that order, one record per program stint.
"""

from __future__ import annotations

import random
from datetime import date, timedelta

from aptool_demo.calendars import first_school_day
from aptool_demo.district import SCHOOLS

# The school of the synthetic district that takes period attendance (a middle school); the others are daily.
PERIOD_ATTENDANCE_SCHOOL = 201

GRADE_LONG = {
    -2: "Preschool",
    -1: "Transitional Kindergarten",
    0: "Kindergarten",
    1: "First Grade",
    2: "Second Grade",
    3: "Third Grade",
    4: "Fourth Grade",
    5: "Fifth Grade",
    6: "Sixth Grade",
    7: "Seventh Grade",
    8: "Eighth Grade",
    9: "Ninth Grade",
    10: "Tenth Grade",
    11: "Eleventh Grade",
    12: "Twelfth Grade",
}
_STREETS = ["Oak St", "Madrone Ave", "Cedar Ln", "Valley View Dr", "Mission Blvd", "Alder Ct", "Juniper Way"]


def _grade_short(grade: int) -> str:
    return {-2: "PS", -1: "TK", 0: "K"}.get(grade, str(grade))


def grade_fields(grade: int, school_code: int) -> dict:
    """The grade-derived fields of a student record (this grade, the next, and the next school)."""
    high = next((h for code, _n, _l, h in SCHOOLS if code == school_code), 12)
    next_school = PERIOD_ATTENDANCE_SCHOOL if grade == high and school_code != PERIOD_ATTENDANCE_SCHOOL else 0
    return {
        "GradeLevelShortDescription": _grade_short(grade),
        "GradeLevelLongDescription": GRADE_LONG.get(grade, f"Grade {grade}"),
        "NextGrade": grade + 1,
        "NextGradeLevelShortDescription": _grade_short(grade + 1),
        "NextGradeLevelLongDescription": GRADE_LONG.get(grade + 1, f"Grade {grade + 1}"),
        "NextSchoolCode": next_school,
    }


def student_record(
    rng: random.Random,
    student_id: int,
    school_code: int,
    student_number: int,
    grade: int,
    first_name: str,
    last_name: str,
    school_year: int,
    school_enter: date | None = None,
    district_enter: date | None = None,
) -> dict:
    """Every key of the recorded ``students.json``, with the same value types (fake, plausible values)."""
    birth_year = school_year - 5 - grade - (1 if rng.random() < 0.7 else 0)
    birthdate = date(birth_year, rng.randint(1, 12), rng.randint(1, 28))
    street = f"{rng.randint(100, 9999)} {rng.choice(_STREETS)}"
    spanish = rng.random() < 0.35
    school_enter = school_enter or first_school_day(school_year)
    # Three blocks of consecutive keys, built (and drawn from rng) in record order.
    record = {
        **_student_identity(
            rng, student_id, school_code, student_number, grade, first_name, last_name, spanish, birthdate
        ),
        **_student_contact(rng, first_name, last_name, street, spanish),
        **_student_schooling(rng, student_id, school_code, school_enter, district_enter or school_enter, spanish),
    }
    record.update(grade_fields(grade, school_code))
    return record


def _student_identity(
    rng: random.Random,
    student_id: int,
    school_code: int,
    student_number: int,
    grade: int,
    first_name: str,
    last_name: str,
    spanish: bool,
    birthdate: date,
) -> dict:
    """StudentID … Birthdate."""
    return {
        "StudentID": student_id,
        "OldStudentID": 0,
        "CorrespondenceLanguageCode": "01" if spanish else "00",
        "SchoolCode": school_code,
        "StudentNumber": student_number,
        "StateStudentID": str(rng.randrange(10**9, 10**10)),
        "LastName": last_name,
        "FirstName": first_name,
        "MiddleName": rng.choice(["", "", "", "Marie", "Lee", "Jose", "Ann"]),
        "LastNameAlias": "",
        "FirstNameAlias": "",
        "MiddleNameAlias": "",
        "Gender": rng.choice(["F", "M"]) if rng.random() > 0.02 else "X",
        "Grade": grade,
        "GradeLevelShortDescription": "",
        "GradeLevelLongDescription": "",
        "Birthdate": birthdate,
    }


def _student_contact(rng: random.Random, first_name: str, last_name: str, street: str, spanish: bool) -> dict:
    """ParentGuardianName … UserCode13: addresses, phone, ethnicity and race."""
    return {
        "ParentGuardianName": f"Parent of {first_name} {last_name}",
        "HomePhone": f"707555{rng.randint(0, 9999):04d}",
        "StudentMobilePhone": "",
        "MailingAddress": street,
        "MailingAddressCity": "Redwood Valley",
        "MailingAddressState": "CA",
        "MailingAddressZipCode": "95470",
        "MailingAddressZipExt": "",
        "ResidenceAddress": street,
        "ResidenceAddressCity": "Redwood Valley",
        "ResidenceAddressState": "CA",
        "ResidenceAddressZipCode": "95470",
        "ResidenceAddressZipExt": "",
        "AddressVerified": rng.random() < 0.8,
        "EthnicityCode": "Y" if spanish else "N",
        "RaceCode1": rng.choice(["700", "700", "600", "203", "100", "201"]),
        "RaceCode2": "",
        "RaceCode3": "",
        "RaceCode4": "",
        "RaceCode5": "",
        **{f"UserCode{i}": "" for i in range(1, 14)},
    }


def _student_schooling(
    rng: random.Random, student_id: int, school_code: int, school_enter: date, district_enter: date, spanish: bool
) -> dict:
    """SchoolEnterDate … RecordsReleaseCode: dates, scheduling, language, logins."""
    middle_school = school_code == PERIOD_ATTENDANCE_SCHOOL
    return {
        "SchoolEnterDate": school_enter,
        "SchoolLeaveDate": None,
        "DistrictEnterDate": district_enter,
        "CounselorNumber": 700 + rng.randint(1, 3) if middle_school else 0,
        "Track": "",
        "AttendanceProgramCodePrimary": "",
        "AttendanceProgramCodeAdditional1": "",
        "AttendanceProgramCodeAdditional2": "",
        "LockerNumber": f"{rng.randint(100, 999)}" if middle_school else "",
        "LowSchedulingPeriod": 1 if middle_school else 0,
        "HighSchedulingPeriod": 6 if middle_school else 0,
        "InactiveStatusCode": "",
        "FamilyKey": rng.randint(1000, 9999),
        "LanguageFluencyCode": rng.choice(["L", "R", "I"]) if spanish else "E",
        "HomeLanguageCode": "01" if spanish else "00",
        "ParentEdLevelCode": rng.choice(["10", "11", "12", "13", "14"]),
        "ParentEmailAddress": "",
        "StudentEmailAddress": f"s{student_id}@students.example.org",
        "NetworkLoginID": f"s{student_id}",
        "AtRiskPoints": f"{rng.randint(0, 40)}.0000",
        "HomeRoomTeacherNumber": "0" if middle_school else str(rng.randint(1, 6)),
        "NotificationPreferenceCode": "",
        "NextSchoolCode": 0,
        "NextGrade": 0,
        "NextGradeLevelShortDescription": "",
        "NextGradeLevelLongDescription": "",
        "RecordsReleaseCode": "",
    }


PROGRAM_DESCRIPTIONS = {
    "101": "Section 504 Accommodation Plan",
    "127": "Gifted and Talented Education (GATE)",
    "135": "Migrant Education",
    "144": "Special Education",
    "181": "Free Meal Program",
    "182": "Reduced-Price Meal Program",
    "190": "Foster Program",
    "191": "Homeless Program",
}
"""The CALPADS education program codes the simulated district uses (reference §2), with their titles."""


def program_record(
    student_id: int,
    program_code: str,
    *,
    eligibility_start: date | None = None,
    eligibility_end: date | None = None,
    participation_start: date | None = None,
    participation_end: date | None = None,
    description: str | None = None,
) -> dict:
    """One program stint of a student, in the assumed shape (see the module docstring)."""
    return {
        "StudentID": student_id,
        "ProgramCode": str(program_code),
        "ProgramDescription": PROGRAM_DESCRIPTIONS.get(str(program_code), "") if description is None else description,
        "EligibilityStartDate": eligibility_start,
        "EligibilityEndDate": eligibility_end,
        "ParticipationStartDate": participation_start,
        "ParticipationEndDate": participation_end,
    }


def enrollment_row(record: dict, academic_year: str, enter: date, leave: date | None, exit_reason: str) -> dict:
    """One stint of a student record at its school in an academic year (the Enrollment endpoint)."""
    return {
        "StudentID": record["StudentID"],
        "SchoolCode": record["SchoolCode"],
        "StudentNumber": record["StudentNumber"],
        "AcademicYear": academic_year,
        "Grade": record["Grade"],
        "EnterDate": enter,
        "LeaveDate": leave,
        "ExitReasonCode": exit_reason,
        "Track": "",
        "AttendanceProgramCode": "",
        "AttendanceProgramCodeAdditional1": "",
        "AttendanceProgramCodeAdditional2": "",
        "ElementaryTeacherNumber": 0,
        "ElementaryTeacherName": "",
        "InterIntraDistrictTransferCode": "",
        "InterIntraDistrictStateCode": "",
        "NonpublicSchoolStateCode": "",
        "NextSchoolCode": 0,
        "ReportingSchoolCode": 0,
    }


def school_record(
    school_year: int,
    code: int,
    name: str,
    low: int,
    high: int,
    *,
    inactive: str = "",
    period: bool = False,
    pseudo: bool = False,
) -> dict:
    """Every key of the recorded ``schools.json`` (46), with its value types."""
    return {
        **_state_reporting_fields(code, pseudo),
        "ShortName": name.split()[0],
        "Terms": [] if pseudo or inactive else _terms(school_year),
        "SchoolCode": code,
        "Name": name,
        "InactiveStatusCode": inactive,
        "Address": "" if pseudo and code else f"{100 + code} School Rd",
        "AddressCity": "Redwood Valley",
        "AddressState": "CA",
        "AddressZipCode": "95470",
        "AddressZipExt": "",
        "DoNotReport": pseudo,
        "StateCountyID": "23",
        "StateDistrictID": "99999",
        "StateSchoolID": "" if pseudo else f"{6000000 + code}",
        "LowGradeLevel": low,
        "HighGradeLevel": high,
        "PrincipalName": "",
        "PrincipalEmailAddress": "" if pseudo else f"principal{code}@demo-usd.example.org",
        "AttendancePeriod": 0,
        "Tracks": 0,
        "ScheduleType": "MasterSchedule" if period else "Elementary",
        "SessionType": "Regular",
        "AttendanceType": "Period" if period else "Daily",
        "AttendanceReporting": "Negative",
        "ScheduleBasis": "Semester",
        "PhoneNumber": f"707555{code:04d}",
    }


def _state_reporting_fields(code: int, pseudo: bool) -> dict:
    """RegionCode … PathwaysInTechnologyIndicator: state and federal reporting codes, mostly blank."""
    return {
        "RegionCode": "",
        "StateCharterNumber": "",
        "CharterStatusCode": "",
        "FederalTaxID": "",
        "FederalInformationProcessingStandardsCode": "",
        "QualityRatingAndImprovementSystemParticipationCode": "",
        "AccreditationStatusCode": "",
        "SchoolWebsite": "" if pseudo else f"https://demo-usd.example.org/{code}",
        "OrganizationCategoryCode": "",
        "SchoolCategoryCode": "",
        "LocalEducationAgencyTypeCode": "",
        "TitleIPartACode": "",
        "NSLPStatusCode": "",
        "NCESSchoolID": "" if pseudo else f"0699999{code:05d}",
        "CollegeBoardSchoolCode": "",
        "CampusEnrollmentTypeCode": "",
        "PreKSchoolTypeCode": "",
        "EarlyCollegeHighSchoolIndicator": False,
        "ScienceTechnologyEngineeringAndMathematicsIndicator": False,
        "PathwaysInTechnologyIndicator": False,
    }


def _terms(school_year: int) -> list[dict]:
    """Fall, spring and the whole year of a real school."""
    first = first_school_day(school_year)
    end = date(school_year + 1, 6, 12)
    mid = date(school_year + 1, 1, 9)
    return [
        {
            "FirstHalfEndDate": None,
            "SecondHalfStartDate": None,
            "TrackTerms": [],
            "TermCode": "F",
            "TermDescription": "Fall",
            "StartDate": first,
            "EndDate": mid - timedelta(days=1),
        },
        {
            "FirstHalfEndDate": None,
            "SecondHalfStartDate": None,
            "TrackTerms": [],
            "TermCode": "S",
            "TermDescription": "Spring",
            "StartDate": mid,
            "EndDate": end,
        },
        {
            "FirstHalfEndDate": None,
            "SecondHalfStartDate": None,
            "TrackTerms": [],
            "TermCode": "Y",
            "TermDescription": "Year",
            "StartDate": first,
            "EndDate": end,
        },
    ]


def staff_record(staff_id: int, school_code: int, first: str, last: str, title: str, rng: random.Random) -> dict:
    """Every key of the recorded ``staff.json``."""
    return {
        "SchoolAccessPermissions": [{"SchoolCode": school_code, "ReadOnlyAccess": False, "CommunicationGroup": True}],
        "ExtendedProperties": [],
        "EarlyChildhoodCertificationCode": "",
        "Gender": rng.choice(["F", "M"]),
        "EducationLevelCode": rng.choice(["2", "3", "4"]),
        "EthnicityCode": "N",
        "RaceCode1": "700",
        "RaceCode2": "",
        "RaceCode3": "",
        "RaceCode4": "",
        "RaceCode5": "",
        "PositionStatusCode": "1",
        "TotalYearsOfEduService": rng.randint(1, 25),
        "TotalYearsInThisDistrict": rng.randint(1, 12),
        "PreviousLastName": "",
        "PreviousFirstName": "",
        "PreviousMiddleName": "",
        "NameSuffix": "",
        "Address": "",
        "AddressCity": "",
        "AddressState": "",
        "AddressZipCode": "",
        "AddressZipExt": "",
        "HomePhone": "",
        "EmergencyContactName": "",
        "EmergencyContactPhone": "",
        "ID": staff_id,
        "FirstName": first,
        "LastName": last,
        "MiddleName": "",
        "BirthYear": rng.randint(1965, 1998),
        "BirthDate": date(rng.randint(1965, 1998), rng.randint(1, 12), rng.randint(1, 28)),
        "FullTimePercentage": 100,
        "HireDate": date(rng.randint(2005, 2024), 8, 1),
        "LeaveDate": None,
        "InactiveStatusCode": "",
        "StateEducatorID": f"{7000000000 + staff_id}",
        "UserName": f"staff{staff_id}",
        "EmailAddress": f"staff{staff_id}@demo-usd.example.org",
        "PrimaryAeriesSchool": school_code,
        "NetworkLoginID": f"staff{staff_id}",
        "AlternateEmailAddress": "",
        "HumanResourcesSystemID": "",
        "CellPhone": "",
        "NotificationPreferenceCode": "1",
        "Title": title,
    }
