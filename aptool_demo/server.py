"""The Aeries simulator's HTTP server: real HTTP on 127.0.0.1, so clients are tested without mocks.

A threaded keep-alive server in a background thread answers like IIS/ASP.NET (case-insensitive paths,
JSON dates without zones, ``{"Message": ...}`` errors), applies the ``FaultPlan`` before routing, and
logs every request (method, path, status, query, Accept header; never the certificate) for tests.

Each school year lives in its own Aeries database (reference §1, DatabaseYear): the server holds the
default (current) year's district and, optionally, other years' (``past_years``). A request's
``DatabaseYear=YYYY`` (start year; the query key is matched case-insensitively) is answered from that
year's district when the server holds it, else, silently, from the default year's: never an error.
``systeminfo`` lists every year held in ``AvailableDatabaseYears``, newest first. One request log and one
fault plan cover every year.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Mapping
from datetime import date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from aptool_demo.faults import FaultPlan
from aptool_demo.routes import Api
from aptool_demo.sim_district import SimDistrict

log = logging.getLogger(__name__)

DEMO_CERT = "5a1e7c0ffee0a9b8c7d6e5f4a3b2c1d0"  # 32 characters, like a district-issued certificate
BASE_PATH = "/aeries"
_INVALID_JSON = b'[{"StudentID":99400001,"AttendanceDays":[{"CalendarDate":"2025-'


def _json_default(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S")
    if isinstance(value, date):
        return value.strftime("%Y-%m-%dT00:00:00")
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, default=_json_default, separators=(",", ":")).encode("utf-8")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, sim: RunningSimulator):
        self.sim = sim
        self.open_connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request, client_address):
        with self.connections_lock:
            self.open_connections.add(request)
        super().process_request(request, client_address)

    def handle_error(self, request, client_address):
        """A client that timed out or hung up is normal here; anything else goes to the log, not stderr."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            log.exception("Aeries simulator failed to answer a request")

    def shutdown_request(self, request):
        with self.connections_lock:
            self.open_connections.discard(request)
        super().shutdown_request(request)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the client's connection reuse is exercised
    server_version = "Microsoft-IIS/10.0"
    sys_version = ""
    timeout = 30  # close idle keep-alive connections eventually

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle + delayed ACK add ~40 ms each.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self.server.sim._serve(self)  # type: ignore[attr-defined]

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET  # noqa: N815 - http.server's method names

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the requests list is the log
        pass


class RunningSimulator:
    """A simulator serving on 127.0.0.1 in a background thread; ``stop()`` or use it as a context manager.

    ``requests`` logs (method, path, status) per request, status 0 when the connection was dropped;
    ``request_meta`` holds, at the same index, the query parameters, the Accept header (never the cert) and
    ``at``, when the request arrived (epoch seconds), and ``database_year``, the school year whose district
    answered (absent when a fault refused the request before routing).
    ``max_in_flight`` is the most requests the server was handling at once.

    ``district`` is the default (current) year's; ``past_years`` the other years held, by start year.
    """

    def __init__(
        self,
        district: SimDistrict,
        cert: str,
        faults: FaultPlan,
        past_years: Mapping[int, SimDistrict] | None = None,
    ):
        self.district = district
        self.past_years = dict(sorted((past_years or {}).items(), reverse=True))
        for year, held in self.past_years.items():
            if held.school_year != year:
                raise ValueError(f"past_years[{year}] holds school year {held.school_year}")
            if year == district.school_year:
                raise ValueError(f"school year {year} is the default district's; pass it once")
        self.cert = cert
        self.faults = faults
        self.requests: list[tuple[str, str, int]] = []
        self.request_meta: list[dict[str, Any]] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._stats_lock = threading.Lock()
        self._stopping = threading.Event()
        years = [district.school_year, *self.past_years]
        # Every year's database reports the server's one clock: the default district's (tests may freeze it).
        self._apis = {
            held.school_year: Api(held, cert, faults, available_years=years, clock=district.now)
            for held in [district, *self.past_years.values()]
        }
        self._api = self._apis[district.school_year]
        self._server = _Server(self)
        self.port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}{BASE_PATH}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="aeries-simulator", daemon=True
        )
        self._thread.start()

    def wait_idle(self, timeout_s: float = 10.0) -> None:
        """Until no request is being handled (a client that timed out leaves its request running here)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._stats_lock:
                if self._in_flight == 0:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"Aeries simulator still handling {self._in_flight} request(s) after {timeout_s:g}s")
            time.sleep(0.01)

    @property
    def districts(self) -> dict[int, SimDistrict]:
        """Every school year's district the server holds, by start year, newest first."""
        return {year: api.district for year, api in sorted(self._apis.items(), reverse=True)}

    def district_for(self, database_year: object) -> SimDistrict:
        """The district a request with ``DatabaseYear=database_year`` is answered from (the default one when
        the year is missing, invalid or not held, as Aeries does)."""
        return self._api_for(database_year).district

    def _api_for(self, database_year: object) -> Api:
        try:
            year = int(str(database_year).strip())
        except ValueError:
            return self._api
        return self._apis.get(year, self._api)

    def reset_stats(self) -> None:
        with self._stats_lock:
            self.requests.clear()
            self.request_meta.clear()
            self.max_in_flight = 0

    def stop(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._server.shutdown()
        with self._server.connections_lock:
            for conn in list(self._server.open_connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> RunningSimulator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- serving (on the server's request threads) -----------------------------------------------

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        if handler.command != "GET":  # drain a request body so the connection stays usable
            length = int(handler.headers.get("Content-Length") or 0)
            if length:
                handler.rfile.read(length)
        exchange = _Exchange(self, handler)
        with self._stats_lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            self._answer(exchange)
        finally:
            exchange.leave()

    def _answer(self, exchange: _Exchange) -> None:
        """Apply the next fault, if any, else route the request; exactly one reply either way."""
        fault, latency = self.faults.take(exchange.path)
        if latency:
            self._stopping.wait(latency)
        refusal = self._refusal(fault)
        if refusal is not None:
            exchange.reply(*refusal)
            return
        try:
            status, payload = self._route(exchange)
            body = _dumps(payload)
        except Exception:
            log.exception("Aeries simulator failed on %s %s", exchange.method, exchange.path)
            status, body = 500, _dumps({"Message": "An error has occurred."})
        if fault == "invalid_json":
            status, body = 200, _INVALID_JSON
        exchange.reply(status, body, truncate=fault == "truncate")

    def _refusal(self, fault: str | None) -> tuple[int, bytes | None, list] | None:
        """The reply of a fault that replaces the answer (a dropped connection has no body), or None."""
        if fault == "drop":
            return 0, None, []
        if fault == "rate_limit":
            seconds = self.faults.retry_after_s
            retry_after = str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"
            return 429, _dumps({"Message": "Too many requests"}), [("Retry-After", retry_after)]
        if fault == "unavailable":
            return 503, _dumps({"Message": "The service is unavailable."}), []
        return None

    def _route(self, exchange: _Exchange) -> tuple[int, Any]:
        prefix = f"{BASE_PATH}/api/v5/"
        path = exchange.path
        if not path.lower().startswith(prefix):
            return 404, {"Message": "Not Found"}
        rel = path[len(prefix) :].strip("/")
        query = {k.lower(): v for k, v in parse_qsl(exchange.raw_query, keep_blank_values=True)}
        uri = f"{self.base_url}{path[len(BASE_PATH) :]}"
        api = self._api_for(query.get("databaseyear"))
        exchange.meta["database_year"] = api.district.school_year
        return api.handle(exchange.method, rel, query, exchange.handler.headers, uri)

    def _log_request(self, entry: tuple[str, str, int], meta: dict[str, Any]) -> None:
        with self._stats_lock:
            self.requests.append(entry)
            self.request_meta.append(meta)

    def _leave(self, exchange: _Exchange) -> None:
        """Count ``exchange`` out of flight, once."""
        with self._stats_lock:
            if not exchange.answered:
                exchange.answered = True
                self._in_flight -= 1


class _Exchange:
    """One request being answered: its method, path and query, and how its single reply goes out."""

    def __init__(self, sim: RunningSimulator, handler: BaseHTTPRequestHandler):
        self.sim, self.handler = sim, handler
        self.method = handler.command
        split = urlsplit(handler.path)
        self.path = unquote(split.path)
        self.raw_query = split.query
        self.meta = {
            "query": dict(parse_qsl(split.query, keep_blank_values=True)),
            "accept": handler.headers.get("Accept"),
            "at": time.time(),  # when it arrived (epoch seconds): benchmarks relate requests to breaker times
        }
        self.answered = False  # out of flight (guarded by the simulator's stats lock)

    def leave(self) -> None:
        self.sim._leave(self)

    def reply(self, status: int, body: bytes | None, headers: list | None = None, *, truncate: bool = False) -> None:
        """Log the request, then send ``body`` (or drop the connection when it is None)."""
        self.sim._log_request((self.method, self.path, status if body is not None else 0), self.meta)
        # Out of flight before the first byte: a client that has its answer may send the next request
        # at once, and must not be counted as having two in flight with this thread not yet rescheduled.
        self.leave()
        if body is None:
            _drop(self.handler)
            return
        _send_head(self.handler, status, len(body), headers or [])
        if self.method == "HEAD":
            return
        if truncate:
            self.handler.wfile.write(body[: len(body) // 2])
            _drop(self.handler)
        else:
            self.handler.wfile.write(body)


def _send_head(handler: BaseHTTPRequestHandler, status: int, length: int, headers: list) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json; charset=utf-8")
    handler.send_header("Content-Length", str(length))
    for name, value in headers:
        handler.send_header(name, value)
    handler.end_headers()


def _drop(handler: BaseHTTPRequestHandler) -> None:
    handler.close_connection = True
    try:
        handler.wfile.flush()
        handler.connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def start_simulator(
    district: SimDistrict,
    *,
    past_years: Mapping[int, SimDistrict] | None = None,
    cert: str = DEMO_CERT,
    faults: FaultPlan | None = None,
) -> RunningSimulator:
    """Serve ``district`` on a free loopback port: ``<base_url>/api/v5/...``.

    ``district`` is the default (current) database year; ``past_years`` (start year → district, e.g. from
    ``build.build_past_sim_districts``) are the other years held, answered for ``DatabaseYear=<year>``.
    """
    return RunningSimulator(district, cert, faults or FaultPlan(), past_years)
