"""Read-only client for the Aeries SIS REST API v5 (reference aeries-api.md §1-§8) and its Dagster resource.

One ``httpx.Client`` per ``AeriesClient`` so connections are reused across the many per-school calls.
Transient failures (429, 5xx, timeouts, dropped connections) go through the shared ``call_with_retry``;
a refused certificate fails at once, because retrying cannot fix it. Messages and logs name endpoint
paths and numeric IDs only: never the certificate, never a student's name.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, TypeVar

import dagster as dg
import httpx
from pydantic import Field

from aptool_assets.resilience.errors import (
    AuthError,
    MaintenanceError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    ServiceError,
    TransientError,
)
from aptool_assets.resilience.guard import ServiceGuard, call_guarded
from aptool_assets.resilience.policy import AERIES_POLICY, ResiliencePolicy
from aptool_assets.resilience.retry import AERIES_RETRY, RetryExhausted, RetrySettings
from aptool_assets.resources import GuardedResource
from aptool_assets.sources.aeries.base_url import base_url_problem

T = TypeVar("T")

log = dg.get_dagster_logger("aptool_assets.sources.aeries")

API_PREFIX = "/api/v5"
# The only areas StudentDataChanges accepts (reference §4); there is deliberately no "attendance".
DATA_CHANGE_AREAS = ("student", "contact", "program", "test", "class", "enrollment")
# A server may ask for a long pause; honour it, but never let one header stall a run for more than this.
MAX_RETRY_AFTER_S = 300.0
# A 503 asking for a longer pause than that is maintenance: the breaker opens for 30 minutes instead.
MAINTENANCE_RETRY_AFTER_S = MAX_RETRY_AFTER_S
_TRANSIENT_STATUSES = frozenset({408, 500, 502, 503, 504})
_REFUSED_STATUSES = frozenset({400, 501})
_CERT_OK = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII without spaces: anything else cannot be a header


class AeriesError(ServiceError):
    """Any Aeries failure. Messages name the endpoint path and IDs; never the certificate or names."""

    status: int | None = None  # the HTTP status, when there was a response

    @classmethod
    def with_status(cls, status: int, *args: Any, **kwargs: Any) -> AeriesError:
        exc = cls(*args, **kwargs)
        exc.status = status
        return exc


class AeriesAuthError(AeriesError, AuthError):
    """401/403: the certificate was refused or lacks the endpoint's security area. Never retried; a 401
    blocks the certificate for the auth back-off (a 403 only lacks a security area)."""

    @property
    def blocks_credential(self) -> bool:  # type: ignore[override]
        return self.status == 401

    @property
    def refusal(self) -> str:  # type: ignore[override]
        return f"HTTP {self.status}"


class AeriesConfigurationError(AeriesError, PermanentError):
    """``AERIES_BASE_URL`` or ``AERIES_CERT`` is unusable; no request is made and no retry can fix it."""


class AeriesNotFoundError(AeriesError, NotFoundError):
    """404 for a single object (school, staff, absence code)."""


class AeriesRequestRefusedError(AeriesError, PermanentError):
    """400 (or 501): the server refused the request itself, e.g. a path form this district's Aeries does not
    serve (``/students/programs`` read as a StudentID) or an enhancement it has not enabled. No retry fixes it."""


class AeriesResponseError(AeriesError, PermanentError):
    """The response is not valid JSON, has the wrong shape, or lacks a required field."""


class AeriesUnavailableError(RetryExhausted, AeriesError):
    """Every attempt failed transiently; catchable as ``RetryExhausted`` or ``AeriesError``."""


class AeriesMaintenanceError(AeriesError, MaintenanceError):
    """503 with a long Retry-After, or 503 on every attempt: Aeries is down for maintenance. The
    Aeries breaker is opened for ``maintenance_backoff_s`` (30 min) and the request is not retried."""

    reason = "HTTP 503 with a long Retry-After"


class AeriesTransientError(AeriesError, TransientError):
    """A failure a retry may fix; ``retry_after_s`` carries the server's Retry-After, if any."""


# One class per cause, so the retry warnings say what went wrong.
class AeriesRateLimitedError(AeriesTransientError, RateLimitedError):
    """429."""


class AeriesServerError(AeriesTransientError):
    """408, 500, 502, 503, 504."""


class AeriesConnectionError(AeriesTransientError):
    """Refused, reset or dropped connection, or a response cut short."""


class AeriesTimeoutError(AeriesTransientError):
    """No response within ``timeout_s``."""


def parse_retry_after(
    value: str | None, now: datetime | None = None, cap: float | None = MAX_RETRY_AFTER_S
) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or an HTTP date), capped at ``cap`` (300 s).

    Fractional seconds are accepted although RFC 9110 only allows integers (the simulator sends them).
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    seconds = max(seconds, 0.0)
    return seconds if cap is None else min(seconds, cap)


def _parse_offset_datetime(text: str) -> datetime:
    """``2021-03-03T11:13:38.9539491-08:00``: .NET writes 7 fraction digits, Python reads at most 6."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.strip())
    return datetime.fromisoformat(text)


def check_base_url(base_url: str | None) -> None:
    """Refuse an ``AERIES_BASE_URL`` the certificate must not be sent to (``base_url.base_url_problem``)."""
    problem = base_url_problem(base_url)
    if problem:
        raise AeriesConfigurationError(problem)


class AeriesClient:
    """A session against one Aeries server. Thread-safe: ``map_schools`` shares it across threads."""

    def __init__(
        self,
        base_url: str,
        cert: str,
        *,
        database_year: int | None = None,
        timeout_s: float = 30.0,
        max_concurrency: int = 4,
        page_size: int = 500,
        retry: RetrySettings = AERIES_RETRY,
        sleep: Callable[[float], None] = time.sleep,
        guard: ServiceGuard | None = None,
    ):
        """``guard``: the shared circuit breaker, credential block and dead letters (none: plain retries)."""
        check_base_url(base_url)
        if not cert or not _CERT_OK.match(cert):
            # Do not echo the value: a mistyped certificate is still a secret.
            raise AeriesConfigurationError("AERIES_CERT is empty or contains spaces or non-ASCII characters")
        if max_concurrency < 1 or page_size < 1:
            raise ValueError("max_concurrency and page_size must be at least 1")
        root = base_url.rstrip("/")
        if root.lower().endswith(API_PREFIX):  # tolerate a base URL that already includes /api/v5
            root = root[: -len(API_PREFIX)]
        self._root = root + API_PREFIX
        self._cert = cert
        self.database_year = database_year
        self._timeout_s = timeout_s
        self._max_concurrency = max_concurrency
        self._page_size = page_size
        self._retry = retry
        self._sleep = sleep
        self.guard = guard
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._count_lock = threading.Lock()
        self._server_offset: timedelta | None = None
        self.request_count = 0
        self._http = httpx.Client(
            headers={"AERIES-CERT": cert, "Accept": "application/json", "User-Agent": "aptool-assets"},
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"AeriesClient({self._root!r}, database_year={self.database_year!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AeriesClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- endpoints -------------------------------------------------------------------------------

    def system_info(self) -> dict:
        """``/systeminfo``: version, database years, server time zone; needs no security area."""
        data = self._get("/systeminfo")
        if not isinstance(data, dict):
            raise AeriesResponseError(f"GET {API_PREFIX}/systeminfo: expected a JSON object")
        return data

    def schools(self) -> list[dict]:
        """Every school, pseudo-schools (0, 999, ...) and inactive ones included."""
        return self._get_list("/schools")

    def school(self, school_code: int) -> dict:
        """One school; servers answer a one-element array or (older docs) a bare object."""
        path = f"/schools/{int(school_code)}"
        data = self._get(path)
        if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict):
            return data[0]
        if isinstance(data, dict):
            return data
        if data == []:
            raise AeriesNotFoundError(f"GET {API_PREFIX}{path}: no such school")
        raise AeriesResponseError(f"GET {API_PREFIX}{path}: expected one school")

    def students(self, school_code: int) -> list[dict]:
        """All student records at a school, inactive ones included, paged until a short page."""
        path = f"/schools/{int(school_code)}/students"
        records: list[dict] = []
        start = 1
        while True:
            end = start + self._page_size - 1
            page = self._get_list(path, {"StartingRecord": start, "EndingRecord": end})
            if len(page) > self._page_size:
                if start == 1:  # the server ignored paging and sent everything at once
                    log.warning("GET %s%s ignored paging: %d records in one response", API_PREFIX, path, len(page))
                    return page
                raise AeriesResponseError(f"GET {API_PREFIX}{path}: records {start}-{end} returned {len(page)} records")
            records.extend(page)
            if len(page) < self._page_size:
                return records
            start = end + 1

    def student(self, school_code: int, student_id: int) -> list[dict]:
        """A student's record(s) at a school: always an array, ``[]`` when there is none."""
        path = f"/schools/{int(school_code)}/students/{int(student_id)}"
        try:
            data = self._get(path)
        except AeriesNotFoundError:
            log.debug("no record for StudentID %d at school %d", int(student_id), int(school_code))
            return []
        if isinstance(data, dict):
            return [data]
        return self._require_list(path, data)

    def enrollment(self, school_code: int, school_year: int) -> list[dict]:
        """Enrollment history rows at a school for one year (start year), all students."""
        return self._get_list(f"/schools/{int(school_code)}/enrollment/0/year/{int(school_year)}")

    def calendar(self, school_code: int) -> list[dict]:
        return self._get_list(f"/schools/{int(school_code)}/calendar")

    def absence_codes(self, school_code: int) -> list[dict]:
        """The school's own code table: letters differ between schools, so never share one table."""
        return self._get_list(f"/schools/{int(school_code)}/AbsenceCodes")

    def attendance(self, school_code: int, start: date, end: date) -> list[dict]:
        """Coded student-days at a school in ``[start, end]`` (one request; attendance is not paged)."""
        if end < start:
            raise ValueError(f"attendance window ends ({end}) before it starts ({start})")
        params = {"StartDate": start.strftime("%Y%m%d"), "EndDate": end.strftime("%Y%m%d")}
        return self._get_list(f"/schools/{int(school_code)}/attendance", params)

    def attendance_history_summary(self, school_code: int, school_year: int) -> list[dict]:
        """Per-year totals; they lag the detail call until Aeries' nightly job recomputes them."""
        year = int(school_year)
        return self._get_list(f"/schools/{int(school_code)}/AttendanceHistory/summary/year/{year}-{year + 1}")

    def programs(self, school_code: int, code: str | None = None) -> list[dict]:
        """Every student's program records at a school in one request (``/students/programs``, reference §2);
        ``code`` limits them to one program code.

        Not every server serves this StudentID-less form: a refusal (404 ``AeriesNotFoundError``, 400/501
        ``AeriesRequestRefusedError``) is raised for the caller to fall back to :meth:`student_programs`,
        and is neither kept as a failed operation nor counted against the breaker (the server answered).
        """
        params = {"code": code} if code else None
        return self._get_list(f"/schools/{int(school_code)}/students/programs", params, refusal_expected=True)

    def student_programs(self, school_code: int, student_id: int, code: str | None = None) -> list[dict]:
        """One student's program records (``/students/{StudentID}/programs``); ``[]`` when there are none."""
        path = f"/schools/{int(school_code)}/students/{int(student_id)}/programs"
        try:
            data = self._get(path, {"code": code} if code else None)
        except AeriesNotFoundError:
            log.debug("no programs for StudentID %d at school %d", int(student_id), int(school_code))
            return []
        if isinstance(data, dict):
            return [data]
        return self._require_list(path, data)

    def student_data_changes(self, area: str, since: datetime) -> list[dict]:
        """Student records changed in ``area`` at or after ``since``.

        A naive ``since`` is taken as the server's local time (the feed's own convention); an aware one is
        converted with the server's current UTC offset from ``/systeminfo``, so overlap windows a little
        around daylight-saving changes.
        """
        if area not in DATA_CHANGE_AREAS:
            raise ValueError(f"unknown data-change area {area!r}; Aeries accepts {', '.join(DATA_CHANGE_AREAS)}")
        if since.tzinfo is not None:
            since = since.astimezone(timezone(self._server_utc_offset())).replace(tzinfo=None)
        path = f"/StudentDataChanges/{area}/{since.year}/{since.month}/{since.day}/{since.hour}/{since.minute}"
        return self._get_list(path)

    def map_schools(self, fn: Callable[[int], T], school_codes: Iterable[int]) -> dict[int, T]:
        """``fn(code)`` for each school with at most ``max_concurrency`` in flight; results in input order.

        The first failure cancels the schools not yet started and is re-raised.
        """
        return self._map_bounded(fn, school_codes)

    def map_students(self, fn: Callable[[int], T], student_ids: Iterable[int]) -> dict[int, T]:
        """``fn(student_id)`` for each student, bounded like :meth:`map_schools` (a per-student fallback)."""
        return self._map_bounded(fn, student_ids)

    # -- internals -------------------------------------------------------------------------------

    def _map_bounded(self, fn: Callable[[int], T], keys: Iterable[int]) -> dict[int, T]:
        codes = list(dict.fromkeys(int(key) for key in keys))
        if not codes:
            return {}
        pool = ThreadPoolExecutor(max_workers=min(self._max_concurrency, len(codes)), thread_name_prefix="aeries")
        try:
            futures = [(code, pool.submit(fn, code)) for code in codes]
            wait([future for _, future in futures], return_when=FIRST_EXCEPTION)
            for _code, future in futures:
                if future.done() and not future.cancelled() and future.exception() is not None:
                    raise future.exception()  # type: ignore[misc]
            return {code: future.result() for code, future in futures}
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _server_utc_offset(self) -> timedelta:
        if self._server_offset is None:
            info = self.system_info()
            try:
                offset = _parse_offset_datetime(str(info["CurrentDateTime"])).utcoffset()
            except (KeyError, ValueError) as exc:
                raise AeriesResponseError(
                    f"GET {API_PREFIX}/systeminfo: CurrentDateTime missing or without a UTC offset"
                ) from exc
            if offset is None:
                raise AeriesResponseError(f"GET {API_PREFIX}/systeminfo: CurrentDateTime has no UTC offset")
            self._server_offset = offset
        return self._server_offset

    def _get_list(
        self, path: str, params: dict[str, Any] | None = None, *, refusal_expected: bool = False
    ) -> list[dict]:
        return self._require_list(path, self._get(path, params, refusal_expected=refusal_expected))

    @staticmethod
    def _require_list(path: str, data: Any) -> list[dict]:
        if not isinstance(data, list):
            raise AeriesResponseError(f"GET {API_PREFIX}{path}: expected a JSON array, got {type(data).__name__}")
        if not all(isinstance(item, dict) for item in data):
            raise AeriesResponseError(f"GET {API_PREFIX}{path}: expected an array of objects")
        return data

    def _get(self, path: str, params: dict[str, Any] | None = None, *, refusal_expected: bool = False) -> Any:
        """One GET through the guard. ``refusal_expected``: a 400/501 answer is an outcome the caller handles
        (a fallback), so it is raised to the caller without being kept as a failed operation."""
        query = {key: str(value) for key, value in (params or {}).items()}
        if self.database_year is not None:
            query["DatabaseYear"] = str(self.database_year)
        full_path = API_PREFIX + path

        def send() -> Any:
            try:
                return self._send(path, full_path, query)
            except AeriesRequestRefusedError as exc:
                if refusal_expected:
                    return _Refused(exc)
                raise

        result = call_guarded(
            send,
            guard=self.guard,
            policy=self._retry,
            operation=f"GET {full_path}",
            what=f"Aeries GET {full_path}",
            context={"endpoint": full_path, "params": query},
            unavailable=AeriesUnavailableError,
            sleep=self._sleep,
            logger=log,
        )
        if isinstance(result, _Refused):
            raise result.error
        return result

    def _send(self, path: str, full_path: str, query: dict[str, str]) -> Any:
        """One request, within the concurrency bound; transport failures as the taxonomy's errors."""
        with self._slots:
            with self._count_lock:
                self.request_count += 1
            started = time.monotonic()
            try:
                response = self._http.get(self._root + path, params=query)
            except httpx.TimeoutException as exc:
                log.debug("GET %s -> timeout", full_path)
                raise AeriesTimeoutError(
                    f"GET {full_path}: no response within {self._timeout_s:g}s ({type(exc).__name__})"
                ) from exc
            except (httpx.TransportError, httpx.DecodingError) as exc:
                log.debug("GET %s -> %s", full_path, type(exc).__name__)
                raise AeriesConnectionError(f"GET {full_path}: {type(exc).__name__}: {self._scrub(str(exc))}") from exc
        log.debug("GET %s -> %d (%.0f ms)", full_path, response.status_code, (time.monotonic() - started) * 1000)
        return self._decode(full_path, response)

    def _decode(self, full_path: str, response: httpx.Response) -> Any:
        status = response.status_code
        if 200 <= status < 300:
            try:
                return json.loads(response.content)
            except ValueError:  # JSONDecodeError and UnicodeDecodeError
                raise AeriesResponseError(
                    f"GET {full_path}: response is not valid JSON (HTTP {status}, {len(response.content)} bytes)"
                ) from None
        detail = self._server_message(response)
        if status in (401, 403):
            raise AeriesAuthError.with_status(
                status,
                f"GET {full_path}: HTTP {status}{detail}; the certificate (AERIES_CERT) was refused or lacks the "
                "security area this endpoint needs",
            )
        if status == 404:
            raise AeriesNotFoundError(f"GET {full_path}: HTTP 404{detail}")
        if status == 429:
            wait_s = parse_retry_after(response.headers.get("Retry-After"))
            raise AeriesRateLimitedError(f"GET {full_path}: HTTP 429{detail}", retry_after_s=wait_s)
        if status == 503:
            wanted = parse_retry_after(response.headers.get("Retry-After"), cap=None)
            if wanted is not None and wanted > MAINTENANCE_RETRY_AFTER_S:
                raise AeriesMaintenanceError(
                    f"GET {full_path}: HTTP 503{detail} with Retry-After {wanted:.0f} s (maintenance)"
                )
            raise AeriesServerError.with_status(503, f"GET {full_path}: HTTP 503{detail}", retry_after_s=wanted)
        if status in _TRANSIENT_STATUSES:
            raise AeriesServerError.with_status(status, f"GET {full_path}: HTTP {status}{detail}")
        if status in _REFUSED_STATUSES:
            raise AeriesRequestRefusedError.with_status(status, f"GET {full_path}: HTTP {status}{detail}")
        raise AeriesError(f"GET {full_path}: HTTP {status}{detail}")

    def _server_message(self, response: httpx.Response) -> str:
        """The ``{"Message": ...}`` of an error body, shortened and scrubbed of the certificate."""
        try:
            body = json.loads(response.content)
            text = str(body.get("Message", "")) if isinstance(body, dict) else ""
        except ValueError:
            text = ""
        text = self._scrub(text.strip())[:200]
        return f" ({text})" if text else ""

    def _scrub(self, text: str) -> str:
        return text.replace(self._cert, "[AERIES-CERT]") if self._cert else text


@dataclass(frozen=True)
class _Refused:
    """A refusal the caller expects, carried through the guard as an answer (see ``AeriesClient._get``)."""

    error: AeriesRequestRefusedError


class AeriesResource(GuardedResource):
    """Connection settings for one district's Aeries server; ``client()`` opens a pooled session."""

    base_url: str | None = Field(default=None, description="AERIES_BASE_URL, e.g. https://district.aeries.net/admin")
    cert: str | None = Field(default=None, repr=False, description="AERIES_CERT (wired from dagster.EnvVar)")
    database_year: int | None = Field(default=None, description="sent as DatabaseYear (start year) when set")
    timeout_s: float = 30.0
    max_concurrency: int = 4
    page_size: int = 500
    resilience: ResiliencePolicy = AERIES_POLICY

    def is_configured(self) -> bool:
        return bool(self.base_url and self.cert)

    def credential_parts(self) -> tuple[object, ...] | None:
        return (self.base_url, self.cert) if self.is_configured() else None

    @contextmanager
    def client(self, database_year: int | None = None) -> Iterator[AeriesClient]:
        """A pooled session; ``database_year`` overrides the configured DatabaseYear (per-year partitions)."""
        if not self.is_configured():
            settings = (("AERIES_BASE_URL", self.base_url), ("AERIES_CERT", self.cert))
            missing = [name for name, value in settings if not value]
            raise AeriesError(f"Aeries is not configured: set {' and '.join(missing)}")
        assert self.base_url is not None and self.cert is not None
        guard = self.guard()
        session = AeriesClient(
            self.base_url,
            self.cert,
            database_year=database_year if database_year is not None else self.database_year,
            timeout_s=self.timeout_s,
            max_concurrency=self.max_concurrency,
            page_size=self.page_size,
            retry=self.resilience.retry(),
            guard=guard,
        )
        try:
            yield session
        finally:
            session.close()
            if guard is not None:
                guard.store.close()
