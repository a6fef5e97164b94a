"""The exporter's config file: its fields, their checks, and the frozen, typed `Config`.

Owns the file format (see config.example.yaml) and what each field may be; reading YAML,
collecting every problem and the leaf checks are :mod:`.reader`'s. It must not import httpx,
prometheus_client or any exporter module outside this package, the vocabulary and defaults.
"""

from __future__ import annotations

import datetime
import os
import re
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple, TypeAlias, TypeVar

import yaml

from exporter.config.durations import format_duration, parse_duration, quoted
from exporter.config.reader import (
    NODE_KINDS,
    ConfigError,
    Fields,
    LeafError,
    Reader,
    Scalar,
    Secret,
    as_boolean,
    as_count,
    as_duration,
    as_integer,
    as_non_empty,
    as_string,
    as_url,
    compose,
    join_path,
    leaf,
    read_text_file,
    sequence_of,
    shown,
)
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
    DEFAULT_REPORT_FEED,
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
_POLL_KEYS = ("interval", "recheck", "abandon_grace", "report_feed")
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


def default_recheck(interval: float) -> tuple[RecheckTier, ...]:
    """The default re-check tiers at a poll interval: their periods are multiples of it, so
    that a shorter interval makes counts fresher without a schedule of its own."""
    return tuple(RecheckTier(max_age, every * interval) for max_age, every in DEFAULT_RECHECK)


@dataclass(frozen=True, slots=True)
class PollConfig:
    """How often the message list is fetched and pending messages are re-read."""

    interval: float = DEFAULT_POLL_INTERVAL
    # max_age strictly increasing; empty: the defaults at this interval (default_recheck)
    recheck: tuple[RecheckTier, ...] = ()
    abandon_grace: float = DEFAULT_ABANDON_GRACE
    report_feed: bool = DEFAULT_REPORT_FEED

    def __post_init__(self) -> None:
        if not self.recheck:  # frozen: the one way to fill in a default that follows a field
            object.__setattr__(self, "recheck", default_recheck(self.interval))


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

    delivery_latency_buckets: tuple[float, ...] = DEFAULT_DELIVERY_LATENCY_BUCKETS
    send_delay_buckets: tuple[float, ...] = DEFAULT_SEND_DELAY_BUCKETS


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


def _zone(name: str) -> datetime.tzinfo:
    """Look an IANA zone up; UTC works even without a time zone database."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        if name == "UTC":  # slim images may lack tzdata; UTC needs none
            return datetime.UTC
        raise LeafError(f"unknown time zone {quoted(name)}") from None


def _timezone(scalar: Scalar) -> tuple[str, datetime.tzinfo]:
    """A time zone name and its tzinfo."""
    name = as_string(scalar)
    return name, _zone(name)


_SIZE_UNITS = {
    "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30,
}  # fmt: skip
_SIZE = re.compile(r"([0-9]{1,12})\s*([a-zA-Z]*)")


def _size(scalar: Scalar) -> int:
    """A size in bytes: an integer, or a number with a unit (``64MiB``, ``500kB``)."""
    low, high = MAX_RESPONSE_SIZE_RANGE
    if scalar.kind == "int" or (scalar.expanded and scalar.text.strip().isdigit()):
        value = as_integer(scalar)
    else:
        match = _SIZE.fullmatch(scalar.text.strip()) if scalar.kind == "str" else None
        unit = _SIZE_UNITS.get(match.group(2).lower() or "b") if match else None
        if match is None or unit is None:
            raise LeafError(
                f'expected a size in bytes like 67108864 or "64MiB" (units B, kB, MB, GB, KiB, '
                f"MiB, GiB), got {shown(scalar)}"
            )
        value = int(match.group(1)) * unit
    if not low <= value <= high:
        raise LeafError(f"must be between 1KiB and 1GiB ({low}..{high} bytes), got {value}")
    return value


def _campaign_id(scalar: Scalar) -> int | None:
    """A positive int64 campaign id."""
    try:
        value = as_integer(scalar)
    except LeafError:
        raise LeafError(f"expected a positive integer, got {shown(scalar)}") from None
    if value <= 0:
        raise LeafError(f"expected a positive integer, got {value}")
    if value > MAX_CAMPAIGN_ID:
        raise LeafError(f"must be at most {MAX_CAMPAIGN_ID}, got {value}")
    return value


def _target_name(scalar: Scalar) -> str:
    """A name usable as a metric label value and in logs."""
    name = as_string(scalar)
    if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_-]*", name):
        raise LeafError(f"invalid name {quoted(name)}: must match [a-zA-Z_][a-zA-Z0-9_-]*")
    return name


def _inline_key(scalar: Scalar) -> tuple[Secret, KeySource]:
    """The key written in the file, literally or through ${VAR}."""
    key = as_string(scalar)
    problem = _key_problem(key)
    if problem is not None:
        raise LeafError(problem)
    return Secret(key), "env" if scalar.expanded else "inline"


def _key_problem(key: str) -> str | None:
    """What makes a key unusable in an HTTP request; the key itself is never quoted."""
    if not key:
        return "must not be empty"
    if any(c.isspace() or not c.isprintable() for c in key):
        return "must not contain whitespace or control characters"
    return None


# --- sections -----------------------------------------------------------------------------


def _key_file(base_dir: str | None) -> Callable[[Scalar], tuple[Secret, KeySource]]:
    """A file holding the key, relative to base_dir; trailing whitespace is stripped."""

    def convert(scalar: Scalar) -> tuple[Secret, KeySource]:
        name = as_string(scalar)
        if not name:
            raise LeafError("must not be empty")
        return Secret(_read_secret_file(Path(base_dir or ".", name))), "file"

    return convert


def _read_secret_file(file: Path) -> str:
    """The key stored in a file, checked like an inline key."""
    where = quoted(str(file))
    try:
        key = file.read_text(encoding="utf-8").rstrip()
    except OSError as exc:
        raise LeafError(f"cannot read {where}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise LeafError(f"{where} is not valid UTF-8") from None
    if not key:
        raise LeafError(f"{where} is empty")
    problem = _key_problem(key)
    if problem is not None:
        raise LeafError(f"the key in {where} {problem}")
    return key


def _read_key(
    reader: Reader, fields: Fields, path: str, parent: yaml.Node
) -> tuple[Secret, KeySource] | None:
    """Exactly one of key and key_file."""
    if "key" in fields and "key_file" in fields:
        message = "set either api.key or api.key_file, not both"
        reader.error(fields["key_file"].start_mark, join_path(path, "key_file"), message)
        return None
    if "key_file" in fields:
        read_file = leaf(_key_file(reader.base_dir))
        return read_file(reader, fields["key_file"], join_path(path, "key_file"))
    if "key" not in fields:
        reader.error(parent.end_mark, join_path(path, "key"), "required (or set api.key_file)")
        return None
    return leaf(_inline_key)(reader, fields["key"], join_path(path, "key"))


def _read_api(reader: Reader, node: yaml.Node, path: str) -> ApiConfig | None:
    """The api section."""
    fields = reader.mapping(node, path, _API_KEYS)
    if fields is None:
        return None
    url = reader.optional(fields, "url", path, leaf(as_url), DEFAULT_API_URL)
    key = _read_key(reader, fields, path, node)
    timeout = reader.optional(fields, "timeout", path, leaf(as_duration()), DEFAULT_TIMEOUT)
    zone = reader.optional(
        fields, "timezone", path, leaf(_timezone), (DEFAULT_TIMEZONE, _zone(DEFAULT_TIMEZONE))
    )
    retries = reader.optional(
        fields, "max_retries", path, leaf(as_count(MAX_RETRIES_LIMIT)), DEFAULT_MAX_RETRIES
    )
    rate = reader.optional(
        fields,
        "max_requests_per_minute",
        path,
        leaf(as_count(MAX_REQUESTS_PER_MINUTE_LIMIT)),
        DEFAULT_MAX_REQUESTS_PER_MINUTE,
    )
    size = reader.optional(
        fields, "max_response_size", path, leaf(_size), DEFAULT_MAX_RESPONSE_SIZE
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


def _read_poll(reader: Reader, node: yaml.Node, path: str) -> PollConfig | None:
    """The poll section."""
    fields = reader.mapping(node, path, _POLL_KEYS)
    if fields is None:
        return None
    check = as_duration(minimum=MIN_POLL_INTERVAL)
    interval = reader.optional(fields, "interval", path, leaf(check), DEFAULT_POLL_INTERVAL)
    follow_interval: tuple[RecheckTier, ...] = ()  # PollConfig fills in the defaults
    recheck = reader.optional(fields, "recheck", path, _read_recheck, follow_interval)
    grace = reader.optional(
        fields, "abandon_grace", path, leaf(as_duration(zero=True)), DEFAULT_ABANDON_GRACE
    )
    feed = reader.optional(fields, "report_feed", path, leaf(as_boolean), DEFAULT_REPORT_FEED)
    if interval is None or recheck is None or grace is None or feed is None:
        return None
    return PollConfig(interval, recheck, grace, feed)


def _read_recheck(reader: Reader, node: yaml.Node, path: str) -> tuple[RecheckTier, ...] | None:
    """A non-empty list of tiers, max_age strictly increasing."""
    items = sequence_of(reader, node, path, "a list of tiers")
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
    reader: Reader, node: yaml.Node, path: str, previous: float | None
) -> RecheckTier | None:
    """One item of poll.recheck; max_age is compared with the previous tier's when that is valid."""
    fields = reader.mapping(node, path, _RECHECK_KEYS, section=False)
    if fields is None:
        return None
    max_age = reader.required(fields, "max_age", path, leaf(as_duration()), node)
    every = reader.required(fields, "every", path, leaf(as_duration()), node)
    if max_age is not None and previous is not None and max_age <= previous:
        limit, got = format_duration(previous), format_duration(max_age)
        message = f"must be greater than the previous tier's ({limit}), got {got}"
        reader.error(fields["max_age"].start_mark, join_path(path, "max_age"), message)
        return None
    if max_age is None or every is None:
        return None
    return RecheckTier(max_age, every)


def _read_target(
    reader: Reader, node: yaml.Node, path: str, interval: float | None
) -> TargetConfig | None:
    """One item of targets; the window is compared with the poll interval when that is valid."""
    fields = reader.mapping(node, path, _TARGET_KEYS, section=False)
    if fields is None:
        return None
    name = reader.required(fields, "name", path, leaf(_target_name), node)
    campaign_id = reader.optional(fields, "campaign_id", path, leaf(_campaign_id), None)
    window = reader.required(fields, "window", path, leaf(as_duration(maximum=MAX_WINDOW)), node)
    if window is not None and interval is not None and window < interval:
        limit, got = format_duration(interval), format_duration(window)
        message = f"must be at least poll.interval ({limit}), got {got}"
        reader.error(fields["window"].start_mark, join_path(path, "window"), message)
        return None
    no_labels: tuple[str, ...] = ()
    labels = reader.optional(fields, "labels", path, _read_labels, no_labels)
    cap = reader.optional(
        fields,
        "max_label_values",
        path,
        leaf(as_count(MAX_LABEL_VALUES_LIMIT)),
        DEFAULT_MAX_LABEL_VALUES,
    )
    if name is None or window is None or ("campaign_id" in fields and campaign_id is None):
        return None
    if labels is None or cap is None:
        return None
    return TargetConfig(name, window, campaign_id, labels, cap)


def _read_labels(reader: Reader, node: yaml.Node, path: str) -> tuple[str, ...] | None:
    """Extra label dimensions: each one of LABEL_DIMENSIONS, at most once."""
    items = sequence_of(reader, node, path, "a list of label names")
    if items is None:
        return None
    labels: list[str] = []
    ok = True
    for index, item in enumerate(items):
        label = leaf(_label_dimension)(reader, item, f"{path}[{index}]")
        if label is not None and label in labels:
            reader.error(item.start_mark, f"{path}[{index}]", f'"{label}" is listed twice')
            label = None
        ok = ok and label is not None
        if label is not None:
            labels.append(label)
    return tuple(labels) if ok else None


def _label_dimension(scalar: Scalar) -> str:
    """One of the extra label dimensions."""
    label = as_string(scalar)
    if label not in LABEL_DIMENSIONS:
        allowed = ", ".join(LABEL_DIMENSIONS)
        raise LeafError(f'unknown label "{label}" (allowed: {allowed})')
    return label


def _read_targets(
    reader: Reader, node: yaml.Node, path: str, interval: float | None
) -> tuple[TargetConfig, ...] | None:
    """The targets list: at least one, names unique."""
    items = sequence_of(reader, node, path, "a list of targets")
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


def _check_unique_names(reader: Reader, items: list[yaml.Node], path: str) -> None:
    """Report every target whose name an earlier target already has."""
    first: dict[str, int] = {}
    for index, item in enumerate(items):
        name_node = _name_node(item)
        if name_node is None:
            continue
        name = str(name_node.value)
        if name in first:
            message = f"duplicate target name {quoted(name)} (first at {path}[{first[name]}])"
            reader.error(name_node.start_mark, f"{path}[{index}].name", message)
        else:
            first[name] = index


def _name_node(item: yaml.Node) -> yaml.ScalarNode | None:
    """The first `name` value of a target item, if it is a string scalar."""
    if not isinstance(item, yaml.MappingNode):
        return None
    for key_node, value_node in item.value:
        if key_node.value == "name":
            is_str = (
                isinstance(value_node, yaml.ScalarNode) and NODE_KINDS.get(value_node.tag) == "str"
            )
            return value_node if is_str else None
    return None


def _read_buckets(reader: Reader, node: yaml.Node, path: str) -> tuple[float, ...] | None:
    """A non-empty, strictly increasing list of durations."""
    items = sequence_of(reader, node, path, "a list of durations")
    if items is None:
        return None
    if not items:
        reader.error(node.start_mark, path, "must not be empty")
        return None
    bounds = [leaf(as_duration())(reader, item, f"{path}[{i}]") for i, item in enumerate(items)]
    ok = all(b is not None for b in bounds)
    for index in range(1, len(bounds)):
        previous, current = bounds[index - 1], bounds[index]
        if previous is not None and current is not None and current <= previous:
            limit, got = format_duration(previous), format_duration(current)
            message = f"must be greater than the previous bucket ({limit}), got {got}"
            reader.error(items[index].start_mark, f"{path}[{index}]", message)
            ok = False
    return tuple(b for b in bounds if b is not None) if ok else None


def _read_metrics(reader: Reader, node: yaml.Node, path: str) -> MetricsConfig | None:
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


def _read_state(reader: Reader, node: yaml.Node, path: str) -> StateConfig | None:
    """The state section."""
    fields = reader.mapping(node, path, _STATE_KEYS)
    if fields is None:
        return None
    file = reader.optional(fields, "path", path, leaf(as_non_empty), DEFAULT_STATE_PATH)
    return None if file is None else StateConfig(file)


def _read_config(reader: Reader, root: yaml.Node) -> Config | None:
    """The whole document."""
    fields = reader.mapping(root, "", _TOP_KEYS, section=False)
    if fields is None:
        return None
    api = reader.required(fields, "api", "", _read_api, root)
    poll = reader.optional(fields, "poll", "", _read_poll, PollConfig(DEFAULT_POLL_INTERVAL))
    interval = None if poll is None else poll.interval

    def read_targets(r: Reader, node: yaml.Node, path: str) -> tuple[TargetConfig, ...] | None:
        return _read_targets(r, node, path, interval)

    targets = reader.required(fields, "targets", "", read_targets, root)
    count = reader.optional(fields, "count_existing_on_start", "", leaf(as_boolean), False)
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
    root = compose(text, source)
    reader = Reader(source, os.environ if environ is None else environ, base_dir)
    config = _read_config(reader, root)
    if reader.problems or config is None:
        raise ConfigError(source, reader.messages())
    return config


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Config:
    """Load a configuration file; a relative key_file is read from the file's directory."""
    source, text = read_text_file(path)
    base_dir = os.path.dirname(os.path.abspath(source))
    return parse_config(text, source=source, environ=environ, base_dir=base_dir)


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
