"""The YAML reader under both config files: a small toolkit to read a file strictly.

Owns composing YAML 1.2 into a node tree (plain scalars stay strings), the walker that records
every problem with its dotted path and position and raises them all at once as one
:class:`ConfigError`, ``${VAR}`` expansion, the leaf checks (strings, integers, durations,
sizes, URLs...) and :class:`Secret`. It knows no field of either file: :mod:`.schema` and
:mod:`.webconfig` describe those.

Must not import: any exporter module but :mod:`.durations`.
"""

from __future__ import annotations

import difflib
import hmac
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import NamedTuple, NoReturn, TypeAlias, TypeVar
from urllib.parse import urlsplit

import yaml
from yaml.reader import ReaderError

from exporter.config.durations import format_duration, parse_duration, quoted

T = TypeVar("T")

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

NODE_KINDS = {
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


def compose(text: str, source: str) -> yaml.Node:
    """Parse text into one YAML node tree; raise ConfigError on a syntax error or no document."""
    root = compose_document(text, source)
    if root is None:
        message = 'empty configuration, expected a mapping with "api" and "targets"'
        raise ConfigError(source, [f"{source}: {message}"])
    return root


def compose_document(text: str, source: str) -> yaml.Node | None:
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
    return scalar_of(node) == Scalar("null", "", expanded=False)


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


class LeafError(ValueError):
    """A leaf value is wrong; the message is the part after "path: "."""


class Scalar(NamedTuple):
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


Fields: TypeAlias = dict[str, yaml.Node]
ReadFunc: TypeAlias = Callable[["Reader", yaml.Node, str], "T | None"]

_VARIABLE = re.compile(r"\$\$\{|\$\{(?P<name>[^}]*)(?P<close>\})?")
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Reader:
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

    def scalar(self, node: yaml.Node, path: str) -> Scalar | None:
        """Reduce a node to a Scalar, expanding ${VAR} in strings; None if that failed."""
        raw = scalar_of(node)
        if raw.kind != "str" or not isinstance(node, yaml.ScalarNode):
            return raw
        return self.expand(node, path)

    def expand(self, node: yaml.ScalarNode, path: str) -> Scalar | None:
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
        return None if len(self.problems) > failures else Scalar("str", text, expanded)

    def variable(self, match: re.Match[str], node: yaml.Node, path: str) -> str | None:
        """Look one ${NAME} up, recording why when it cannot be."""
        name = match.group("name")
        if match.group("close") is None:
            message = 'unterminated "${" (write "$${" for a literal "${")'
        elif not _VARIABLE_NAME.fullmatch(name):
            ref = quoted(match.group(0))
            message = f'invalid variable reference {ref} (write "$${{" for a literal "${{")'
        elif name not in self.environ:
            message = f"environment variable {name} is not set"
        else:
            return self.environ[name]
        self.error(node.start_mark, path, message)
        return None

    def mapping(
        self, node: yaml.Node, path: str, known: tuple[str, ...], *, section: bool = True
    ) -> Fields | None:
        """Check that node is a mapping with only known, unique keys; return key -> value."""
        if section and NODE_KINDS.get(node.tag, node.tag) == "null":
            return {}  # a section whose keys are all commented out
        pairs = self.entries(node, path, null_is_empty=False)
        if pairs is None:
            return None
        fields: Fields = {}
        for key_node, name, value_node in pairs:
            if name in known:
                fields[name] = value_node
            else:
                self.error(key_node.start_mark, join_path(path, name), unknown_key(name, known))
        return fields

    def entries(
        self, node: yaml.Node, path: str, *, null_is_empty: bool = True
    ) -> list[tuple[yaml.Node, str, yaml.Node]] | None:
        """A mapping with free-form keys: (key node, key, value) triples, duplicates reported."""
        kind = NODE_KINDS.get(node.tag, node.tag)
        if kind == "null" and null_is_empty:
            return []
        if kind != "mapping" or not isinstance(node, yaml.MappingNode):
            self.error(node.start_mark, path, f"expected a mapping, got {shown(scalar_of(node))}")
            return None
        pairs: list[tuple[yaml.Node, str, yaml.Node]] = []
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            name = self.key(key_node, path)
            if name is None:
                continue
            if name in first_line:
                message = f"duplicate key (first at line {first_line[name]})"
                self.error(key_node.start_mark, join_path(path, name), message)
                continue
            first_line[name] = key_node.start_mark.line + 1
            pairs.append((key_node, name, value_node))
        return pairs

    def key(self, node: yaml.Node, path: str) -> str | None:
        """A mapping key as text; complex keys (lists, mappings) are refused."""
        if isinstance(node, yaml.ScalarNode):
            return str(node.value)
        self.error(node.start_mark, path, f"keys must be strings, got {shown(scalar_of(node))}")
        return None

    def optional(
        self, fields: Fields, name: str, path: str, read: ReadFunc[T], default: T
    ) -> T | None:
        """Read an optional key: its default when absent, None when invalid."""
        node = fields.get(name)
        return default if node is None else read(self, node, join_path(path, name))

    def required(
        self, fields: Fields, name: str, path: str, read: ReadFunc[T], parent: yaml.Node
    ) -> T | None:
        """Read a required key; its absence is reported where the parent mapping ends."""
        node = fields.get(name)
        if node is None:
            self.error(parent.end_mark, join_path(path, name), "required")
            return None
        return read(self, node, join_path(path, name))


def join_path(path: str, name: str) -> str:
    """Extend a dotted path."""
    return f"{path}.{name}" if path else name


def unknown_key(name: str, known: tuple[str, ...]) -> str:
    """Say a key is unknown, suggesting the closest known one when one is close."""
    normalized = {k.lower(): k for k in known}
    close = difflib.get_close_matches(name.lower().replace("-", "_"), normalized, n=1)
    return f'unknown key (did you mean "{normalized[close[0]]}"?)' if close else "unknown key"


def scalar_of(node: yaml.Node) -> Scalar:
    """A node as written, before ${VAR} expansion."""
    text = node.value if isinstance(node, yaml.ScalarNode) else ""
    return Scalar(NODE_KINDS.get(node.tag, node.tag), str(text), expanded=False)


def shown(scalar: Scalar) -> str:
    """Describe a value as the user wrote it, for "got ..." in messages."""
    if scalar.kind == "str":
        return quoted(scalar.text)
    if scalar.kind in ("mapping", "list"):
        return f"a {scalar.kind}"
    if scalar.kind == "null":
        return "null"
    if scalar.kind in ("int", "float", "bool"):
        return scalar.text
    return f"a value tagged {scalar.kind}"


def leaf(convert: Callable[[Scalar], T]) -> ReadFunc[T]:
    """Turn a check of one value into a reader that records its failure at the node."""

    def read(reader: Reader, node: yaml.Node, path: str) -> T | None:
        scalar = reader.scalar(node, path)
        if scalar is None:
            return None
        try:
            return convert(scalar)
        except LeafError as exc:
            reader.error(node.start_mark, path, str(exc))
            return None

    return read


# --- leaf checks --------------------------------------------------------------------------


def as_string(scalar: Scalar) -> str:
    """A string, as written."""
    if scalar.kind != "str":
        raise LeafError(f"expected a string, got {shown(scalar)}")
    return scalar.text


def as_integer(scalar: Scalar) -> int:
    """An integer; a ${VAR} that expands to digits counts as one."""
    if scalar.kind == "int" or (scalar.expanded and re.fullmatch(r"[-+]?[0-9]{1,30}", scalar.text)):
        return int(scalar.text)
    raise LeafError(f"expected an integer, got {shown(scalar)}")


def as_boolean(scalar: Scalar) -> bool:
    """true or false; a quoted "true" is refused, a ${VAR} expanding to true is not."""
    if scalar.kind == "bool" or (scalar.expanded and scalar.text.lower() in ("true", "false")):
        return scalar.text.lower() == "true"
    raise LeafError(f"expected true or false, got {shown(scalar)}")


def as_duration(
    minimum: float | None = None, maximum: float | None = None, *, zero: bool = False
) -> Callable[[Scalar], float]:
    """A duration string, greater than 0 (or equal to it if zero) and within the bounds given."""

    def convert(scalar: Scalar) -> float:
        if scalar.kind != "str":
            raise LeafError(f'expected a duration like "60s", got {shown(scalar)}')
        try:
            seconds = parse_duration(scalar.text)
        except ValueError as exc:
            raise LeafError(str(exc)) from None
        written = scalar.text.strip()  # echoed as written, the bound as Prometheus writes it
        if seconds < 0 or (seconds == 0 and not zero):
            raise LeafError(f"must be greater than 0, got {written}")
        if minimum is not None and seconds < minimum:
            raise LeafError(f"must be at least {format_duration(minimum)}, got {written}")
        if maximum is not None and seconds > maximum:
            raise LeafError(f"must be at most {format_duration(maximum)}, got {written}")
        return seconds

    return convert


def as_url(scalar: Scalar) -> str:
    """An http(s) base URL without query, fragment or credentials; trailing "/" removed."""
    text = as_string(scalar)
    problem = _url_problem(text)
    if problem is not None:
        raise LeafError(f"invalid URL {quoted(text)}: {problem}")
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


def as_count(limit: int) -> Callable[[Scalar], int]:
    """An integer within 0..limit."""

    def convert(scalar: Scalar) -> int:
        value = as_integer(scalar)
        if not 0 <= value <= limit:
            raise LeafError(f"must be between 0 and {limit}, got {value}")
        return value

    return convert


def as_non_empty(scalar: Scalar) -> str:
    """A string with at least one character."""
    text = as_string(scalar)
    if not text:
        raise LeafError("must not be empty")
    return text


def sequence_of(
    reader: Reader, node: yaml.Node, path: str, expected: str
) -> list[yaml.Node] | None:
    """The items of a YAML list, or None after reporting that node is not one."""
    if isinstance(node, yaml.SequenceNode) and NODE_KINDS.get(node.tag) == "list":
        return list(node.value)
    reader.error(node.start_mark, path, f"expected {expected}, got {shown(scalar_of(node))}")
    return None


def read_text_file(path: str | os.PathLike[str]) -> tuple[str, str]:
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
