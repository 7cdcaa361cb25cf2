"""``AERIES_BASE_URL`` never sends the certificate in clear text: plain ``http://`` is refused unless the host is
this machine (the simulator); ``https://`` is always accepted. Checked against a real HTTP server listening on
every address of this machine, so a refused URL provably sends nothing."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator

import dagster as dg
import pytest

from aptool_assets import definitions
from aptool_assets.resilience.errors import PermanentError
from aptool_assets.resilience.policy import AERIES_POLICY
from aptool_assets.sources.aeries.assets import SCHOOLS_KEY
from aptool_assets.sources.aeries.client import AeriesClient, AeriesConfigurationError, AeriesResource, check_base_url
from aptool_assets.storage.resources import WarehouseResource
from aptool_assets_tests.conftest import with_default_resources

CERT = "0123456789abcdef0123456789ABCDEF"


class _Recorder(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("AERIES-CERT")))  # type: ignore[attr-defined]
        body = json.dumps({"DatabaseYear": "2025-2026"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def listener() -> Iterator[http.server.ThreadingHTTPServer]:
    """An HTTP server on every IPv4 address of this machine; ``seen`` records each request and its cert."""
    server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), _Recorder)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _non_loopback_address() -> str:
    """An IPv4 address of this machine that is not loopback (no packet is sent to find it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.123", 9))
        except OSError:
            pytest.skip("this machine has no non-loopback IPv4 address")
        address = s.getsockname()[0]
    if address.startswith("127."):
        pytest.skip("this machine has no non-loopback IPv4 address")
    return address


@pytest.mark.parametrize(
    "url",
    [
        "http://district.aeries.net/admin",
        "HTTP://district.aeries.net/admin",
        "http://10.1.2.3:8080/aeries",
        "http://127.0.0.1.nip.io/aeries",  # a name that merely starts like loopback
        "http://localhost.example.com/aeries",
        "http://127.0.0.1@district.aeries.net/aeries",  # user info, the host is the remote one
        "http://[fd00::2]:5000/aeries",
    ],
)
def test_plain_http_to_another_host_is_refused(url: str) -> None:
    with pytest.raises(AeriesConfigurationError) as caught:
        AeriesClient(url, CERT)
    message = str(caught.value)
    assert "AERIES_BASE_URL" in message and "https://" in message and "clear text" in message
    assert CERT not in message
    assert isinstance(caught.value, PermanentError), "a step retry cannot fix the configuration"


@pytest.mark.parametrize(
    "url",
    [
        "https://district.aeries.net/admin",
        "HTTPS://district.aeries.net:8443/admin/",
        "https://10.1.2.3/aeries",
        "http://127.0.0.1:8080/aeries",
        "http://127.0.0.2/aeries",  # all of 127/8 is this machine
        "http://localhost:1234",
        "http://LOCALHOST/aeries",
        "http://[::1]:5000/aeries",
    ],
)
def test_https_anywhere_and_http_to_this_machine_are_accepted(url: str) -> None:
    check_base_url(url)
    AeriesClient(url, CERT).close()


@pytest.mark.parametrize(
    "url", ["", "ftp://district.aeries.net", "district.aeries.net/admin", "https://", "http://:80/x"]
)
def test_malformed_base_url_names_the_variable(url: str) -> None:
    with pytest.raises(AeriesConfigurationError, match="AERIES_BASE_URL"):
        AeriesClient(url, CERT)


def test_refused_url_sends_nothing_while_loopback_reaches_the_same_server(listener) -> None:
    port = listener.server_address[1]
    with AeriesClient(f"http://127.0.0.1:{port}/aeries", CERT) as client:  # the listener works
        client.system_info()
    assert listener.seen == [("/aeries/api/v5/systeminfo", CERT)]

    address = _non_loopback_address()
    with pytest.raises(AeriesConfigurationError, match=f"plain http:// to {address}"):
        AeriesClient(f"http://{address}:{port}/aeries", CERT)
    resource = AeriesResource(base_url=f"http://{address}:{port}/aeries", cert=CERT)
    with pytest.raises(AeriesConfigurationError), resource.client():
        pass
    assert len(listener.seen) == 1, "the certificate never left for the non-loopback address"


def test_an_aeries_step_with_a_clear_text_url_fails_once_without_retries(tmp_path, listener) -> None:
    address = _non_loopback_address()
    resources = with_default_resources(
        aeries=AeriesResource(
            base_url=f"http://{address}:{listener.server_address[1]}/aeries",
            cert=CERT,
            resilience=AERIES_POLICY.but(retry_base_delay_s=0.01),
        ),
        warehouse=WarehouseResource(database_url=f"duckdb:///{tmp_path / 'wh.duckdb'}"),
    )
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            assets=[*definitions.ASSETS, *definitions.ASSET_CHECKS],
            selection=dg.AssetSelection.assets(SCHOOLS_KEY),
            resources=resources,
            instance=instance,
            raise_on_error=False,
        )
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert len(failures) == 1 and "clear text" in failures[0].event_specific_data.error.message
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert listener.seen == []
