"""The data side of bench_indicator.py: a seeded synthetic district (``generate``: demographics records,
program records and two school years of per-student-per-school attendance rows with grades) and the pandas
baseline of the same rules (``pandas_pipeline``: student groups for both years, then the indicator).

Imported by the benchmark script, which puts the repository on sys.path first (run as
``python benchmarks/bench_indicator.py``, this directory is on sys.path already).
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import polars as pl

from aptool_assets.rules.indicator import INDICATOR_SCHEMA
from aptool_assets.rules.student_groups import DEMOGRAPHICS_SCHEMA, PROGRAMS_SCHEMA, RACE_CODE_COLUMNS

SCHOOL_YEAR = 2025
AS_OF = date(2026, 3, 2)
PRIOR_AS_OF = date(2025, 6, 30)
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)

RACE_CODES = np.array(["700", "600", "201", "203", "208", "301", "302", "400", "100", "", "800"])
RACE_WEIGHTS = np.array([0.30, 0.10, 0.12, 0.05, 0.04, 0.02, 0.01, 0.06, 0.02, 0.26, 0.02])
PROGRAM_CODES = np.array(["181", "182", "144", "135", "190", "191", "120"])
PROGRAM_WEIGHTS = np.array([0.38, 0.10, 0.20, 0.03, 0.02, 0.05, 0.22])

# --- synthetic district ------------------------------------------------------------------------


def _dates(days: np.ndarray) -> np.ndarray:
    return np.datetime64("1970-01-01") + days.astype("timedelta64[D]")


def _year_rows(rng: np.random.Generator, ids: np.ndarray, grades: np.ndarray, schools: np.ndarray, year: int):
    """Per-student-per-school rows of one year: 10% of the students at a second school, entered later."""
    n = ids.size
    home = rng.choice(schools, size=n)
    start = np.datetime64(f"{year}-08-12").astype(int)
    enrolled = np.where(rng.random(n) < 0.9, rng.integers(150, 181, n), rng.integers(1, 150, n))
    rate = rng.beta(1.2, 14.0, n)
    absent = np.minimum(np.rint(enrolled * rate).astype(np.int64), enrolled)
    entered = start + np.where(enrolled < 150, 180 - enrolled, 0)
    rows = {"student_id": ids, "school_code": home, "grade": grades, "enter_date": entered, "enrolled": enrolled}
    moved = rng.random(n) < 0.10
    m = int(moved.sum())
    other = (home[moved] - schools[0] + 1 + rng.integers(0, schools.size - 1, m)) % schools.size + schools[0]
    second_days = rng.integers(10, 120, m)
    frame = pd.DataFrame({**rows, "absent": absent})
    second = pd.DataFrame(
        {
            "student_id": ids[moved],
            "school_code": other,
            "grade": np.where(rng.random(m) < 0.05, grades[moved] + 1, grades[moved]),
            "enter_date": start + 200 + rng.integers(0, 60, m),
            "enrolled": second_days,
            "absent": np.minimum(np.rint(second_days * rng.beta(1.2, 12.0, m)).astype(np.int64), second_days),
        }
    )
    out = pl.from_pandas(pd.concat([frame, second], ignore_index=True)).select(
        pl.lit(year, dtype=pl.Int32).alias("school_year"),
        pl.col("student_id").cast(pl.Int64),
        pl.col("school_code").cast(pl.Int32),
        pl.col("grade").cast(pl.Int32),
        pl.col("enter_date").cast(pl.Int32).cast(pl.Date),
        pl.col("enrolled").cast(pl.Int32).alias("days_enrolled"),
        pl.col("absent").cast(pl.Int32).alias("days_absent"),
    )
    return out.sort("student_id", "school_code")


def generate(n_students: int, n_schools: int, seed: int) -> dict[str, pl.DataFrame]:
    """demographics, programs, current (this year through the as-of date) and prior (last year) rows.
    About 1% of students have no demographics record, so they count in ALL only."""
    rng = np.random.default_rng(seed)
    schools = np.arange(101, 101 + n_schools, dtype=np.int32)
    ids = np.arange(2_000_001, 2_000_001 + n_students, dtype=np.int64)
    grades = rng.integers(-1, 13, n_students)

    current = _year_rows(rng, ids, grades, schools, SCHOOL_YEAR)
    stayed = (rng.random(n_students) < 0.88) & (grades > -1)  # the rest are new this year
    prior = _year_rows(rng, ids[stayed], grades[stayed] - 1, schools, SCHOOL_YEAR - 1)

    records = (
        current.select("student_id", "school_code", "enter_date")
        .unique(["student_id", "school_code"])
        .filter(pl.col("student_id") % 97 != 0)  # about 1% of students have no record: no groups row
        .sort("student_id", "school_code")
    )
    n = records.height
    race = {col: rng.choice(RACE_CODES, n, p=RACE_WEIGHTS) for col in RACE_CODE_COLUMNS[:2]}
    race[RACE_CODE_COLUMNS[1]] = np.where(rng.random(n) < 0.08, race[RACE_CODE_COLUMNS[1]], "")
    demographics = records.with_columns(
        pl.Series("ethnicity_code", np.where(rng.random(n) < 0.45, "Y", "N")),
        *(pl.Series(col, race.get(col, np.full(n, ""))) for col in RACE_CODE_COLUMNS),
        pl.Series("language_fluency_code", rng.choice(["L", "E", "R", "I"], n, p=[0.2, 0.55, 0.2, 0.05])),
        pl.Series("parent_ed_level_code", rng.choice(["14", "11", "12", "13", "15", None], n)),
        pl.col("enter_date").alias("school_enter_date"),
        pl.Series("source_updated_at", _dates(rng.integers(20_000, 20_500, n)).astype("datetime64[us]")),
    ).select(*DEMOGRAPHICS_SCHEMA, pl.col("source_updated_at").dt.replace_time_zone("UTC"))

    k = int(n_students * 0.9)
    starts = rng.integers(np.datetime64("2019-08-01").astype(int), np.datetime64("2026-05-01").astype(int), k)
    ends = starts + rng.integers(30, 1500, k)
    programs = pl.DataFrame(
        {
            "student_id": rng.choice(ids, k),
            "program_code": rng.choice(PROGRAM_CODES, k, p=PROGRAM_WEIGHTS),
            "start_date": np.where(rng.random(k) < 0.05, np.datetime64("NaT"), _dates(starts)),
            "end_date": np.where(rng.random(k) < 0.5, np.datetime64("NaT"), _dates(ends)),
        }
    ).cast(PROGRAMS_SCHEMA)
    return {"demographics": demographics, "programs": programs, "current": current, "prior": prior}


# --- the pandas baseline -------------------------------------------------------------------------

RACE_RANGES = [
    (100, 100, "AI"),
    (201, 299, "AS"),
    (301, 399, "PI"),
    (400, 400, "FI"),
    (600, 600, "AA"),
    (700, 700, "WH"),
]
RACES = ["AA", "AI", "AS", "FI", "HI", "PI", "WH", "MR"]
ORDER = ["ALL", *RACES, "NR", "EL", "SED", "SWD", "FOS", "HOM"]
FLAGS = {
    "EL": "is_english_learner",
    "SED": "is_socioeconomically_disadvantaged",
    "SWD": "is_student_with_disability",
    "FOS": "is_foster_youth",
    "HOM": "is_homeless",
}
STATUS = [(25, "very_low"), (50, "low"), (100, "medium"), (200, "high")]
CHANGE = [(-30, "declined_significantly"), (-5, "declined"), (4, "maintained"), (29, "increased")]


def _code(series: pd.Series) -> pd.Series:
    return series.fillna("").str.strip().str.upper()


def pandas_groups(demographics: pd.DataFrame, programs: pd.DataFrame, school_year: int, as_of: date) -> pd.DataFrame:
    """Student groups the obvious pandas way: sort, keep the last record, numpy selects."""
    year_start = pd.Timestamp(school_year, 7, 1)
    as_of = pd.Timestamp(min(max(as_of, date(school_year, 7, 1)), date(school_year + 1, 6, 30)))
    d = demographics.sort_values(
        ["student_id", "school_enter_date", "source_updated_at", "school_code"], na_position="first", kind="stable"
    )
    last = d.drop_duplicates("student_id", keep="last").set_index("student_id")
    groups = []
    for col in RACE_CODE_COLUMNS:
        text = _code(last[col])
        code = pd.to_numeric(text.where(text.str.fullmatch(r"\d+")), errors="coerce")
        groups.append(
            pd.Series(
                np.select([code.between(lo, hi) for lo, hi, _ in RACE_RANGES], [g for *_, g in RACE_RANGES], None),
                index=last.index,
            )
        )
    found = pd.concat(groups, axis=1)
    distinct = found.nunique(axis=1)
    first = found.bfill(axis=1).iloc[:, 0]
    race = np.where(
        _code(last["ethnicity_code"]) == "Y", "HI", np.where(distinct == 0, "NR", np.where(distinct == 1, first, "MR"))
    )

    p = programs[
        (programs["start_date"].isna() | (programs["start_date"] <= as_of))
        & (programs["end_date"].isna() | (programs["end_date"] >= year_start))
    ]
    p = p.assign(code=_code(p["program_code"]))
    has = p.groupby("student_id")["code"].agg(set).reindex(last.index)
    has = has.apply(lambda s: s if isinstance(s, set) else set())
    swd, hom, fos = (has.apply(lambda s, c=c: c in s) for c in ("144", "191", "190"))
    other_sed = has.apply(lambda s: bool(s & {"181", "182", "135"}))
    out = pd.DataFrame(
        {
            "school_year": school_year,
            "student_id": last.index,
            "race_ethnicity": race,
            "is_english_learner": (_code(last["language_fluency_code"]) == "L").to_numpy(),
            "is_socioeconomically_disadvantaged": (
                other_sed | (_code(last["parent_ed_level_code"]) == "14") | hom | fos
            ).to_numpy(),
            "is_student_with_disability": swd.to_numpy(),
            "is_foster_youth": fos.to_numpy(),
            "is_homeless": hom.to_numpy(),
            "source_updated_at": demographics.groupby("student_id")["source_updated_at"]
            .max()
            .reindex(last.index)
            .to_numpy(),
        }
    )
    return out.sort_values("student_id").reset_index(drop=True)


def _counts(rows: pd.DataFrame) -> pd.DataFrame:
    """Eligible and chronic per level, school and group."""
    srt = rows.sort_values(["student_id", "enter_date", "grade", "school_code"], na_position="first", kind="stable")
    last = srt.drop_duplicates("student_id", keep="last").drop(columns=["days_enrolled", "days_absent"])
    sums = rows.groupby("student_id")[["days_enrolled", "days_absent"]].sum().reset_index()
    district = last.merge(sums, on="student_id").assign(level="district", school_code=0)
    both = pd.concat([rows.assign(level="school"), district], ignore_index=True)
    e, a = both["days_enrolled"].astype("int64"), both["days_absent"].astype("int64")
    both = both[both["grade"].between(-1, 8) & (e >= 31) & (e > a)]
    both = both.assign(chronic=both["days_absent"].astype("int64") * 10 >= both["days_enrolled"].astype("int64"))
    parts = [
        both.assign(student_group="ALL"),
        both[both["race_ethnicity"].notna()].assign(student_group=both["race_ethnicity"]),
    ]
    parts += [both[both[col].eq(True)].assign(student_group=group) for group, col in FLAGS.items()]
    return (
        pd.concat(parts)
        .groupby(["level", "school_code", "student_group"])
        .agg(eligible=("chronic", "size"), chronic=("chronic", "sum"))
        .reset_index()
    )


def _suppress(counts: pd.DataFrame) -> pd.DataFrame:
    """Per level and school, in plain Python: n < 11, CDE's complementary NR rule, one more group."""
    hidden = pd.Series(False, index=counts.index)
    for _, unit in counts.groupby(["level", "school_code"], sort=False):
        sizes = dict(zip(unit["student_group"], unit["eligible"], strict=True))
        off = {g for g, n in sizes.items() if n < 11}
        if off & set(RACES) and "NR" in sizes:
            off.add("NR")
        race_or_nr = [g for g in sizes if g in RACES or g == "NR"]
        if "ALL" not in off and sum(g in off for g in race_or_nr) == 1:
            shown = sorted((sizes[g], ORDER.index(g), g) for g in race_or_nr if g not in off)
            off.add(shown[0][2] if shown else "ALL")
        hidden.loc[unit.index] = unit["student_group"].isin(off)
    counts = counts.assign(hidden=hidden)
    e, c = counts["eligible"].astype("int64"), counts["chronic"].astype("int64")
    tenths = (2000 * c + e) // (2 * e)
    return counts.assign(
        chronic=c.astype("Int64").mask(counts["hidden"]), tenths=tenths.astype("Int64").mask(counts["hidden"])
    )


def _level(tenths: pd.Series, cuts, top: str) -> pd.Series:
    t = tenths.astype("float64")
    return pd.Series(np.select([t <= u for u, _ in cuts], [name for _, name in cuts], top), index=tenths.index).where(
        tenths.notna(), None
    )


def pandas_indicator(current, prior, school_year: int, as_of: date, computed_at: datetime) -> pd.DataFrame:
    now = _suppress(_counts(current[current["school_year"] == school_year]))
    prior = prior[prior["school_year"] == school_year - 1] if prior is not None else None
    key = ["level", "school_code", "student_group"]
    if prior is not None and len(prior):
        before = _suppress(_counts(prior))[[*key, "eligible", "chronic", "tenths"]]
        now = now.merge(before, on=key, how="left", suffixes=("", "_prior"))
        now["eligible_prior"] = now["eligible_prior"].fillna(0)
    else:
        now = now.assign(eligible_prior=pd.NA, chronic_prior=pd.NA, tenths_prior=pd.NA)
    change = now["tenths"].astype("Float64") - now["tenths_prior"].astype("Float64")
    out = pd.DataFrame(
        {
            "school_year": school_year,
            "level": now["level"],
            "school_code": now["school_code"],
            "student_group": now["student_group"],
            "as_of_date": min(as_of, date(school_year + 1, 6, 30)),
            "eligible_count": now["eligible"],
            "chronic_count": now["chronic"],
            "rate_pct": now["tenths"].astype("float64") / 10,
            "prior_eligible_count": now["eligible_prior"].astype("Int64"),
            "prior_chronic_count": now["chronic_prior"].astype("Int64"),
            "prior_rate_pct": now["tenths_prior"].astype("float64") / 10,
            "change_pct": change.astype("float64") / 10,
            "status_level": _level(now["tenths"], STATUS, "very_high"),
            "change_level": _level(change, CHANGE, "increased_significantly"),
            "n_size_met": now["eligible"] >= 30,
            "computed_at": computed_at,
        }
    )
    order = out["student_group"].map(ORDER.index)
    out = out.assign(_d=out["level"] != "district", _o=order).sort_values(["_d", "school_code", "_o"])
    return out.drop(columns=["_d", "_o"]).reset_index(drop=True)


def pandas_pipeline(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Both years' groups, joined to both years' rows, then the indicator."""
    demographics, programs = frames["demographics"], frames["programs"]
    years = {}
    for name, year, as_of in (("current", SCHOOL_YEAR, AS_OF), ("prior", SCHOOL_YEAR - 1, PRIOR_AS_OF)):
        groups = pandas_groups(demographics, programs, year, as_of).drop(columns=["school_year", "source_updated_at"])
        years[name] = frames[name].merge(groups, on="student_id", how="left")
    return pandas_indicator(years["current"], years["prior"], SCHOOL_YEAR, AS_OF, NOW)


def to_polars(result: pd.DataFrame) -> pl.DataFrame:
    """The baseline's frame in the indicator's schema, for an exact comparison."""
    return (
        pl.from_pandas(result, nan_to_null=True).with_columns(pl.col("as_of_date").cast(pl.Date)).cast(INDICATOR_SCHEMA)
    )
