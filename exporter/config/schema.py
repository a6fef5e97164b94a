"""Configuration: YAML text -> frozen, typed `Config`, every problem reported at once.

Owns the file format (see config.example.yaml), ${VAR} expansion, duration parsing and
formatting, and the `Secret` wrapper for the API key. It must not import httpx,
prometheus_client or any other exporter module, so that every other part can depend on it.

Errors are collected, never raised one at a time: the YAML is composed into a node tree and
walked by hand, each problem recorded with its dotted path (`targets[1].window`) and its
position, then all of them are raised in document order as one `ConfigError`.
"""

from __future__ import annotations

import datetime
import difflib
import hmac
import json
import os
import re
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal, NamedTuple, NoReturn, TypeAlias, TypeVar
from urllib.parse import urlsplit

import yaml
from yaml.reader import ReaderError

from exporter.defaults import (
    DEFAULT_ABANDON_GRACE,
    DEFAULT_API_URL,
    DEFAULT_DELIVERY_LATENCY_BUCKETS,
    DEFAULT_MAX_LABEL_VALUES,
    DEFAULT_MAX_REQUESTS_PER_MINUTE,
    DEFAULT_MAX_RESPONSE_SIZE,
    DEFAULT_MAX_RETRIES,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_RECHECK,
    DEFAULT_SEND_DELAY_BUCKETS,
    DEFAULT_STATE_PATH,
    DEFAULT_TIMEOUT,
    DEFAULT_TIMEZONE,
)
from exporter.model import LABEL_DIMENSIONS

__all__ = [
    "KNOWN_KEYS",
    "MAX_REQUESTS_PER_MINUTE_LIMIT",
    "MAX_RETRIES_LIMIT",
    "MAX_WINDOW",
    "MIN_POLL_INTERVAL",
    "ApiConfig",
    "Config",
    "ConfigError",
    "KeySource",
    "MetricsConfig",
    "PollConfig",
    "RecheckTier",
    "Secret",
    "StateConfig",
    "TargetConfig",
    "demo_config",
    "format_duration",
    "load_config",
    "parse_config",
    "parse_duration",
]

T = TypeVar("T")

KeySource: TypeAlias = Literal["inline", "env", "file"]

MAX_RETRIES_LIMIT = 10
MAX_REQUESTS_PER_MINUTE_LIMIT = 100_000
MAX_RESPONSE_SIZE_RANGE = (2**10, 2**30)
MIN_POLL_INTERVAL = 0.1
MAX_WINDOW = 7 * 86400.0
MAX_CAMPAIGN_ID = 2**63 - 1  # the API's ids are int64

_TOP_KEYS = ("api", "poll", "targets", "count_existing_on_start", "metrics", "state")
_API_KEYS = (
    "url", "key", "key_file", "timeout", "timezone", "max_retries", "max_requests_per_minute",
    "max_response_size",
)  # fmt: skip
_POLL_KEYS = ("interval", "recheck", "abandon_grace")
_RECHECK_KEYS = ("max_age", "every")
_TARGET_KEYS = ("name", "campaign_id", "window", "labels", "max_label_values")
MAX_LABEL_VALUES_LIMIT = 10_000
_METRICS_KEYS = ("delivery_latency_buckets", "send_delay_buckets")
_STATE_KEYS = ("path",)

KNOWN_KEYS: tuple[str, ...] = (
    *_TOP_KEYS,
    *(f"api.{k}" for k in _API_KEYS),
    *(f"poll.{k}" for k in _POLL_KEYS),
    *(f"poll.recheck[].{k}" for k in _RECHECK_KEYS),
    *(f"targets[].{k}" for k in _TARGET_KEYS),
    *(f"metrics.{k}" for k in _METRICS_KEYS),
    *(f"state.{k}" for k in _STATE_KEYS),
)
"""Every key the loader accepts, as dotted paths (`targets[].name` for list items)."""


# --- public types -------------------------------------------------------------------------


class ConfigError(Exception):
    """The configuration is unusable; `.errors` lists every problem as "path: message"."""

    def __init__(self, source: str, errors: Iterable[str]) -> None:
        self.source = source
        self.errors: tuple[str, ...] = tuple(errors)
        super().__init__(source, self.errors)  # args that rebuild the error (pickling)

    def __str__(self) -> str:
        count = len(self.errors)
        noun = "error" if count == 1 else "errors"
        return f"{self.source}: {count} {noun}\n  " + "\n  ".join(self.errors)


class Secret:
    """An API key that never shows itself in str(), repr() or format()."""

    __slots__ = ("_value",)
    _value: str

    def __init__(self, value: str) -> None:
        object.__setattr__(self, "_value", value)

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def reveal(self) -> str:
        """Return the key itself: call this only where it is sent to the API."""
        return self._value

    @property
    def is_test_key(self) -> bool:
        """True for a `test_` key, with which the API answers random data."""
        return self._value.startswith("test_")

    def __repr__(self) -> str:
        return "<secret>"

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:
        # copy, deepcopy and pickle would otherwise set the slot through __setattr__.
        return (Secret, (self._value,))

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """How to reach and authenticate to the BSG One API."""

    url: str
    key: Secret
    key_source: KeySource
    timeout: float
    timezone: str
    tz: datetime.tzinfo
    max_retries: int
    max_requests_per_minute: int = DEFAULT_MAX_REQUESTS_PER_MINUTE  # 0: no limit
    max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE  # bytes of a body, after decompression


class RecheckTier(NamedTuple):
    """Pending messages younger than max_age are re-read every `every` seconds."""

    max_age: float
    every: float


_DEFAULT_TIERS = tuple(RecheckTier(*tier) for tier in DEFAULT_RECHECK)


@dataclass(frozen=True, slots=True)
class PollConfig:
    """How often the message list is fetched and pending messages are re-read."""

    interval: float
    recheck: tuple[RecheckTier, ...] = _DEFAULT_TIERS  # max_age strictly increasing
    abandon_grace: float = DEFAULT_ABANDON_GRACE


@dataclass(frozen=True, slots=True)
class TargetConfig:
    """One named view on the messages: a time window, optionally one campaign."""

    name: str
    window: float
    campaign_id: int | None
    labels: tuple[str, ...] = ()
    max_label_values: int = DEFAULT_MAX_LABEL_VALUES


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """Histogram bucket bounds, in seconds."""

    delivery_latency_buckets: tuple[float, ...]
    send_delay_buckets: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class StateConfig:
    """Where the state is kept: an SQLite file, or ":memory:" for none that survives."""

    path: str = DEFAULT_STATE_PATH


@dataclass(frozen=True, slots=True)
class Config:
    """The whole, validated configuration."""

    api: ApiConfig
    poll: PollConfig
    targets: tuple[TargetConfig, ...]
    count_existing_on_start: bool
    metrics: MetricsConfig
    state: StateConfig = StateConfig()


# --- durations ----------------------------------------------------------------------------

# Prometheus' grammar: whole numbers, units from largest to smallest, each at most once.
_UNITS_MS = {"w": 604_800_000, "d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}
_UNIT_RANK = {unit: rank for rank, unit in enumerate(_UNITS_MS)}
_DURATION_SHAPE = re.compile(r"(?:[0-9]+[a-zA-Z]+)+")
_DURATION_PART = re.compile(r"([0-9]+)([a-zA-Z]+)")
_MAX_DURATION_MS = (2**63 - 1) // 1_000_000  # Go's time.Duration limit, about 292 years


def parse_duration(text: str) -> float:
    """Parse "500ms", "30s", "1h30m", "7d", "2w" into seconds; raise ValueError if invalid."""
    if not text:
        raise ValueError("empty duration")
    if text == "0":
        return 0.0
    if not _DURATION_SHAPE.fullmatch(text):
        raise ValueError(_duration_shape_problem(text))
    total_ms = 0
    previous = -1
    for number, unit in _DURATION_PART.findall(text):
        rank = _UNIT_RANK.get(unit)
        if rank is None:
            raise ValueError(
                f"invalid duration {_quote(text)}: unknown unit {_quote(unit)}"
                " (use ms, s, m, h, d or w)"
            )
        if rank <= previous:
            raise ValueError(
                f"invalid duration {_quote(text)}: units must go from largest to smallest,"
                " each used once"
            )
        previous = rank
        if len(number) > 20:  # keeps int() far from Python's digit limit
            raise ValueError(f"invalid duration {_quote(text)}: out of range")
        total_ms += int(number) * _UNITS_MS[unit]
    if total_ms > _MAX_DURATION_MS:
        raise ValueError(f"invalid duration {_quote(text)}: out of range")
    return total_ms / 1000


def _duration_shape_problem(text: str) -> str:
    """Say why `text` is not shaped like a duration at all."""
    if re.fullmatch(r"[0-9]+", text):
        return f'invalid duration {_quote(text)}: missing unit, like "{text}s"'
    if re.fullmatch(r"(?:[0-9.]+[a-zA-Z]+)+", text):
        return f"invalid duration {_quote(text)}: use whole numbers{_whole_hint(text)}"
    return (
        f"invalid duration {_quote(text)}: expected a number and a unit,"
        ' like "30s", "5m" or "1h30m"'
    )


def _whole_hint(text: str) -> str:
    """Rewrite "1.5h" as ' (like "1h30m")' when it is a whole number of milliseconds."""
    total = Fraction(0)
    for number, unit in re.findall(r"([0-9.]+)([a-zA-Z]+)", text):
        if unit not in _UNITS_MS or len(number) > 20:
            return ""
        try:
            total += Fraction(number) * _UNITS_MS[unit]
        except ValueError:  # "1.2.3"
            return ""
    if total <= 0 or total.denominator != 1:
        return ""
    ms, parts = int(total), []
    for unit, size in _UNITS_MS.items():
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return f' (like "{"".join(parts)}")'


def format_duration(seconds: float) -> str:
    """Format seconds the way Go's time.Duration does: "500ms", "1m0s", "24h0m0s"."""
    ns = round(seconds * 1e9)  # raises on inf and nan, which no duration can be
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1000), ("ns", 1)):
            if ns >= size:
                return f"{sign}{_decimal(ns, size)}{unit}"
    hours, rest = divmod(ns, 3600 * 1_000_000_000)
    minutes, rest = divmod(rest, 60 * 1_000_000_000)
    secs = _decimal(rest, 1_000_000_000)
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{sign}{minutes}m{secs}s"
    return f"{sign}{secs}s"


def _decimal(value: int, unit: int) -> str:
    """Write value/unit exactly, without trailing zeros: 1500/1000 -> "1.5"."""
    whole, fraction = divmod(value, unit)
    if not fraction:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}.{fraction:0{digits}d}".rstrip("0")


# --- YAML ---------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """Safe loader whose plain scalars follow YAML 1.2: `no`, `on`, `1:30`, dates stay strings."""


# Replace (not extend) YAML 1.1's resolvers, so that `name: no` is the string "no".
_Loader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in (
    # "" as a first character is how PyYAML resolves an empty value (`key:`) as null.
    ("null", r"(?:~|null|Null|NULL|)\Z", ["~", "n", "N", ""]),
    ("bool", r"(?:true|True|TRUE|false|False|FALSE)\Z", list("tTfF")),
    ("int", r"[-+]?[0-9]+\Z", list("-+0123456789")),
    (
        "float",
        r"(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))\Z",
        list("-+.0123456789"),
    ),
):
    _Loader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(_pattern), _first)

_KINDS = {
    f"tag:yaml.org,2002:{tag}": kind
    for tag, kind in (
        ("str", "str"),
        ("int", "int"),
        ("float", "float"),
        ("bool", "bool"),
        ("null", "null"),
        ("map", "mapping"),
        ("seq", "list"),
    )
}


def _compose(text: str, source: str) -> yaml.Node:
    """Parse text into one YAML node tree; raise ConfigError on a syntax error or no document."""
    root = _compose_document(text, source)
    if root is None:
        message = 'empty configuration, expected a mapping with "api" and "targets"'
        raise ConfigError(source, [f"{source}: {message}"])
    return root


def _compose_document(text: str, source: str) -> yaml.Node | None:
    """Parse text into one YAML node tree, None when empty; raise ConfigError on bad YAML."""
    try:
        root, extra = _compose_one(text)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(source, [_syntax_error(source, exc)]) from None
    except ReaderError as exc:
        raise ConfigError(source, [_reader_error(source, text, exc)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, [f"{source}: {exc}"]) from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise ConfigError(source, [f"{source}: nested too deeply"]) from None
    if extra is not None:
        message = "expected a single YAML document, found another"
        raise ConfigError(source, [f"{source}:{extra.line + 1}:{extra.column + 1}: {message}"])
    return None if root is None or _is_empty(root) else root


def _is_empty(node: yaml.Node) -> bool:
    """True for a document with nothing in it but "---"."""
    return _raw(node) == _Scalar("null", "", expanded=False)


def _compose_one(text: str) -> tuple[yaml.Node | None, yaml.Mark | None]:
    """The first document's node tree, and where a second document starts if there is one."""
    loader = _Loader(text)
    try:
        root = loader.get_node() if loader.check_node() else None
        if not loader.check_node():
            return root, None
        extra: yaml.Mark = loader.current_event.start_mark  # check_node() peeked at the "---"
        return root, extra
    finally:
        loader.dispose()


def _syntax_error(source: str, exc: yaml.MarkedYAMLError) -> str:
    """Render a YAML syntax error as "file:line:col: problem (context at line, column)"."""
    mark = exc.problem_mark or exc.context_mark
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
    message = f"{where}: {exc.problem or exc.context}"
    if exc.context and exc.problem and exc.context_mark:
        cm = exc.context_mark
        message += f" ({exc.context} at line {cm.line + 1}, column {cm.column + 1})"
    elif exc.context and exc.problem:
        message += f" ({exc.context})"
    return message


def _reader_error(source: str, text: str, exc: ReaderError) -> str:
    """Render a forbidden-character error with its line and column."""
    before = text[: exc.position]
    line = before.count("\n") + 1
    column = exc.position - (before.rfind("\n") + 1) + 1
    character = exc.character if isinstance(exc.character, int) else ord(exc.character)
    return f"{source}:{line}:{column}: unacceptable character #x{character:04x} ({exc.reason})"


# --- the walker ---------------------------------------------------------------------------


class _LeafError(ValueError):
    """A leaf value is wrong; the message is the part after "path: "."""


class _Scalar(NamedTuple):
    """A node reduced to what leaf checks need."""

    kind: str  # "str", "int", "float", "bool", "null", "mapping", "list", else the YAML tag
    text: str  # the scalar as written, after ${VAR} expansion; "" for collections
    expanded: bool  # at least one ${VAR} was substituted


class _Problem(NamedTuple):
    """One error, kept with its position so that all of them can be sorted."""

    line: int
    column: int
    path: str
    message: str


_Fields: TypeAlias = dict[str, yaml.Node]
_Read: TypeAlias = Callable[["_Reader", yaml.Node, str], "T | None"]

_VARIABLE = re.compile(r"\$\$\{|\$\{(?P<name>[^}]*)(?P<close>\})?")
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _Reader:
    """Walks the node tree, collecting every problem; a read returns None where it failed."""

    def __init__(self, source: str, environ: Mapping[str, str], base_dir: str | None) -> None:
        self.source = source
        self.environ = environ
        self.base_dir = base_dir
        self.problems: list[_Problem] = []

    def error(self, mark: yaml.Mark, path: str, message: str) -> None:
        """Record a problem at a position in the file."""
        self.problems.append(_Problem(mark.line, mark.column, path, message))

    def messages(self) -> list[str]:
        """All problems in document order; position-only ones read "file:line:col: ..."."""
        ordered = sorted(self.problems, key=lambda p: (p.line, p.column))  # stable on ties
        return [
            f"{p.path}: {p.message}"
            if p.path
            else f"{self.source}:{p.line + 1}:{p.column + 1}: {p.message}"
            for p in ordered
        ]

    def scalar(self, node: yaml.Node, path: str) -> _Scalar | None:
        """Reduce a node to a _Scalar, expanding ${VAR} in strings; None if that failed."""
        raw = _raw(node)
        if raw.kind != "str" or not isinstance(node, yaml.ScalarNode):
            return raw
        return self.expand(node, path)

    def expand(self, node: yaml.ScalarNode, path: str) -> _Scalar | None:
        """Substitute ${VAR} from the environment and unescape $${; None if a reference fails."""
        failures = len(self.problems)
        expanded = False

        def substitute(match: re.Match[str]) -> str:
            nonlocal expanded
            if match.group(0) == "$${":
                return "${"
            value = self.variable(match, node, path)
            expanded = expanded or value is not None
            return value or ""

        text = _VARIABLE.sub(substitute, node.value)
        return None if len(self.problems) > failures else _Scalar("str", text, expanded)

    def variable(self, match: re.Match[str], node: yaml.Node, path: str) -> str | None:
        """Look one ${NAME} up, recording why when it cannot be."""
        name = match.group("name")
        if match.group("close") is None:
            message = 'unterminated "${" (write "$${" for a literal "${")'
        elif not _VARIABLE_NAME.fullmatch(name):
            ref = _quote(match.group(0))
            message = f'invalid variable reference {ref} (write "$${{" for a literal "${{")'
        elif name not in self.environ:
            message = f"environment variable {name} is not set"
        else:
            return self.environ[name]
        self.error(node.start_mark, path, message)
        return None

    def mapping(
        self, node: yaml.Node, path: str, known: tuple[str, ...], *, section: bool = True
    ) -> _Fields | None:
        """Check that node is a mapping with only known, unique keys; return key -> value."""
        kind = _KINDS.get(node.tag, node.tag)
        if kind == "null" and section:  # a section whose keys are all commented out is {}
            return {}
        if kind != "mapping" or not isinstance(node, yaml.MappingNode):
            self.error(node.start_mark, path, f"expected a mapping, got {_show(_raw(node))}")
            return None
        fields: _Fields = {}
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            name = self.key(key_node, path)
            if name is None:
                continue
            child = _join(path, name)
            if name in first_line:
                self.error(
                    key_node.start_mark, child, f"duplicate key (first at line {first_line[name]})"
                )
                continue
            first_line[name] = key_node.start_mark.line + 1
            if name in known:
                fields[name] = value_node
            else:
                self.error(key_node.start_mark, child, _unknown_key(name, known))
        return fields

    def key(self, node: yaml.Node, path: str) -> str | None:
        """A mapping key as text; complex keys (lists, mappings) are refused."""
        if isinstance(node, yaml.ScalarNode):
            return str(node.value)
        self.error(node.start_mark, path, f"keys must be strings, got {_show(_raw(node))}")
        return None

    def optional(
        self, fields: _Fields, name: str, path: str, read: _Read[T], default: T
    ) -> T | None:
        """Read an optional key: its default when absent, None when invalid."""
        node = fields.get(name)
        return default if node is None else read(self, node, _join(path, name))

    def required(
        self, fields: _Fields, name: str, path: str, read: _Read[T], parent: yaml.Node
    ) -> T | None:
        """Read a required key; its absence is reported where the parent mapping ends."""
        node = fields.get(name)
        if node is None:
            self.error(parent.end_mark, _join(path, name), "required")
            return None
        return read(self, node, _join(path, name))


def _join(path: str, name: str) -> str:
    """Extend a dotted path."""
    return f"{path}.{name}" if path else name


def _unknown_key(name: str, known: tuple[str, ...]) -> str:
    """Say a key is unknown, suggesting the closest known one when one is close."""
    normalized = {k.lower(): k for k in known}
    close = difflib.get_close_matches(name.lower().replace("-", "_"), normalized, n=1)
    return f'unknown key (did you mean "{normalized[close[0]]}"?)' if close else "unknown key"


def _quote(text: str, limit: int = 80) -> str:
    """Quote a value for a message, cut short if it is long."""
    if len(text) > limit:
        text = text[:limit] + "..."
    return json.dumps(text, ensure_ascii=False)


def _raw(node: yaml.Node) -> _Scalar:
    """A node as written, before ${VAR} expansion."""
    text = node.value if isinstance(node, yaml.ScalarNode) else ""
    return _Scalar(_KINDS.get(node.tag, node.tag), str(text), expanded=False)


def _show(scalar: _Scalar) -> str:
    """Describe a value as the user wrote it, for "got ..." in messages."""
    if scalar.kind == "str":
        return _quote(scalar.text)
    if scalar.kind in ("mapping", "list"):
        return f"a {scalar.kind}"
    if scalar.kind == "null":
        return "null"
    if scalar.kind in ("int", "float", "bool"):
        return scalar.text
    return f"a value tagged {scalar.kind}"


def _leaf(convert: Callable[[_Scalar], T]) -> _Read[T]:
    """Turn a check of one value into a reader that records its failure at the node."""

    def read(reader: _Reader, node: yaml.Node, path: str) -> T | None:
        scalar = reader.scalar(node, path)
        if scalar is None:
            return None
        try:
            return convert(scalar)
        except _LeafError as exc:
            reader.error(node.start_mark, path, str(exc))
            return None

    return read


# --- leaf checks --------------------------------------------------------------------------


def _string(scalar: _Scalar) -> str:
    """A string, as written."""
    if scalar.kind != "str":
        raise _LeafError(f"expected a string, got {_show(scalar)}")
    return scalar.text


def _integer(scalar: _Scalar) -> int:
    """An integer; a ${VAR} that expands to digits counts as one."""
    if scalar.kind == "int" or (scalar.expanded and re.fullmatch(r"[-+]?[0-9]{1,30}", scalar.text)):
        return int(scalar.text)
    raise _LeafError(f"expected an integer, got {_show(scalar)}")


def _boolean(scalar: _Scalar) -> bool:
    """true or false; a quoted "true" is refused, a ${VAR} expanding to true is not."""
    if scalar.kind == "bool" or (scalar.expanded and scalar.text.lower() in ("true", "false")):
        return scalar.text.lower() == "true"
    raise _LeafError(f"expected true or false, got {_show(scalar)}")


def _duration(
    minimum: float | None = None, maximum: float | None = None, *, zero: bool = False
) -> Callable[[_Scalar], float]:
    """A duration string, greater than 0 (or equal to it if zero) and within the bounds given."""

    def convert(scalar: _Scalar) -> float:
        if scalar.kind != "str":
            raise _LeafError(f'expected a duration like "60s", got {_show(scalar)}')
        try:
            seconds = parse_duration(scalar.text)
        except ValueError as exc:
            raise _LeafError(str(exc)) from None
        if seconds < 0 or (seconds == 0 and not zero):
            raise _LeafError(f"must be greater than 0, got {format_duration(seconds)}")
        if minimum is not None and seconds < minimum:
            raise _LeafError(
                f"must be at least {format_duration(minimum)}, got {format_duration(seconds)}"
            )
        if maximum is not None and seconds > maximum:
            raise _LeafError(
                f"must be at most {format_duration(maximum)}, got {format_duration(seconds)}"
            )
        return seconds

    return convert


def _url(scalar: _Scalar) -> str:
    """An http(s) base URL without query, fragment or credentials; trailing "/" removed."""
    text = _string(scalar)
    problem = _url_problem(text)
    if problem is not None:
        raise _LeafError(f"invalid URL {_quote(text)}: {problem}")
    return text.rstrip("/")


def _url_problem(text: str) -> str | None:
    """The first thing wrong with a base URL, if any."""
    if any(c.isspace() or not c.isprintable() for c in text):
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(text)
        _ = parts.port  # raises on a port that is not a number in 0..65535
    except ValueError as exc:  # also bad IPv6 brackets
        return str(exc)
    if parts.scheme not in ("http", "https"):
        return "scheme must be http or https"
    if not parts.hostname:
        return "must include a host"
    if parts.username is not None or parts.password is not None:
        return "must not contain credentials"
    if parts.query or parts.fragment or "?" in text or "#" in text:
        return "must not have a query or fragment"
    return None


def _zone(name: str) -> datetime.tzinfo:
    """Look an IANA zone up; UTC works even without a time zone database."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        if name == "UTC":  # slim images may lack tzdata; UTC needs none
            return datetime.UTC
        raise _LeafError(f"unknown time zone {_quote(name)}") from None


def _timezone(scalar: _Scalar) -> tuple[str, datetime.tzinfo]:
    """A time zone name and its tzinfo."""
    name = _string(scalar)
    return name, _zone(name)


def _count(limit: int) -> Callable[[_Scalar], int]:
    """An integer within 0..limit."""

    def convert(scalar: _Scalar) -> int:
        value = _integer(scalar)
        if not 0 <= value <= limit:
            raise _LeafError(f"must be between 0 and {limit}, got {value}")
        return value

    return convert


_SIZE_UNITS = {
    "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30,
}  # fmt: skip
_SIZE = re.compile(r"([0-9]{1,12})\s*([a-zA-Z]*)")


def _size(scalar: _Scalar) -> int:
    """A size in bytes: an integer, or a number with a unit (``64MiB``, ``500kB``)."""
    low, high = MAX_RESPONSE_SIZE_RANGE
    if scalar.kind == "int" or (scalar.expanded and scalar.text.strip().isdigit()):
        value = _integer(scalar)
    else:
        match = _SIZE.fullmatch(scalar.text.strip()) if scalar.kind == "str" else None
        unit = _SIZE_UNITS.get(match.group(2).lower() or "b") if match else None
        if match is None or unit is None:
            raise _LeafError(
                f'expected a size in bytes like 67108864 or "64MiB" (units B, kB, MB, GB, KiB, '
                f"MiB, GiB), got {_show(scalar)}"
            )
        value = int(match.group(1)) * unit
    if not low <= value <= high:
        raise _LeafError(f"must be between 1KiB and 1GiB ({low}..{high} bytes), got {value}")
    return value


def _campaign_id(scalar: _Scalar) -> int | None:
    """A positive int64 campaign id."""
    try:
        value = _integer(scalar)
    except _LeafError:
        raise _LeafError(f"expected a positive integer, got {_show(scalar)}") from None
    if value <= 0:
        raise _LeafError(f"expected a positive integer, got {value}")
    if value > MAX_CAMPAIGN_ID:
        raise _LeafError(f"must be at most {MAX_CAMPAIGN_ID}, got {value}")
    return value


def _target_name(scalar: _Scalar) -> str:
    """A name usable as a metric label value and in logs."""
    name = _string(scalar)
    if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_-]*", name):
        raise _LeafError(f"invalid name {_quote(name)}: must match [a-zA-Z_][a-zA-Z0-9_-]*")
    return name


def _non_empty(scalar: _Scalar) -> str:
    """A string with at least one character."""
    text = _string(scalar)
    if not text:
        raise _LeafError("must not be empty")
    return text


def _inline_key(scalar: _Scalar) -> tuple[Secret, KeySource]:
    """The key written in the file, literally or through ${VAR}."""
    key = _string(scalar)
    problem = _key_problem(key)
    if problem is not None:
        raise _LeafError(problem)
    return Secret(key), "env" if scalar.expanded else "inline"


def _key_problem(key: str) -> str | None:
    """What makes a key unusable in an HTTP request; the key itself is never quoted."""
    if not key:
        return "must not be empty"
    if any(c.isspace() or not c.isprintable() for c in key):
        return "must not contain whitespace or control characters"
    return None


# --- sections -----------------------------------------------------------------------------


def _key_file(base_dir: str | None) -> Callable[[_Scalar], tuple[Secret, KeySource]]:
    """A file holding the key, relative to base_dir; trailing whitespace is stripped."""

    def convert(scalar: _Scalar) -> tuple[Secret, KeySource]:
        name = _string(scalar)
        if not name:
            raise _LeafError("must not be empty")
        return Secret(_read_secret_file(Path(base_dir or ".", name))), "file"

    return convert


def _read_secret_file(file: Path) -> str:
    """The key stored in a file, checked like an inline key."""
    where = _quote(str(file))
    try:
        key = file.read_text(encoding="utf-8").rstrip()
    except OSError as exc:
        raise _LeafError(f"cannot read {where}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise _LeafError(f"{where} is not valid UTF-8") from None
    if not key:
        raise _LeafError(f"{where} is empty")
    problem = _key_problem(key)
    if problem is not None:
        raise _LeafError(f"the key in {where} {problem}")
    return key


def _read_key(
    reader: _Reader, fields: _Fields, path: str, parent: yaml.Node
) -> tuple[Secret, KeySource] | None:
    """Exactly one of key and key_file."""
    if "key" in fields and "key_file" in fields:
        message = "set either api.key or api.key_file, not both"
        reader.error(fields["key_file"].start_mark, _join(path, "key_file"), message)
        return None
    if "key_file" in fields:
        read_file = _leaf(_key_file(reader.base_dir))
        return read_file(reader, fields["key_file"], _join(path, "key_file"))
    if "key" not in fields:
        reader.error(parent.end_mark, _join(path, "key"), "required (or set api.key_file)")
        return None
    return _leaf(_inline_key)(reader, fields["key"], _join(path, "key"))


def _read_api(reader: _Reader, node: yaml.Node, path: str) -> ApiConfig | None:
    """The api section."""
    fields = reader.mapping(node, path, _API_KEYS)
    if fields is None:
        return None
    url = reader.optional(fields, "url", path, _leaf(_url), DEFAULT_API_URL)
    key = _read_key(reader, fields, path, node)
    timeout = reader.optional(fields, "timeout", path, _leaf(_duration()), DEFAULT_TIMEOUT)
    zone = reader.optional(
        fields, "timezone", path, _leaf(_timezone), (DEFAULT_TIMEZONE, _zone(DEFAULT_TIMEZONE))
    )
    retries = reader.optional(
        fields, "max_retries", path, _leaf(_count(MAX_RETRIES_LIMIT)), DEFAULT_MAX_RETRIES
    )
    rate = reader.optional(
        fields,
        "max_requests_per_minute",
        path,
        _leaf(_count(MAX_REQUESTS_PER_MINUTE_LIMIT)),
        DEFAULT_MAX_REQUESTS_PER_MINUTE,
    )
    size = reader.optional(
        fields, "max_response_size", path, _leaf(_size), DEFAULT_MAX_RESPONSE_SIZE
    )
    if (
        url is None
        or key is None
        or timeout is None
        or zone is None
        or retries is None
        or rate is None
        or size is None
    ):
        return None
    return ApiConfig(url, key[0], key[1], timeout, zone[0], zone[1], retries, rate, size)


def _read_poll(reader: _Reader, node: yaml.Node, path: str) -> PollConfig | None:
    """The poll section."""
    fields = reader.mapping(node, path, _POLL_KEYS)
    if fields is None:
        return None
    check = _duration(minimum=MIN_POLL_INTERVAL)
    interval = reader.optional(fields, "interval", path, _leaf(check), DEFAULT_POLL_INTERVAL)
    recheck = reader.optional(fields, "recheck", path, _read_recheck, _DEFAULT_TIERS)
    grace = reader.optional(
        fields, "abandon_grace", path, _leaf(_duration(zero=True)), DEFAULT_ABANDON_GRACE
    )
    if interval is None or recheck is None or grace is None:
        return None
    return PollConfig(interval, recheck, grace)


def _read_recheck(reader: _Reader, node: yaml.Node, path: str) -> tuple[RecheckTier, ...] | None:
    """A non-empty list of tiers, max_age strictly increasing."""
    items = _sequence(reader, node, path, "a list of tiers")
    if items is None:
        return None
    if not items:
        reader.error(node.start_mark, path, "must not be empty")
        return None
    tiers: list[RecheckTier | None] = []
    for index, item in enumerate(items):
        previous = tiers[-1].max_age if tiers and tiers[-1] is not None else None
        tiers.append(_read_tier(reader, item, f"{path}[{index}]", previous))
    if any(t is None for t in tiers):
        return None
    return tuple(t for t in tiers if t is not None)


def _read_tier(
    reader: _Reader, node: yaml.Node, path: str, previous: float | None
) -> RecheckTier | None:
    """One item of poll.recheck; max_age is compared with the previous tier's when that is valid."""
    fields = reader.mapping(node, path, _RECHECK_KEYS, section=False)
    if fields is None:
        return None
    max_age = reader.required(fields, "max_age", path, _leaf(_duration()), node)
    every = reader.required(fields, "every", path, _leaf(_duration()), node)
    if max_age is not None and previous is not None and max_age <= previous:
        limit, got = format_duration(previous), format_duration(max_age)
        message = f"must be greater than the previous tier's ({limit}), got {got}"
        reader.error(fields["max_age"].start_mark, _join(path, "max_age"), message)
        return None
    if max_age is None or every is None:
        return None
    return RecheckTier(max_age, every)


def _read_target(
    reader: _Reader, node: yaml.Node, path: str, interval: float | None
) -> TargetConfig | None:
    """One item of targets; the window is compared with the poll interval when that is valid."""
    fields = reader.mapping(node, path, _TARGET_KEYS, section=False)
    if fields is None:
        return None
    name = reader.required(fields, "name", path, _leaf(_target_name), node)
    campaign_id = reader.optional(fields, "campaign_id", path, _leaf(_campaign_id), None)
    window = reader.required(fields, "window", path, _leaf(_duration(maximum=MAX_WINDOW)), node)
    if window is not None and interval is not None and window < interval:
        limit, got = format_duration(interval), format_duration(window)
        message = f"must be at least poll.interval ({limit}), got {got}"
        reader.error(fields["window"].start_mark, _join(path, "window"), message)
        return None
    no_labels: tuple[str, ...] = ()
    labels = reader.optional(fields, "labels", path, _read_labels, no_labels)
    cap = reader.optional(
        fields,
        "max_label_values",
        path,
        _leaf(_count(MAX_LABEL_VALUES_LIMIT)),
        DEFAULT_MAX_LABEL_VALUES,
    )
    if name is None or window is None or ("campaign_id" in fields and campaign_id is None):
        return None
    if labels is None or cap is None:
        return None
    return TargetConfig(name, window, campaign_id, labels, cap)


def _read_labels(reader: _Reader, node: yaml.Node, path: str) -> tuple[str, ...] | None:
    """Extra label dimensions: each one of LABEL_DIMENSIONS, at most once."""
    items = _sequence(reader, node, path, "a list of label names")
    if items is None:
        return None
    labels: list[str] = []
    ok = True
    for index, item in enumerate(items):
        label = _leaf(_label_dimension)(reader, item, f"{path}[{index}]")
        if label is not None and label in labels:
            reader.error(item.start_mark, f"{path}[{index}]", f'"{label}" is listed twice')
            label = None
        ok = ok and label is not None
        if label is not None:
            labels.append(label)
    return tuple(labels) if ok else None


def _label_dimension(scalar: _Scalar) -> str:
    """One of the extra label dimensions."""
    label = _string(scalar)
    if label not in LABEL_DIMENSIONS:
        allowed = ", ".join(LABEL_DIMENSIONS)
        raise _LeafError(f'unknown label "{label}" (allowed: {allowed})')
    return label


def _read_targets(
    reader: _Reader, node: yaml.Node, path: str, interval: float | None
) -> tuple[TargetConfig, ...] | None:
    """The targets list: at least one, names unique."""
    items = _sequence(reader, node, path, "a list of targets")
    if items is None:
        return None
    if not items:
        reader.error(node.start_mark, path, "must list at least one target")
        return None
    targets = [_read_target(reader, item, f"{path}[{i}]", interval) for i, item in enumerate(items)]
    _check_unique_names(reader, items, path)
    if any(t is None for t in targets):
        return None
    return tuple(t for t in targets if t is not None)


def _check_unique_names(reader: _Reader, items: list[yaml.Node], path: str) -> None:
    """Report every target whose name an earlier target already has."""
    first: dict[str, int] = {}
    for index, item in enumerate(items):
        name_node = _name_node(item)
        if name_node is None:
            continue
        name = str(name_node.value)
        if name in first:
            message = f"duplicate target name {_quote(name)} (first at {path}[{first[name]}])"
            reader.error(name_node.start_mark, f"{path}[{index}].name", message)
        else:
            first[name] = index


def _name_node(item: yaml.Node) -> yaml.ScalarNode | None:
    """The first `name` value of a target item, if it is a string scalar."""
    if not isinstance(item, yaml.MappingNode):
        return None
    for key_node, value_node in item.value:
        if key_node.value == "name":
            is_str = isinstance(value_node, yaml.ScalarNode) and _KINDS.get(value_node.tag) == "str"
            return value_node if is_str else None
    return None


def _sequence(reader: _Reader, node: yaml.Node, path: str, expected: str) -> list[yaml.Node] | None:
    """The items of a YAML list, or None after reporting that node is not one."""
    if isinstance(node, yaml.SequenceNode) and _KINDS.get(node.tag) == "list":
        return list(node.value)
    reader.error(node.start_mark, path, f"expected {expected}, got {_show(_raw(node))}")
    return None


def _read_buckets(reader: _Reader, node: yaml.Node, path: str) -> tuple[float, ...] | None:
    """A non-empty, strictly increasing list of durations."""
    items = _sequence(reader, node, path, "a list of durations")
    if items is None:
        return None
    if not items:
        reader.error(node.start_mark, path, "must not be empty")
        return None
    bounds = [_leaf(_duration())(reader, item, f"{path}[{i}]") for i, item in enumerate(items)]
    ok = all(b is not None for b in bounds)
    for index in range(1, len(bounds)):
        previous, current = bounds[index - 1], bounds[index]
        if previous is not None and current is not None and current <= previous:
            limit, got = format_duration(previous), format_duration(current)
            message = f"must be greater than the previous bucket ({limit}), got {got}"
            reader.error(items[index].start_mark, f"{path}[{index}]", message)
            ok = False
    return tuple(b for b in bounds if b is not None) if ok else None


def _read_metrics(reader: _Reader, node: yaml.Node, path: str) -> MetricsConfig | None:
    """The metrics section."""
    fields = reader.mapping(node, path, _METRICS_KEYS)
    if fields is None:
        return None
    latency = reader.optional(
        fields, "delivery_latency_buckets", path, _read_buckets, DEFAULT_DELIVERY_LATENCY_BUCKETS
    )
    delay = reader.optional(
        fields, "send_delay_buckets", path, _read_buckets, DEFAULT_SEND_DELAY_BUCKETS
    )
    if latency is None or delay is None:
        return None
    return MetricsConfig(latency, delay)


def _read_state(reader: _Reader, node: yaml.Node, path: str) -> StateConfig | None:
    """The state section."""
    fields = reader.mapping(node, path, _STATE_KEYS)
    if fields is None:
        return None
    file = reader.optional(fields, "path", path, _leaf(_non_empty), DEFAULT_STATE_PATH)
    return None if file is None else StateConfig(file)


def _read_config(reader: _Reader, root: yaml.Node) -> Config | None:
    """The whole document."""
    fields = reader.mapping(root, "", _TOP_KEYS, section=False)
    if fields is None:
        return None
    api = reader.required(fields, "api", "", _read_api, root)
    poll = reader.optional(fields, "poll", "", _read_poll, PollConfig(DEFAULT_POLL_INTERVAL))
    interval = None if poll is None else poll.interval

    def read_targets(r: _Reader, node: yaml.Node, path: str) -> tuple[TargetConfig, ...] | None:
        return _read_targets(r, node, path, interval)

    targets = reader.required(fields, "targets", "", read_targets, root)
    count = reader.optional(fields, "count_existing_on_start", "", _leaf(_boolean), False)
    metrics = reader.optional(fields, "metrics", "", _read_metrics, _default_metrics())
    state = reader.optional(fields, "state", "", _read_state, StateConfig())
    if api is None or poll is None or targets is None or count is None or metrics is None:
        return None
    return None if state is None else Config(api, poll, targets, count, metrics, state)


def _default_metrics() -> MetricsConfig:
    """The bucket bounds used when the metrics section leaves them out."""
    return MetricsConfig(DEFAULT_DELIVERY_LATENCY_BUCKETS, DEFAULT_SEND_DELAY_BUCKETS)


# --- entry points -------------------------------------------------------------------------


def parse_config(
    text: str,
    *,
    source: str = "<config>",
    environ: Mapping[str, str] | None = None,
    base_dir: str | None = None,
) -> Config:
    """Parse configuration text; key_file is relative to base_dir (default: the working dir)."""
    root = _compose(text, source)
    reader = _Reader(source, os.environ if environ is None else environ, base_dir)
    config = _read_config(reader, root)
    if reader.problems or config is None:
        raise ConfigError(source, reader.messages())
    return config


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Config:
    """Load a configuration file; a relative key_file is read from the file's directory."""
    source, text = _read_file(path)
    base_dir = os.path.dirname(os.path.abspath(source))
    return parse_config(text, source=source, environ=environ, base_dir=base_dir)


def _read_file(path: str | os.PathLike[str]) -> tuple[str, str]:
    """A config file's name and text; an unreadable or non-UTF-8 file is a ConfigError."""
    source = os.fspath(path)
    try:
        text = Path(source).read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise ConfigError(source, [f"{source}: cannot read file: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        message = f"{source}: not valid UTF-8 (byte {exc.start} of the file)"
        raise ConfigError(source, [message]) from None
    return source, text


def demo_config(api_url: str, api_key: str) -> Config:
    """The built-in configuration for --demo: three targets polled every 5s, state in memory."""
    api = ApiConfig(
        url=api_url.rstrip("/"),
        key=Secret(api_key),
        key_source="env",
        timeout=DEFAULT_TIMEOUT,
        timezone=DEFAULT_TIMEZONE,
        tz=_zone(DEFAULT_TIMEZONE),
        max_retries=DEFAULT_MAX_RETRIES,
        max_requests_per_minute=DEFAULT_MAX_REQUESTS_PER_MINUTE,
    )
    targets = (
        TargetConfig("all", 3600.0, None),
        TargetConfig("otp", 3600.0, 58982653),
        TargetConfig("marketing", 3600.0, 58982654),
    )
    state = StateConfig(path=":memory:")
    return Config(api, PollConfig(5.0), targets, False, _default_metrics(), state)
