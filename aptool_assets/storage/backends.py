"""Which backend a database URL means, decided in one place.

The warehouse, the webhook inbox and the circuit-breaker store each live in PostgreSQL or in an
embedded local file, and all three follow the platform database, ``APTOOL_DATABASE_URL``:

* ``postgresql://…`` (or ``postgres://…``, or a libpq ``key=value`` string such as
  ``host=db dbname=ap user=app password='…'``): everything in that PostgreSQL database;
* ``duckdb:///path/file.duckdb``: the warehouse in that DuckDB file, the inbox and the breakers in
  SQLite files (:func:`default_inbox_path`, :func:`default_breaker_path`);
* unset (or empty): the embedded default, DuckDB at :func:`default_database_url` plus the SQLite files.

Any other scheme is refused with :class:`UnsupportedDatabaseURL`, and a PostgreSQL string libpq cannot
read (or would misread: a raw ``@`` or ``/`` in the password) with :class:`InvalidDatabaseURL`; both
are configuration errors whose messages never quote the string. A PostgreSQL URL is remembered by
:mod:`aptool_assets.redaction`, so its password is scrubbed from every later message. The openers
(``open_warehouse``, ``open_inbox``, ``open_breaker_store``) and the Dagster executor choice all ask
:func:`database_target` / :func:`uses_postgres`, so the three stores never disagree.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from aptool_assets import redaction
from aptool_assets.settings import ConfigurationError, aptool_home

DATABASE_URL_ENV = "APTOOL_DATABASE_URL"
INBOX_PATH_ENV = "APTOOL_INBOX_PATH"
BREAKER_PATH_ENV = "APTOOL_BREAKER_PATH"
POSTGRES_SCHEMES = frozenset({"postgresql", "postgres"})
DUCKDB_SCHEME = "duckdb"

Kind = Literal["postgres", "duckdb", "embedded"]


class UnsupportedDatabaseURL(ConfigurationError):
    """The database URL has a scheme no backend implements (the message shows the scheme only)."""

    def __init__(self, scheme: str):
        shown = f"scheme {scheme!r}" if scheme else "a value that is not a URL"
        super().__init__(
            f"unsupported database URL ({shown}): {DATABASE_URL_ENV} must start with postgresql:// or duckdb:///"
        )
        self.scheme = scheme


class InvalidDatabaseURL(ConfigurationError):
    """libpq cannot read the PostgreSQL URL, or would misread it. ``problem`` (libpq's complaint without
    its quoted tokens: pieces of the URL, perhaps of the password) is scrubbed once more."""

    def __init__(self, url: str, problem: str):
        problem = redaction.scrub(problem, url)
        super().__init__(
            f"{DATABASE_URL_ENV} is not a valid PostgreSQL connection string ({problem}): "
            "percent-encode reserved characters in the user name and password (@ %40, / %2F, % %25, # %23, "
            "? %3F, space %20), or give the password as a percent-encoded query parameter"
        )


_SCHEME = re.compile(r"\s*([A-Za-z][A-Za-z0-9+.\-]*)://")


def _scheme(url: str) -> str:
    """The URL's scheme, lower case; ``postgresql`` for libpq's key=value form; "" for anything else."""
    if redaction.is_keyword_conninfo(url):
        return "postgresql"
    m = _SCHEME.match(url)
    return m.group(1).lower() if m else ""


def _checked_postgres(url: str) -> str:
    """``url`` once libpq reads it as intended (remembered for scrubbing), else :class:`InvalidDatabaseURL`."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    redaction.remember_url(url)
    try:
        parts = conninfo_to_dict(url)
    except ProgrammingError as exc:
        raise InvalidDatabaseURL(url, redaction.redact_quoted(" ".join(str(exc).split()))) from None
    # libpq ends the user information at the first "@" before any "/": a raw "@" or "/" in the password
    # leaves an "@" in the host or the database name, and libpq would connect with part of the password.
    if any("@" in str(parts.get(key) or "") for key in ("host", "hostaddr", "port", "dbname")):
        raise InvalidDatabaseURL(url, "a raw @ or / in the user name or password")
    return url


@dataclass(frozen=True)
class DatabaseTarget:
    """Where the platform's data lives: ``kind`` and, unless embedded, the URL it came from."""

    kind: Kind
    url: str | None = field(default=None, repr=False)  # may carry a password

    @property
    def postgres_url(self) -> str | None:
        """The PostgreSQL URL, or None when the platform runs embedded (DuckDB or nothing set)."""
        return self.url if self.kind == "postgres" else None

    @property
    def duckdb_path(self) -> str:
        """The DuckDB warehouse file: the URL's path, or the default file when nothing is set."""
        if self.kind == "postgres":
            raise ValueError("a PostgreSQL database has no DuckDB file")
        url = self.url if self.kind == "duckdb" else default_database_url()
        assert url is not None
        # duckdb:///abs/path.duckdb → /abs/path.duckdb ; duckdb://rel/path.duckdb → rel/path.duckdb
        return url[len("duckdb://") :]


def configured_database_url(database_url: str | None = None) -> str | None:
    """``database_url``, else ``APTOOL_DATABASE_URL`` (only when ``database_url`` is None); an empty
    value counts as unset."""
    return (database_url if database_url is not None else os.environ.get(DATABASE_URL_ENV)) or None


def database_target(database_url: str | None = None) -> DatabaseTarget:
    """The backend ``database_url`` means (``None``: ``APTOOL_DATABASE_URL``; empty: embedded).

    Raises :class:`UnsupportedDatabaseURL` for a scheme other than postgresql/postgres/duckdb, and
    :class:`InvalidDatabaseURL` for a PostgreSQL string libpq cannot read as intended.
    """
    url = configured_database_url(database_url)
    if url is None:
        return DatabaseTarget("embedded")
    scheme = _scheme(url)
    if scheme in POSTGRES_SCHEMES:
        return DatabaseTarget("postgres", _checked_postgres(url))
    if scheme == DUCKDB_SCHEME:
        return DatabaseTarget("duckdb", url)
    raise UnsupportedDatabaseURL(scheme)


def uses_postgres(database_url: str | None = None) -> bool:
    """Whether the platform database is PostgreSQL (never raises: an unsupported scheme is ``False``,
    and fails later, where a store is opened)."""
    url = configured_database_url(database_url)
    return url is not None and _scheme(url) in POSTGRES_SCHEMES


def redact_url(url: str) -> str:
    """The URL without its password, safe for logs and metadata (read the way libpq reads it:
    :func:`aptool_assets.redaction.redact_url`)."""
    return redaction.redact_url(url)


def default_database_url() -> str:
    """The embedded warehouse: ``duckdb:///$DAGSTER_HOME/warehouse.duckdb`` (``.aptool/`` without DAGSTER_HOME)."""
    return f"duckdb:///{aptool_home() / 'warehouse.duckdb'}"


def default_inbox_path() -> Path:
    """``APTOOL_INBOX_PATH``, else ``$DAGSTER_HOME/inbox.sqlite`` (``.aptool/inbox.sqlite``)."""
    override = os.environ.get(INBOX_PATH_ENV)
    return Path(override) if override else aptool_home() / "inbox.sqlite"


def default_breaker_path() -> Path:
    """``APTOOL_BREAKER_PATH``, else ``$DAGSTER_HOME/breakers.sqlite`` (``.aptool/breakers.sqlite``)."""
    override = os.environ.get(BREAKER_PATH_ENV)
    return Path(override) if override else aptool_home() / "breakers.sqlite"
