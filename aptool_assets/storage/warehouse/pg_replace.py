"""Replacing and merging rows on PostgreSQL without losing what the DBA attached to a table.

A whole-table replace takes one of two ways in (docs/deployment.md, "What publishing keeps"):

- **swap** — the new version is built beside the table (``<table>__next``, loaded in parallel, key index
  built afterwards) and swapped in by DROP + RENAME at commit. Fastest for a full rewrite, but the new
  table is a new object: only a table that carries nothing except what the platform made may take it.
  :func:`attachments` is that test, an allow-list: the spec's columns, the key index ``<table>_key`` and
  the lookup indexes ``<table>_by_<columns>`` exactly as the platform builds them, and table-level grants
  made by the owner (which :func:`swap_in` re-applies exactly, PUBLIC included). Anything else —
  row-level security, policies, triggers, rules and views, other indexes and constraints, foreign keys
  either way, comments, column grants, publication membership (also FOR ALL TABLES / TABLES IN SCHEMA),
  storage options, another owner — sends the table the other way.
- **in place** — :func:`replace_in_place` changes only the rows that differ, inside the publishing
  transaction: rows whose key vanished are deleted, rows whose values changed are updated, new keys are
  inserted. The table keeps its OID and everything attached to it; triggers and publications see the
  rows that changed (all of them when every row carries a new pull time); a foreign key referencing the
  table stays valid for every key that is still there. A key that vanished while another table still
  references it gets the foreign key's own ON DELETE rule: CASCADE / SET NULL / SET DEFAULT act,
  NO ACTION / RESTRICT refuse the publish with :class:`RowsStillReferenced` and the previous version stays.

Both run in the publishing transaction, so readers see the previous or the new complete version, and a
killed publish leaves the previous one (MVCC; the swap's DROP + RENAME only commit together). A merge by
key (:func:`merge_statements`) likewise updates stored rows instead of deleting and re-inserting them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from aptool_assets.storage.warehouse.base import SCHEMA, TableSpec, TableWrite

log = logging.getLogger(__name__)

LOCK_TIMEOUT = "60s"
DIFF_WORK_MEM = "64MB"  # one hash join of the old and the new version; spills to disk beyond it

# Everything that is no part of a table the platform made (see the module docstring). One row per finding.
_ATTACHMENTS_SQL = """
WITH t AS (SELECT c.oid AS id, c.* FROM pg_class c WHERE c.oid = to_regclass(%(table)s))
SELECT 'row-level security' FROM t WHERE relrowsecurity OR relforcerowsecurity
UNION ALL SELECT 'owner ' || relowner::regrole::text FROM t
  WHERE relowner <> (SELECT oid FROM pg_roles WHERE rolname = current_user)
UNION ALL SELECT 'storage parameters' FROM t WHERE reloptions IS NOT NULL
UNION ALL SELECT 'replica identity' FROM t WHERE relreplident <> 'd'
UNION ALL SELECT 'tablespace' FROM t WHERE reltablespace <> 0
UNION ALL SELECT 'not a plain table' FROM t WHERE relkind <> 'r' OR relpersistence <> 'p' OR relispartition
UNION ALL SELECT 'inheritance' FROM t JOIN pg_inherits i ON t.id IN (i.inhrelid, i.inhparent)
UNION ALL SELECT CASE WHEN d.objsubid = 0 THEN 'comment on the table' ELSE 'comment on a column' END
  FROM t JOIN pg_description d ON d.classoid = 'pg_class'::regclass AND d.objoid = t.id
UNION ALL SELECT 'security label' FROM t JOIN pg_seclabel s ON s.classoid = 'pg_class'::regclass AND s.objoid = t.id
UNION ALL SELECT 'grant made by ' || a.grantor::regrole::text FROM t, aclexplode(t.relacl) a
  WHERE a.grantor <> t.relowner
UNION ALL SELECT 'owner privileges changed' FROM t WHERE t.relacl IS NOT NULL AND EXISTS (
  SELECT privilege_type FROM aclexplode(acldefault('r', t.relowner))
  EXCEPT SELECT privilege_type FROM aclexplode(t.relacl) a WHERE a.grantee = t.relowner)
UNION ALL SELECT 'column ' || a.attname || CASE WHEN a.attname = ANY(%(columns)s) THEN ' settings' ELSE ' added' END
  FROM t JOIN pg_attribute a ON a.attrelid = t.id
  WHERE a.attnum > 0 AND NOT a.attisdropped AND (NOT a.attname = ANY(%(columns)s) OR a.attacl IS NOT NULL
    OR coalesce(a.attstattarget, -1) <> -1 OR a.attidentity <> '' OR a.attgenerated <> '' OR a.attcompression <> '')
UNION ALL SELECT 'publication ' || p.pubname FROM pg_publication p WHERE p.puballtables
{schema_publications}
UNION ALL SELECT pg_describe_object(d.classid, d.objid, d.objsubid)
  FROM t JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = t.id
  WHERE NOT (d.classid = 'pg_type'::regclass AND d.deptype = 'i')
    AND NOT (d.classid = 'pg_class'::regclass AND d.objid = t.reltoastrelid)
    AND NOT (d.classid = 'pg_class'::regclass AND d.objid = to_regclass(%(key_index)s)
             AND pg_get_indexdef(d.objid) = %(key_def)s)
    AND NOT (d.classid = 'pg_class'::regclass AND pg_get_indexdef(d.objid) = ANY(%(lookup_defs)s))
"""

_SCHEMA_PUBLICATIONS_SQL = """
UNION ALL SELECT 'publication ' || p.pubname FROM t JOIN pg_publication_namespace n ON n.pnnspid = t.relnamespace
  JOIN pg_publication p ON p.oid = n.pnpubid"""  # PostgreSQL 15+ (FOR TABLES IN SCHEMA)

_GRANTS_SQL = """
SELECT a.grantee = 0 AS to_public, r.rolname, a.privilege_type, a.is_grantable
FROM pg_class c CROSS JOIN aclexplode(c.relacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee
WHERE c.oid = to_regclass(%s) AND a.grantee <> c.relowner
ORDER BY 2, 3
"""


class RowsStillReferenced(RuntimeError):
    """A new version drops keys that another table's foreign key (NO ACTION / RESTRICT) still references."""


@dataclass(frozen=True)
class Grant:
    """One table privilege, as ``aclexplode`` reports it; ``role`` None means PUBLIC."""

    role: str | None
    privilege: str
    grantable: bool

    def statement(self, qualified: sql.Composable) -> sql.Composed:
        grantee = sql.SQL("PUBLIC") if self.role is None else sql.Identifier(self.role)
        option = sql.SQL(" WITH GRANT OPTION") if self.grantable else sql.SQL("")
        return sql.SQL("GRANT {} ON {} TO {}{}").format(sql.SQL(self.privilege), qualified, grantee, option)


@dataclass(frozen=True)
class Diff:
    """What an in-place replace changed."""

    deleted: int
    updated: int
    inserted: int


def key_index_def(table: TableSpec, index: str | None = None, on: str | None = None) -> str:
    """The key index exactly as ``pg_get_indexdef`` prints the one the platform builds."""
    return (
        f"CREATE UNIQUE INDEX {index or table.name + '_key'} ON {on or table.qualified} "
        f"USING btree ({', '.join(table.key)})"
    )


def lookup_index_name(table: TableSpec, columns: tuple[str, ...], prefix: str | None = None) -> str:
    return f"{prefix or table.name}_by_{'_'.join(columns)}"


def lookup_index_defs(table: TableSpec, prefix: str | None = None, on: str | None = None) -> list[str]:
    """The indexes of ``table.lookups`` exactly as ``pg_get_indexdef`` prints those the platform builds."""
    on = on or table.qualified
    return [
        f"CREATE INDEX {lookup_index_name(table, cols, prefix)} ON {on} USING btree ({', '.join(cols)})"
        for cols in table.lookups
    ]


def attachments(con: psycopg.Connection, table: TableSpec) -> list[str]:
    """What the DBA attached to ``table`` (empty: nothing, the table may be swapped)."""
    schema_publications = _SCHEMA_PUBLICATIONS_SQL if con.info.server_version >= 150000 else ""
    rows = con.execute(
        _ATTACHMENTS_SQL.format(schema_publications=schema_publications),
        {
            "table": table.qualified,
            "columns": list(table.columns),
            "key_index": f"{SCHEMA}.{table.name}_key",
            "key_def": key_index_def(table) if table.key else None,
            "lookup_defs": lookup_index_defs(table),
        },
    ).fetchall()
    return sorted({r[0] for r in rows})


def table_grants(con: psycopg.Connection, qualified: str) -> list[Grant]:
    """Table-level privileges of everyone but the owner (PUBLIC included)."""
    return [
        Grant(None if public else role, privilege, grantable)
        for public, role, privilege, grantable in con.execute(_GRANTS_SQL, [qualified]).fetchall()
    ]


def lock_down(con: psycopg.Connection, schema: str, name: str) -> None:
    """Revoke every privilege a new table got from default privileges: only its owner may read it.

    Called in the transaction that creates the table, so no other role ever sees it readable."""
    target = sql.Identifier(schema, name)
    for role in sorted({(g.role or "") for g in table_grants(con, f"{schema}.{name}")}):
        grantee = sql.Identifier(role) if role else sql.SQL("PUBLIC")
        con.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(target, grantee))


def swap_in(con: psycopg.Connection, table: TableSpec, shadow: str) -> list[str]:
    """Swap ``SCHEMA.shadow`` in for ``table`` inside the publishing transaction, unless something got
    attached to the table since the shadow was loaded: then nothing is swapped and the attachments are
    returned (the caller replaces in place from the shadow instead).

    SHARE ROW EXCLUSIVE first (readers go on, writers and DDL wait), the check, then ACCESS EXCLUSIVE
    for the DROP + RENAME, which lasts milliseconds. Grants are read under that lock and re-applied
    exactly as they were (PUBLIC, WITH GRANT OPTION); the shadow was created without any."""
    con.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    con.execute(f"LOCK TABLE {table.qualified} IN SHARE ROW EXCLUSIVE MODE")
    found = attachments(con, table)
    if found:
        return found
    con.execute(f"LOCK TABLE {table.qualified} IN ACCESS EXCLUSIVE MODE")
    grants = table_grants(con, table.qualified)
    con.execute(f"DROP TABLE {table.qualified}")
    con.execute(f"ALTER TABLE {SCHEMA}.{shadow} RENAME TO {table.name}")
    if table.key:
        con.execute(f"ALTER INDEX {SCHEMA}.{shadow}_key RENAME TO {table.name}_key")
    for cols in table.lookups:
        index = lookup_index_name(table, cols, shadow)
        con.execute(f"ALTER INDEX {SCHEMA}.{index} RENAME TO {lookup_index_name(table, cols)}")
    for grant in grants:
        con.execute(grant.statement(sql.Identifier(SCHEMA, table.name)))
    return []


def _comparable(table: TableSpec, alias: str, col: str) -> str:
    # json has no equality operator; its text is what was loaded, so compare that.
    return f"{alias}.{col}::text" if table.column_sql(col).upper() == "JSON" else f"{alias}.{col}"


def _changed(table: TableSpec) -> str:
    """SQL true when stored row ``t`` and incoming row ``s`` differ in a column other than the key."""
    payload = [c for c in table.columns if c not in table.key]
    if not payload:
        return "FALSE"
    old, new = (", ".join(_comparable(table, side, c) for c in payload) for side in ("t", "s"))
    return f"({old}) IS DISTINCT FROM ({new})"


def merge_statements(w: TableWrite, stage: str) -> list[str]:
    """A merge by key (``upsert``) that never deletes a stored row: rows whose key is stored are updated
    where the incoming row differs (and, with ``newer_column``, is not older); new keys are inserted.

    The portable merge (``Warehouse.merge_sql``) deletes and re-inserts matching rows; on PostgreSQL a
    foreign key referencing the table would then refuse the merge (NO ACTION) or delete the DBA's
    referencing rows (ON DELETE CASCADE), and triggers would see deletes. Same rows in the end."""
    t = w.table
    match = " AND ".join(f"t.{k} = s.{k}" for k in t.key)
    newer = f" AND (t.{w.newer_column} IS NULL OR s.{w.newer_column} >= t.{w.newer_column})" if w.newer_column else ""
    payload = [c for c in t.columns if c not in t.key]
    statements = []
    if payload:
        sets = ", ".join(f"{c} = s.{c}" for c in payload)
        statements.append(
            f"UPDATE {t.qualified} AS t SET {sets} FROM {stage} AS s WHERE {match}{newer} AND {_changed(t)}"
        )
    statements.append(
        f"INSERT INTO {t.qualified} ({', '.join(t.columns)}) SELECT {', '.join('s.' + c for c in t.columns)} "
        f"FROM {stage} AS s WHERE NOT EXISTS (SELECT 1 FROM {t.qualified} AS t WHERE {match})"
    )
    return statements


def replace_in_place(con: psycopg.Connection, table: TableSpec, stage: str) -> Diff:
    """Make ``table`` hold exactly the rows of ``stage`` (same columns) by changing only what differs.

    One pass (a full join of the old and the new version by key) finds the rows to delete, update and
    insert; each statement then touches only those. SHARE ROW EXCLUSIVE keeps other writers out from
    the diff to the commit, never readers. Rows are matched by the table's key (a key with a NULL never
    matches: such rows are deleted and inserted). Columns the DBA added keep their values on updated
    rows and take their defaults on inserted ones."""
    if not table.key:
        raise ValueError(f"{table.qualified}: an in-place replace needs the table's key")
    match = " AND ".join(f"t.{k} = s.{k}" for k in table.key)
    payload = [c for c in table.columns if c not in table.key]
    diff = f"_diff_{table.name}"
    con.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    con.execute(f"SET LOCAL work_mem = '{DIFF_WORK_MEM}'")
    con.execute(f"LOCK TABLE {table.qualified} IN SHARE ROW EXCLUSIVE MODE")
    con.execute(
        f"CREATE TEMP TABLE {diff} ON COMMIT DROP AS "
        f"SELECT t.ctid AS tid, s.ctid AS sid FROM {table.qualified} t FULL JOIN {stage} s ON {match} "
        f"WHERE t.ctid IS NULL OR s.ctid IS NULL OR {_changed(table)}"
    )
    try:
        deleted = con.execute(
            f"DELETE FROM {table.qualified} t USING {diff} d WHERE d.sid IS NULL AND t.ctid = d.tid"
        ).rowcount
    except pg_errors.ForeignKeyViolation as exc:
        raise RowsStillReferenced(
            f"{table.qualified}: the new version drops keys that foreign key {exc.diag.constraint_name} "
            f"of {exc.diag.schema_name}.{exc.diag.table_name} still references; the previous version stays"
        ) from None
    updated = 0
    if payload:
        sets = ", ".join(f"{c} = s.{c}" for c in payload)
        updated = con.execute(
            f"UPDATE {table.qualified} t SET {sets} FROM {diff} d, {stage} s "
            "WHERE d.tid IS NOT NULL AND d.sid IS NOT NULL AND t.ctid = d.tid AND s.ctid = d.sid"
        ).rowcount
    cols = ", ".join(table.columns)
    inserted = con.execute(
        f"INSERT INTO {table.qualified} ({cols}) SELECT {', '.join('s.' + c for c in table.columns)} "
        f"FROM {diff} d JOIN {stage} s ON s.ctid = d.sid WHERE d.tid IS NULL"
    ).rowcount
    con.execute(f"DROP TABLE {diff}")  # the same table may be replaced twice in one transaction
    return Diff(deleted, updated, inserted)
