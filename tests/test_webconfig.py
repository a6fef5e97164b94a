"""--web.config.file: TLS, client certificates, basic auth and headers, with real TLS clients."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import CollectorRegistry

from exporter.__main__ import _both
from exporter.config.schema import ConfigError, MetricsConfig, TargetConfig
from exporter.config.webconfig import WebConfig, load_web_config, parse_web_config
from exporter.serving.auth import BasicAuth, authenticator
from exporter.serving.collector import BsgCollector
from exporter.serving.server import WebServer, web_settings
from exporter.stats import ExporterState, TargetStatus
from exporter.tracking.store import MEMORY, StateStore
from exporter.tracking.tracker import TargetTracker
from tests import test_cli as cli
from tests.harness import free_port

PASSWORD = "s3cret"
# Cost 4, the lowest bcrypt allows, keeps the tests fast; the format is the same at any cost.
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()


# --- certificates -------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """A CA, a server certificate for 127.0.0.1, a client of that CA and one of another CA."""

    dir: Path

    def path(self, name: str) -> str:
        """A file of the set."""
        return str(self.dir / name)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(
    common_name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    """A certificate for ``key``, self-signed when there is no issuer."""
    now = datetime.datetime.now(datetime.UTC)
    issuer_name = _name(common_name) if issuer is None else issuer[0].subject
    signing_key = key if issuer is None else issuer[1]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        usage = x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False,
        )  # fmt: skip
        builder = builder.add_extension(usage, critical=True).add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()),
            critical=False,
        )
    if server:
        sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _write(
    directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> None:
    (directory / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Write ca, server, client (by ca), rogue-ca and rogue (by rogue-ca) .crt/.key files."""
    directory = tmp_path_factory.mktemp("pki")
    made: dict[str, tuple[x509.Certificate, ec.EllipticCurvePrivateKey]] = {}
    for name, issuer, kind in (
        ("ca", None, "ca"),
        ("server", "ca", "server"),
        ("client", "ca", "client"),
        ("rogue-ca", None, "ca"),
        ("rogue", "rogue-ca", "client"),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        by = None if issuer is None else made[issuer]
        cert = _issue(name, key, by, ca=kind == "ca", server=kind == "server")
        made[name] = (cert, key)
        _write(directory, name, cert, key)
    encrypted = made["server"][1].private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    (directory / "encrypted.key").write_bytes(encrypted)
    (directory / "empty.pem").write_text("not a certificate\n")
    return Pki(directory)


# --- servers and clients ------------------------------------------------------------------

TLS = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
AUTH = f"basic_auth_users:\n  alice: {HASH}\n"

Serve = Callable[..., str]


@pytest.fixture
def serve(pki: Pki) -> Iterator[Serve]:
    """Start a web server with a web configuration text; return its base URL."""
    servers: list[WebServer] = []

    def start(text: str, *, handshake_timeout: float = 10.0) -> str:
        config = parse_web_config(text, source="web.yml", base_dir=str(pki.dir))
        tracker = TargetTracker(
            StateStore(MEMORY), TargetConfig("otp", 60, None), metrics=MetricsConfig((1.0,), (1.0,))
        )
        state = ExporterState(
            targets={"otp": TargetStatus(snapshot=tracker.snapshot(0))}, version="9", test_key=False
        )
        registry = CollectorRegistry(auto_describe=False)
        registry.register(BsgCollector(state))
        web = WebServer(
            "127.0.0.1:0",
            registry,
            state,
            web_config=config,
            handshake_timeout=handshake_timeout,
        )
        web.start()
        servers.append(web)
        scheme = "https" if config.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{web.port}"

    yield start
    for web in servers:
        web.stop()


def trusting(pki: Pki, client: str | None = None) -> ssl.SSLContext:
    """A client context that trusts the test CA, presenting ``client``'s certificate if given."""
    context = ssl.create_default_context(cafile=pki.path("ca.crt"))
    if client is not None:
        context.load_cert_chain(pki.path(f"{client}.crt"), pki.path(f"{client}.key"))
    return context


def refused(request: Callable[[], httpx.Response]) -> bool:
    """True when the request fails at the TLS or connection level, or gets a 4xx."""
    try:
        response = request()
    except (httpx.TransportError, ssl.SSLError, OSError):
        return True
    return 400 <= response.status_code < 500


def basic(user: str, password: str) -> dict[str, str]:
    """An Authorization header."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def raw_get(url: str, context: ssl.SSLContext, path: str = "/metrics") -> tuple[str, bytes]:
    """GET over Python's ssl directly: the negotiated version and the raw answer."""
    host, port = url.removeprefix("https://").split(":")
    with (
        socket.create_connection((host, int(port)), timeout=5) as sock,
        context.wrap_socket(sock, server_hostname=host) as tls,
    ):
        version = str(tls.version())
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
        return version, answer


# --- serving ------------------------------------------------------------------------------


def test_tls_serves_the_metrics(pki: Pki, serve: Serve) -> None:
    url = serve(TLS)
    response = httpx.get(f"{url}/metrics", verify=trusting(pki))
    assert response.status_code == 200
    assert 'bsg_up{target="otp"} 0.0' in response.text
    version, answer = raw_get(url, trusting(pki))
    assert version == "TLSv1.3"
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    # Plain HTTP on the TLS port gets nothing.
    assert refused(lambda: httpx.get(f"http://{url.removeprefix('https://')}/metrics"))


def test_an_untrusted_server_certificate_is_refused_by_the_client(serve: Serve) -> None:
    url = serve(TLS)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{url}/metrics")


def test_basic_auth_over_tls(pki: Pki, serve: Serve) -> None:
    url = serve(TLS + AUTH)
    with httpx.Client(verify=trusting(pki)) as client:
        missing = client.get(f"{url}/metrics")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == 'Basic realm="bsg-exporter"'
        assert client.get(f"{url}/metrics", headers=basic("alice", "wrong")).status_code == 401
        assert client.get(f"{url}/metrics", headers=basic("bob", PASSWORD)).status_code == 401
        assert (
            client.get(f"{url}/metrics", headers={"Authorization": "Basic %%%"}).status_code == 401
        )
        assert (
            client.get(f"{url}/metrics", headers={"Authorization": "Bearer x"}).status_code == 401
        )
        right = client.get(f"{url}/metrics", headers=basic("alice", PASSWORD))
        assert right.status_code == 200 and "bsg_up" in right.text
        assert client.get(f"{url}/metrics", auth=("alice", PASSWORD)).status_code == 200
        # Probes need no credentials; every other path and method does.
        assert client.get(f"{url}/-/healthy").status_code == 200
        assert client.head(f"{url}/-/healthy").status_code == 200
        for method, path in (("GET", "/"), ("GET", "/-/ready"), ("GET", "/nope"), ("POST", "/")):
            assert client.request(method, f"{url}{path}").status_code == 401, (method, path)
        assert client.head(f"{url}/metrics").status_code == 401
        assert client.get(f"{url}/nope", auth=("alice", PASSWORD)).status_code == 404
        assert client.post(f"{url}/metrics", auth=("alice", PASSWORD)).status_code == 405


def test_basic_auth_without_tls(serve: Serve) -> None:
    url = serve(AUTH)
    assert httpx.get(f"{url}/metrics").status_code == 401
    assert httpx.get(f"{url}/metrics", auth=("alice", PASSWORD)).status_code == 200


def test_required_client_certificate(pki: Pki, serve: Serve) -> None:
    url = serve(TLS + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n")
    assert refused(lambda: httpx.get(f"{url}/metrics", verify=trusting(pki)))
    assert refused(lambda: httpx.get(f"{url}/metrics", verify=trusting(pki, "rogue")))
    with pytest.raises(ssl.SSLError):
        raw_get(url, trusting(pki))
    good = httpx.get(f"{url}/metrics", verify=trusting(pki, "client"))
    assert good.status_code == 200 and "bsg_up" in good.text
    answer = raw_get(url, trusting(pki, "client"))[1]
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")


def test_client_certificate_and_basic_auth_both_apply(pki: Pki, serve: Serve) -> None:
    url = serve(
        TLS + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n" + AUTH
    )
    with httpx.Client(verify=trusting(pki, "client")) as client:
        assert client.get(f"{url}/metrics").status_code == 401
        assert client.get(f"{url}/metrics", auth=("alice", PASSWORD)).status_code == 200
    assert refused(
        lambda: httpx.get(f"{url}/metrics", auth=("alice", PASSWORD), verify=trusting(pki))
    )


def test_client_certificate_verified_if_given(pki: Pki, serve: Serve) -> None:
    url = serve(TLS + "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.crt\n")
    assert httpx.get(f"{url}/metrics", verify=trusting(pki)).status_code == 200
    assert httpx.get(f"{url}/metrics", verify=trusting(pki, "client")).status_code == 200
    assert refused(lambda: httpx.get(f"{url}/metrics", verify=trusting(pki, "rogue")))


def test_min_version_tls13_refuses_a_tls12_client(pki: Pki, serve: Serve) -> None:
    url = serve(TLS + "  min_version: TLS13\n")
    old = trusting(pki)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        raw_get(url, old)
    assert refused(lambda: httpx.get(f"{url}/metrics", verify=old))
    assert raw_get(url, trusting(pki))[0] == "TLSv1.3"


def test_max_version_tls12_is_what_gets_negotiated(pki: Pki, serve: Serve) -> None:
    url = serve(TLS + "  max_version: TLS12\n  prefer_server_cipher_suites: false\n")
    version, answer = raw_get(url, trusting(pki))
    assert version == "TLSv1.2" and answer.startswith(b"HTTP/1.1 200 OK")


def test_inline_certificate_key_and_client_ca(pki: Pki, serve: Serve) -> None:
    def block(name: str, file: str) -> str:
        lines = Path(pki.path(file)).read_text().splitlines()
        return f"  {name}: |\n" + "".join(f"    {line}\n" for line in lines)

    url = serve(
        "tls_server_config:\n"
        + block("cert", "server.crt")
        + block("key", "server.key")
        + block("client_ca", "ca.crt")
        + "  client_auth_type: RequireAndVerifyClientCert\n"
    )
    assert httpx.get(f"{url}/metrics", verify=trusting(pki, "client")).status_code == 200
    assert refused(lambda: httpx.get(f"{url}/metrics", verify=trusting(pki)))


def test_reconfigured_settings_apply_to_the_next_connection(pki: Pki) -> None:
    state = ExporterState(targets={}, version="9", test_key=False)
    web = WebServer("127.0.0.1:0", CollectorRegistry(auto_describe=False), state)
    web.start()
    try:
        url = f"127.0.0.1:{web.port}/-/ready"
        assert httpx.get(f"http://{url}").status_code == 200
        config = parse_web_config(TLS + AUTH, source="web.yml", base_dir=str(pki.dir))
        web.reconfigure(web_settings(config))
        assert refused(lambda: httpx.get(f"http://{url}"))
        assert httpx.get(f"https://{url}", verify=trusting(pki)).status_code == 401
        answer = httpx.get(f"https://{url}", verify=trusting(pki), auth=("alice", PASSWORD))
        assert answer.status_code == 200
        web.reconfigure(web_settings(WebConfig()))
        assert httpx.get(f"http://{url}").status_code == 200
    finally:
        web.stop()


def test_headers_on_every_answer(pki: Pki, serve: Serve) -> None:
    url = serve(
        TLS
        + AUTH
        + "http_server_config:\n  http2: false\n  headers:\n"
        + "    X-Frame-Options: deny\n"
        + "    X-Content-Type-Options: nosniff\n"
        + "    X-XSS-Protection: 0\n"
        + "    Strict-Transport-Security: max-age=31536000\n"
        + '    Content-Security-Policy: ""\n'
    )
    expected = {
        "x-frame-options": "deny",
        "x-content-type-options": "nosniff",
        "x-xss-protection": "0",
        "strict-transport-security": "max-age=31536000",
    }
    with httpx.Client(verify=trusting(pki)) as client:
        answers = [
            client.get(f"{url}/metrics", auth=("alice", PASSWORD)),
            client.get(f"{url}/metrics"),  # 401
            client.get(f"{url}/nope", auth=("alice", PASSWORD)),  # 404
            client.get(f"{url}/-/healthy"),
            client.request("PUT", f"{url}/metrics", auth=("alice", PASSWORD)),  # http.server's 501
        ]
    assert [a.status_code for a in answers] == [200, 401, 404, 200, 501]
    for answer in answers:
        assert {k: answer.headers.get(k) for k in expected} == expected
        assert "content-security-policy" not in answer.headers  # blank: not set


def test_a_client_that_never_completes_the_handshake_is_dropped(pki: Pki, serve: Serve) -> None:
    url = serve(TLS, handshake_timeout=0.5)
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as idle:
        # The accept loop is free meanwhile: another client is served at once.
        started = time.monotonic()
        assert httpx.get(f"{url}/-/healthy", verify=trusting(pki)).status_code == 200
        assert time.monotonic() - started < 0.5
        try:
            closed = idle.recv(1) == b""
        except ConnectionResetError:
            closed = True
        assert closed
        assert time.monotonic() - started < 5


def test_successful_checks_are_cached_and_every_failure_pays_bcrypt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[bytes] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)  # the module webconfig calls
    auth = authenticator(parse_web_config(AUTH))
    assert isinstance(auth, BasicAuth)
    right = basic("alice", PASSWORD)["Authorization"]
    assert auth.check(right) and auth.check(right)
    assert len(calls) == 1
    assert not auth.check(basic("alice", "wrong")["Authorization"])
    assert not auth.check(basic("alice", "wrong")["Authorization"])
    # An unknown user costs a bcrypt check too, so its answer takes as long as a wrong password.
    assert not auth.check(basic("mallory", PASSWORD)["Authorization"])
    assert len(calls) == 4
    assert not auth.check(basic("alice", "x" * 100)["Authorization"])  # over bcrypt's 72 bytes
    assert not auth.check(None) and not auth.check("Basic " + base64.b64encode(b"alice").decode())


# --- the file -----------------------------------------------------------------------------


def test_empty_files_and_sections_change_nothing() -> None:
    assert parse_web_config("") == WebConfig()
    assert parse_web_config("# nothing\n") == WebConfig()
    text = "tls_server_config:\nhttp_server_config: {}\nbasic_auth_users: {}\n"
    assert parse_web_config(text) == WebConfig()
    assert authenticator(parse_web_config(AUTH)) is not None
    assert authenticator(WebConfig()) is None


def test_the_hashes_never_show() -> None:
    config = parse_web_config(AUTH)
    assert HASH not in repr(config) and HASH not in str(config)


def errors(text: str, pki: Pki) -> list[str]:
    """The problems of a web configuration, relative paths read from the PKI directory."""
    with pytest.raises(ConfigError) as caught:
        parse_web_config(text, source="web.yml", base_dir=str(pki.dir))
    assert str(caught.value).startswith("web.yml: ")
    return list(caught.value.errors)


NO_BCRYPT = (
    'not a bcrypt hash (expected "$2y$", "$2b$" or "$2a$", a cost from 04 to 31 and 53'
    """ characters; make one with htpasswd -nBC 10 "" | tr -d ':\\n')"""
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "tls_server_confg: {}\nbasic_auth: {}\n",
            [
                'tls_server_confg: unknown key (did you mean "tls_server_config"?)',
                'basic_auth: unknown key (did you mean "basic_auth_users"?)',
            ],
        ),
        (
            "rate_limit:\n  interval: 1s\n  burst: 2\n",
            [
                "rate_limit: not supported by bsg-exporter; remove it"
                " (rate-limit in a reverse proxy)"
            ],
        ),
        (
            TLS
            + "  cipher_suites: [TLS_AES_128_GCM_SHA256]\n"
            + "  curve_preferences: [X25519]\n"
            + "  client_allowed_sans: [prometheus]\n"
            + "  cert_fil: x\n",
            [
                "tls_server_config.cipher_suites: not supported by bsg-exporter (Go cipher suite"
                " names have no exact OpenSSL mapping here); remove it to use OpenSSL's defaults",
                "tls_server_config.curve_preferences: not supported by bsg-exporter (Python's ssl"
                " cannot set a list of curves); remove it",
                "tls_server_config.client_allowed_sans: not supported by bsg-exporter (Python's"
                " ssl has no certificate verification hook); remove it and trust only the"
                " clients' CA in client_ca_file",
                'tls_server_config.cert_fil: unknown key (did you mean "cert_file"?)',
            ],
        ),
        (
            TLS + "  client_auth_type: RequireAnyClientCert\n  client_ca_file: ca.crt\n",
            [
                "tls_server_config.client_auth_type: RequireAnyClientCert is not supported by"
                " bsg-exporter (Python's ssl verifies every client certificate it asks for): use"
                " VerifyClientCertIfGiven or RequireAndVerifyClientCert with client_ca_file"
            ],
        ),
        (
            TLS + "  client_auth_type: RequestClientCert\n",
            [
                "tls_server_config.client_auth_type: RequestClientCert is not supported by"
                " bsg-exporter (Python's ssl verifies every client certificate it asks for): use"
                " VerifyClientCertIfGiven or RequireAndVerifyClientCert with client_ca_file"
            ],
        ),
        (
            TLS + "  client_auth_type: Always\n",
            [
                'tls_server_config.client_auth_type: unknown client_auth_type "Always": expected'
                " one of NoClientCert, RequestClientCert, RequireAnyClientCert,"
                " VerifyClientCertIfGiven, RequireAndVerifyClientCert"
            ],
        ),
        (
            TLS + "  client_auth_type: RequireAndVerifyClientCert\n",
            [
                "tls_server_config.client_auth_type: RequireAndVerifyClientCert needs"
                " client_ca_file (or client_ca) to verify certificates with"
            ],
        ),
        (
            TLS + "  client_ca_file: ca.crt\n",
            [
                "tls_server_config.client_ca_file: client CA certificates are configured but"
                " client_auth_type is NoClientCert: set client_auth_type to"
                " RequireAndVerifyClientCert"
            ],
        ),
        (
            TLS + "  min_version: TLS10\n  max_version: TLS14\n",
            [
                "tls_server_config.min_version: TLS10 is not supported by bsg-exporter (OpenSSL"
                " refuses TLS 1.0 and 1.1 at its default security level): use TLS12 or TLS13",
                'tls_server_config.max_version: unknown TLS version "TLS14": expected TLS12 or'
                " TLS13",
            ],
        ),
        (
            TLS + "  min_version: TLS13\n  max_version: TLS12\n",
            ["tls_server_config.min_version: TLS13 is above max_version TLS12"],
        ),
        (
            "tls_server_config:\n  min_version: TLS13\n",
            [
                "tls_server_config.cert_file: required (or cert)",
                "tls_server_config.key_file: required (or key)",
            ],
        ),
        (
            TLS + "  cert: inline\n",
            ["tls_server_config.cert_file: set either cert or cert_file, not both"],
        ),
        (
            "tls_server_config:\n  cert_file: nope.crt\n  key_file: server.key\n",
            [
                'tls_server_config.cert_file: cannot read "{dir}/nope.crt":'
                " No such file or directory"
            ],
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: client.key\n",
            ["tls_server_config.key_file: does not match the certificate"],
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: encrypted.key\n",
            ["tls_server_config.key_file: the private key is encrypted: use an unencrypted key"],
        ),
        (
            "tls_server_config:\n  cert_file: server.key\n  key_file: server.crt\n",
            [
                "tls_server_config.cert_file: no PEM certificate found",
                "tls_server_config.key_file: no PEM private key found",
            ],
        ),
        (
            "tls_server_config:\n  cert_file: gone.crt\n  key_file: gone.key\n"
            "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: empty.pem\n",
            [
                'tls_server_config.cert_file: cannot read "{dir}/gone.crt":'
                " No such file or directory",
                'tls_server_config.key_file: cannot read "{dir}/gone.key":'
                " No such file or directory",
                "tls_server_config.client_ca_file: no PEM certificate found",
            ],
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.crt\n",
            ["tls_server_config.key_file: no PEM private key found"],
        ),
        (
            TLS + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: empty.pem\n",
            ["tls_server_config.client_ca_file: no PEM certificate found"],
        ),
        (
            "http_server_config:\n  http2: true\n  headers:\n    X-Powered-By: me\n",
            [
                "http_server_config.http2: HTTP/2 is not supported by bsg-exporter: set it to"
                " false or remove it"
            ],
        ),
        (
            "http_server_config:\n  headers:\n    X-Powered-By: me\n    x-frame-options: deny\n"
            "    X-Frame-Options: DENY\n    X-Content-Type-Options: [nosniff]\n"
            '    Content-Security-Policy: "a\\nb"\n',
            [
                "http_server_config.headers.X-Powered-By: cannot be configured (allowed:"
                " Content-Security-Policy, Strict-Transport-Security, X-Content-Type-Options,"
                " X-Frame-Options, X-XSS-Protection)",
                "http_server_config.headers.x-frame-options: cannot be configured (allowed:"
                " Content-Security-Policy, Strict-Transport-Security, X-Content-Type-Options,"
                " X-Frame-Options, X-XSS-Protection)",
                'http_server_config.headers.X-Frame-Options: expected "deny" or "sameorigin",'
                ' got "DENY"',
                "http_server_config.headers.X-Content-Type-Options: expected a string, got a list",
                "http_server_config.headers.Content-Security-Policy: must not contain control"
                " characters or line breaks",
            ],
        ),
        (
            f"basic_auth_users:\n  alice: plain\n  'a:b': {HASH}\n  bob: 12\n  alice: {HASH}\n",
            [
                f"basic_auth_users.alice: {NO_BCRYPT}",
                'basic_auth_users.a:b: user names cannot contain ":"',
                "basic_auth_users.bob: expected a bcrypt hash, got a number",
                "basic_auth_users.alice: duplicate key (first at line 2)",
            ],
        ),
        (
            "basic_auth_users: [alice]\nhttp_server_config: 3\n",
            [
                "basic_auth_users: expected a mapping, got a list",
                "http_server_config: expected a mapping, got 3",
            ],
        ),
        ("- a\n", ["web.yml:1:1: expected a mapping, got a list"]),
    ],
)
def test_config_errors(pki: Pki, text: str, expected: list[str]) -> None:
    assert errors(text, pki) == [e.replace("{dir}", str(pki.dir)) for e in expected]


def test_syntax_errors_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"web\.yml:\d+:\d+: "):
        parse_web_config("a: [\n", source="web.yml")
    with pytest.raises(ConfigError, match="cannot read file"):
        load_web_config(tmp_path / "missing.yml")


def test_load_reads_certificates_relative_to_the_file(pki: Pki, tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    web.write_text(
        f"tls_server_config:\n  cert_file: {pki.path('server.crt')}\n  key_file: k.key\n"
    )
    (tmp_path / "k.key").write_bytes(Path(pki.path("server.key")).read_bytes())
    config = load_web_config(web)
    assert config.tls is not None and config.tls.key_file == str(tmp_path / "k.key")


# --- the command line ---------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m exporter`` to completion, with a key in the environment."""
    return cli.run_cli(*args, env={**os.environ, "BSG_API_KEY": "test_key_for_config_check"})


def test_config_check_validates_the_web_config(pki: Pki, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(TLS.replace("server.", f"{pki.dir}/server.") + "  cipher_suites: [X]\n")
    result = run_cli(
        "--config.file=config.example.yaml", "--config.check", f"--web.config.file={bad}"
    )
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"{bad}: 1 error\n  tls_server_config.cipher_suites: not supported"
    )
    good = tmp_path / "good.yml"
    good.write_text(AUTH)
    result = run_cli(
        "--config.file=config.example.yaml", "--config.check", f"--web.config.file={good}"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith(f"{good}: OK\n")


def test_both_files_are_reported_at_once(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("http_server_config:\n  http2: true\n")
    result = run_cli(
        f"--config.file={tmp_path / 'nope.yaml'}", "--config.check", f"--web.config.file={bad}"
    )
    assert result.returncode == 2
    assert "nope.yaml" in result.stderr
    assert "http_server_config.http2: HTTP/2 is not supported" in result.stderr


def test_the_exporter_serves_tls_and_auth_from_the_flag(pki: Pki, tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    web.write_text(TLS.replace("server.", f"{pki.dir}/server.") + AUTH)
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "exporter", "--demo", f"--web.listen-address=127.0.0.1:{port}",
            f"--web.config.file={web}", "--log.format=json",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/-/healthy", verify=trusting(pki)).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "exporter did not start"
            time.sleep(0.1)
        assert httpx.get(f"{url}/metrics", verify=trusting(pki)).status_code == 401
        scraped = httpx.get(f"{url}/metrics", verify=trusting(pki), auth=("alice", PASSWORD))
        assert scraped.status_code == 200 and "bsg_exporter_build_info" in scraped.text
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr


# --- reloading ----------------------------------------------------------------------------


def _start_exporter(*flags: str) -> tuple[subprocess.Popen[bytes], int]:
    """``python -m exporter --demo`` on a free loopback port, with ``flags``."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "exporter", "--demo", f"--web.listen-address=127.0.0.1:{port}",
            "--log.format=json", *flags,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    return proc, port


def _peer_certificate(port: int) -> bytes:
    """The certificate the server presents now, in DER (not verified: only compared)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        context.wrap_socket(sock) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def _der(pki: Pki, name: str) -> bytes:
    return ssl.PEM_cert_to_DER_cert(Path(pki.path(f"{name}.crt")).read_text())


def _until(check: Callable[[], bool], proc: subprocess.Popen[bytes], what: str) -> None:
    """Wait up to 20 s for ``check``, failing early if the exporter died."""
    deadline = time.monotonic() + 20
    while True:
        try:
            if check():
                return
        except (httpx.TransportError, ssl.SSLError, OSError):
            pass
        assert proc.poll() is None, f"the exporter exited while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_the_web_config_is_read_again_on_sighup_and_reload(pki: Pki, tmp_path: Path) -> None:
    """Rotated certificates and changed users take effect; a bad file keeps the last good one."""
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(Path(pki.path("server.crt")).read_bytes())
    key.write_bytes(Path(pki.path("server.key")).read_bytes())
    web = tmp_path / "web.yml"
    tls = "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n"
    web.write_text(tls + AUTH)
    proc, port = _start_exporter(f"--web.config.file={web}", "--web.enable-lifecycle")
    url = f"https://127.0.0.1:{port}"

    def metrics(user: str) -> int:
        return httpx.get(f"{url}/metrics", verify=False, auth=(user, PASSWORD)).status_code

    try:
        _until(lambda: metrics("alice") == 200, proc, "the first scrape")
        assert _peer_certificate(port) == _der(pki, "server")
        cert.write_bytes(Path(pki.path("rogue.crt")).read_bytes())  # a rotated certificate
        key.write_bytes(Path(pki.path("rogue.key")).read_bytes())
        web.write_text(tls + f"basic_auth_users:\n  bob: {HASH}\n")
        proc.send_signal(signal.SIGHUP)
        _until(lambda: _peer_certificate(port) == _der(pki, "rogue"), proc, "the new certificate")
        assert metrics("bob") == 200
        assert metrics("alice") == 401

        web.write_text("tls_server_config:\n  cert_file: gone.crt\n  key_file: gone.key\n")
        answer = httpx.post(f"{url}/-/reload", verify=False, auth=("bob", PASSWORD))
        assert answer.status_code == 500
        assert "tls_server_config.cert_file: cannot read" in answer.text
        assert "tls_server_config.key_file: cannot read" in answer.text
        assert _peer_certificate(port) == _der(pki, "rogue")  # the last good one is kept
        scraped = httpx.get(f"{url}/metrics", verify=False, auth=("bob", PASSWORD))
        assert "bsg_exporter_config_last_reload_successful 0.0" in scraped.text

        web.write_text(tls + f"basic_auth_users:\n  carol: {HASH}\n")
        answer = httpx.post(f"{url}/-/reload", verify=False, auth=("bob", PASSWORD))
        assert answer.status_code == 200, answer.text
        assert metrics("carol") == 200 and metrics("bob") == 401
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr
    logged = stderr.decode()
    assert '"event": "web_config_reloaded"' in logged
    assert '"event": "config_reload_failed"' in logged and "gone.crt" in logged


def test_a_bad_config_and_a_bad_web_config_are_reported_together() -> None:
    first = ConfigError("config.yaml", ["poll.interval: must be at least 1s"])
    second = ConfigError("web.yml", ["http_server_config.http2: not supported"])
    both = _both(first, second)
    assert both.errors == (
        "config.yaml: poll.interval: must be at least 1s",
        "web.yml: http_server_config.http2: not supported",
    )
    assert str(both).startswith("config.yaml and web.yml: 2 errors\n")


# --- against the toolkit's own check ------------------------------------------------------

CLIENT_CA = "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n"
HEADERS = (
    "http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
    "    X-Content-Type-Options: nosniff\n    Strict-Transport-Security: max-age=31536000\n"
)
AGREED = [
    ("empty", "", True),
    ("basic auth", AUTH, True),
    ("tls", TLS, True),
    ("tls with client certificates", TLS + CLIENT_CA, True),
    ("tls 1.3 only", TLS + "  min_version: TLS13\n", True),
    (
        "client certificates if given",
        TLS + "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.crt\n",
        True,
    ),
    ("headers", HEADERS, True),
    ("everything", TLS + CLIENT_CA + HEADERS + AUTH, True),
    ("no key", "tls_server_config:\n  cert_file: server.crt\n", False),
    ("files missing", "tls_server_config:\n  cert_file: no.crt\n  key_file: no.key\n", False),
    (
        "files swapped",
        "tls_server_config:\n  cert_file: server.key\n  key_file: server.crt\n",
        False,
    ),
    (
        "key of another",
        "tls_server_config:\n  cert_file: server.crt\n  key_file: client.key\n",
        False,
    ),
    ("unknown key", "tls_server_confg: {}\n", False),
    ("unknown tls key", TLS + "  cert_fil: x\n", False),
    ("not a mapping", "- a\n", False),
    ("header not allowed", "http_server_config:\n  headers:\n    X-Powered-By: me\n", False),
    ("header value", "http_server_config:\n  headers:\n    X-Frame-Options: DENY\n", False),
    ("tls version", TLS + "  min_version: TLS14\n", False),
    ("client auth type", TLS + "  client_auth_type: Always\n", False),
    ("not a bcrypt hash", "basic_auth_users:\n  alice: plain\n", False),
    ("a client CA never asked for", TLS + "  client_ca_file: ca.crt\n", False),
]
"""Files both checks judge alike; keys this toolkit version lacks (inline cert/key,
rate_limit) are left out."""
STRICTER = [
    ("http2 asked for", "http_server_config:\n  http2: true\n"),
    ("versions crossed", TLS + "  min_version: TLS13\n  max_version: TLS12\n"),
    ("client certificates without a CA", TLS + "  client_auth_type: RequireAndVerifyClientCert\n"),
    ("a colon in a user name", f"basic_auth_users:\n  'a:b': {HASH}\n"),
]
"""Files the toolkit accepts and bsg-exporter refuses on purpose (see the module's errors)."""


def _checks(pki: Pki, name: str, text: str) -> tuple[bool, bool, str]:
    """Whether promtool and ``--config.check`` each accept the file, and what they said."""
    promtool = shutil.which("promtool")
    assert promtool, "scripts/test.sh installs promtool (Debian package prometheus)"
    path = pki.dir / f"case-{name.replace(' ', '-')}.yml"
    path.write_text(text)
    tool = subprocess.run(
        [promtool, "check", "web-config", str(path)], capture_output=True, text=True, check=False
    )
    ours = run_cli(
        "--config.file=config.example.yaml", "--config.check", f"--web.config.file={path}"
    )
    assert ours.returncode in (0, 2), ours.stderr
    said = f"promtool: {tool.stdout}{tool.stderr}\nours: {ours.stdout}{ours.stderr}"
    return tool.returncode == 0, ours.returncode == 0, said


@pytest.mark.parametrize(("name", "text", "valid"), AGREED, ids=[c[0] for c in AGREED])
def test_promtool_and_config_check_agree(pki: Pki, name: str, text: str, valid: bool) -> None:
    theirs, ours, said = _checks(pki, name, text)
    assert (theirs, ours) == (valid, valid), said


@pytest.mark.parametrize(("name", "text"), STRICTER, ids=[c[0] for c in STRICTER])
def test_where_config_check_is_stricter_than_promtool(pki: Pki, name: str, text: str) -> None:
    theirs, ours, said = _checks(pki, name, text)
    assert (theirs, ours) == (True, False), said
