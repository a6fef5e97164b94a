"""Tests for exporter.config.schema: a file in, a Config or the exact error messages out."""

from __future__ import annotations

import dataclasses
import datetime
import pickle
import re
import textwrap
from pathlib import Path

import pytest
import yaml

from exporter.config.schema import (
    KNOWN_KEYS,
    ApiConfig,
    Config,
    ConfigError,
    MetricsConfig,
    PollConfig,
    RecheckTier,
    Secret,
    StateConfig,
    TargetConfig,
    demo_config,
    format_duration,
    load_config,
    parse_config,
    parse_duration,
)
from exporter.defaults import (
    DEFAULT_DELIVERY_LATENCY_BUCKETS,
    DEFAULT_RECHECK,
    DEFAULT_SEND_DELAY_BUCKETS,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.yaml"
KEY = "live_0123456789abcdef"
ENV = {"BSG_API_KEY": KEY}

DEFAULT_TIERS = tuple(RecheckTier(age, every * 60.0) for age, every in DEFAULT_RECHECK)
"""The default tiers at the default interval of 60s."""

BINARY = "tag:yaml.org,2002:binary"
ORDER = "units must go from largest to smallest, each used once"
SHAPE = 'expected a number and a unit, like "30s", "5m" or "1h30m"'

# The smallest valid file; tests replace or add lines to it.
MINIMAL = """\
api:
  key: live_inline
targets:
  - name: all
    window: 24h
"""


def parse(text: str, environ: dict[str, str] | None = None, **kwargs: str) -> Config:
    """Parse dedented YAML with a controlled environment."""
    return parse_config(
        textwrap.dedent(text), source="config.yaml", environ=environ or {}, **kwargs
    )


def errors_of(text: str, environ: dict[str, str] | None = None) -> list[str]:
    """The error list that parsing dedented YAML raises."""
    with pytest.raises(ConfigError) as caught:
        parse(text, environ)
    assert caught.value.source == "config.yaml"
    return list(caught.value.errors)


# --- the example file ---------------------------------------------------------------------


def test_example_loads_with_every_value() -> None:
    config = load_config(EXAMPLE, environ=ENV)
    assert config.api.url == "https://one-api.bsg.world"
    assert config.api.key.reveal() == KEY
    assert config.api.key_source == "env"
    assert config.api.timeout == 10.0
    assert config.api.timezone == "UTC"
    assert config.api.tz.utcoffset(datetime.datetime(2025, 1, 1)) == datetime.timedelta(0)
    assert config.api.max_retries == 3
    assert config.api.max_requests_per_minute == 300
    assert config.poll == PollConfig(interval=60.0, recheck=DEFAULT_TIERS, abandon_grace=3600.0)
    assert config.targets == (
        TargetConfig(name="all", window=86400.0, campaign_id=None),
        TargetConfig(name="otp", window=259200.0, campaign_id=58982653, labels=("country",)),
    )
    assert config.count_existing_on_start is False
    assert config.metrics == MetricsConfig(
        DEFAULT_DELIVERY_LATENCY_BUCKETS, DEFAULT_SEND_DELAY_BUCKETS
    )
    assert config.state == StateConfig(path="bsg-exporter.db")


def _flatten(value: object, prefix: str = "") -> set[str]:
    """Dotted key paths of loaded YAML, list items as `[]`."""
    keys: set[str] = set()
    if isinstance(value, dict):
        for key, child in value.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            keys |= {path} | _flatten(child, path)
    elif isinstance(value, list):
        for item in value:
            keys |= _flatten(item, f"{prefix}[]")
    return keys


def test_example_documents_every_known_key() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    active = _flatten(yaml.safe_load(text))
    assert active <= set(KNOWN_KEYS)
    for key in set(KNOWN_KEYS) - active:  # alternatives such as key_file, shown commented out
        leaf = key.rsplit(".", 1)[-1]
        assert re.search(rf"^\s*#\s*(- )?{leaf}:", text, re.MULTILINE), key


def test_example_defaults_match_the_loader() -> None:
    minimal = parse(MINIMAL)
    example = load_config(EXAMPLE, environ=ENV)
    assert dataclasses.replace(example.api, key=minimal.api.key, key_source="inline") == (
        minimal.api
    )
    assert example.poll == minimal.poll
    assert example.metrics == minimal.metrics
    assert example.count_existing_on_start == minimal.count_existing_on_start
    assert example.state == minimal.state


# --- defaults and accepted forms ----------------------------------------------------------


def test_minimal_file_takes_defaults() -> None:
    config = parse(MINIMAL)
    assert config.api.url == "https://one-api.bsg.world"
    assert config.api.key_source == "inline"
    assert (config.api.timeout, config.api.timezone, config.api.max_retries) == (10.0, "UTC", 3)
    assert config.api.max_requests_per_minute == 300
    assert config.poll.interval == 60.0
    assert config.poll.recheck == DEFAULT_TIERS
    assert config.poll.abandon_grace == 3600.0
    assert config.count_existing_on_start is False
    assert config.state == StateConfig("bsg-exporter.db")


def test_default_recheck_tiers() -> None:
    assert [(t.max_age, t.every) for t in PollConfig(60.0).recheck] == [
        (600.0, 60.0),
        (3600.0, 120.0),
        (21600.0, 1800.0),
        (259200.0, 7200.0),
    ]
    assert PollConfig(60.0) == PollConfig(60.0, DEFAULT_TIERS, 3600.0)


def test_default_recheck_periods_follow_the_interval_and_an_explicit_schedule_wins() -> None:
    quick = parse(MINIMAL + "poll:\n  interval: 15s\n")
    assert [t.every for t in quick.poll.recheck] == [15.0, 30.0, 450.0, 1800.0]
    assert [t.max_age for t in quick.poll.recheck] == [600.0, 3600.0, 21600.0, 259200.0]
    assert [t.every for t in PollConfig(1.0).recheck] == [1.0, 2.0, 30.0, 120.0]
    explicit = "poll:\n  interval: 15s\n  recheck:\n    - {max_age: 1h, every: 5m}\n"
    assert parse(MINIMAL + explicit).poll.recheck == (RecheckTier(3600.0, 300.0),)


def test_every_key_set() -> None:
    config = parse("""\
        api:
          url: http://127.0.0.1:8080/bsg/
          key: test_abc
          timeout: 1500ms
          timezone: Europe/Kyiv
          max_retries: 0
          max_requests_per_minute: 100000
        poll:
          interval: 500ms
          recheck:
            - max_age: 1m
              every: 100ms
            - max_age: 1h30m
              every: 5m
          abandon_grace: 30m
        targets:
          - name: otp-1
            campaign_id: 9000000000
            window: 1h30m
        count_existing_on_start: true
        metrics:
          delivery_latency_buckets: [1s, 1m]
          send_delay_buckets: [100ms]
        state:
          path: /var/lib/bsg/state.db
        """)
    assert config.api.url == "http://127.0.0.1:8080/bsg"  # trailing "/" dropped
    assert config.api.key.is_test_key
    assert config.api.timeout == 1.5
    assert str(config.api.tz) == "Europe/Kyiv"
    assert config.api.max_retries == 0
    assert config.api.max_requests_per_minute == 100000
    assert config.poll == PollConfig(
        0.5, (RecheckTier(60.0, 0.1), RecheckTier(5400.0, 300.0)), abandon_grace=1800.0
    )
    assert config.targets == (TargetConfig("otp-1", 5400.0, 9000000000),)
    assert config.count_existing_on_start is True
    assert config.metrics == MetricsConfig((1.0, 60.0), (0.1,))
    assert config.state == StateConfig("/var/lib/bsg/state.db")


def test_empty_sections_take_defaults() -> None:
    config = parse(MINIMAL + "poll:\nmetrics:\nstate:\n")
    assert config.poll == PollConfig(60.0)
    assert config.metrics.send_delay_buckets == DEFAULT_SEND_DELAY_BUCKETS
    assert config.state == StateConfig()


def test_zero_request_budget_means_no_limit() -> None:
    config = parse(MINIMAL.replace("  key:", "  max_requests_per_minute: 0\n  key:"))
    assert config.api.max_requests_per_minute == 0


def test_abandon_grace_may_be_zero() -> None:
    assert parse(MINIMAL + 'poll:\n  abandon_grace: "0s"\n').poll.abandon_grace == 0.0


def test_one_recheck_tier_with_every_below_interval() -> None:
    config = parse(MINIMAL + "poll:\n  recheck:\n    - max_age: 1h\n      every: 1s\n")
    assert config.poll.recheck == (RecheckTier(3600.0, 1.0),)


@pytest.mark.parametrize("path", [":memory:", "state/bsg.db"])
def test_state_path_kept_as_written(path: str) -> None:
    assert parse(MINIMAL + f'state:\n  path: "{path}"\n').state == StateConfig(path)


def test_state_path_expands_variables() -> None:
    config = parse(MINIMAL + "state:\n  path: ${DATA}/bsg.db\n", environ={"DATA": "/data"})
    assert config.state.path == "/data/bsg.db"


def test_yaml_1_1_booleans_stay_strings() -> None:
    config = parse(MINIMAL.replace("name: all", "name: no"))
    assert config.targets[0].name == "no"


def test_config_is_frozen() -> None:
    config = parse(MINIMAL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.poll.interval = 1.0  # type: ignore[misc]
    with pytest.raises(AttributeError):
        config.api.key._value = "x"


def test_window_equal_to_interval_is_accepted() -> None:
    config = parse(MINIMAL.replace("24h", "1m") + "poll:\n  interval: 60s\n")
    assert config.targets[0].window == 60.0


def test_window_up_to_seven_days() -> None:
    assert parse(MINIMAL.replace("24h", "1w")).targets[0].window == 604800.0


# --- one test per kind of error -----------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "key", "expected"),
    [
        ("api", "urll", 'api.urll: unknown key (did you mean "url"?)'),
        ("api", "Max-Retries", 'api.Max-Retries: unknown key (did you mean "max_retries"?)'),
        ("api", "colour", "api.colour: unknown key"),
        ("target", "windows", 'targets[0].windows: unknown key (did you mean "window"?)'),
    ],
)
def test_unknown_key(where: str, key: str, expected: str) -> None:
    old = "  key:" if where == "api" else "    window:"
    indent = old[: -len(old.lstrip())]
    assert errors_of(MINIMAL.replace(old, f"{indent}{key}: 1\n{old}")) == [expected]


def test_unknown_top_level_key() -> None:
    assert errors_of(MINIMAL + "target: []\n") == ['target: unknown key (did you mean "targets"?)']


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("  timeout: 10", 'api.timeout: expected a duration like "60s", got 10'),
        ("  timeout: 2.5", 'api.timeout: expected a duration like "60s", got 2.5'),
        ("  max_retries: \"3\"", 'api.max_retries: expected an integer, got "3"'),
        ("  max_retries: 1.5", "api.max_retries: expected an integer, got 1.5"),
        ("  url: 42", "api.url: expected a string, got 42"),
        ("  timezone: [UTC]", "api.timezone: expected a string, got a list"),
        ("  url:", "api.url: expected a string, got null"),
        ("  timeout: {s: 1}", 'api.timeout: expected a duration like "60s", got a mapping'),
        ("  url: !!binary aGk=", "api.url: expected a string, got a value tagged " + BINARY),
    ],
)  # fmt: skip
def test_wrong_type(line: str, expected: str) -> None:
    assert errors_of(MINIMAL.replace("  key:", f"{line}\n  key:")) == [expected]


def test_duration_given_as_number() -> None:
    assert errors_of(MINIMAL + "poll:\n  interval: 60\n") == [
        'poll.interval: expected a duration like "60s", got 60'
    ]


@pytest.mark.parametrize(
    ("value", "shown"), [('"false"', '"false"'), ("yes", '"yes"'), ("on", '"on"'), ("1", "1")]
)
def test_boolean_must_be_true_or_false(value: str, shown: str) -> None:
    assert errors_of(MINIMAL + f"count_existing_on_start: {value}\n") == [
        f"count_existing_on_start: expected true or false, got {shown}"
    ]


def test_the_report_feed_is_on_unless_switched_off() -> None:
    assert parse(MINIMAL).poll.report_feed is True
    assert parse(MINIMAL + "poll:\n  report_feed: false\n").poll.report_feed is False
    assert errors_of(MINIMAL + "poll:\n  report_feed: sometimes\n") == [
        'poll.report_feed: expected true or false, got "sometimes"'
    ]


def test_section_must_be_a_mapping() -> None:
    assert errors_of(MINIMAL + "poll: 60s\n") == ['poll: expected a mapping, got "60s"']


def test_targets_must_be_a_list() -> None:
    text = "api:\n  key: k\ntargets:\n  name: all\n"
    assert errors_of(text) == ["targets: expected a list of targets, got a mapping"]


def test_target_must_be_a_mapping() -> None:
    assert errors_of("api:\n  key: k\ntargets:\n  - all\n  -\n") == [
        'targets[0]: expected a mapping, got "all"',
        "targets[1]: expected a mapping, got null",
    ]


def test_missing_required_keys() -> None:
    assert errors_of("poll:\n  interval: 1m\n") == ["api: required", "targets: required"]


def test_missing_target_fields() -> None:
    assert errors_of("api:\n  key: k\ntargets:\n  - campaign_id: 5\n") == [
        "targets[0].name: required",
        "targets[0].window: required",
    ]


def test_empty_targets() -> None:
    assert errors_of("api:\n  key: k\ntargets: []\n") == ["targets: must list at least one target"]


def test_duplicate_target_name() -> None:
    text = MINIMAL.replace("name: all", "name: otp") + (
        "  - name: sms\n    window: 1h\n  - name: otp\n    window: 2h\n"
    )
    assert errors_of(text) == ['targets[2].name: duplicate target name "otp" (first at targets[0])']


def test_invalid_target_name() -> None:
    assert errors_of(MINIMAL.replace("name: all", "name: 1st")) == [
        'targets[0].name: invalid name "1st": must match [a-zA-Z_][a-zA-Z0-9_-]*'
    ]


def test_window_under_poll_interval() -> None:
    text = MINIMAL + "  - name: fast\n    window: 30s\npoll:\n  interval: 1m\n"
    assert errors_of(text) == ["targets[1].window: must be at least poll.interval (1m), got 30s"]


def test_window_over_seven_days() -> None:
    assert errors_of(MINIMAL.replace("24h", "8d")) == [
        "targets[0].window: must be at most 1w, got 8d"
    ]


def test_window_not_compared_with_an_invalid_interval() -> None:
    text = MINIMAL.replace("24h", "1s") + "poll:\n  interval: 5x\n"
    assert errors_of(text) == [
        'poll.interval: invalid duration "5x": unknown unit "x" (use ms, s, m, h, d or w)'
    ]


def test_poll_interval_minimum() -> None:
    assert errors_of(MINIMAL + "poll:\n  interval: 50ms\n") == [
        "poll.interval: must be at least 100ms, got 50ms"
    ]


def test_duration_must_be_positive() -> None:
    assert errors_of(MINIMAL.replace("  key:", "  timeout: 0s\n  key:")) == [
        "api.timeout: must be greater than 0, got 0s"
    ]


def test_invalid_duration_text() -> None:
    assert errors_of(MINIMAL.replace("24h", "1.5h")) == [
        'targets[0].window: invalid duration "1.5h": use whole numbers (like "1h30m")'
    ]


def test_bad_time_zone() -> None:
    assert errors_of(MINIMAL.replace("  key:", "  timezone: Mars/Base\n  key:")) == [
        'api.timezone: unknown time zone "Mars/Base"'
    ]


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://example.com", "scheme must be http or https"),
        ("one-api.bsg.world", "scheme must be http or https"),
        ("https://", "must include a host"),
        ("https://example.com/?a=1", "must not have a query or fragment"),
        ("https://example.com/#x", "must not have a query or fragment"),
        ("https://u:p@example.com", "must not contain credentials"),
        ("https://example.com:99999", "Port out of range 0-65535"),
        ("https://exa mple.com", "must not contain spaces or control characters"),
    ],
)
def test_bad_url(url: str, problem: str) -> None:
    assert errors_of(MINIMAL.replace("  key:", f'  url: "{url}"\n  key:')) == [
        f'api.url: invalid URL "{url}": {problem}'
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", "expected a positive integer, got 0"),
        ("-3", "expected a positive integer, got -3"),
        ('"58982653"', 'expected a positive integer, got "58982653"'),
        ("1.0", "expected a positive integer, got 1.0"),
        ("true", "expected a positive integer, got true"),
        ("9223372036854775808", "must be at most 9223372036854775807, got 9223372036854775808"),
    ],
)
def test_bad_campaign_id(value: str, expected: str) -> None:
    text = MINIMAL + f"    campaign_id: {value}\n"
    assert errors_of(text) == [f"targets[0].campaign_id: {expected}"]


def test_max_retries_range() -> None:
    assert errors_of(MINIMAL.replace("  key:", "  max_retries: 11\n  key:")) == [
        "api.max_retries: must be between 0 and 10, got 11"
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("-1", "must be between 0 and 100000, got -1"),
        ("100001", "must be between 0 and 100000, got 100001"),
        ('"300"', 'expected an integer, got "300"'),
        ("1.5", "expected an integer, got 1.5"),
    ],
)
def test_bad_max_requests_per_minute(value: str, expected: str) -> None:
    text = MINIMAL.replace("  key:", f"  max_requests_per_minute: {value}\n  key:")
    assert errors_of(text) == [f"api.max_requests_per_minute: {expected}"]


RECHECK = "poll.recheck"
TIER = "    - max_age: {}\n      every: {}\n"


@pytest.mark.parametrize(
    ("tiers", "expected"),
    [
        (" []\n", f"{RECHECK}: must not be empty"),
        (" 5m\n", f'{RECHECK}: expected a list of tiers, got "5m"'),
        ("\n", f"{RECHECK}: expected a list of tiers, got null"),
        ("\n    - 5m\n", f'{RECHECK}[0]: expected a mapping, got "5m"'),
        (
            "\n" + TIER.format("10m", "1m") + TIER.format("5m", "2m"),
            f"{RECHECK}[1].max_age: must be greater than the previous tier's (10m), got 5m",
        ),
        (
            "\n" + TIER.format("1h", "1m") + TIER.format("1h", "2m"),
            f"{RECHECK}[1].max_age: must be greater than the previous tier's (1h), got 1h",
        ),
        ("\n" + TIER.format("10m", "0s"), f"{RECHECK}[0].every: must be greater than 0, got 0s"),
        (
            "\n" + TIER.format("10m", "60"),
            f'{RECHECK}[0].every: expected a duration like "60s", got 60',
        ),
    ],
)
def test_bad_recheck(tiers: str, expected: str) -> None:
    assert errors_of(MINIMAL + f"poll:\n  recheck:{tiers}") == [expected]


def test_recheck_tier_unknown_key() -> None:
    assert errors_of(MINIMAL + "poll:\n  recheck:\n    - max_age: 10m\n      evry: 1m\n") == [
        f'{RECHECK}[0].evry: unknown key (did you mean "every"?)',
        f"{RECHECK}[0].every: required",
    ]


def test_recheck_tier_missing_fields() -> None:
    text = MINIMAL + "poll:\n  recheck:\n    - max_age: 10m\n    - every: 1m\n    - {}\n"
    assert errors_of(text) == [
        f"{RECHECK}[0].every: required",
        f"{RECHECK}[1].max_age: required",
        f"{RECHECK}[2].max_age: required",
        f"{RECHECK}[2].every: required",
    ]


def test_recheck_errors_in_document_order() -> None:
    text = MINIMAL + "poll:\n  recheck:\n" + (
        TIER.format("1h", "1m") + TIER.format("30m", "1x") + TIER.format("2h", "5m")
        + TIER.format("90m", "10m")
    )  # fmt: skip
    assert errors_of(text) == [
        f"{RECHECK}[1].max_age: must be greater than the previous tier's (1h), got 30m",
        f'{RECHECK}[1].every: invalid duration "1x": unknown unit "x" (use ms, s, m, h, d or w)',
        f"{RECHECK}[3].max_age: must be greater than the previous tier's (2h), got 1h30m",
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"-1s"', 'invalid duration "-1s": ' + SHAPE),
        ("0", 'expected a duration like "60s", got 0'),
    ],
)
def test_bad_abandon_grace(value: str, expected: str) -> None:
    assert errors_of(MINIMAL + f"poll:\n  abandon_grace: {value}\n") == [
        f"poll.abandon_grace: {expected}"
    ]


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ('  path: ""\n', "state.path: must not be empty"),
        ("  path:\n", "state.path: expected a string, got null"),
        ("  path: 1\n", "state.path: expected a string, got 1"),
        ("  file: x.db\n", "state.file: unknown key"),
        ("  paht: x.db\n", 'state.paht: unknown key (did you mean "path"?)'),
    ],
)
def test_bad_state(section: str, expected: str) -> None:
    assert errors_of(MINIMAL + "state:\n" + section) == [expected]


def test_state_must_be_a_mapping() -> None:
    assert errors_of(MINIMAL + "state: x.db\n") == ['state: expected a mapping, got "x.db"']


BUCKETS = "metrics.send_delay_buckets"


@pytest.mark.parametrize(
    ("buckets", "expected"),
    [
        ("[]", f"{BUCKETS}: must not be empty"),
        ("5s", f'{BUCKETS}: expected a list of durations, got "5s"'),
        ("[1s, 5s, 2s]", f"{BUCKETS}[2]: must be greater than the previous bucket (5s), got 2s"),
        ("[1s, 1s]", f"{BUCKETS}[1]: must be greater than the previous bucket (1s), got 1s"),
        ("[1s, 60]", f'{BUCKETS}[1]: expected a duration like "60s", got 60'),
        ("[0s]", f"{BUCKETS}[0]: must be greater than 0, got 0s"),
    ],
)
def test_bad_buckets(buckets: str, expected: str) -> None:
    assert errors_of(MINIMAL + f"metrics:\n  send_delay_buckets: {buckets}\n") == [expected]


# --- the key ------------------------------------------------------------------------------


def test_key_and_key_file_together() -> None:
    text = MINIMAL.replace("  key:", "  key_file: /x\n  key:")
    assert errors_of(text) == ["api.key_file: set either api.key or api.key_file, not both"]


def test_key_missing() -> None:
    assert errors_of("api:\n  url: http://x\ntargets:\n  - name: a\n    window: 1h\n") == [
        "api.key: required (or set api.key_file)"
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('""', "api.key: must not be empty"),
        ('"live_abc def"', "api.key: must not contain whitespace or control characters"),
        ("|\n    live_abc\n    more", "api.key: must not contain whitespace or control characters"),
    ],
)
def test_bad_inline_key(value: str, expected: str) -> None:
    errors = errors_of(MINIMAL.replace("key: live_inline", f"key: {value}"))
    assert errors == [expected]


def test_key_file_with_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "key").write_text(f"{KEY}\n\n", encoding="utf-8")
    config = parse(MINIMAL.replace("key: live_inline", f"key_file: {tmp_path / 'key'}"))
    assert config.api.key.reveal() == KEY
    assert config.api.key_source == "file"


def test_key_file_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text(KEY, encoding="utf-8")
    (tmp_path / "config.yaml").write_text(
        MINIMAL.replace("key: live_inline", "key_file: secret"), encoding="utf-8"
    )
    assert load_config(tmp_path / "config.yaml", environ={}).api.key.reveal() == KEY


def test_key_file_path_expands_variables(tmp_path: Path) -> None:
    (tmp_path / "key").write_text(KEY, encoding="utf-8")
    text = MINIMAL.replace("key: live_inline", "key_file: ${SECRETS}/key")
    config = parse(text, environ={"SECRETS": str(tmp_path)})
    assert (config.api.key.reveal(), config.api.key_source) == (KEY, "file")


def test_key_file_missing(tmp_path: Path) -> None:
    path = tmp_path / "nope"
    assert errors_of(MINIMAL.replace("key: live_inline", f"key_file: {path}")) == [
        f'api.key_file: cannot read "{path}": No such file or directory'
    ]


def test_key_file_empty(tmp_path: Path) -> None:
    (tmp_path / "key").write_text(" \n", encoding="utf-8")
    path = tmp_path / "key"
    assert errors_of(MINIMAL.replace("key: live_inline", f"key_file: {path}")) == [
        f'api.key_file: "{path}" is empty'
    ]


def test_key_file_with_two_lines(tmp_path: Path) -> None:
    (tmp_path / "key").write_text(f"{KEY}\n{KEY}\n", encoding="utf-8")
    path = tmp_path / "key"
    assert errors_of(MINIMAL.replace("key: live_inline", f"key_file: {path}")) == [
        f'api.key_file: the key in "{path}" must not contain whitespace or control characters'
    ]


def test_key_file_relative_to_base_dir(tmp_path: Path) -> None:
    (tmp_path / "key").write_text(KEY, encoding="utf-8")
    text = MINIMAL.replace("key: live_inline", "key_file: key")
    assert parse(text, base_dir=str(tmp_path)).api.key.reveal() == KEY


def test_secret_never_shows() -> None:
    config = parse(MINIMAL.replace("live_inline", KEY))
    for text in (repr(config), str(config), repr(config.api), f"{config.api}", f"{config.api.key}"):
        assert KEY not in text
    assert repr(config.api.key) == str(config.api.key) == "<secret>"
    assert config.api.key.reveal() == KEY
    assert not config.api.key.is_test_key
    assert Secret("test_abc").is_test_key


def test_secret_not_in_config_error() -> None:
    secret = "live_secret value"
    with pytest.raises(ConfigError) as caught:
        parse(MINIMAL.replace("live_inline", f'"{secret}"') + "poll: 1\n")
    assert secret not in str(caught.value)
    assert secret not in repr(caught.value)
    assert "api.key: must not contain whitespace or control characters" in caught.value.errors


def test_secret_equality_and_copies() -> None:
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert pickle.loads(pickle.dumps(Secret("a"))).reveal() == "a"
    assert parse(MINIMAL) == parse(MINIMAL)


# --- environment expansion ----------------------------------------------------------------


def test_env_expansion_in_key_and_other_strings() -> None:
    text = MINIMAL.replace("key: live_inline", "key: ${BSG_API_KEY}").replace(
        "api:", "api:\n  url: http://${HOST}:${PORT}"
    )
    config = parse(text, environ={**ENV, "HOST": "localhost", "PORT": "8080"})
    assert config.api.url == "http://localhost:8080"
    assert config.api.key.reveal() == KEY
    assert config.api.key_source == "env"


def test_env_expansion_of_numbers_and_booleans() -> None:
    text = (
        MINIMAL.replace("api:", "api:\n  max_retries: ${RETRIES}")
        + "    campaign_id: ${CAMPAIGN}\ncount_existing_on_start: ${COUNT}\n"
    )
    config = parse(text, environ={"RETRIES": "5", "CAMPAIGN": "42", "COUNT": "true"})
    assert config.api.max_retries == 5
    assert config.targets[0].campaign_id == 42
    assert config.count_existing_on_start is True


def test_env_escape() -> None:
    config = parse(MINIMAL.replace("live_inline", "live_$${NOT_A_VAR}$$x"))
    assert config.api.key.reveal() == "live_${NOT_A_VAR}$$x"
    assert config.api.key_source == "inline"  # an escape is not an expansion


def test_env_unset() -> None:
    text = MINIMAL.replace("live_inline", "${BSG_API_KEY}")
    assert errors_of(text) == ["api.key: environment variable BSG_API_KEY is not set"]


def test_env_set_but_empty() -> None:
    text = MINIMAL.replace("live_inline", "${BSG_API_KEY}")
    assert errors_of(text, {"BSG_API_KEY": ""}) == ["api.key: must not be empty"]


def test_env_bad_references() -> None:
    text = MINIMAL.replace("name: all", "name: ${1X}").replace("live_inline", "a${B")
    assert errors_of(text) == [
        'api.key: unterminated "${" (write "$${" for a literal "${")',
        'targets[0].name: invalid variable reference "${1X}" (write "$${" for a literal "${")',
    ]


def test_env_defaults_to_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BSG_TEST_KEY", KEY)
    text = MINIMAL.replace("live_inline", "${BSG_TEST_KEY}")
    assert parse_config(text).api.key.reveal() == KEY


# --- YAML-level problems ------------------------------------------------------------------


def test_duplicate_yaml_keys() -> None:
    text = MINIMAL.replace("  key: live_inline", "  url: http://a\n  key: k\n  url: http://b")
    assert errors_of(text) == ["api.url: duplicate key (first at line 2)"]


def test_duplicate_top_level_section() -> None:
    assert errors_of(MINIMAL + "api:\n  key: other\n") == ["api: duplicate key (first at line 1)"]


def test_syntax_error_has_line_and_column() -> None:
    assert errors_of("api:\n  key: k\n  url: a: b\n") == [
        "config.yaml:3:9: mapping values are not allowed here"
    ]


def test_syntax_error_with_context() -> None:
    assert errors_of("api:\n  - key\n url: x\n") == [
        "config.yaml:3:2: expected <block end>, but found '<block mapping start>'"
        " (while parsing a block mapping at line 1, column 1)"
    ]


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "---\n"])
def test_empty_file(text: str) -> None:
    assert errors_of(text) == [
        'config.yaml: empty configuration, expected a mapping with "api" and "targets"'
    ]


def test_top_level_not_a_mapping() -> None:
    assert errors_of("- api\n") == ["config.yaml:1:1: expected a mapping, got a list"]


def test_two_documents() -> None:
    assert errors_of(MINIMAL + "---\nx: 1\n") == [
        "config.yaml:6:1: expected a single YAML document, found another"
    ]


def test_control_character() -> None:
    assert errors_of("api:\n  key: a\x07b\n") == [
        "config.yaml:2:9: unacceptable character #x0007 (special characters are not allowed)"
    ]


# --- many errors at once ------------------------------------------------------------------


def test_all_errors_reported_in_document_order() -> None:
    text = """\
        poll:
          interval: 60
        targets:
          - name: otp
            window: 30s
          - name: otp
            window: 1h
            campaign_id: 0
        api:
          urll: https://x
          key: ${BSG_API_KEY}
          timezone: Mars/Base
        count_existing_on_start: "false"
        """
    assert errors_of(text) == [
        'poll.interval: expected a duration like "60s", got 60',
        'targets[1].name: duplicate target name "otp" (first at targets[0])',
        "targets[1].campaign_id: expected a positive integer, got 0",
        'api.urll: unknown key (did you mean "url"?)',
        "api.key: environment variable BSG_API_KEY is not set",
        'api.timezone: unknown time zone "Mars/Base"',
        'count_existing_on_start: expected true or false, got "false"',
    ]


def test_config_error_text() -> None:
    with pytest.raises(ConfigError) as caught:
        parse("api:\n  key: k\n  timeout: 1\n")
    assert str(caught.value) == (
        "config.yaml: 2 errors\n"
        '  api.timeout: expected a duration like "60s", got 1\n'
        "  targets: required"
    )


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.source == str(path)
    assert caught.value.errors == (f"{path}: cannot read file: No such file or directory",)


def test_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"api:\n  key: \xff\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.errors == (f"{path}: not valid UTF-8 (byte 12 of the file)",)


# --- durations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("24h", 86400.0),
        ("1h30m", 5400.0),
        ("1m30s500ms", 90.5),
        ("7d", 604800.0),
        ("2w", 1209600.0),
        ("1w2d3h4m5s6ms", 788645.006),
    ],
)
def test_parse_duration_valid(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty duration"),
        ("60", 'invalid duration "60": missing unit, like "60s"'),
        ("5sec", 'invalid duration "5sec": unknown unit "sec" (use ms, s, m, h, d or w)'),
        ("5S", 'invalid duration "5S": unknown unit "S" (use ms, s, m, h, d or w)'),
        ("30m1h", 'invalid duration "30m1h": ' + ORDER),
        ("1h1h", 'invalid duration "1h1h": ' + ORDER),
        ("0.5s", 'invalid duration "0.5s": use whole numbers (like "500ms")'),
        ("1.5x", 'invalid duration "1.5x": use whole numbers'),
        ("-5s", 'invalid duration "-5s": ' + SHAPE),
        (" 5s", 'invalid duration " 5s": ' + SHAPE),
        ("\u0661s", 'invalid duration "\u0661s": ' + SHAPE),  # digits must be ASCII
        ("300000w", 'invalid duration "300000w": out of range'),
        ("9" * 30 + "s", f'invalid duration "{"9" * 30}s": out of range'),
    ],
)
def test_parse_duration_invalid(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.0005, "500µs"),
        (0.1, "100ms"),
        (0.0015, "1.5ms"),
        (1, "1s"),
        (1.5, "1s500ms"),
        (60, "1m"),
        (90.5, "1m30s500ms"),
        (3600, "1h"),
        (5400, "1h30m"),
        (86400, "1d"),
        (8 * 86400, "1w1d"),
        (366 * 86400, "1y1d"),
        (-61, "-1m1s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


# --- demo ---------------------------------------------------------------------------------


def test_demo_config() -> None:
    config = demo_config("http://127.0.0.1:9999/", "test_demo")
    assert isinstance(config.api, ApiConfig)
    assert config.api.url == "http://127.0.0.1:9999"
    assert config.api.key.reveal() == "test_demo"
    assert config.api.key_source == "env"
    assert config.api.max_requests_per_minute == 300
    assert config.poll == PollConfig(5.0)
    assert config.state == StateConfig(path=":memory:")
    assert config.targets == (
        TargetConfig("all", 3600.0, None),
        TargetConfig("otp", 3600.0, 58982653),
        TargetConfig("marketing", 3600.0, 58982654),
    )
    assert "test_demo" not in repr(config)


def test_target_labels_and_their_cap() -> None:
    text = "api:\n  key: k\ntargets:\n  - name: a\n    window: 1h\n    labels: [country, sender]\n"
    [target] = parse_config(text).targets
    assert target.labels == ("country", "sender") and target.max_label_values == 50


def test_bad_target_labels_are_all_reported() -> None:
    text = (
        "api:\n  key: k\ntargets:\n  - name: a\n    window: 1h\n"
        "    labels: [country, colour, country]\n    max_label_values: -1\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="config.yaml")
    assert info.value.errors == (
        'targets[0].labels[1]: unknown label "colour" (allowed: country, sender)',
        'targets[0].labels[2]: "country" is listed twice',
        "targets[0].max_label_values: must be between 0 and 10000, got -1",
    )
