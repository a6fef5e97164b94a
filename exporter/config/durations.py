"""Durations as Prometheus writes them (``500ms``, ``1h30m``, ``7d``), read and formatted, and
:func:`quoted`, the way every config message shows a value.

Must not import: any exporter module.
"""

from __future__ import annotations

import json
import re
from fractions import Fraction

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
                f"invalid duration {quoted(text)}: unknown unit {quoted(unit)}"
                " (use ms, s, m, h, d or w)"
            )
        if rank <= previous:
            raise ValueError(
                f"invalid duration {quoted(text)}: units must go from largest to smallest,"
                " each used once"
            )
        previous = rank
        if len(number) > 20:  # keeps int() far from Python's digit limit
            raise ValueError(f"invalid duration {quoted(text)}: out of range")
        total_ms += int(number) * _UNITS_MS[unit]
    if total_ms > _MAX_DURATION_MS:
        raise ValueError(f"invalid duration {quoted(text)}: out of range")
    return total_ms / 1000


def _duration_shape_problem(text: str) -> str:
    """Say why `text` is not shaped like a duration at all."""
    if re.fullmatch(r"[0-9]+", text):
        return f'invalid duration {quoted(text)}: missing unit, like "{text}s"'
    if re.fullmatch(r"(?:[0-9.]+[a-zA-Z]+)+", text):
        return f"invalid duration {quoted(text)}: use whole numbers{_whole_hint(text)}"
    return (
        f"invalid duration {quoted(text)}: expected a number and a unit,"
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


_UNITS_NS = (
    ("y", 365 * 86400 * 10**9),
    ("w", 7 * 86400 * 10**9),
    ("d", 86400 * 10**9),
    ("h", 3600 * 10**9),
    ("m", 60 * 10**9),
    ("s", 10**9),
)


def format_duration(seconds: float) -> str:
    """Format seconds the way Prometheus writes a duration: "500ms", "1m30s", "1w", "1d2h"."""
    ns = round(seconds * 1e9)  # raises on inf and nan, which no duration can be
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    parts = []
    for unit, size in _UNITS_NS:
        count, ns = divmod(ns, size)
        if count:
            parts.append(f"{count}{unit}")
    if ns:  # what is left is under a second
        for unit, size in (("ms", 1_000_000), ("µs", 1000), ("ns", 1)):
            if ns >= size or unit == "ns":
                parts.append(f"{_decimal(ns, size)}{unit}")
                break
    return sign + "".join(parts)


def _decimal(value: int, unit: int) -> str:
    """Write value/unit exactly, without trailing zeros: 1500/1000 -> "1.5"."""
    whole, fraction = divmod(value, unit)
    if not fraction:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}.{fraction:0{digits}d}".rstrip("0")


def quoted(text: str, limit: int = 80) -> str:
    """Quote a value for a message, cut short if it is long."""
    if len(text) > limit:
        text = text[:limit] + "..."
    return json.dumps(text, ensure_ascii=False)
