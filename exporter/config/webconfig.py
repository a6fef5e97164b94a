"""The web configuration (``--web.config.file``): TLS, basic auth and extra response headers.

Owns the Prometheus exporter-toolkit file format (docs/web-configuration.md of
prometheus/exporter-toolkit) as far as Python's ssl module can honour it exactly, and the
server's `ssl.SSLContext` built from it (built when the file is read, so that --config.check
loads every certificate as a start would). Checking requests against the users is
:mod:`exporter.serving.auth`'s. Keys the toolkit knows but
this exporter cannot honour exactly are startup errors naming the key, never ignored and never
approximated; unknown keys are errors too. Problems are reported like the main configuration's:
all at once, each as "path: message", in one `ConfigError`.

Unlike the main configuration, strings are taken as written: the toolkit's format has no
${VAR} expansion, and a file that works with a Go exporter must mean the same here.

Must not import: httpx, prometheus_client, or any exporter module outside this package (it
reads through :mod:`.reader`), so that the web server can depend on it.
"""

from __future__ import annotations

import contextlib
import os
import re
import ssl
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, NoReturn, TypeAlias

import yaml

from exporter.config.durations import quoted
from exporter.config.reader import (
    ConfigError,
    Fields,
    LeafError,
    Reader,
    Scalar,
    Secret,
    as_boolean,
    as_non_empty,
    as_string,
    compose_document,
    join_path,
    leaf,
    read_text_file,
    scalar_of,
    shown,
)

__all__ = [
    "HEADER_VALUES",
    "ClientAuthType",
    "TLSServerConfig",
    "TLSVersionName",
    "WebConfig",
    "WebConfigFileError",
    "load_web_config",
    "parse_web_config",
]

ClientAuthType: TypeAlias = Literal[
    "NoClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert"
]
TLSVersionName: TypeAlias = Literal["TLS12", "TLS13"]

HEADER_VALUES: dict[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}
"""The only headers the toolkit lets a file set, with their allowed values (empty: any)."""

_TOP_KEYS = ("tls_server_config", "http_server_config", "basic_auth_users")
_TLS_KEYS = (
    "cert", "key", "cert_file", "key_file", "client_auth_type", "client_ca_file", "client_ca",
    "min_version", "max_version", "prefer_server_cipher_suites",
)  # fmt: skip
_HTTP_KEYS = ("headers", "http2")

# Keys of the toolkit's format that cannot be honoured exactly: each is refused with its reason.
_UNSUPPORTED_TOP = {
    "rate_limit": "not supported by bsg-exporter; remove it (rate-limit in a reverse proxy)",
}
_UNSUPPORTED_TLS = {
    "cipher_suites": (
        "not supported by bsg-exporter (Go cipher suite names have no exact OpenSSL mapping"
        " here); remove it to use OpenSSL's defaults"
    ),
    "curve_preferences": (
        "not supported by bsg-exporter (Python's ssl cannot set a list of curves); remove it"
    ),
    "client_allowed_sans": (
        "not supported by bsg-exporter (Python's ssl has no certificate verification hook);"
        " remove it and trust only the clients' CA in client_ca_file"
    ),
}

_CLIENT_AUTH: dict[str, ClientAuthType] = {
    "": "NoClientCert",  # the toolkit's default when the key is empty
    "NoClientCert": "NoClientCert",
    "VerifyClientCertIfGiven": "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert": "RequireAndVerifyClientCert",
}
_VERIFY_MODES: dict[ClientAuthType, ssl.VerifyMode] = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# Go asks for (or requires) a certificate without verifying it; OpenSSL through Python's ssl
# verifies whatever it asks for, so these would silently become stricter policies.
_CLIENT_AUTH_UNSUPPORTED = ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert")
_CLIENT_AUTH_NAMES = (
    "NoClientCert", "RequestClientCert", "RequireAnyClientCert", "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
)  # fmt: skip

_TLS_VERSIONS: dict[str, ssl.TLSVersion] = {
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_TLS_VERSIONS_REFUSED = ("TLS10", "TLS11")
_DEFAULT_CLIENT_AUTH: ClientAuthType = "NoClientCert"
_DEFAULT_MIN_VERSION: TLSVersionName = "TLS12"
_DEFAULT_MAX_VERSION: TLSVersionName = "TLS13"
_NO_HEADERS: tuple[tuple[str, str], ...] = ()
_NO_USERS: tuple[tuple[str, Secret], ...] = ()

# "$2y$10$" + 22 characters of salt + 31 of hash, in bcrypt's base64 alphabet; cost 4..31.
_BCRYPT = re.compile(r"\$2[aby]\$(?:0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# --- public types -------------------------------------------------------------------------


class WebConfigFileError(ValueError):
    """Certificates, keys or CAs that could not be loaded: `.problems` lists each as
    (tls_server_config key, message)."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(f"tls_server_config.{k}: {m}" for k, m in self.problems))


@dataclass(frozen=True, slots=True)
class TLSServerConfig:
    """The server's certificate, the client-certificate policy and the protocol versions."""

    cert_file: str | None = None  # absolute, or None when `cert` holds the PEM inline
    key_file: str | None = None
    cert: str | None = None
    key: Secret | None = None
    client_auth_type: ClientAuthType = "NoClientCert"
    client_ca_file: str | None = None
    client_ca: str | None = None
    min_version: TLSVersionName = "TLS12"
    max_version: TLSVersionName = "TLS13"
    prefer_server_cipher_suites: bool = True
    context: ssl.SSLContext | None = field(default=None, compare=False, repr=False)
    """The context built when the file was read (its files are read once, not at each use)."""

    def server_context(self) -> ssl.SSLContext:
        """The context read with the file, or a new one (raises WebConfigFileError)."""
        return self.context if self.context is not None else self.ssl_context()

    def ssl_context(self) -> ssl.SSLContext:
        """A new server context; reads the files now.

        Raises WebConfigFileError naming every file that cannot be used, not just the first.
        """
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = _TLS_VERSIONS[self.min_version]
        context.maximum_version = _TLS_VERSIONS[self.max_version]
        if self.prefer_server_cipher_suites:
            context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
        else:
            context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
        # Only HTTP/1.1 is served; saying so lets a client that offers h2 settle at once.
        context.set_alpn_protocols(["http/1.1"])
        problems: list[tuple[str, str]] = []
        cert_key = "cert_file" if self.cert_file is not None else "cert"
        key_key = "key_file" if self.key_file is not None else "key"
        key_text = None if self.key is None else self.key.reveal()
        cert_pem = _checked_pem(cert_key, self.cert_file, self.cert, _CERTIFICATE, problems)
        key_pem = _checked_pem(key_key, self.key_file, key_text, _PRIVATE_KEY, problems)
        ca_key, ca_pem = None, None
        if self.client_ca_file is not None or self.client_ca is not None:
            ca_key = "client_ca_file" if self.client_ca_file is not None else "client_ca"
            ca_pem = _checked_pem(
                ca_key, self.client_ca_file, self.client_ca, _CERTIFICATE, problems
            )
        if cert_pem is not None and key_pem is not None:
            _load_chain(context, (cert_key, cert_pem), (key_key, key_pem), problems)
        if ca_key is not None and ca_pem is not None:
            _load_client_ca(context, ca_key, ca_pem, problems)
        if problems:
            raise WebConfigFileError(problems)
        context.verify_mode = _VERIFY_MODES[self.client_auth_type]
        return context


@dataclass(frozen=True, slots=True)
class WebConfig:
    """The whole, validated web configuration; an empty one serves plain HTTP to everyone."""

    tls: TLSServerConfig | None = None
    headers: tuple[tuple[str, str], ...] = ()
    basic_auth_users: tuple[tuple[str, Secret], ...] = ()  # user, bcrypt hash


# --- PEM material -------------------------------------------------------------------------


_CERTIFICATE = ("certificate", re.compile(rb"-----BEGIN CERTIFICATE-----"))
_PRIVATE_KEY = ("private key", re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----"))


def _checked_pem(
    key: str,
    path: str | None,
    inline: str | None,
    kind: tuple[str, re.Pattern[bytes]],
    problems: list[tuple[str, str]],
) -> bytes | None:
    """The PEM content of a file, or the inline text, if it holds a ``kind``; else a problem."""
    if path is None:
        pem = (inline or "").encode()
    else:
        try:
            pem = Path(path).read_bytes()
        except OSError as exc:
            problems.append((key, f"cannot read {quoted(path)}: {exc.strerror or exc}"))
            return None
    name, marker = kind
    if not marker.search(pem):
        problems.append((key, f"no PEM {name} found"))
        return None
    return pem


class _EncryptedKeyError(Exception):
    """The key asked for a passphrase."""


def _load_chain(
    context: ssl.SSLContext,
    cert: tuple[str, bytes],
    key: tuple[str, bytes],
    problems: list[tuple[str, str]],
) -> None:
    """Load the certificate and its key: each (tls_server_config key, PEM), checked already."""
    (cert_key, cert_pem), (key_key, key_pem) = cert, key

    def no_password() -> NoReturn:
        # Without a callback OpenSSL would prompt on the terminal for the passphrase.
        raise _EncryptedKeyError

    with _pem_path(cert_pem) as cert_path, _pem_path(key_pem) as key_path:
        try:
            context.load_cert_chain(cert_path, key_path, password=no_password)
        except _EncryptedKeyError:
            problems.append((key_key, "the private key is encrypted: use an unencrypted key"))
        except ssl.SSLError as exc:
            if "KEY_VALUES_MISMATCH" in str(exc):
                problems.append((key_key, "does not match the certificate"))
            else:
                problems.append(
                    (cert_key, f"cannot load the certificate and key: {exc.reason or exc}")
                )


def _load_client_ca(
    context: ssl.SSLContext, ca_key: str, pem: bytes, problems: list[tuple[str, str]]
) -> None:
    """Trust the client CA certificates (checked already)."""
    with _pem_path(pem) as ca_path:
        try:
            context.load_verify_locations(cafile=ca_path)
        except ssl.SSLError as exc:
            problems.append((ca_key, f"cannot load the CA certificates: {exc.reason or exc}"))


@contextlib.contextmanager
def _pem_path(pem: bytes) -> Iterator[str]:
    """A path OpenSSL can read `pem` from, gone afterwards.

    Python's ssl loads certificates and keys only from files, and the material is read once
    here (checked, then loaded): it goes into an anonymous in-memory file where the system has
    one, so that a key never touches a disk, else into a private temporary directory.
    """
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create("bsg-exporter-pem", os.MFD_CLOEXEC)
        try:
            os.write(fd, pem)  # a memfd takes a whole write at once
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="bsg-exporter-") as directory:  # mode 0700
        path = os.path.join(directory, "material.pem")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as file:
            file.write(pem)
        yield path


# --- the walker ---------------------------------------------------------------------------


class _WebReader(Reader):
    """The main configuration's walker, without ${VAR} expansion."""

    def scalar(self, node: yaml.Node, path: str) -> Scalar | None:
        """The node as written."""
        return scalar_of(node)

    def known(
        self, node: yaml.Node, path: str, supported: tuple[str, ...], unsupported: dict[str, str]
    ) -> Fields | None:
        """A mapping of supported keys; each known but unsupported key is an error of its own."""
        fields = self.mapping(node, path, (*supported, *unsupported))
        if fields is None:
            return None
        for name, reason in unsupported.items():
            if name in fields:
                self.error(_key_mark(node, name), join_path(path, name), reason)
                del fields[name]
        return fields


def _key_mark(node: yaml.Node, name: str) -> yaml.Mark:
    """Where the key `name` of a mapping node is written."""
    if isinstance(node, yaml.MappingNode):
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == name:
                return key_node.start_mark
    return node.start_mark


def _client_auth(scalar: Scalar) -> ClientAuthType:
    """A client_auth_type the ssl module can honour exactly."""
    name = as_string(scalar)
    if name in _CLIENT_AUTH:
        return _CLIENT_AUTH[name]
    if name in _CLIENT_AUTH_UNSUPPORTED:
        raise LeafError(
            f"{name} is not supported by bsg-exporter (Python's ssl verifies every client"
            " certificate it asks for): use VerifyClientCertIfGiven or"
            " RequireAndVerifyClientCert with client_ca_file"
        )
    expected = ", ".join(_CLIENT_AUTH_NAMES)
    raise LeafError(f"unknown client_auth_type {quoted(name)}: expected one of {expected}")


def _tls_version(scalar: Scalar) -> TLSVersionName:
    """TLS12 or TLS13."""
    name = as_string(scalar)
    if name == "TLS12":
        return "TLS12"
    if name == "TLS13":
        return "TLS13"
    if name in _TLS_VERSIONS_REFUSED:
        raise LeafError(
            f"{name} is not supported by bsg-exporter (OpenSSL refuses TLS 1.0 and 1.1 at its"
            " default security level): use TLS12 or TLS13"
        )
    raise LeafError(f"unknown TLS version {quoted(name)}: expected TLS12 or TLS13")


def _bcrypt_hash(scalar: Scalar) -> Secret:
    """A bcrypt hash; the value itself is never quoted back."""
    if scalar.kind != "str":
        # Described, never shown: a number here may well be a password typed in by mistake.
        kinds = {"int": "a number", "float": "a number", "bool": "a boolean", "null": "null"}
        raise LeafError(f"expected a bcrypt hash, got {kinds.get(scalar.kind, 'a ' + scalar.kind)}")
    if not _BCRYPT.fullmatch(scalar.text):
        raise LeafError(
            'not a bcrypt hash (expected "$2y$", "$2b$" or "$2a$", a cost from 04 to 31 and'
            """ 53 characters; make one with htpasswd -nBC 10 "" | tr -d ':\\n')"""
        )
    return Secret(scalar.text)


def _header_value(name: str) -> Callable[[Scalar], str]:
    """A value of header `name`: one of its allowed values when it has a fixed set."""

    def convert(scalar: Scalar) -> str:
        if scalar.kind == "null":
            return ""
        if scalar.kind not in ("str", "int", "float", "bool"):
            raise LeafError(f"expected a string, got {shown(scalar)}")
        allowed = HEADER_VALUES[name]
        if allowed and scalar.text not in allowed:
            expected = " or ".join(quoted(v) for v in allowed)
            raise LeafError(f"expected {expected}, got {shown(scalar)}")
        if _CONTROL.search(scalar.text):
            raise LeafError("must not contain control characters or line breaks")
        return scalar.text

    return convert


def _read_headers(
    reader: _WebReader, node: yaml.Node, path: str
) -> tuple[tuple[str, str], ...] | None:
    """http_server_config.headers: only the toolkit's headers; a blank value sets nothing."""
    pairs = reader.entries(node, path)
    if pairs is None:
        return None
    headers: list[tuple[str, str]] = []
    ok = True
    for _, name, value_node in pairs:
        child = join_path(path, name)
        if name not in HEADER_VALUES:
            allowed = ", ".join(sorted(HEADER_VALUES))
            reader.error(value_node.start_mark, child, f"cannot be configured (allowed: {allowed})")
            ok = False
            continue
        value = leaf(_header_value(name))(reader, value_node, child)
        if value is None:
            ok = False
        elif value:
            headers.append((name, value))
    return tuple(headers) if ok else None


def _read_http(
    reader: _WebReader, node: yaml.Node, path: str
) -> tuple[tuple[str, str], ...] | None:
    """http_server_config: headers, and http2 only where it asks for what is served."""
    fields = reader.known(node, path, _HTTP_KEYS, {})
    if fields is None:
        return None
    http2 = reader.optional(fields, "http2", path, leaf(as_boolean), False)
    if http2:
        message = "HTTP/2 is not supported by bsg-exporter: set it to false or remove it"
        reader.error(fields["http2"].start_mark, join_path(path, "http2"), message)
        return None

    def read_headers(r: Reader, n: yaml.Node, p: str) -> tuple[tuple[str, str], ...] | None:
        return _read_headers(reader, n, p)

    headers = reader.optional(fields, "headers", path, read_headers, _NO_HEADERS)
    return None if http2 is None else headers


def _read_users(
    reader: _WebReader, node: yaml.Node, path: str
) -> tuple[tuple[str, Secret], ...] | None:
    """basic_auth_users: user name -> bcrypt hash."""
    pairs = reader.entries(node, path)
    if pairs is None:
        return None
    users: list[tuple[str, Secret]] = []
    ok = True
    for _, name, value_node in pairs:
        child = join_path(path, name)
        if ":" in name:
            reader.error(value_node.start_mark, child, 'user names cannot contain ":"')
            ok = False
            continue
        hashed = leaf(_bcrypt_hash)(reader, value_node, child)
        if hashed is None:
            ok = False
        else:
            users.append((name, hashed))
    return tuple(users) if ok else None


def _read_pem_pair(
    reader: _WebReader, fields: Fields, path: str, parent: yaml.Node, *, inline: str, file: str
) -> tuple[str | None, str | None] | None:
    """Exactly one of an inline PEM key and its file key: (inline text, absolute path)."""
    if inline in fields and file in fields:
        message = f"set either {inline} or {file}, not both"
        reader.error(fields[file].start_mark, join_path(path, file), message)
        return None
    if inline in fields:
        text = leaf(as_non_empty)(reader, fields[inline], join_path(path, inline))
        return None if text is None else (text, None)
    if file in fields:
        name = leaf(as_non_empty)(reader, fields[file], join_path(path, file))
        if name is None:
            return None
        # Relative to the web configuration file, as in the toolkit.
        return None, os.path.join(reader.base_dir or ".", name)
    reader.error(parent.end_mark, join_path(path, file), f"required (or {inline})")
    return None


def _read_tls(reader: _WebReader, node: yaml.Node, path: str) -> TLSServerConfig | None:
    """tls_server_config; an empty section means plain HTTP."""
    fields = reader.known(node, path, _TLS_KEYS, _UNSUPPORTED_TLS)
    if fields is None:
        return None
    if not fields:
        return _NO_TLS
    cert = _read_pem_pair(reader, fields, path, node, inline="cert", file="cert_file")
    key = _read_pem_pair(reader, fields, path, node, inline="key", file="key_file")
    auth = reader.optional(
        fields, "client_auth_type", path, leaf(_client_auth), _DEFAULT_CLIENT_AUTH
    )
    ca = (
        _read_pem_pair(reader, fields, path, node, inline="client_ca", file="client_ca_file")
        if "client_ca" in fields or "client_ca_file" in fields
        else (None, None)
    )
    low = reader.optional(fields, "min_version", path, leaf(_tls_version), _DEFAULT_MIN_VERSION)
    high = reader.optional(fields, "max_version", path, leaf(_tls_version), _DEFAULT_MAX_VERSION)
    prefer = reader.optional(fields, "prefer_server_cipher_suites", path, leaf(as_boolean), True)
    if low is not None and high is not None and _TLS_VERSIONS[low] > _TLS_VERSIONS[high]:
        message = f"{low} is above max_version {high}"
        reader.error(fields["min_version"].start_mark, join_path(path, "min_version"), message)
        return None
    if auth is not None and ca is not None:
        has_ca = ca != (None, None)
        if has_ca and auth == "NoClientCert":
            ca_key = "client_ca" if "client_ca" in fields else "client_ca_file"
            message = (
                "client CA certificates are configured but client_auth_type is NoClientCert:"
                " set client_auth_type to RequireAndVerifyClientCert"
            )
            reader.error(fields[ca_key].start_mark, join_path(path, ca_key), message)
            return None
        # Go would verify against the system's roots here, trusting any publicly issued
        # certificate: asking for the CA instead is stricter, and says so at startup.
        if not has_ca and auth != "NoClientCert":
            message = f"{auth} needs client_ca_file (or client_ca) to verify certificates with"
            reader.error(
                fields["client_auth_type"].start_mark, join_path(path, "client_auth_type"), message
            )
            return None
    if cert is None or key is None or auth is None or ca is None:
        return None
    if low is None or high is None or prefer is None:
        return None
    key_text = None if key[0] is None else Secret(key[0])
    tls = TLSServerConfig(cert[1], key[1], cert[0], key_text, auth, ca[1], ca[0], low, high, prefer)
    try:
        context = tls.ssl_context()  # every file read now: --config.check sees what start would
    except WebConfigFileError as exc:
        for name, message in exc.problems:
            reader.error(fields[name].start_mark, join_path(path, name), message)
        return None
    return replace(tls, context=context)


_NO_TLS = TLSServerConfig()
"""What an absent or empty tls_server_config reads as, before it becomes `WebConfig.tls = None`."""


def _read_web_config(reader: _WebReader, root: yaml.Node) -> WebConfig | None:
    """The whole document."""
    fields = reader.known(root, "", _TOP_KEYS, _UNSUPPORTED_TOP)
    if fields is None:
        return None

    def read_tls(r: Reader, n: yaml.Node, p: str) -> TLSServerConfig | None:
        return _read_tls(reader, n, p)

    def read_http(r: Reader, n: yaml.Node, p: str) -> tuple[tuple[str, str], ...] | None:
        return _read_http(reader, n, p)

    def read_users(r: Reader, n: yaml.Node, p: str) -> tuple[tuple[str, Secret], ...] | None:
        return _read_users(reader, n, p)

    tls = reader.optional(fields, "tls_server_config", "", read_tls, _NO_TLS)
    headers = reader.optional(fields, "http_server_config", "", read_http, _NO_HEADERS)
    users = reader.optional(fields, "basic_auth_users", "", read_users, _NO_USERS)
    if tls is None or headers is None or users is None:
        return None
    return WebConfig(None if tls is _NO_TLS else tls, headers, users)


# --- entry points -------------------------------------------------------------------------


def parse_web_config(
    text: str, *, source: str = "<web config>", base_dir: str | None = None
) -> WebConfig:
    """Parse web configuration text; relative files are relative to base_dir (default: cwd)."""
    root = compose_document(text, source)
    if root is None or scalar_of(root).kind == "null":
        return WebConfig()  # as in the toolkit, an empty file changes nothing
    reader = _WebReader(source, {}, base_dir)
    config = _read_web_config(reader, root)
    if reader.problems or config is None:
        raise ConfigError(source, reader.messages())
    return config


def load_web_config(path: str | os.PathLike[str]) -> WebConfig:
    """Load a web configuration file; relative certificate paths are read from its directory."""
    source, text = read_text_file(path)
    return parse_web_config(text, source=source, base_dir=os.path.dirname(os.path.abspath(source)))
