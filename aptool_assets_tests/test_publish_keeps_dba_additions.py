"""A whole-table publish on PostgreSQL keeps what the DBA added to the table (issue #12 §5).

Each test adds something to ``aptool.students`` the way a district DBA would on Supabase (row-level
security with a policy and a login role, a trigger, comments, a grant to PUBLIC, publication membership,
a foreign key from another table, an extra index, ...), publishes three new versions of the roster
through ``Warehouse.write`` and checks from SQL that the addition is still there and still works, and that
the table holds exactly the new version. Every version drops one student, adds one and changes a few, so
the in-place path has rows to delete, update and insert each time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Iterator

import polars as pl
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from aptool_assets.storage.warehouse import TableWrite, open_warehouse
from aptool_assets.storage.warehouse.pg_replace import RowsStillReferenced, attachments
from aptool_assets.storage.warehouse.postgres import PostgresWarehouse
from aptool_assets.tables.aeries import STUDENTS
from aptool_assets_tests.conftest import throwaway_database

pytestmark = pytest.mark.postgres

N = 60  # students per version
VERSIONS = (2, 3, 4)  # three publishes after version 1
KEY = list(STUDENTS.key)


def roster(version: int, n: int = N) -> pl.DataFrame:
    """Version ``version``: students 1000+v .. 1000+v+n-1 (one dropped and one added per version); every
    tenth student changes grade; schools 1-3 by student."""
    ids = list(range(1000 + version, 1000 + version + n))
    return STUDENTS.conform(
        pl.DataFrame(
            {
                "student_id": ids,
                "school_code": [1 + i % 3 for i in ids],
                "student_number": [i + 50_000 for i in ids],
                "state_student_id": [f"SSID{i}" for i in ids],
                "first_name": [f"F{i}" for i in ids],
                "last_name": [f"L{i}" for i in ids],
                "grade": [(i + version) % 13 if i % 10 == 0 else i % 13 for i in ids],
                "school_enter_date": [dt.date(2025, 8, 13)] * n,
                "school_leave_date": [None] * n,
                "inactive_status_code": [""] * n,
                "is_active": [True] * n,
                "source_updated_at": [dt.datetime(2025, 9, 1, 3, 0, tzinfo=dt.UTC)] * n,
            }
        )
    )


def stored(wh) -> pl.DataFrame:
    return wh.read_table(STUDENTS).sort(KEY)


def assert_holds(wh, version: int) -> None:
    assert stored(wh).equals(roster(version).sort(KEY)), f"aptool.students is not version {version}"


@pytest.fixture(scope="module")
def module_url(postgres_url) -> Iterator[str]:
    with throwaway_database("aptool_dba") as url:
        yield url


class Dba:
    """The DBA's side: statements as the superuser, login roles of their own (dropped afterwards)."""

    def __init__(self, url: str):
        self.url = url
        self.roles: list[str] = []

    def sql(self, *statements: str) -> None:
        with psycopg.connect(self.url, autocommit=True) as con:
            for s in statements:
                con.execute(s)

    def one(self, query: str, params: list | None = None):
        with psycopg.connect(self.url) as con:
            return con.execute(query, params).fetchone()

    def role(self, prefix: str) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        self.sql(f"CREATE ROLE {name} LOGIN")
        self.roles.append(name)  # roles are cluster-wide: dropped at teardown whatever happens next
        self.sql(f"GRANT USAGE ON SCHEMA aptool TO {name}")
        return name

    def connect_as(self, role: str) -> psycopg.Connection:
        return psycopg.connect(make_conninfo(self.url, user=role))

    def oid(self, table: str = "aptool.students") -> int:
        return self.one("SELECT to_regclass(%s)::oid", [table])[0]


@pytest.fixture
def dba(module_url) -> Iterator[Dba]:
    d = Dba(module_url)
    d.sql("DROP SCHEMA IF EXISTS aptool CASCADE", "DROP SCHEMA IF EXISTS dba CASCADE", "CREATE SCHEMA dba")
    yield d
    d.sql("DROP SCHEMA IF EXISTS aptool CASCADE", "DROP SCHEMA IF EXISTS dba CASCADE")
    for p in d.one("SELECT coalesce(array_agg(pubname), '{}') FROM pg_publication")[0]:
        d.sql(f"DROP PUBLICATION {p}")
    for role in d.roles:
        d.sql(f"DROP OWNED BY {role}", f"DROP ROLE {role}")


@pytest.fixture
def wh(dba) -> PostgresWarehouse:
    w = open_warehouse(dba.url)
    w.write(TableWrite(STUDENTS, roster(1), {}))
    return w


def publish_three(wh, check=None) -> None:
    """Publish versions 2, 3, 4 as whole-table replaces; ``check(version)`` after each."""
    for v in VERSIONS:
        assert wh.write(TableWrite(STUDENTS, roster(v), {})) == {"students": N}
        assert_holds(wh, v)
        if check:
            check(v)


# ---------------------------------------------------------------------------------------------


def test_row_level_security_keeps_a_login_role_to_its_own_rows(dba, wh):
    teacher = dba.role("teacher_school1")
    dba.sql(
        "ALTER TABLE aptool.students ENABLE ROW LEVEL SECURITY",
        f"GRANT SELECT ON aptool.students TO {teacher}",
        f"CREATE POLICY school_1_only ON aptool.students FOR SELECT TO {teacher} USING (school_code = 1)",
    )
    oid = dba.oid()

    def check(v: int) -> None:
        assert dba.one("SELECT relrowsecurity FROM pg_class WHERE oid = %s", [oid]) == (True,)
        assert dba.one("SELECT count(*) FROM pg_policy WHERE polrelid = %s", [oid]) == (1,)
        with dba.connect_as(teacher) as con:
            seen = sorted(r[0] for r in con.execute("SELECT student_id FROM aptool.students").fetchall())
        expected = roster(v).filter(pl.col("school_code") == 1)["student_id"].sort().to_list()
        assert seen == expected and 0 < len(seen) < N  # its own school's rows of THIS version, no others

    check(1)
    publish_three(wh, check)
    assert dba.oid() == oid  # the same table all along: replaced in place


def test_a_trigger_still_fires_and_sees_exactly_the_changed_rows(dba, wh):
    dba.sql(
        "CREATE TABLE dba.roster_log (op text, student_id bigint)",
        "CREATE FUNCTION dba.log_roster() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "INSERT INTO dba.roster_log VALUES (TG_OP, CASE WHEN TG_OP = 'DELETE' THEN OLD.student_id "
        "ELSE NEW.student_id END); RETURN NULL; END $$",
        "CREATE TRIGGER roster_audit AFTER INSERT OR UPDATE OR DELETE ON aptool.students "
        "FOR EACH ROW EXECUTE FUNCTION dba.log_roster()",
    )

    def check(v: int) -> None:
        old, new = roster(v - 1), roster(v)
        both = old.join(new, on=KEY, suffix="_new")
        changed = both.filter(pl.any_horizontal(pl.col(c).ne_missing(pl.col(f"{c}_new")) for c in ["grade"]))
        expected = sorted(
            [("DELETE", i) for i in old.join(new, on=KEY, how="anti")["student_id"]]
            + [("INSERT", i) for i in new.join(old, on=KEY, how="anti")["student_id"]]
            + [("UPDATE", i) for i in changed["student_id"]]
        )
        with psycopg.connect(dba.url, autocommit=True) as con:
            fired = sorted(con.execute("DELETE FROM dba.roster_log RETURNING op, student_id").fetchall())
        assert fired == expected and len(expected) >= 3

    publish_three(wh, check)


def test_comments_on_the_table_and_a_column_survive(dba, wh):
    dba.sql(
        "COMMENT ON TABLE aptool.students IS 'Roster from Aeries; ask the data team before joining'",
        "COMMENT ON COLUMN aptool.students.state_student_id IS 'SSID (CALPADS)'",
    )
    comments = (
        "SELECT obj_description('aptool.students'::regclass, 'pg_class'), "
        "col_description('aptool.students'::regclass, "
        "(SELECT attnum FROM pg_attribute WHERE attrelid = 'aptool.students'::regclass "
        "AND attname = 'state_student_id'))"
    )
    want = ("Roster from Aeries; ask the data team before joining", "SSID (CALPADS)")
    publish_three(wh, lambda v: _assert_equal(dba.one(comments), want))


def _assert_equal(got, want) -> None:
    assert got == want


def test_grant_to_public_survives_and_every_later_publish_succeeds(dba, wh):
    """Nothing but grants: the fast swap, which re-applies them exactly (PUBLIC, WITH GRANT OPTION)."""
    anyone, lead = dba.role("anyone"), dba.role("lead")
    dba.sql(
        "GRANT SELECT ON aptool.students TO PUBLIC",
        f"GRANT SELECT, UPDATE ON aptool.students TO {lead} WITH GRANT OPTION",
    )
    acl = (
        "SELECT array_agg(a ORDER BY a::text) FROM pg_class, aclexplode(relacl) a "
        "WHERE oid = 'aptool.students'::regclass"
    )
    before, oids = dba.one(acl), {dba.oid()}

    def check(v: int) -> None:
        oids.add(dba.oid())
        assert dba.one(acl) == before
        with dba.connect_as(anyone) as con:  # no grant of its own: reads through PUBLIC
            assert con.execute("SELECT count(*) FROM aptool.students").fetchone() == (N,)

    publish_three(wh, check)
    assert len(oids) == 4  # each publish swapped a new table in


@pytest.mark.parametrize(
    "membership, identity",
    [
        ("FOR TABLE aptool.students", "ALTER TABLE aptool.students REPLICA IDENTITY FULL"),
        # What Supabase Realtime asks for: a primary key (here over the key the platform already keeps unique).
        ("FOR TABLES IN SCHEMA aptool", "ALTER TABLE aptool.students ADD PRIMARY KEY (student_id, school_code)"),
    ],
)
def test_publication_membership_survives(dba, wh, membership, identity):
    dba.sql(identity, f"CREATE PUBLICATION roster_feed {membership}")
    oid = dba.oid()
    published = (
        "SELECT array_agg(schemaname || '.' || tablename) FROM pg_publication_tables WHERE pubname = 'roster_feed'"
    )

    def check(v: int) -> None:
        # The same table (subscribers keep following it) and no shadow table ever joined the publication.
        assert dba.one(published) == (["aptool.students"],)
        assert dba.oid() == oid

    publish_three(wh, check)


def test_a_published_table_without_replica_identity_fails_at_once_and_keeps_its_version(dba, wh):
    """PostgreSQL refuses UPDATE and DELETE on a table that publishes them without a replica identity
    (to every writer, not only this one): the publish fails on the first attempt with PostgreSQL's own
    hint, and the previous version stays until the DBA sets one."""
    dba.sql("CREATE PUBLICATION roster_feed FOR TABLE aptool.students")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="replica identity"):
        wh.write(TableWrite(STUDENTS, roster(2), {}))
    assert_holds(wh, 1)
    dba.sql("ALTER TABLE aptool.students REPLICA IDENTITY FULL")
    publish_three(wh)


def test_an_extra_index_survives(dba, wh):
    dba.sql("CREATE INDEX students_by_last_name ON aptool.students (last_name)")
    index = "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('aptool.students_by_last_name')"
    publish_three(wh, lambda v: _assert_equal(dba.one(index), (True,)))


@pytest.mark.parametrize("on_delete", ["NO ACTION", "CASCADE"])
def test_a_foreign_key_referencing_the_table_survives_and_its_rows_stay_valid(dba, wh, on_delete):
    # Interventions for students that every version keeps (ids 1010..1050), and one for student 1001,
    # whom version 2 drops.
    dba.sql(
        "CREATE TABLE dba.interventions (id serial PRIMARY KEY, student_id bigint, school_code int, note text, "
        "FOREIGN KEY (student_id, school_code) REFERENCES aptool.students (student_id, school_code) "
        f"ON DELETE {on_delete})",
        "INSERT INTO dba.interventions (student_id, school_code, note) "
        "SELECT student_id, school_code, 'call home' FROM aptool.students WHERE student_id BETWEEN 1010 AND 1050",
    )
    kept = dba.one("SELECT count(*) FROM dba.interventions")[0]
    dba.sql(
        "INSERT INTO dba.interventions (student_id, school_code, note) "
        "SELECT student_id, school_code, 'left' FROM aptool.students WHERE student_id = 1001"
    )
    valid = (
        "SELECT count(*) FILTER (WHERE s.student_id IS NULL), count(*) FROM dba.interventions i "
        "LEFT JOIN aptool.students s USING (student_id, school_code)"
    )
    if on_delete == "NO ACTION":
        # Version 2 would orphan intervention 'left': the publish is refused, version 1 stays.
        with pytest.raises(RowsStillReferenced, match=r"aptool\.students: the new version drops keys"):
            wh.write(TableWrite(STUDENTS, roster(2), {}))
        assert_holds(wh, 1)
        assert dba.one(valid) == (0, kept + 1)
        dba.sql("DELETE FROM dba.interventions WHERE note = 'left'")  # the district resolves it
    publish_three(wh, lambda v: _assert_equal(dba.one(valid), (0, kept)))  # CASCADE removed only 'left'
    fk = "SELECT convalidated FROM pg_constraint WHERE conrelid = 'dba.interventions'::regclass AND contype = 'f'"
    assert dba.one(fk) == (True,)


# ---------------------------------------------------------------------------------------------
# Which tables may be swapped, and what the DBA adds while a publish is under way
# ---------------------------------------------------------------------------------------------

ADDITIONS = {
    "row-level security": ["ALTER TABLE aptool.students ENABLE ROW LEVEL SECURITY"],
    "policy": ["CREATE POLICY p ON aptool.students USING (true)"],
    "statement trigger": [
        "CREATE FUNCTION dba.noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$",
        "CREATE TRIGGER t AFTER TRUNCATE ON aptool.students EXECUTE FUNCTION dba.noop()",
    ],
    "column comment": ["COMMENT ON COLUMN aptool.students.grade IS 'TK = -1'"],
    "column grant": ["GRANT SELECT (student_id) ON aptool.students TO {role}"],
    "grant made by another role": [
        "GRANT SELECT ON aptool.students TO {role} WITH GRANT OPTION",
        "SET ROLE {role}",
        "GRANT SELECT ON aptool.students TO PUBLIC",
        "RESET ROLE",
    ],
    "owner's own privilege revoked": ["REVOKE TRUNCATE ON aptool.students FROM CURRENT_USER"],
    "check constraint": ["ALTER TABLE aptool.students ADD CHECK (grade BETWEEN -2 AND 18)"],
    "foreign key to another table": [
        "CREATE TABLE dba.schools (school_code int PRIMARY KEY)",
        "INSERT INTO dba.schools VALUES (1), (2), (3)",
        "ALTER TABLE aptool.students ADD FOREIGN KEY (school_code) REFERENCES dba.schools",
    ],
    "dependent view": ["CREATE VIEW dba.active AS SELECT student_id FROM aptool.students WHERE is_active"],
    "column default": ["ALTER TABLE aptool.students ALTER COLUMN inactive_status_code SET DEFAULT ''"],
    "added column": ["ALTER TABLE aptool.students ADD COLUMN counselor text"],
    "statistics target": ["ALTER TABLE aptool.students ALTER COLUMN school_code SET STATISTICS 1000"],
    "storage parameter": ["ALTER TABLE aptool.students SET (autovacuum_vacuum_scale_factor = 0.01)"],
    "extended statistics": ["CREATE STATISTICS dba.s ON school_code, grade FROM aptool.students"],
    "another owner": ["ALTER TABLE aptool.students OWNER TO {role}", "GRANT ALL ON aptool.students TO postgres"],
    "key index redefined": [
        "DROP INDEX aptool.students_key",
        "CREATE UNIQUE INDEX students_key ON aptool.students (student_id, school_code) INCLUDE (grade)",
    ],
    "publication of all tables": ["CREATE PUBLICATION everything FOR ALL TABLES WITH (publish = 'insert')"],
}


@pytest.mark.parametrize("addition", sorted(ADDITIONS))
def test_any_addition_keeps_the_table_object_and_the_new_version_lands(dba, wh, addition):
    role = dba.role("other")
    with psycopg.connect(dba.url, autocommit=True) as con:
        for statement in ADDITIONS[addition]:
            con.execute(statement.format(role=role))
        assert attachments(con, STUDENTS), f"{addition} was not noticed"
    oid = dba.oid()
    publish_three(wh)
    assert dba.oid() == oid


def test_a_table_as_the_platform_made_it_is_swapped(dba, wh):
    with psycopg.connect(dba.url) as con:
        assert attachments(con, STUDENTS) == []
    oid = dba.oid()
    wh.write(TableWrite(STUDENTS, roster(2), {}))
    assert dba.oid() != oid
    assert_holds(wh, 2)


def test_an_addition_made_while_the_shadow_loads_is_kept(dba, wh, monkeypatch):
    """The table was bare when the publish looked, so the new version is loaded for a swap; the DBA adds
    a trigger meanwhile. Under the table's lock the publish sees it and replaces the rows in place from
    the loaded shadow instead: the trigger stays and fires, the shadow is gone."""
    real_load = PostgresWarehouse._load_shadow

    def load_then_dba_acts(self, table, df):
        real_load(self, table, df)
        dba.sql(
            "CREATE TABLE dba.hits (n int)",
            "CREATE FUNCTION dba.hit() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN INSERT INTO dba.hits VALUES (1); RETURN NULL; END $$",
            "CREATE TRIGGER hit AFTER INSERT ON aptool.students FOR EACH ROW EXECUTE FUNCTION dba.hit()",
        )

    monkeypatch.setattr(PostgresWarehouse, "_load_shadow", load_then_dba_acts)
    oid = dba.oid()
    wh.write(TableWrite(STUDENTS, roster(2), {}))
    assert_holds(wh, 2)
    assert dba.oid() == oid
    assert dba.one("SELECT count(*) FROM dba.hits") == (1,)  # the one new student of version 2
    assert dba.one("SELECT to_regclass('aptool.students__next')") == (None,)


def test_default_privileges_never_expose_the_shadow_nor_undo_a_revoke(dba, module_url):
    """The district's default privileges grant SELECT on new tables in aptool to a reader, and the DBA
    revoked it on the roster. Neither the shadow being loaded nor the swapped-in table is readable by it."""
    dba.sql("CREATE SCHEMA aptool")
    reader = dba.role("reader")
    dba.sql(f"ALTER DEFAULT PRIVILEGES IN SCHEMA aptool GRANT SELECT ON TABLES TO {reader}")
    wh = open_warehouse(module_url)
    wh.write(TableWrite(STUDENTS, roster(1), {}))
    can_read = "SELECT has_table_privilege(%s, %s, 'SELECT')"
    assert dba.one(can_read, [reader, "aptool.students"]) == (True,)  # the default privileges did apply
    dba.sql(f"REVOKE SELECT ON aptool.students FROM {reader}")

    wh._load_shadow(STUDENTS, roster(2))  # what a publish does before its transaction
    assert dba.one(can_read, [reader, "aptool.students__next"]) == (False,)
    with dba.connect_as(reader) as con, pytest.raises(psycopg.errors.InsufficientPrivilege):
        con.execute("SELECT count(*) FROM aptool.students__next")

    publish_three(wh, lambda v: _assert_equal(dba.one(can_read, [reader, "aptool.students"]), (False,)))


def test_an_in_place_replace_refuses_duplicate_keys_and_keeps_the_version(dba, wh):
    dba.sql("ALTER TABLE aptool.students ENABLE ROW LEVEL SECURITY")
    twice = pl.concat([roster(2), roster(2).head(1)])
    with pytest.raises(ValueError, match="incoming rows share a key"):
        wh.write(TableWrite(STUDENTS, twice, {}))
    assert_holds(wh, 1)


def test_a_column_the_dba_added_keeps_its_values_on_rows_that_stay(dba, wh):
    dba.sql(
        "ALTER TABLE aptool.students ADD COLUMN counselor text DEFAULT 'unassigned'",
        "UPDATE aptool.students SET counselor = 'Room 12' WHERE student_id = 1020",
    )
    publish_three(wh)
    rows = "SELECT student_id, counselor FROM aptool.students WHERE student_id IN (1020, 1063) ORDER BY 1"
    with psycopg.connect(dba.url) as con:
        assert con.execute(rows).fetchall() == [(1020, "Room 12"), (1063, "unassigned")]


@pytest.mark.parametrize("on_delete", ["NO ACTION", "CASCADE"])
def test_a_merge_by_key_updates_referenced_rows_instead_of_deleting_them(dba, wh, on_delete):
    """The change feed and webhooks merge students by key (``upsert``): a referenced student is updated in
    place, so the foreign key neither refuses the merge nor cascades to the DBA's rows; an older incoming
    row still never overwrites a newer one."""
    dba.sql(
        "CREATE TABLE dba.interventions (student_id bigint, school_code int, FOREIGN KEY (student_id, school_code) "
        f"REFERENCES aptool.students (student_id, school_code) ON DELETE {on_delete})",
        "INSERT INTO dba.interventions SELECT student_id, school_code FROM aptool.students WHERE student_id < 1011",
    )
    later = dt.datetime(2025, 9, 2, tzinfo=dt.UTC)
    moved = (
        roster(1).filter(pl.col("student_id") < 1011).with_columns(grade=pl.lit(12), source_updated_at=pl.lit(later))
    )
    older = moved.with_columns(grade=pl.lit(1), source_updated_at=pl.lit(later - dt.timedelta(days=1)))
    for rows in (moved, older, pl.concat([moved.head(1), roster(99, 1)])):  # the last also adds a student
        wh.write(TableWrite(STUDENTS, rows, replace_where=None, upsert=True, newer_column="source_updated_at"))
    got = wh.query("SELECT grade, count(*) AS n FROM aptool.students WHERE student_id < 1011 GROUP BY grade")
    assert got.rows() == [(12, 10)]
    assert dba.one("SELECT count(*) FROM dba.interventions") == (10,)
    assert dba.one("SELECT count(*) FROM aptool.students") == (N + 1,)
    with pytest.raises(ValueError, match="incoming rows share a key"):
        wh.write(TableWrite(STUDENTS, pl.concat([moved, moved]), replace_where=None, upsert=True))


def test_the_platforms_lookup_indexes_are_no_dba_addition_and_survive_the_swap(dba):
    """A table with lookups (``aptool.attendance_days`` reads windows by date) keeps the fast swap: its lookup
    indexes are the platform's own, rebuilt on the new version and renamed in with it."""
    by_grade = dataclasses.replace(STUDENTS, lookups=(("grade",), ("school_code", "grade")))
    wh = open_warehouse(dba.url)
    wh.write(TableWrite(by_grade, roster(1), {}))
    oid = dba.oid()
    for v in VERSIONS:
        wh.write(TableWrite(by_grade, roster(v), {}))
        assert_holds(wh, v)
    assert dba.oid() != oid  # swapped, not replaced in place
    with psycopg.connect(dba.url) as con:
        assert attachments(con, by_grade) == []
        indexes = dict(con.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'aptool'").fetchall())
    assert set(indexes) == {"students_key", "students_by_grade", "students_by_school_code_grade"}
    assert indexes["students_by_school_code_grade"].endswith("(school_code, grade)")
