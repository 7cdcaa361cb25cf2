"""Secrets out of every message: a database URL shown without its password, and any text (an error, a
log line, an alert, a traceback) scrubbed of the secrets the process knows.

A PostgreSQL connection string is read the way libpq reads it, because a naive URL parser splits it
wrongly: libpq takes ``postgresql://`` or ``postgres://`` URIs whose user information ends at the first
``@`` before any ``/`` (so ``#``, ``?`` and spaces may stand in a password, unencoded), percent-encoded
parts, ``?password=…``/``&password=…`` in the query, and ``key=value`` strings
(``host=… password='…'``). A string libpq would misread (a raw ``@`` or ``/`` in the password) is
redacted conservatively: everything up to the last ``@`` counts as user information.

:func:`scrub` removes, from any text:

* every known database URL (replaced by its :func:`redact_url` form) and every known password in
  any spelling: raw, percent-encoded in either case, ``+`` for a space, backslash-escaped;
* a quoted fragment of a known password (libpq quotes the token it choked on: ``missing "=" after
  "with"``);
* passwords it was never told about, where their place gives them away: ``scheme://user:…@``,
  ``password=…`` (conninfo or query), ``"password": "…"`` (JSON, or a Python dict's repr).

The secrets it knows: URLs and values registered with :func:`remember_url`/:func:`remember` (the
storage openers register the database URL), the secret environment variables of contract §2, and any
URL passed to the call. Secrets shorter than :data:`MIN_SECRET` characters are only removed where
their place gives them away: scrubbing every "ab" would destroy the message and protect nothing.

Plain functions, no imports from the package: every layer may use them.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import threading
from collections.abc import Iterator
from urllib.parse import unquote

REDACTED = "***"
MIN_SECRET = 4
"""Known secrets shorter than this are removed only where their place gives them away."""

URL_VARIABLES = ("APTOOL_DATABASE_URL",)
"""Environment variables holding a connection string whose password is secret (contract §2)."""
SECRET_VARIABLES = (
    "AERIES_CERT",
    "IREADY_SFTP_PASSWORD",
    "APTOOL_WEBHOOK_SECRET",
    "APTOOL_WEBHOOK_SECRET_PREVIOUS",
    "APTOOL_ALERT_WEBHOOK_URL",
)
"""Environment variables whose whole value is secret (contract §2; the alert URL embeds a token)."""

_SCHEME = re.compile(r"\s*([A-Za-z][A-Za-z0-9+.\-]*://)")
_KEYWORD_START = re.compile(r"\s*[A-Za-z_][A-Za-z0-9_]*\s*=")
_PASSWORD_KEY = r"(?<![A-Za-z0-9_])(?:ssl)?password"
# A keyword value: quoted (backslash escapes; an unterminated quote runs to the end) or a bare word.
_KEYWORD_PASSWORD = re.compile(rf"(?i)((?<![?&]){_PASSWORD_KEY}\s*=\s*)('(?:\\.|[^'\\])*'?|[^\s'\"]*)")
# The same, but a malformed bare value runs on to the next ``key=`` (libpq would split it at a space).
_KEYWORD_PASSWORD_LOOSE = re.compile(rf"(?i){_PASSWORD_KEY}\s*=\s*(.*?)(?=\s+[A-Za-z_]\w*\s*=|\s*$)")
_QUERY_PASSWORD = re.compile(rf"(?i)([?&]{_PASSWORD_KEY}=)([^&\s]+)")
# A JSON object's or a Python dict's "password": "…" ('password': '…').
_MAPPING_PASSWORD = re.compile(rf"""(?i)(["']{_PASSWORD_KEY}["']\s*:\s*)("(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*')""")
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s:/@'\"]*:)([^\s'\"]*)@")
_QUERY_VALUE_END = re.compile(r"[?&][A-Za-z_]\w*=[^/?&]*$")  # text ending inside a query value
_QUOTED = re.compile(r"\"([^\"\n]{0,200})\"|'([^'\n]{0,200})'")

_lock = threading.Lock()
_remembered_urls: set[str] = set()
_remembered_values: set[str] = set()
_version = 0  # bumped by every remember, so the cached sets of known secrets follow


# --- reading a connection string the way libpq does ----------------------------------------------


def is_keyword_conninfo(text: str) -> bool:
    """Whether ``text`` is a libpq ``key=value`` connection string (``host=… dbname=…``)."""
    return _SCHEME.match(text) is None and _KEYWORD_START.match(text) is not None


def _libpq_userinfo(body: str) -> tuple[str | None, str]:
    """libpq's reading: the user information ends at the first ``@`` before any ``/``."""
    first = next((i for i, ch in enumerate(body) if ch in "@/"), -1)
    if first >= 0 and body[first] == "@":
        return body[:first], body[first + 1 :]
    return None, body


def _split_userinfo(body: str) -> tuple[str | None, str]:
    """``user[:password]`` and the rest of a URI after ``scheme://``.

    libpq's reading (:func:`_libpq_userinfo`), unless it leaves an ``@`` where none can be: in the host
    or the database name, or (no user information read) outside a query value. Then the password held a
    raw ``@`` or ``/``, and everything up to the last ``@`` is user information (conservative: more is
    hidden, never less)."""
    userinfo, rest = _libpq_userinfo(body)
    last = body.rfind("@")
    if userinfo is not None and "@" not in rest.split("?", 1)[0]:
        return userinfo, rest
    if userinfo is None and (last < 0 or _QUERY_VALUE_END.search(body[:last])):
        return None, body
    return body[:last], body[last + 1 :]


def _uri_passwords(url: str) -> set[str]:
    """The password spellings a URI holds: in the user information (libpq's reading and the
    conservative one) and in the query."""
    body = url[_SCHEME.match(url).end() :]  # type: ignore[union-attr]
    found = set()
    for userinfo in (_libpq_userinfo(body)[0], _split_userinfo(body)[0]):
        if userinfo and ":" in userinfo:
            found.add(userinfo.split(":", 1)[1])
    found.update(m.group(2) for m in _QUERY_PASSWORD.finditer(body))
    return {p for p in found if p}


def _keyword_passwords(conninfo: str) -> set[str]:
    found = set()
    for m in _KEYWORD_PASSWORD.finditer(conninfo):
        value = m.group(2)
        if value.startswith("'"):
            value = re.sub(r"\\(.)", r"\1", value[1:-1] if len(value) > 1 and value.endswith("'") else value[1:])
        found.add(value)
    found.update(m.group(1).strip("'") for m in _KEYWORD_PASSWORD_LOOSE.finditer(conninfo))
    return {p for p in found if p}


def url_passwords(url: str) -> set[str]:
    """Every spelling of the password(s) in a connection string, as written and percent-decoded."""
    if _SCHEME.match(url):
        raw = _uri_passwords(url)
    elif is_keyword_conninfo(url):
        raw = _keyword_passwords(url)
    else:
        return set()
    return raw | {unquote(p) for p in raw}


def redact_url(url: str) -> str:
    """The connection string without its password, safe for logs, messages and metadata.

    ``postgresql://app:***@db:5432/ap``, ``…/ap?sslmode=require&password=***``,
    ``host=db password=*** dbname=ap``; a string with no password comes back unchanged."""
    if is_keyword_conninfo(url):
        strict = _KEYWORD_PASSWORD.sub(lambda m: m.group(1) + REDACTED, url)
        return _KEYWORD_PASSWORD_LOOSE.sub(lambda m: m.group(0)[: m.start(1) - m.start(0)] + REDACTED, strict)
    m = _SCHEME.match(url)
    if m is None:
        return url
    userinfo, rest = _split_userinfo(url[m.end() :])
    rest = _QUERY_PASSWORD.sub(lambda q: q.group(1) + REDACTED, rest)
    if userinfo is None:
        return url[: m.end()] + rest
    user, has_password, _ = userinfo.partition(":")
    return f"{url[: m.end()]}{user}{':' + REDACTED if has_password else ''}@{rest}"


# --- what the process knows ----------------------------------------------------------------------


def remember_url(url: str | None) -> None:
    """Scrub this connection string's password from every later message of the process."""
    global _version
    if url and url not in _remembered_urls and url_passwords(url):
        with _lock:
            _remembered_urls.add(url)
            _version += 1


def remember(secret: str | None) -> None:
    """Scrub this value (a token, a password, a webhook URL) from every later message of the process."""
    global _version
    if secret and secret.strip() and secret.strip() not in _remembered_values:
        with _lock:
            _remembered_values.add(secret.strip())
            _version += 1


def _known(urls: tuple[str | None, ...]) -> tuple[frozenset[str], frozenset[str]]:
    """The connection strings and the plain secrets known now (cached: a log line must stay cheap)."""
    env = tuple(os.environ.get(name) for name in (*URL_VARIABLES, *SECRET_VARIABLES))
    return _known_sets(urls, env, _version)


@functools.lru_cache(maxsize=64)
def _known_sets(
    urls: tuple[str | None, ...], env: tuple[str | None, ...], version: int
) -> tuple[frozenset[str], frozenset[str]]:
    env_urls, env_values = env[: len(URL_VARIABLES)], env[len(URL_VARIABLES) :]
    with _lock:
        known_urls = {u for u in (*urls, *env_urls, *_remembered_urls) if u}
        values = {v.strip() for v in (*env_values, *_remembered_values) if v and v.strip()}
    return frozenset(known_urls), frozenset(values)


# --- scrubbing -----------------------------------------------------------------------------------


def _spelling(secret: str) -> str:
    """A pattern for ``secret`` with any character percent-encoded (either case), a space as ``+``,
    and quotes or backslashes escaped."""
    parts = []
    for ch in secret:
        options = [re.escape(ch)] + ["".join(f"%(?i:{b:02x})" for b in ch.encode())]
        if ch == " ":
            options.append(r"\+")
        if ch in "\\\"'":
            options.append(re.escape("\\" + ch))
        parts.append(f"(?:{'|'.join(options)})")
    return "".join(parts)


@functools.lru_cache(maxsize=64)
def _compiled(urls: frozenset[str], values: frozenset[str]) -> tuple[re.Pattern | None, frozenset[str], frozenset[str]]:
    """One pattern for every long-enough secret (longest first); those secrets, and every 3-character
    piece of them (a quoted fragment can only be part of a secret if it starts with one)."""
    secrets = set(values)
    for url in urls:
        secrets |= url_passwords(url)
    long_enough = sorted((s for s in secrets if len(s) >= MIN_SECRET), key=len, reverse=True)
    pattern = re.compile("|".join(_spelling(s) for s in long_enough)) if long_enough else None
    pieces = frozenset(s[i : i + 3] for s in long_enough for i in range(len(s) - 2))
    return pattern, frozenset(long_enough), pieces


def _quoted(m: re.Match, secrets: frozenset[str], pieces: frozenset[str]) -> str:
    """A quoted fragment of a known secret (libpq quotes the token it choked on) becomes ``"***"``."""
    fragment, quote = m.group(1) if m.group(1) is not None else m.group(2), m.group(0)[0]
    decoded = unquote(fragment) if "%" in fragment else fragment
    if len(fragment) < 3 or (fragment[:3] not in pieces and decoded[:3] not in pieces):
        return m.group(0)
    if any(fragment in s or decoded in s for s in secrets):
        return quote + REDACTED + quote
    return m.group(0)


def scrub(text: str, *urls: str | None) -> str:
    """``text`` without any secret: the known ones (``urls``, the remembered ones, the environment's)
    in any spelling, and any password its place gives away (module docstring)."""
    if not text:
        return text
    known_urls, values = _known(tuple(urls))
    for url in sorted(known_urls, key=len, reverse=True):
        if url in text:
            text = text.replace(url, redact_url(url))
    pattern, secrets, pieces = _compiled(known_urls, values)
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    if pieces and ('"' in text or "'" in text):
        text = _QUOTED.sub(lambda m: _quoted(m, secrets, pieces), text)
    if "://" in text:
        text = _USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", text)
    if "password" in text.lower():
        text = _QUERY_PASSWORD.sub(lambda m: m.group(1) + REDACTED, text)
        text = _KEYWORD_PASSWORD.sub(lambda m: m.group(1) + REDACTED if m.group(2) != REDACTED else m.group(0), text)
        text = _MAPPING_PASSWORD.sub(lambda m: m.group(1) + m.group(2)[0] + REDACTED + m.group(2)[0], text)
    return text


def redact_quoted(text: str) -> str:
    """Every quoted token in ``text`` replaced by ``"***"``: for a driver's complaint about a connection
    string, whose quoted tokens are all pieces of that string."""
    return _QUOTED.sub(lambda m: m.group(0)[0] + REDACTED + m.group(0)[0], text)


class RedactedError(RuntimeError):
    """Stands in for an error whose message could not be scrubbed in place; names its class."""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 20:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)


def _scrub_in_place(exc: BaseException, urls: tuple[str | None, ...]) -> bool:
    """Scrub ``exc``'s own text (args and notes); whether its message is now clean."""
    with contextlib.suppress(Exception):  # an exception class may refuse new args: then it is not clean
        exc.args = tuple(scrub(a, *urls) if isinstance(a, str) else a for a in exc.args)
        notes = getattr(exc, "__notes__", None)
        if notes:
            exc.__notes__ = [scrub(n, *urls) if isinstance(n, str) else n for n in notes]
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - an unprintable error shows nothing at all
        return True
    return scrub(text, *urls) == text


def scrubbed(exc: BaseException, *urls: str | None) -> BaseException:
    """``exc`` with its message and its causes' scrubbed in place (same classes, so callers still tell
    errors apart); a cause that cannot be scrubbed is replaced by a :class:`RedactedError`. Returns
    ``exc``, or a :class:`RedactedError` when ``exc`` itself could not be scrubbed."""
    links = list(_chain(exc))
    for parent, link in zip([None, *links], links, strict=False):
        if _scrub_in_place(link, urls):
            continue
        stand_in = RedactedError(f"{type(link).__name__}: {scrub(str(link), *urls)}")
        if parent is None:
            return stand_in
        parent.__cause__, parent.__suppress_context__ = stand_in, True
        break
    return exc


@contextlib.contextmanager
def scrubbing(*urls: str | None) -> Iterator[None]:
    """Any exception leaving the block is scrubbed (:func:`scrubbed`) and re-raised."""
    try:
        yield
    except Exception as exc:
        clean = scrubbed(exc, *urls)
        if clean is exc:
            raise
        raise clean from None


class ScrubFilter(logging.Filter):
    """A logging filter that scrubs each record's message, traceback and stack before any handler
    formats it (install it on handlers, or on a library's logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        with contextlib.suppress(Exception):  # a record that cannot be formatted is the handler's business
            record.msg, record.args = scrub(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


def scrub_logs(*targets: logging.Logger | logging.Handler) -> None:
    """Install a :class:`ScrubFilter` on each logger or handler (once)."""
    for target in targets:
        if not any(isinstance(f, ScrubFilter) for f in target.filters):
            target.addFilter(ScrubFilter())
