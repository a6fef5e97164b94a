"""Renders the registry as the scrapers ask, each target's families once per change.

Owns the exposition cache: the targets' part rendered when a poll publishes, the shared part on
each scrape, the other collectors' (process metrics) at most every few seconds, and the family
templates that reuse a family's text while only its values change. It reads the collector's
families and the state's view; it does no I/O.

Must not import: httpx, the client, the polling package or the web server; nothing that does I/O.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable

from prometheus_client.core import Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from exporter.serving.collector import BsgCollector, target_families
from exporter.stats import ExporterState, TargetStatus
from exporter.tracking.snapshot import TargetSnapshot

Encoder = Callable[[Collector], bytes]
"""An exposition encoder of prometheus_client, as ``choose_encoder`` returns it."""
_EOF = b"# EOF\n"


class BsgRegistry(CollectorRegistry):
    """The exporter's registry: its :meth:`exposition` renders each target's families once.

    A target's families (its messages, and how its polls go) are hundreds of series that only
    change when a poll of that target ends; yet formatting the thousands of series of all
    targets would be nearly all of a scrape's time. Each target's part is
    rendered once per change and per format, so a poll costs the next scrape one target's
    part. The shared families (API requests, budget, balance, reloads) are rendered on each
    scrape; those of the collectors registered after ours (the process metrics) at most every
    ``others_ttl`` seconds: each of their reads of /proc gave the GIL away, and a poll running
    meanwhile kept it for up to a switch interval each time. The bytes are those
    ``encoder(registry)`` renders (the process metrics from up to ``others_ttl`` earlier), and
    ``encoder(registry)`` still works as before.
    """

    def __init__(self, state: ExporterState, *, others_ttl: float = 1.0) -> None:
        super().__init__(auto_describe=False)
        self.bsg = BsgCollector(state)
        self._others_ttl = others_ttl
        self._ordered: list[Collector] = []  # registration order is exposition order
        self._parts: dict[str, dict[str, tuple[_Version, list[tuple[bytes, bytes]]]]] = {}
        # By format and target, then family: a poll mostly changes values only.
        self._templates: dict[tuple[str, str], dict[str, _Template]] = {}
        self._others: dict[str, tuple[float, bytes]] = {}  # rendered at (monotonic time)
        self._encoders: dict[str, Encoder] = {}  # the formats scraped so far
        # One thread renders the targets' parts at a time. A scrape arriving while a poll's
        # thread renders them serves the parts rendered before that poll published (as if it
        # had come a few milliseconds earlier): waiting, or rendering again against the poll
        # for the GIL, would make the scrape slower.
        self._rendering = threading.Lock()
        self._heads: dict[str, bytes] = {}  # the targets' part last joined, by format
        self.register(self.bsg)
        state.listeners.append(self.render_targets)

    def register(self, collector: Collector) -> None:
        """Add a collector, rendered after ours."""
        super().register(collector)
        self._ordered.append(collector)
        self._others.clear()

    def unregister(self, collector: Collector) -> None:
        """Remove a collector."""
        super().unregister(collector)
        self._ordered.remove(collector)
        self._others.clear()

    def exposition(self, encoder: Encoder, key: str) -> bytes:
        """What ``encoder(self)`` renders; ``key`` names the format (its content type)."""
        self._encoders.setdefault(key, encoder)
        head = self._heads.get(key)
        if self._rendering.acquire(blocking=head is None):
            try:
                view = self.bsg.view()
                head = self._heads[key] = self._targets_part(encoder, key, view.targets)
            finally:
                self._rendering.release()
        else:
            view = self.bsg.view()
        assert head is not None  # a first scrape of a format waits for the lock
        shared = _render(encoder, self.bsg.collect_shared(view))
        others = self._others_part(encoder, key, self._others_ttl)
        return head + shared + others + encoder(_Families(()))  # OpenMetrics' "# EOF"

    def _others_part(self, encoder: Encoder, key: str, ttl: float) -> bytes:
        """The families of the other collectors, rendered anew once older than ``ttl``."""
        now = time.monotonic()
        others = self._others.get(key)
        if others is None or not 0 <= now - others[0] < ttl:
            families = (m for c in list(self._ordered) if c is not self.bsg for m in c.collect())
            others = (now, _render(encoder, families))
            self._others[key] = others
        return others[1]

    def render_targets(self) -> None:
        """Render the changed targets' families in every format scraped so far.

        Called in the poller's thread as a poll publishes: the next scrape then only joins
        bytes. Rendered in the scrape's thread instead, they made it wait for the GIL behind
        the next poll (docs/performance.md).
        """
        with self._rendering:
            targets = self.bsg.view().targets
            for key, encoder in list(self._encoders.items()):
                self._heads[key] = self._targets_part(encoder, key, targets)
        for key, encoder in list(self._encoders.items()):
            # Early, so that while polls run, scrapes do not read /proc (each read gives the
            # GIL away, to get it back only after the poll's next switch interval).
            self._others_part(encoder, key, self._others_ttl / 2)

    def _targets_part(self, encoder: Encoder, key: str, targets: dict[str, TargetStatus]) -> bytes:
        """Every target's families, each target's samples rendered once per change."""
        if not targets:
            return _render(encoder, target_families({}))
        previous = self._parts.get(key, {})
        parts: dict[str, tuple[_Version, list[tuple[bytes, bytes]]]] = {}
        for name, status in targets.items():
            version = _version(status)
            part = previous.get(name)
            if part is None or not _same(part[0], version):
                templates = self._templates.setdefault((key, name), {})
                rendered = b"".join(
                    templates.setdefault(family.name, _Template()).render(encoder, family)
                    for family in target_families({name: status})
                )
                part = (version, _split_families(rendered))
            parts[name] = part
        self._parts[key] = parts  # targets no longer configured are dropped
        for stale in [k for k in self._templates if k[0] == key and k[1] not in parts]:
            del self._templates[stale]
        # Every target renders the same families in the same order: join them family by family.
        blocks = [part[1] for part in parts.values()]
        joined: list[bytes] = []
        for index, (header, _) in enumerate(blocks[0]):
            joined.append(header)
            joined.extend(families[index][1] for families in blocks)
        return b"".join(joined)


_Version = tuple[TargetSnapshot, bool, float | None, tuple[int, ...], float, int]
"""What a target's families are rendered from: its snapshot (immutable, compared by identity),
whether it is up, its last success, its poll durations and its page-total mismatches."""


def _version(status: TargetStatus) -> _Version:
    """The version of a target's families (of a copy: the durations are copied)."""
    durations = status.durations
    return (
        status.snapshot,
        status.up,
        status.last_success,
        tuple(durations.counts),
        durations.total,
        status.total_mismatches,
    )


def _same(cached: _Version, current: _Version) -> bool:
    """True when a target's families would render the same (the same snapshot object)."""
    return cached[0] is current[0] and cached[1:] == current[1:]


class _Families(Collector):
    """Given families, as a collector an encoder can render."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        """The families."""
        return self._families


def _render(encoder: Encoder, families: Iterable[Metric]) -> bytes:
    """Families as ``encoder`` renders them, without OpenMetrics' "# EOF" line (more follows)."""
    return encoder(_Families(families)).removesuffix(_EOF)


class _Template:
    """Renders a family as an encoder does, reusing its text while only values change.

    prometheus_client's encoders sort and escape every sample's labels, and a poll changes
    mostly values: rendering a target's samples afresh was a large share of a steady poll
    (docs/performance.md). So the encoder renders a family once per
    shape (its header, its samples' names and labels), and each sample line is kept up to
    its value; later renders of that shape only format the values, as the encoder does. A
    template is used only once rebuilding the encoder's own output from it gave the same
    bytes.
    """

    __slots__ = ("_lines", "_shape", "_slots")

    def __init__(self) -> None:
        self._shape: tuple[object, list[object]] | None = None
        self._lines: list[str] = []  # the rendered lines, each sample line without its value
        self._slots: list[int] = []  # the index in _lines of each sample's line

    def render(self, encoder: Encoder, family: Metric) -> bytes:
        """What ``_render(encoder, [family])`` returns."""
        shape, values = _shape(family)
        if shape is not None and shape == self._shape:
            return self._fill(values)
        body = _render(encoder, [family])
        self._shape = None
        if shape is not None and self._learn(body, values):
            self._shape = shape
        return body

    def _learn(self, body: bytes, values: list[float]) -> bool:
        """Keep ``body``'s lines as a template; False when it cannot reproduce them."""
        lines = body.decode().splitlines(keepends=True)
        slots = [i for i, line in enumerate(lines) if not line.startswith("#")]
        if len(slots) != len(values):
            return False
        for index in slots:  # "name{labels} value\n": no timestamps or exemplars (see _shape)
            lines[index] = lines[index][: lines[index].rindex(" ") + 1]
        self._lines, self._slots = lines, slots
        return self._fill(values) == body

    def _fill(self, values: list[float]) -> bytes:
        """The template with ``values`` in its sample lines."""
        lines = self._lines.copy()
        for index, value in zip(self._slots, values, strict=True):
            lines[index] = f"{lines[index]}{_go_float(value)}\n"
        return "".join(lines).encode()


def _shape(family: Metric) -> tuple[tuple[object, list[object]] | None, list[float]]:
    """What the text of ``family`` depends on, but its values; and the values in order.

    The shape is None when a sample carries more than a value (a timestamp, an exemplar, a
    native histogram): no template then.
    """
    samples: list[object] = []
    values: list[float] = []
    for sample in family.samples:
        if sample.timestamp is not None or sample.exemplar or sample.native_histogram:
            return None, values
        samples.append((sample.name, sample.labels))
        values.append(sample.value)
    return ((family.name, family.type, family.documentation, family.unit), samples), values


_float_text: Callable[[float], str] = floatToGoString  # how both encoders write a value
_GO_FLOATS: dict[float, str] = {}
"""Their answers: counts and bucket values repeat from one render to the next."""


def _go_float(value: float) -> str:
    """``floatToGoString(value)``, cached."""
    if not value:  # -0.0 == 0.0 as a key, but is written "-0.0"
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    text = _GO_FLOATS.get(value)
    if text is None:
        text = _float_text(value)
        if len(_GO_FLOATS) >= 65536:
            _GO_FLOATS.clear()
        _GO_FLOATS[value] = text
    return text


def _split_families(body: bytes) -> list[tuple[bytes, bytes]]:
    """``(header lines, sample lines)`` of each family of a rendered exposition.

    A family starts at its ``# HELP`` line; no sample line starts with "#", and a newline in
    a label value or a HELP text is escaped, so the split is exact.
    """
    families: list[tuple[bytes, bytes]] = []
    for index, block in enumerate(body.split(b"\n# HELP ")):
        text = block if index == 0 else b"# HELP " + block
        if not text.endswith(b"\n"):
            text += b"\n"  # the split took the newline of every block but the last
        end = 0
        while text.startswith(b"#", end):
            end = text.index(b"\n", end) + 1
        families.append((text[:end], text[end:]))
    return families
