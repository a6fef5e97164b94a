"""The HTTP endpoints over a real socket: routing, negotiation, health, readiness and reload."""

from __future__ import annotations

import base64
import gzip
import socket
from collections.abc import Iterator

import bcrypt
import httpx
import pytest
from prometheus_client import CollectorRegistry

from exporter.config.schema import MetricsConfig, TargetConfig
from exporter.config.webconfig import parse_web_config
from exporter.serving.collector import BsgCollector
from exporter.serving.server import WebServer, parse_listen_address
from exporter.stats import ExporterState, TargetStatus
from exporter.tracking.store import MEMORY, StateStore
from exporter.tracking.tracker import TargetTracker


@pytest.fixture
def served() -> Iterator[tuple[ExporterState, str]]:
    """A web server over a one-target state that has not polled yet."""
    tracker = TargetTracker(
        StateStore(MEMORY), TargetConfig("otp", 60, None), metrics=MetricsConfig((1.0,), (1.0,))
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
    state.publish_success("otp", state.targets["otp"].snapshot, at=0.0, duration=0.1, mismatches=0)
    assert 'bsg_up{target="otp"} 1.0' in scrape()  # a changed body is compressed anew


# --- requests a client gets wrong, or forges ----------------------------------------------


def exchange(url: str, request: bytes, wait: float = 5) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes on a fresh connection; the answer's status, headers and body."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer and (chunk := sock.recv(65536)):
            answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        fields = (line.split(": ", 1) for line in lines[1:])
        headers = {name.lower(): value for name, value in fields}
        while len(body) < int(headers.get("content-length", 0)) and (chunk := sock.recv(65536)):
            body += chunk
    return int(lines[0].split()[1]), headers, body


def post(path: str, *headers: str) -> bytes:
    """A POST request's head, with ``headers`` ("Name: value") and no body sent."""
    return "\r\n".join([f"POST {path} HTTP/1.1", "Host: x", *headers, "", ""]).encode()


def test_a_body_is_never_read_where_none_is_taken(served: tuple[ExporterState, str]) -> None:
    _, url = served
    # The answer comes with no byte of the 100 GB announced sent: nothing waits for, or keeps,
    # the body; and the connection closes, as the body would follow on it.
    for length in ("100000000000", "9" * 5000):
        status, headers, _ = exchange(url, post("/probe", f"Content-Length: {length}"))
        assert status == 405 and headers["connection"] == "close"
    assert headers["allow"] == "GET, HEAD"
    status, headers, _ = exchange(url, post("/probe", "Transfer-Encoding: chunked"))
    assert status == 405 and headers["connection"] == "close"
    get = b"GET /probe HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
    status, headers, body = exchange(url, get)
    assert status == 200 and headers["connection"] == "close" and b"bsg_up" in body


@pytest.mark.parametrize(
    "length",
    ["abc", "1e11", "-1", "+5", "0x10", "1 2", "\u0661", "5\r\nContent-Length: 6"],
)
def test_a_malformed_content_length_is_400(served: tuple[ExporterState, str], length: str) -> None:
    _, url = served
    for method in ("POST", "GET"):
        request = f"{method} /probe HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n"
        status, headers, body = exchange(url, request.encode("utf-8"))
        assert (status, headers["connection"], body) == (400, "close", b"Bad Request\n")


def test_a_malformed_request_target_is_400(served: tuple[ExporterState, str]) -> None:
    _, url = served
    status, _, _ = exchange(url, b"GET http://[::1/probe HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 400


def test_healthy_says_503_and_why_when_the_poll_loop_is_dead(
    served: tuple[ExporterState, str],
) -> None:
    state, url = served
    assert httpx.get(f"{url}/-/healthy").text == "Healthy\n"
    state.liveness.fail("poll loop died: RuntimeError('boom')")
    answer = httpx.get(f"{url}/-/healthy")
    assert answer.status_code == 503
    assert answer.text == "Unhealthy: poll loop died: RuntimeError('boom')\n"


@pytest.fixture
def reloadable() -> Iterator[tuple[list[int], str]]:
    """A web server whose /-/reload counts its calls in the list."""
    calls: list[int] = []
    state = ExporterState(targets={}, version="1", test_key=False)
    web = WebServer("127.0.0.1:0", CollectorRegistry(), state, reload=lambda: calls.append(1))
    web.start()
    try:
        yield calls, f"http://127.0.0.1:{web.port}"
    finally:
        web.stop()


def test_reload_is_off_without_the_lifecycle_flag(served: tuple[ExporterState, str]) -> None:
    _, url = served
    answer = httpx.post(f"{url}/-/reload")
    assert (answer.status_code, answer.text) == (403, "Lifecycle API is not enabled.\n")


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # another port or subdomain: another origin
        {"Origin": "http://evil.example"},
        {"Origin": "null"},  # a sandboxed frame, or a file: page
        {"Origin": "http://127.0.0.1:1"},
        {"Origin": "http://[::1"},
        {"Origin": "http://evil.example", "Content-Type": "application/x-www-form-urlencoded"},
        {"Origin": "http://evil.example", "Content-Type": "text/plain"},
    ],
)
def test_reload_refuses_cross_site_posts(
    reloadable: tuple[list[int], str], headers: dict[str, str]
) -> None:
    calls, url = reloadable
    answer = httpx.post(f"{url}/-/reload", headers=headers)
    assert (answer.status_code, answer.text) == (403, "Cross-site requests are refused\n")
    assert calls == []


def test_reload_from_its_own_origin_or_a_tool(reloadable: tuple[list[int], str]) -> None:
    calls, url = reloadable
    own = url.removeprefix("http://")
    for headers in (
        {},  # curl -X POST
        {"Content-Type": "application/x-www-form-urlencoded"},  # curl -d ''
        {"Origin": url, "Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},  # typed in by the user
        {"Origin": f"HTTP://{own.upper()}"},
    ):
        answer = httpx.post(f"{url}/-/reload", headers=headers)
        assert (answer.status_code, answer.text) == (200, "Reloaded\n"), headers
    assert len(calls) == 5


def test_reload_reads_a_small_body_and_refuses_a_big_one(
    reloadable: tuple[list[int], str],
) -> None:
    calls, url = reloadable
    with httpx.Client() as client:  # one connection: a body read keeps it usable
        first = client.post(f"{url}/-/reload", content=b"x" * 65536)
        second = client.post(f"{url}/-/reload", content=b"")
    assert [first.status_code, second.status_code] == [200, 200]
    assert "connection" not in first.headers
    for length in ("65537", "9" * 5000):
        status, headers, _ = exchange(url, post("/-/reload", f"Content-Length: {length}"))
        assert (status, headers["connection"]) == (413, "close")
    assert len(calls) == 2


def test_credentials_are_checked_before_any_body() -> None:
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    config = parse_web_config(f"basic_auth_users:\n  alice: {hashed}\n")
    state = ExporterState(targets={}, version="1", test_key=False)
    calls: list[int] = []
    web = WebServer(
        "127.0.0.1:0", CollectorRegistry(), state, web_config=config, reload=lambda: calls.append(1)
    )
    web.start()
    try:
        url = f"http://127.0.0.1:{web.port}"
        # The client waits for "100 Continue" before the body: it never gets one.
        request = post("/-/reload", "Content-Length: 1000", "Expect: 100-continue")
        status, headers, _ = exchange(url, request)
        assert (status, headers["connection"]) == (401, "close")
        token = base64.b64encode(b"alice:pw").decode()
        answer = httpx.post(
            f"{url}/-/reload", content=b"{}", headers={"Authorization": f"Basic {token}"}
        )
        assert answer.status_code == 200 and calls == [1]
    finally:
        web.stop()
