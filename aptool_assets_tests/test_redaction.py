"""Passwords never reach a message (issue #12 §6), piece by piece: connection strings read the way libpq
reads them, text scrubbed of known and unknown passwords, errors that keep their class, reprs, log
records, retry and breaker messages, alert payloads. The end-to-end proof (a real role, `aptool run`,
`aptool webhooks serve`, the Dagster event log) is test_redaction_end_to_end.py."""

from __future__ import annotations

import io
import json
import logging
import os
import random
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, quote_plus

import dagster as dg
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from aptool_assets import redaction
from aptool_assets.alerts.slack import Alert, AlertResource
from aptool_assets.events.resources import WebhookInboxResource
from aptool_assets.redaction import redact_url, scrub, scrubbed, url_passwords
from aptool_assets.resilience.breaker import BreakerOpen, BreakerSettings, CircuitBreaker
from aptool_assets.resilience.failures import retry_as_fits
from aptool_assets.resilience.retry import RetryExhausted
from aptool_assets.settings import ConfigurationError
from aptool_assets.storage.backends import database_target, uses_postgres
from aptool_assets.storage.breakers import PostgresBreakerStore, SqliteBreakerStore
from aptool_assets.storage.inbox.postgres import PostgresInbox
from aptool_assets.storage.resources import WarehouseResource
from aptool_assets.storage.warehouse.postgres import PostgresWarehouse

PW = "p#ss?w%rd with space"
ENC = quote(PW, safe="")


@pytest.fixture(autouse=True)
def _forget_remembered_secrets(monkeypatch):
    """What a test remembers stays in that test (the registry is process-wide by design)."""
    monkeypatch.setattr(redaction, "_remembered_urls", set())
    monkeypatch.setattr(redaction, "_remembered_values", set())
    monkeypatch.setattr(redaction, "_version", redaction._version + 1000)  # fresh cache keys


def spellings(password: str) -> set[str]:
    """How a password can be written in a message: raw, percent-encoded (both cases), ``+`` for spaces."""
    encoded = quote(password, safe="")
    return {password, encoded, encoded.lower(), quote_plus(password, safe=""), quote(password)}


def assert_hidden(text: str, password: str = PW) -> None:
    for spelling in spellings(password):
        assert spelling not in text, f"{spelling!r} in {text!r}"


# Each form libpq reads, with the password as libpq reads it (checked against libpq below).
GOOD_FORMS = {
    "userinfo, percent-encoded": f"postgresql://app:{ENC}@db.example:5432/ap",
    "postgres scheme": f"postgres://app:{ENC}@db.example/ap",
    "raw # and ? in userinfo": "postgresql://app:p#ss?w0rd@db.example:5432/ap",
    "query ?password=": f"postgresql://app@db.example:5432/ap?password={ENC}",
    "query &password=": f"postgresql://db.example:5432/ap?user=app&password={ENC}&sslmode=disable",
    "several hosts": f"postgresql://app:{ENC}@h1:5432,h2:5433/ap?target_session_attrs=read-write",
    "keyword, quoted": f"host=db.example port=5432 dbname=ap user=app password='{PW}'",
    "keyword, escaped quote": r"host=db.example user=app password='it\'s a secret' dbname=ap",
    "keyword, bare": "host=db.example user=app password=hunter2hunter2 dbname=ap",
}


@pytest.mark.parametrize("url", GOOD_FORMS.values(), ids=GOOD_FORMS.keys())
def test_our_reading_of_a_connection_string_agrees_with_libpq(url):
    password = conninfo_to_dict(url)["password"]
    assert password in url_passwords(url)
    shown = redact_url(url)
    assert_hidden(shown, password)
    assert "***" in shown and "db.example" in shown or "h1:5432,h2:5433" in shown
    assert_hidden(scrub(f"could not connect with {url}"), password)


def test_random_passwords_of_reserved_characters_agree_with_libpq():
    rng = random.Random(12)
    alphabet = "abcXYZ019 #?@/%:&='\"\\+;,"
    for _ in range(300):
        password = "".join(rng.choice(alphabet) for _ in range(rng.randint(4, 16)))
        for url in (
            f"postgresql://app:{quote(password, safe='')}@db:5432/ap",
            f"postgresql://app@db/ap?sslmode=disable&password={quote(password, safe='')}",
            "host=db user=app password='{}'".format(password.replace("\\", "\\\\").replace("'", "\\'")),
        ):
            assert conninfo_to_dict(url)["password"] == password
            assert password in url_passwords(url), url
            assert_hidden(redact_url(url), password)
            assert_hidden(scrub(f"error near {url} and {password!r}", url), password)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:s3cret@db.example:5432/ap", "postgresql://app:***@db.example:5432/ap"),
        (f"postgresql://app:{PW}@db:5432/ap", "postgresql://app:***@db:5432/ap"),
        ("postgresql://app:p@ss@db/ap", "postgresql://app:***@db/ap"),  # a raw @: libpq would misread it
        ("postgresql://app:p/ss@db/ap", "postgresql://app:***@db/ap"),  # a raw /: libpq would see no password
        ("postgresql://app:p?x/y@db/ap", "postgresql://app:***@db/ap"),
        (
            "postgresql://db:5432/ap?user=admin@server&password=s3cret",
            "postgresql://db:5432/ap?user=admin@server&password=***",
        ),
        (f"host=db user=app password={PW} dbname=ap", "host=db user=app password=*** dbname=ap"),
        ("host=db password='unterminated", "host=db password=***"),
        ("postgresql://postgres@127.0.0.1:5432/test", "postgresql://postgres@127.0.0.1:5432/test"),
        ("duckdb:///srv/aptool/warehouse.duckdb", "duckdb:///srv/aptool/warehouse.duckdb"),
    ],
)
def test_redact_url_shows_everything_but_the_password(url, shown):
    assert redact_url(url) == shown


def test_scrub_removes_a_known_password_in_any_spelling():
    url = f"postgresql://app:{ENC}@db:5432/ap"
    messages = [
        f"token {PW!r} rejected",
        f"in {ENC.lower()} and {quote_plus(PW, safe='')}",
        f"{url}?sslmode=require",
        'missing "=" after "with" in connection info string',  # libpq echoes a fragment of the password
        "json: " + json.dumps({"conninfo": f"password='{PW}'"}),
    ]
    for message in messages:
        clean = scrub(message, url)
        assert_hidden(clean)
        assert '"with"' not in clean and "***" in clean
    assert scrub(f"{url} failed", url) == "postgresql://app:***@db:5432/ap failed"


def test_scrub_finds_passwords_it_was_never_told_about():
    text = (
        "dsn postgresql://u:hunter22@db/ap, conninfo host=db password=hunter22 port=5432, "
        'query ?user=u&password=hunter22&x=1, quoted password=\'hunter 22\', json {"password": "hunter22"}, '
        "dict {'sslpassword': 'hunter22'}, "
        "https://bot:tok3n@hooks.example/x"
    )
    clean = scrub(text)
    assert "hunter" not in clean and "tok3n" not in clean
    assert "host=db" in clean and "port=5432" in clean and "&x=1" in clean


def test_scrub_leaves_ordinary_messages_alone():
    redaction.remember_url(f"postgresql://app:{ENC}@db:5432/ap")
    for message in (
        'connection to server at "127.0.0.1", port 5432 failed: Connection refused',
        "publish aptool.students: gave up after 4 attempts (OperationalError: server closed the connection)",
        'relation "aptool.students" does not exist',
        "",
    ):
        assert scrub(message) == message


def test_the_environment_secrets_are_scrubbed(monkeypatch):
    monkeypatch.setenv("AERIES_CERT", "c" * 8 + "0123456789abcdef" + "d" * 8)
    monkeypatch.setenv("APTOOL_ALERT_WEBHOOK_URL", "https://hooks.example/services/T000/B000/XXXXtoken")
    monkeypatch.setenv("APTOOL_DATABASE_URL", f"postgresql://app:{ENC}@db/ap")
    clean = scrub(
        f"cert {'c' * 8}0123456789abcdef{'d' * 8} posted to https://hooks.example/services/T000/B000/XXXXtoken "
        f"with {PW}"
    )
    assert "0123456789abcdef" not in clean and "XXXXtoken" not in clean
    assert_hidden(clean)


MALFORMED = {
    "raw % that is no escape": f"postgresql://app:{PW}@127.0.0.1:5432/ap",
    "the issue's token": "postgresql://app:p%zzw0rd@127.0.0.1:5432/ap",
    "raw @": "postgresql://app:p@ssw0rd@127.0.0.1:5432/ap",
    "raw /": "postgresql://app:p/ssw0rd@127.0.0.1:5432/ap",
    "raw ? and / ": "postgresql://app:p?ss/w0rd@127.0.0.1:5432/ap",
    "query token": "postgresql://app@127.0.0.1/ap?password=p%zzw0rd",
    "keyword, unquoted space": f"host=127.0.0.1 user=app password={PW}",
    "keyword, unterminated": f"host=127.0.0.1 user=app password='{PW}",
}


@pytest.mark.parametrize("url", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_url_is_a_configuration_error_that_never_quotes_it(url):
    with pytest.raises(ConfigurationError) as caught:
        database_target(url)
    message = str(caught.value)
    assert "APTOOL_DATABASE_URL is not a valid PostgreSQL connection string" in message
    for password in url_passwords(url):
        if len(password) >= 3:
            assert password not in message and password not in repr(caught.value)
    assert_hidden(message)
    for fragment in ("zzw0rd", "ssw0rd", "w0rd", "with space", '"with"'):
        assert fragment not in message
    error = caught.value  # libpq's own error, which quotes the token, is not kept as a cause
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


@pytest.mark.parametrize("url", ["mysql://app:hunter22@db/ap", "hunter22hunter22", f"{PW}"])
def test_an_unsupported_url_is_refused_without_quoting_it(url):
    with pytest.raises(ConfigurationError) as caught:
        database_target(url)
    assert "hunter22" not in str(caught.value)
    assert_hidden(str(caught.value))


def test_keyword_connection_strings_are_postgres():
    conninfo = f"host=127.0.0.1 dbname=ap user=app password='{PW}'"
    assert uses_postgres(conninfo)
    target = database_target(conninfo)
    assert target.postgres_url == conninfo
    assert_hidden(repr(target))


def test_a_driver_error_keeps_its_class_and_loses_the_password():
    url = f"postgresql://app:{PW}@127.0.0.1:5432/ap"  # malformed: libpq quotes the password back
    try:
        try:
            psycopg.connect(url)
        except psycopg.Error as exc:
            raise RuntimeError(f"while publishing via {url}") from exc
    except RuntimeError as exc:
        assert PW in str(exc.__cause__)  # the driver really does quote it
        clean = scrubbed(exc, url)
    assert clean is not None and type(clean) is RuntimeError and type(clean.__cause__) is psycopg.ProgrammingError
    assert_hidden(str(clean))
    assert_hidden(str(clean.__cause__))
    assert 'invalid percent-encoded token: "***"' in str(clean.__cause__)


def test_an_error_whose_text_cannot_be_rewritten_is_replaced():
    class Stubborn(Exception):
        def __str__(self) -> str:
            return f"connect to postgresql://app:{ENC}@db/ap failed"

    clean = scrubbed(Stubborn(), f"postgresql://app:{ENC}@db/ap")
    assert isinstance(clean, redaction.RedactedError)
    assert str(clean) == "Stubborn: connect to postgresql://app:***@db/ap failed"
    outer = RuntimeError("publish failed")
    outer.__cause__ = Stubborn()
    assert scrubbed(outer) is outer and isinstance(outer.__cause__, redaction.RedactedError)


def test_warehouse_errors_are_scrubbed_but_keep_their_class():
    """A malformed URL handed straight to the backend (bypassing database_target): the driver's error
    keeps its class, so the retry still tells it from a transient one, and loses the password."""
    url = f"postgresql://app:{PW}@127.0.0.1:5432/ap"
    with pytest.raises(psycopg.ProgrammingError) as caught:
        PostgresWarehouse(url).query("SELECT 1")
    assert_hidden(str(caught.value))
    with pytest.raises(psycopg.ProgrammingError) as caught:
        PostgresInbox(url).setup()
    assert_hidden(str(caught.value))
    with pytest.raises(psycopg.ProgrammingError) as caught:
        PostgresBreakerStore(url).read("aeries")
    assert_hidden(str(caught.value))


def test_reprs_and_descriptions_leave_the_password_out(tmp_path):
    url = f"postgresql://app:{ENC}@db.example:5432/ap"
    shown = [
        repr(PostgresWarehouse(url)),
        repr(WarehouseResource(database_url=url)),
        repr(WebhookInboxResource(database_url=url)),
        repr(AlertResource(webhook_url="https://hooks.example/T/B/XXXXtoken")),
        repr(database_target(url)),
        PostgresInbox(url).describe(),
        PostgresBreakerStore(url).describe(),
        repr(CircuitBreaker(BreakerSettings.block("aeries", 60), PostgresBreakerStore(url))),
    ]
    for text in shown:
        assert_hidden(text)
        assert "XXXXtoken" not in text
    assert shown[0] == "PostgresWarehouse('postgresql://app:***@db.example:5432/ap')"


def test_log_records_and_their_tracebacks_are_scrubbed():
    url = f"postgresql://app:{ENC}@db:5432/ap"
    redaction.remember_url(url)  # as database_target does when the process opens a store
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    redaction.scrub_logs(handler)
    log = logging.getLogger("aptool_assets_tests.redaction")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("could not reach %s", url)
        try:
            raise ValueError(f"bad {PW}")
        except ValueError:
            log.exception("failed with %r", {"password": PW})
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert "could not reach postgresql://app:***@db:5432/ap" in text and "Traceback" in text
    assert_hidden(text)


def test_retry_and_breaker_messages_are_scrubbed(tmp_path):
    url = f"postgresql://app:{ENC}@db:5432/ap"
    redaction.remember_url(url)
    exhausted = RetryExhausted("warehouse query", 4, OSError(f"connection to {url} dropped"))
    assert_hidden(str(exhausted))
    store = SqliteBreakerStore(tmp_path / "breakers.sqlite")
    try:
        breaker = CircuitBreaker(BreakerSettings.block("aeries", 600), store)
        status = breaker.open_for(600, f"maintenance announced at {url} ({PW})")
        assert status.is_open
        texts = [
            status.describe(),
            json.dumps(status.as_metadata()),
            str(BreakerOpen(status)),
            store.read("aeries")["reason"],
        ]
        for text in texts:
            assert_hidden(text)
        assert "maintenance announced at postgresql://app:***@db:5432/ap" in status.describe()
    finally:
        store.close()


class _Capture(BaseHTTPRequestHandler):
    bodies: list[bytes] = []

    def do_POST(self) -> None:
        self.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:  # quiet
        pass


@pytest.fixture
def alert_server() -> Iterator[tuple[str, list[bytes]]]:
    """A local HTTP server that keeps every POSTed alert body."""
    handler = type("Capture", (_Capture,), {"bodies": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", handler.bodies
    finally:
        server.shutdown()
        server.server_close()


def test_alert_payloads_are_scrubbed_whoever_built_them(alert_server, caplog):
    hook, bodies = alert_server
    url = f"postgresql://app:{ENC}@db:5432/ap"
    redaction.remember_url(url)
    alert = Alert(
        title=f"Run failed: could not reach {url}",
        severity="error",
        fields={"database": url, "detail": f"token {PW!r}"},
        lines=(f"• step: invalid percent-encoded token: {PW!r}",),
    )
    assert AlertResource(webhook_url=hook).send(alert)
    assert len(bodies) == 1
    posted = bodies[0].decode()
    assert "postgresql://app:***@db:5432/ap" in posted
    assert_hidden(posted)
    assert_hidden(json.dumps(json.loads(posted)))  # also once JSON escapes are undone
    with caplog.at_level(logging.WARNING, logger="aptool_assets.alerts"):
        assert not AlertResource().send(alert)  # unset: the alert goes to the log instead
    assert "Run failed" in caplog.text
    assert_hidden(caplog.text)


def test_a_step_failure_is_scrubbed_and_a_configuration_error_is_not_retried():
    """``retry_as_fits`` is where a source asset's error becomes Dagster's step failure: its description and
    its causes are scrubbed; a ConfigurationError ends the step at once despite the RetryPolicy."""
    url = f"postgresql://app:{ENC}@db:5432/ap"
    calls = {"config": 0, "driver": 0}

    @dg.asset(retry_policy=dg.RetryPolicy(max_retries=2, delay=0))
    @retry_as_fits
    def misconfigured() -> None:
        calls["config"] += 1
        raise ConfigurationError(f"APTOOL_DATABASE_URL {url} is wrong ({PW})")

    @dg.asset
    @retry_as_fits
    def driver_error() -> None:
        calls["driver"] += 1
        try:
            raise psycopg.ProgrammingError(f'invalid percent-encoded token: "{PW}"')
        except psycopg.Error as exc:
            raise RuntimeError(f"publish via {url} failed") from exc

    redaction.remember_url(url)
    with dg.DagsterInstance.ephemeral() as instance:
        for asset in (misconfigured, driver_error):
            result = dg.materialize([asset], instance=instance, raise_on_error=False)
            assert not result.success
            failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
            assert len(failures) == 1
            error = failures[0].event_specific_data.error
            assert "postgresql://app:***@db:5432/ap" in error.to_string()
            assert_hidden(error.to_string())
            assert_hidden(repr(failures[0].event_specific_data))
    assert calls == {"config": 1, "driver": 1}


BROKEN_COMMAND = """
import sys
from urllib.parse import quote
from aptool_assets import cli

def broken(args):
    url = f"postgresql://app:{quote(sys.argv[1], safe='')}@db:5432/ap"
    raise RuntimeError(f"could not open {url}: token {sys.argv[1]!r}")

cli.cmd_breakers = broken
sys.exit(cli.main(sys.argv[2:]))
"""


@pytest.mark.parametrize("debug", [False, True])
def test_the_command_line_prints_one_scrubbed_line_and_a_scrubbed_traceback_with_debug(debug):
    """An error no command handled (main's last resort), as a subprocess: main sets up logging."""
    env = {**os.environ, "APTOOL_DATABASE_URL": f"postgresql://app:{ENC}@db:5432/ap"}
    argv = [sys.executable, "-c", BROKEN_COMMAND, PW, *(["--debug"] if debug else []), "breakers"]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("aptool: error: RuntimeError: could not open postgresql://app:***@db:5432/ap")
    if debug:
        assert "Traceback (most recent call last)" in proc.stderr and "in broken" in proc.stderr
    else:
        assert proc.stderr.count("\n") == 1
    assert_hidden(proc.stdout + proc.stderr)
