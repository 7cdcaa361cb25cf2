"""The inbox in the AP Tool PostgreSQL database: ``aptool.webhook_events`` and
``aptool.dead_letter_events``, a small sync pool for the sensor and the CLI, and an asyncio pool
with group commit (:mod:`.batch_writer`) for the receiver. psycopg is imported on first use.

Errors leave scrubbed of the URL's password (same classes), and the pools' own log lines are scrubbed
too: a driver's error can quote the connection string."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from aptool_assets.redaction import scrub_logs, scrubbing
from aptool_assets.storage.backends import redact_url
from aptool_assets.storage.inbox.base import Inbox, InboxMissing
from aptool_assets.storage.inbox.batch_writer import PgBatchWriter

scrub_logs(logging.getLogger("psycopg.pool"))  # "error connecting in 'pool': <the driver's message>"


class PostgresInbox(Inbox):
    """The inbox in the AP Tool PostgreSQL database (schema ``aptool``).

    Sync methods use a small thread-safe pool (≤ 4 connections). The async methods (:meth:`astore`,
    :meth:`astore_dead_letter`, :meth:`ahealthy`) use an asyncio pool of up to ``pool_size``
    connections bound to the event loop that first uses it; call :meth:`aclose` in that loop
    before it ends (the receiver's lifespan does), or the loop's shutdown waits on the pool's
    background tasks.
    """

    backend = "postgres"
    events_table = "aptool.webhook_events"
    dead_letters_table = "aptool.dead_letter_events"

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 32,
        connect_timeout: float = 5.0,
        acquire_timeout: float = 10.0,
        health_timeout: float = 2.0,
    ) -> None:
        self.url = url
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self.acquire_timeout = acquire_timeout
        self.health_timeout = health_timeout
        self._pool = None
        self._pool_lock = threading.Lock()
        self._apool = None
        self._apool_loop: asyncio.AbstractEventLoop | None = None
        self._apool_lock: asyncio.Lock | None = None
        self._writer: PgBatchWriter | None = None
        self.max_batch = 256
        self.max_inflight_batches = 2
        self._sql_insert = self._insert_sql()
        self._sql_insert_returning_id = self._sql_insert.replace("RETURNING seq", "RETURNING event_id")
        self._sql_insert_batch = (
            "INSERT INTO aptool.webhook_events (event_id, event_type, event_timestamp, received_at, payload, "
            "raw_body, status, attempts, updated_at) "
            "SELECT e.event_id, e.event_type, e.event_timestamp, e.received_at, e.payload::json, e.raw_body, "
            "'pending', 0, e.received_at "
            # Binary parameters (%b): text arrays in text format would escape every quote in every payload.
            "FROM unnest(%b::text[], %b::text[], %b::timestamptz[], %b::timestamptz[], %b::text[], %b::bytea[]) "
            "WITH ORDINALITY AS e(event_id, event_type, event_timestamp, received_at, payload, raw_body, n) "
            "ORDER BY e.n "  # seq follows arrival order within a batch
            "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
        )

    def describe(self) -> str:
        return f"postgres {redact_url(self.url)} ({self.events_table})"

    def _payload_sql(self, alias: str = "") -> str:
        # As text: psycopg would decode a json column itself, and raise on a payload nested too deeply.
        return f"{alias}payload::text AS payload"

    def _conn_kwargs(self) -> dict:
        from psycopg.rows import dict_row

        return {
            "autocommit": True,
            "connect_timeout": max(1, int(self.connect_timeout)),
            "application_name": "aptool-inbox",
            "row_factory": dict_row,
        }

    @staticmethod
    def _configure(con) -> None:
        # Durable before "accepted": a server running with synchronous_commit=off would lose the
        # last commits on a crash, so our sessions turn it back on ('local'/'remote_*' are kept).
        if con.execute("SELECT current_setting('synchronous_commit') AS s").fetchone()["s"] == "off":
            con.execute("SET synchronous_commit TO on")

    @staticmethod
    async def _aconfigure(con) -> None:
        cur = await con.execute("SELECT current_setting('synchronous_commit') AS s")
        if (await cur.fetchone())["s"] == "off":
            await con.execute("SET synchronous_commit TO on")

    def _sync_pool(self):
        if self._pool is None:
            with self._pool_lock:
                if self._pool is None:
                    from psycopg_pool import ConnectionPool

                    pool = ConnectionPool(
                        self.url,
                        min_size=1,
                        max_size=4,
                        kwargs=self._conn_kwargs(),
                        configure=self._configure,
                        open=False,
                        timeout=self.acquire_timeout,
                        max_idle=300,
                        name="aptool-inbox-sync",
                    )
                    pool.open(wait=False)
                    self._pool = pool
        return self._pool

    async def _async_pool(self):
        loop = asyncio.get_running_loop()
        if self._apool is not None and self._apool_loop is loop:
            return self._apool
        if self._apool_lock is None or self._apool_loop is not loop:
            self._apool_lock = asyncio.Lock()
            self._apool_loop = loop
            self._apool = None  # a pool belongs to the loop that opened it
        async with self._apool_lock:
            if self._apool is None:
                from psycopg_pool import AsyncConnectionPool

                pool = AsyncConnectionPool(
                    self.url,
                    min_size=min(4, self.pool_size),
                    max_size=self.pool_size,
                    kwargs=self._conn_kwargs(),
                    configure=self._aconfigure,
                    open=False,
                    timeout=self.acquire_timeout,
                    max_idle=300,
                    name="aptool-inbox-async",
                )
                await pool.open(wait=False)
                self._writer = PgBatchWriter(self._insert_batch, self.max_batch, self.max_inflight_batches)
                self._apool = pool
        return self._apool

    async def aopen(self) -> None:
        await self._async_pool()

    async def aclose(self) -> None:
        pool, self._apool = self._apool, None
        if pool is not None and self._apool_loop is asyncio.get_running_loop():
            if self._writer is not None:
                await self._writer.drain()
            await pool.close(timeout=5)

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close(timeout=5)
        apool, self._apool = self._apool, None
        if apool is not None:
            loop = self._apool_loop
            if loop is not None and loop.is_running() and not _in_loop(loop):
                with contextlib.suppress(Exception):  # best effort at shutdown
                    asyncio.run_coroutine_threadsafe(apool.close(timeout=5), loop).result(10)

    def _connect(self):
        import psycopg

        return psycopg.connect(self.url, **self._conn_kwargs())

    @staticmethod
    def _tables_exist(con) -> bool:
        # From the catalog: to_regclass would raise for a role without USAGE on the schema.
        row = con.execute(
            "SELECT count(*) = 2 AS ok FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'aptool' AND c.relname IN ('webhook_events', 'dead_letter_events') "
            "AND c.relkind IN ('r', 'p')"
        ).fetchone()
        return bool(row["ok"])

    def exists(self) -> bool:
        with scrubbing(self.url), self._connect() as con:
            return self._tables_exist(con)

    def setup(self) -> None:
        with scrubbing(self.url), self._connect() as con:
            if self._tables_exist(con):
                return  # nothing to do, and no DDL: the receiver's role may not run any
            self._check_may_create(con)
            with con.transaction():
                self._create_tables(con)

    def _check_may_create(self, con) -> None:
        row = con.execute(
            "SELECT current_user AS who, CASE WHEN to_regnamespace('aptool') IS NULL "
            "THEN has_database_privilege(current_database(), 'CREATE') "
            "ELSE has_schema_privilege('aptool', 'CREATE') END AS may"
        ).fetchone()
        if not row["may"]:
            raise InboxMissing(
                f"the webhook inbox tables (aptool.webhook_events, aptool.dead_letter_events) do not exist in "
                f"{redact_url(self.url)}, and role {row['who']} may not create them: run "
                f"`aptool db grant-receiver {row['who']}` with the publisher's APTOOL_DATABASE_URL first"
            )

    def _create_tables(self, con) -> None:
        """The DDL, in the caller's transaction (serialized across processes by an advisory lock)."""
        con.execute("SELECT pg_advisory_xact_lock(hashtext('aptool.webhook_inbox.setup'))")
        con.execute("CREATE SCHEMA IF NOT EXISTS aptool")
        con.execute(
            """
            CREATE TABLE IF NOT EXISTS aptool.webhook_events (
                seq bigserial PRIMARY KEY,
                event_id text NOT NULL UNIQUE,
                event_type text NOT NULL,
                event_timestamp timestamptz NOT NULL,
                received_at timestamptz NOT NULL,
                payload json NOT NULL,
                raw_body bytea,
                status text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'applied', 'superseded', 'dead_letter')),
                attempts integer NOT NULL DEFAULT 0,
                next_attempt_at timestamptz,
                last_error text,
                first_failed_at timestamptz,
                applied_at timestamptz,
                run_id text,
                updated_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        con.execute(
            "CREATE INDEX IF NOT EXISTS webhook_events_pending_idx ON aptool.webhook_events (seq) "
            "WHERE status = 'pending'"
        )
        con.execute(
            """
            CREATE TABLE IF NOT EXISTS aptool.dead_letter_events (
                event_id text PRIMARY KEY,
                event_type text NOT NULL,
                payload json NOT NULL,
                reason text NOT NULL,
                attempts integer NOT NULL DEFAULT 0,
                first_failed_at timestamptz NOT NULL,
                last_failed_at timestamptz NOT NULL,
                replayed_at timestamptz,
                replay_count integer NOT NULL DEFAULT 0
            )
            """
        )
        con.execute(
            "COMMENT ON TABLE aptool.webhook_events IS "
            "'Durable webhook inbox: one row per eventId received (contract section 5)'"
        )
        con.execute(
            "COMMENT ON TABLE aptool.dead_letter_events IS "
            "'Webhook events that could not be applied, with reason and replay history'"
        )

    def grant_receiver(self, role: str) -> list[str]:
        """Let ``role`` (an existing login role) do what the webhook receiver does, and nothing more.

        Creates the inbox tables when missing (run this with the publisher's credentials), then makes
        the role's privileges on them exactly: USAGE on schema ``aptool``; INSERT on both inbox
        tables; SELECT on the columns its inserts read back (``seq``, ``event_id`` -- ``ON CONFLICT``
        and ``RETURNING`` need them), never on payloads; USAGE on the ``seq`` sequence. No UPDATE,
        DELETE or DDL, and nothing on any other table. Idempotent. Returns warnings about privileges
        the role holds elsewhere (superuser, CREATE, other ``aptool`` tables), which this does not revoke.
        """
        from psycopg import sql

        self.setup()
        with scrubbing(self.url), self._connect() as con, con.transaction():
            row = con.execute(
                "SELECT rolsuper, rolcreatedb, rolcreaterole, rolbypassrls FROM pg_roles WHERE rolname = %s", (role,)
            ).fetchone()
            if row is None:
                raise ValueError(f"role {role!r} does not exist: create it first (CREATE ROLE … LOGIN PASSWORD …)")
            who = sql.Identifier(role)
            sequence = con.execute("SELECT pg_get_serial_sequence('aptool.webhook_events', 'seq') AS s").fetchone()["s"]
            for statement in (
                "REVOKE ALL ON aptool.webhook_events, aptool.dead_letter_events FROM {who}",
                "GRANT USAGE ON SCHEMA aptool TO {who}",
                "GRANT INSERT ON aptool.webhook_events, aptool.dead_letter_events TO {who}",
                "GRANT SELECT (seq, event_id) ON aptool.webhook_events TO {who}",
                "GRANT SELECT (event_id) ON aptool.dead_letter_events TO {who}",
                "GRANT USAGE ON SEQUENCE {sequence} TO {who}",
            ):
                con.execute(sql.SQL(statement).format(who=who, sequence=sql.SQL(sequence)))
            return self._receiver_warnings(con, role, row)

    @staticmethod
    def _receiver_warnings(con, role: str, attributes: dict) -> list[str]:
        warnings = [
            f"role {role} has {name}: the receiver should run as a plain login role"
            for name, held in (
                ("SUPERUSER", attributes["rolsuper"]),
                ("CREATEDB", attributes["rolcreatedb"]),
                ("CREATEROLE", attributes["rolcreaterole"]),
                ("BYPASSRLS", attributes["rolbypassrls"]),
            )
            if held
        ]
        row = con.execute(
            "SELECT has_schema_privilege(%s, 'aptool', 'CREATE') AS schema_create, "
            "has_database_privilege(%s, current_database(), 'CREATE') AS db_create",
            (role, role),
        ).fetchone()
        if row["schema_create"] or row["db_create"]:
            warnings.append(f"role {role} may CREATE in schema aptool or in the database (revoke it)")
        others = con.execute(
            "SELECT DISTINCT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'aptool' AND c.relkind IN ('r', 'p', 'v', 'm') "
            "AND c.relname NOT IN ('webhook_events', 'dead_letter_events') "
            "AND (pg_has_role(%s, c.relowner, 'USAGE') "
            "OR has_table_privilege(%s, c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE')) "
            "ORDER BY 1",
            (role, role),
        ).fetchall()
        if others:
            names = ", ".join(f"aptool.{r['relname']}" for r in others)
            warnings.append(f"role {role} can read or write other tables: {names} (revoke it)")
        return warnings

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        with scrubbing(self.url), self._sync_pool().connection() as con, con.transaction(), con.cursor() as cur:
            yield cur

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[dict]:
        with scrubbing(self.url), self._sync_pool().connection() as con, con.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def _insert_event(self, params: tuple) -> str:
        import psycopg
        from psycopg_pool import PoolTimeout

        for attempt in (1, 2):
            try:
                with scrubbing(self.url), self._sync_pool().connection() as con:
                    row = con.execute(self._sql_insert, params).fetchone()
                return "accepted" if row else "duplicate"
            except PoolTimeout:
                raise
            except psycopg.OperationalError:
                # A pooled connection broken by a server restart: one retry on a fresh one. If the
                # first commit did land, the retry reports "duplicate" -- still stored exactly once.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def astore(self, event_id, event_type, event_timestamp, payload, raw_body) -> str:
        """:meth:`store` for the receiver: concurrent calls are group-committed (see :class:`PgBatchWriter`);
        each caller gets its own ``accepted``/``duplicate`` only after its batch is committed."""
        params = self._insert_params(event_id, event_type, event_timestamp, payload, raw_body)
        await self._async_pool()
        return await self._writer.submit(params)

    async def _insert_batch(self, rows: list[tuple]) -> set[str]:
        """One multi-row ``INSERT … ON CONFLICT (event_id) DO NOTHING RETURNING event_id``; the ids
        returned are the ones inserted (accepted), the others were already stored."""
        import psycopg
        from psycopg_pool import PoolTimeout

        if len(rows) == 1:  # the plain statement is cheaper to bind than six one-element arrays
            sql, params = self._sql_insert_returning_id, rows[0]
        else:
            sql, params = self._sql_insert_batch, [list(column) for column in zip(*(r[:6] for r in rows), strict=True)]
        for attempt in (1, 2):
            try:
                with scrubbing(self.url):
                    async with self._apool.connection() as con:
                        cur = await con.execute(sql, params)
                        return {r["event_id"] for r in await cur.fetchall()}
            except PoolTimeout:
                raise
            except psycopg.OperationalError:
                # A pooled connection broken by a server restart: one retry on a fresh one. If the
                # first commit did land, the retry reports "duplicate" -- still stored exactly once.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def astore_dead_letter(self, event_id, event_type, event_timestamp, payload, raw_body, reason) -> str:
        # Rare (unsupported types only): the sync implementation in a worker thread.
        return await asyncio.to_thread(
            self.store_dead_letter, event_id, event_type, event_timestamp, payload, raw_body, reason
        )

    def healthy(self) -> bool:
        import psycopg

        try:
            with self._sync_pool().connection(timeout=self.health_timeout) as con:
                con.execute("SELECT 1 FROM aptool.webhook_events LIMIT 1").fetchall()
            return True
        except psycopg.Error:
            return False

    async def ahealthy(self) -> bool:
        import psycopg

        try:
            pool = await self._async_pool()
            async with asyncio.timeout(self.health_timeout + 1):
                async with pool.connection(timeout=self.health_timeout) as con:
                    cur = await con.execute("SELECT 1 FROM aptool.webhook_events LIMIT 1")
                    await cur.fetchall()
            return True
        except (psycopg.Error, TimeoutError):
            return False


def _in_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
