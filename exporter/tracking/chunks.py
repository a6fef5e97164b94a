"""The layout of the chunks a message table is saved in, and the layout before it, still read.

Owns the bytes: msgpack of little-endian arrays that decode without a Python loop per message.
A chunk holds its messages in id order, column by column: the steps from one id to the next,
kind codes, and moments (creation times, deadlines) as the steps between their whole seconds,
each column in the narrowest integer type that holds it (mostly a byte), with the moments that
are not a whole second, and the few re-check times, kept exactly beside them. The layout before
(:class:`LegacyChunk`: 8-byte ids, 8-byte times and 4-byte codes) is read too, so that a state
file written by an older exporter loads and is rewritten.

Must not import: any exporter module but ``exporter.tracking.finals``.
"""

from __future__ import annotations

import math
import operator
import sys
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import accumulate, chain, compress, islice
from typing import Any, TypeAlias

import msgspec

from exporter.tracking.finals import whole_seconds

LEGACY_PENDING_TYPES = "qdIdd"
"""The typecodes of :class:`LegacyChunk`'s pending columns: ids, created, kinds, next, deadline."""
LEGACY_FINAL_TYPES = "qdI"
"""The array typecodes of :class:`LegacyChunk`'s final columns: ids, created, kinds."""
BLOCK = 65_536
"""Final messages decoded at a time: a snapshot of millions never exists as Python ints at once."""
NONE = math.nan
"""A missing re-check time or deadline in a chunk's float arrays."""
_SWAP = sys.byteorder != "little"
"""Chunks hold little-endian arrays, so that a state file moves between machines."""

Block = tuple[Sequence[int], Sequence[int], Sequence[int]]
"""Final messages in id order: ids, creation seconds, kind codes."""
Exact = tuple[list[int], list[float]]
"""Positions of moments that are not their whole second, and what they are."""
Finals: TypeAlias = "tuple[array[int], array[int], array[int], dict[int, float]]"
"""Final messages decoded: ids, creation seconds, kind codes, and the exact creation times
(by id) of those not created on a whole second."""
PendingRow = tuple[int, float, int, float, float]
"""A pending message decoded: id, created, kind code, next check and deadline (NaN: none)."""


class Times(msgspec.Struct, array_like=True):
    """Moments, as the steps between their whole seconds; those that are not one, exactly."""

    typecode: str  # of the steps: signed, as ids do not always grow with time
    first: int  # the first moment's second
    steps: bytes
    exact: tuple[bytes, bytes]  # positions ("q") and moments ("d") that are not their second


class FinalColumns(msgspec.Struct, array_like=True):
    """Final messages in id order: steps between ids, kind codes, creation times."""

    types: str  # array typecodes of id_steps and codes
    first: int  # the first message's id
    id_steps: bytes
    codes: bytes
    created: Times


class PendingColumns(msgspec.Struct, array_like=True):
    """Pending messages in id order, as they now are."""

    types: str  # array typecodes of id_steps and kinds
    first: int
    id_steps: bytes
    kinds: bytes
    created: Times
    deadline: Times  # NaN among the exact ones: none
    next_check: tuple[bytes, bytes]  # positions ("q") and times ("d") of the rows that have one


class Chunk(msgspec.Struct, array_like=True, tag=2):
    """Changes to a table (or all of it)."""

    kinds: list[tuple[str, str, int]]  # (series, status, state) of each kind code
    pending: PendingColumns
    final: FinalColumns
    deleted: bytes  # ids


class LegacyChunk(msgspec.Struct, array_like=True):
    """A chunk as exporters before the compact columns wrote it."""

    kinds: list[tuple[str, str, int]]
    pending: tuple[bytes, bytes, bytes, bytes, bytes]  # see LEGACY_PENDING_TYPES
    final: tuple[bytes, bytes, bytes]  # see LEGACY_FINAL_TYPES
    deleted: bytes


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(Chunk)
_LEGACY_DECODER = msgspec.msgpack.Decoder(LegacyChunk)


def encode(
    kinds: list[tuple[str, str, int]],
    pending: PendingColumns,
    final: FinalColumns,
    deleted: list[int],
) -> bytes:
    """A chunk, encoded."""
    return _ENCODER.encode(Chunk(kinds, pending, final, pack("q", deleted)))


def decode(blob: bytes) -> Chunk | LegacyChunk:
    """A chunk of either layout."""
    try:
        return _DECODER.decode(blob)
    except msgspec.ValidationError:
        return _LEGACY_DECODER.decode(blob)


# --- writing ----------------------------------------------------------------------------


def times(seconds: Sequence[int], exact: Exact) -> Times:
    """Moments given as whole seconds, and where and what the exact ones are."""
    steps = _narrowest("bhiq", lambda: map(operator.sub, islice(seconds, 1, None), seconds))
    return _times(steps, seconds[0] if seconds else 0, exact)


def final_columns_of(
    ids: Sequence[int], seconds: Sequence[int], codes: Sequence[int], exact: Exact
) -> FinalColumns:
    """The columns of final messages in id order (one poll's: one pass a column)."""
    id_steps = _narrowest("BHIQ", lambda: map(operator.sub, islice(ids, 1, None), ids))
    kinds = _narrowest("BHI", lambda: codes)
    return FinalColumns(
        id_steps.typecode + kinds.typecode,
        ids[0] if ids else 0,
        _bytes(id_steps),
        _bytes(kinds),
        times(seconds, exact),
    )


def final_columns(blocks: Callable[[], Iterable[Block]], exact: Exact) -> FinalColumns:
    """The columns of final messages given in id order as blocks (a snapshot: ``blocks`` is
    called twice, to size the columns, then to fill them), and where and what the exact
    creation times are."""
    sizes = _Sizes()
    for block in blocks():
        sizes.add(*block)
    types = sizes.types()
    id_steps, created_steps, codes = array(types[0]), array(types[1]), array(types[2])
    previous: tuple[int, int] | None = None
    for ids, seconds, block_codes in blocks():
        if not ids:
            continue
        if previous is not None:
            id_steps.append(ids[0] - previous[0])
            created_steps.append(seconds[0] - previous[1])
        id_steps.extend(map(operator.sub, islice(ids, 1, None), ids))
        created_steps.extend(map(operator.sub, islice(seconds, 1, None), seconds))
        codes.extend(iter(block_codes))
        previous = ids[-1], seconds[-1]
    first_id, first_second = sizes.first or (0, 0)
    created = _times(created_steps, first_second, exact)
    return FinalColumns(types[0] + types[2], first_id, _bytes(id_steps), _bytes(codes), created)


def pending_columns(
    ids: Sequence[int],
    created: list[float],
    kinds: Sequence[int],
    next_checks: Sequence[float],
    deadlines: list[float],
) -> PendingColumns:
    """The columns of pending messages given in id order (NaN: no next check or deadline)."""
    id_steps = _narrowest("BHIQ", lambda: map(operator.sub, islice(ids, 1, None), ids))
    codes = _narrowest("BHI", lambda: kinds)
    checks = list(compress(range(len(ids)), map(operator.eq, next_checks, next_checks)))  # NaN: no
    return PendingColumns(
        id_steps.typecode + codes.typecode,
        ids[0] if ids else 0,
        _bytes(id_steps),
        _bytes(codes),
        times(*_whole(created)),
        times(*_whole(deadlines)),
        (pack("q", checks), pack("d", list(map(next_checks.__getitem__, checks)))),
    )


# --- reading ----------------------------------------------------------------------------


def final_blocks(chunk: Chunk | LegacyChunk) -> Iterator[Finals]:
    """A chunk's final messages, a block at a time (a legacy chunk's in the order written, an
    id maybe more than once)."""
    if isinstance(chunk, LegacyChunk):
        yield from _legacy_final_blocks(chunk)
        return
    columns = chunk.final
    codes = _unpack_types(columns.types, 1, columns.codes)
    count = len(codes)
    ids = _ids(columns.types, columns.first, columns.id_steps, count)
    seconds, exact = _steps(columns.created, count)
    for start in range(0, count, BLOCK):
        block_ids = array("q", islice(ids, BLOCK))
        end = start + len(block_ids)
        found = exact[bisect_left(exact, (start, -math.inf)) : bisect_left(exact, (end, -math.inf))]
        moments = {block_ids[position - start]: time for position, time in found}
        yield block_ids, array("I", islice(seconds, BLOCK)), codes[start:end], moments


def pending_rows(chunk: Chunk | LegacyChunk) -> Iterator[PendingRow]:
    """A chunk's pending messages (a legacy chunk's in the order written)."""
    if isinstance(chunk, LegacyChunk):
        legacy = zip(LEGACY_PENDING_TYPES, chunk.pending, strict=True)
        yield from zip(*(unpack(code, data) for code, data in legacy), strict=True)
        return
    columns = chunk.pending
    kinds = _unpack_types(columns.types, 1, columns.kinds)
    count = len(kinds)
    ids = _ids(columns.types, columns.first, columns.id_steps, count)
    next_checks = [NONE] * count
    for position, moment in _exact(columns.next_check, count):
        next_checks[position] = moment
    created, deadlines = _moments(columns.created, count), _moments(columns.deadline, count)
    yield from zip(ids, created, kinds, next_checks, deadlines, strict=True)


def _legacy_final_blocks(chunk: LegacyChunk) -> Iterator[Finals]:
    """The final messages of a legacy chunk, in one block."""
    ids, created, codes = (
        unpack(code, data) for code, data in zip(LEGACY_FINAL_TYPES, chunk.final, strict=True)
    )
    if not len(ids) == len(created) == len(codes):
        raise ValueError("chunk: final columns of different lengths")
    if len(ids):
        moments = created.tolist()
        seconds, inexact = whole_seconds(moments)
        yield ids, seconds, codes, {ids[position]: moments[position] for position in inexact}


def _ids(types: str, first: int, steps: bytes, count: int) -> Iterator[int]:
    """Ids from the steps between them."""
    id_steps = _unpack_types(types, 0, steps)
    if count and len(id_steps) != count - 1:
        raise ValueError("chunk: columns of different lengths")
    return islice(accumulate(chain((first,), id_steps)), count)


def _steps(column: Times, count: int) -> tuple[Iterator[int], list[tuple[int, float]]]:
    """The whole seconds of ``count`` moments, and the exact ones by position, sorted."""
    steps = unpack(column.typecode, column.steps)
    if column.typecode not in "bhiq" or (count and len(steps) != count - 1):
        raise ValueError("chunk: bad steps of moments")
    return accumulate(chain((column.first,), steps)), sorted(_exact(column.exact, count))


def _moments(column: Times, count: int) -> list[float]:
    """All ``count`` moments of a column, exactly."""
    seconds, exact = _steps(column, count)
    moments = list(map(float, islice(seconds, count)))
    for position, moment in exact:
        moments[position] = moment
    return moments


def _exact(column: tuple[bytes, bytes], count: int) -> Iterator[tuple[int, float]]:
    """Positions (each below ``count``) and moments."""
    positions, moments = unpack("q", column[0]), unpack("d", column[1])
    if len(positions) != len(moments) or any(not 0 <= p < count for p in positions):
        raise ValueError("chunk: exact moments without their positions")
    return zip(positions, moments, strict=True)


def _unpack_types(types: str, index: int, data: bytes) -> array[int]:
    """The column of ``data`` whose typecode is ``types[index]``."""
    if len(types) != len("BB"):  # one typecode for each of two columns
        raise ValueError(f"chunk: bad column types {types!r}")
    return unpack(types[index], data)


def _whole(moments: list[float]) -> tuple[array[int], Exact]:
    """Moments as whole seconds, and where and what the others are."""
    seconds, inexact = whole_seconds(moments)
    return seconds, (inexact, list(map(moments.__getitem__, inexact)))


# --- bytes ------------------------------------------------------------------------------


def pack(typecode: str, values: Sequence[Any]) -> bytes:
    """Values as a little-endian array of ``typecode``, in bytes."""
    return _bytes(array(typecode, values))


def unpack(typecode: str, data: bytes) -> array[Any]:
    """Little-endian bytes as an array of ``typecode`` (what :func:`pack` wrote)."""
    values = array(typecode)
    values.frombytes(data)
    if _SWAP:  # pragma: no cover - big-endian machines only
        values.byteswap()
    return values


def _times(steps: array[int], first: int, exact: Exact) -> Times:
    """A column of moments, in bytes."""
    return Times(steps.typecode, first, _bytes(steps), (pack("q", exact[0]), pack("d", exact[1])))


def _narrowest(typecodes: str, values: Callable[[], Iterable[int]]) -> array[int]:
    """The ``values()`` in an array of the first of ``typecodes`` that holds them all (made
    anew for each try, rather than held in a list of a poll's worth of ints)."""
    for typecode in typecodes[:-1]:
        try:
            return array(typecode, values())
        except OverflowError:
            continue
    return array(typecodes[-1], values())


def _bytes(values: array[Any]) -> bytes:
    """An array's little-endian bytes."""
    if _SWAP:  # pragma: no cover - big-endian machines only
        values.byteswap()
    return values.tobytes()


class _Sizes:
    """The ranges of the final columns' values, seen block by block, for their typecodes."""

    def __init__(self) -> None:
        self.first: tuple[int, int] | None = None
        self._last = (0, 0)
        self._id_step = self._code = 0
        self._low = self._high = 0

    def add(self, ids: Sequence[int], seconds: Sequence[int], codes: Sequence[int]) -> None:
        """Take in the next block."""
        if not ids:
            return
        if self.first is None:
            self.first = ids[0], seconds[0]
        else:
            self._step(ids[0] - self._last[0], seconds[0] - self._last[1])
        # Streamed, one int at a time: lists of a snapshot's steps would be megabytes.
        self._step(
            max(map(operator.sub, islice(ids, 1, None), ids), default=0),
            min(map(operator.sub, islice(seconds, 1, None), seconds), default=0),
        )
        self._step(0, max(map(operator.sub, islice(seconds, 1, None), seconds), default=0))
        self._code = max(self._code, max(codes))  # noqa: PLW3301 - codes may be an array
        self._last = ids[-1], seconds[-1]

    def _step(self, id_step: int, move: int) -> None:
        """Take in an id step and a creation step."""
        self._id_step = max(self._id_step, id_step)
        self._low, self._high = min(self._low, move), max(self._high, move)

    def types(self) -> str:
        """The narrowest typecodes of the id steps, the creation steps and the codes."""
        return _unsigned(self._id_step) + _signed(self._low, self._high) + _unsigned(self._code)


def _unsigned(high: int) -> str:
    """The narrowest unsigned typecode that holds ``[0, high]``."""
    return next(code for code, bits in _UNSIGNED if high >> bits == 0)


def _signed(low: int, high: int) -> str:
    """The narrowest signed typecode that holds ``[low, high]``."""
    return next(code for code, bits in _SIGNED if -(1 << bits) <= low and high < 1 << bits)


_UNSIGNED = (("B", 8), ("H", 16), ("I", 32), ("Q", 64))
_SIGNED = (("b", 7), ("h", 15), ("i", 31), ("q", 63))
