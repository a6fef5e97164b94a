"""The HTTP endpoints over a real socket: routing, negotiation, health and readiness."""

from __future__ import annotations

import gzip
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry

from exporter.collector import BsgCollector
from exporter.stats import ExporterState, TargetStatus
from exporter.store import MEMORY, StateStore
from exporter.tracker import TargetTracker
from exporter.web import WebServer, parse_listen_address


@pytest.fixture
def served() -> Iterator[tuple[ExporterState, str]]:
    """A web server over a one-target state that has not polled yet."""
    tracker = TargetTracker(
        StateStore(MEMORY), "otp", 60, delivery_latency_buckets=(1.0,), send_delay_buckets=(1.0,)
    )
    state = ExporterState(
        targets={"otp": TargetStatus(snapshot=tracker.snapshot(0))}, version="9.9", test_key=True
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BsgCollector(state))
    web = WebServer("127.0.0.1:0", registry, state, telemetry_path="/probe")
    web.start()
    try:
        yield state, f"http://127.0.0.1:{web.port}"
    finally:
        web.stop()


def test_metrics_at_the_telemetry_path(served: tuple[ExporterState, str]) -> None:
    _, url = served
    response = httpx.get(f"{url}/probe")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'bsg_up{target="otp"} 0.0' in response.text
    assert httpx.get(f"{url}/metrics").status_code == 404


def test_openmetrics_and_gzip_when_asked(served: tuple[ExporterState, str]) -> None:
    _, url = served
    headers = {"Accept": "application/openmetrics-text; version=1.0.0", "Accept-Encoding": "gzip"}
    with httpx.Client() as client:
        raw = client.send(client.build_request("GET", f"{url}/probe", headers=headers), stream=True)
        assert raw.headers.get("content-encoding") == "gzip"
        body = gzip.decompress(b"".join(raw.iter_raw()))
    assert raw.headers["content-type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


def test_health_and_readiness(served: tuple[ExporterState, str]) -> None:
    state, url = served
    assert httpx.get(f"{url}/-/healthy").status_code == 200
    assert httpx.get(f"{url}/-/ready").status_code == 503
    state.targets["otp"].polled_once = True
    assert httpx.get(f"{url}/-/ready").status_code == 200


def test_landing_page_links_metrics_and_warns_of_a_test_key(
    served: tuple[ExporterState, str],
) -> None:
    _, url = served
    page = httpx.get(f"{url}/")
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<a href="/probe">' in page.text
    assert "test_" in page.text and "otp" in page.text and "never" in page.text


def test_unknown_paths_and_methods(served: tuple[ExporterState, str]) -> None:
    _, url = served
    assert httpx.get(f"{url}/nope").status_code == 404
    assert httpx.post(f"{url}/probe").status_code == 405
    head = httpx.head(f"{url}/probe")
    assert (
        head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) > 0
    )


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        (":9746", ("", 9746)),
        ("127.0.0.1:80", ("127.0.0.1", 80)),
        ("[::1]:9746", ("::1", 9746)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_listen_addresses(address: str, expected: tuple[str, int]) -> None:
    assert parse_listen_address(address) == expected


@pytest.mark.parametrize("address", ["9746", ":port", "::1:9746", "host:70000", ""])
def test_bad_listen_addresses(address: str) -> None:
    with pytest.raises(ValueError, match="invalid listen address"):
        parse_listen_address(address)


def test_ipv6_loopback_serves() -> None:
    state = ExporterState(targets={}, version="1", test_key=False)
    try:
        web = WebServer("[::1]:0", CollectorRegistry(), state)
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    web.start()
    try:
        assert httpx.get(f"http://[::1]:{web.port}/-/healthy").status_code == 200
    finally:
        web.stop()


def test_a_gzipped_scrape_is_never_stale(served: tuple[ExporterState, str]) -> None:
    state, url = served

    def scrape() -> str:
        with httpx.Client() as client:
            request = client.build_request(
                "GET", f"{url}/probe", headers={"Accept-Encoding": "gzip"}
            )
            raw = client.send(request, stream=True)
            return gzip.decompress(b"".join(raw.iter_raw())).decode()

    first = scrape()
    assert scrape() == first  # the same body: its compression is reused
    assert 'bsg_up{target="otp"} 0.0' in first
    with state.lock:
        state.targets["otp"].up = True
    assert 'bsg_up{target="otp"} 1.0' in scrape()  # a changed body is compressed anew
