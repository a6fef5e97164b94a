"""The layout of the chunks a message table is saved in, and the layout before it, still read.

Owns the bytes: msgpack of little-endian arrays that decode without a Python loop per message.
A chunk holds pending messages column by column (their ids, creation and re-check times,
deadlines) and final ones in id order: the steps from one id to the next, their creation seconds
(in a snapshot, the steps between those too), and their kind codes, each column in the narrowest
integer type that holds it (steps and codes mostly a byte). The layout before
(:class:`LegacyChunk`: final messages as 8-byte ids, 8-byte times and 4-byte codes) is read too,
so that a state file written by an older exporter loads and is rewritten.

Must not import: any exporter module but ``exporter.tracking.finals``.
"""

from __future__ import annotations

import math
import operator
import sys
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import accumulate, chain, islice
from typing import Any, TypeAlias

import msgspec

from exporter.tracking.finals import whole_seconds

PENDING_TYPES = "qdIdd"
"""The array typecodes of a chunk's pending columns: ids, created, kinds, next check, deadline."""
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
Finals: TypeAlias = "tuple[array[int], array[int], array[int], dict[int, float]]"
"""Final messages decoded: ids, creation seconds, kind codes, and the exact creation times
(by id) of those not created on a whole second."""


class FinalColumns(msgspec.Struct, array_like=True):
    """Final messages in id order: steps between ids, creation seconds and kind codes."""

    types: str  # array typecodes of id_steps, created and codes
    first: tuple[int, int]  # the first message's id and creation second
    id_steps: bytes
    # the creation seconds ("I"), or (a signed typecode: ids do not always grow with time) the
    # steps between them, from the first on
    created: bytes
    codes: bytes
    exact: tuple[bytes, bytes]  # positions ("q") and creation times ("d") not whole seconds


class Chunk(msgspec.Struct, array_like=True, tag=2):
    """Changes to a table (or all of it)."""

    kinds: list[tuple[str, str, int]]  # (series, status, state) of each kind code
    pending: tuple[bytes, bytes, bytes, bytes, bytes]  # see PENDING_TYPES
    final: FinalColumns
    deleted: bytes  # ids


class LegacyChunk(msgspec.Struct, array_like=True):
    """A chunk as exporters before the compact final columns wrote it."""

    kinds: list[tuple[str, str, int]]
    pending: tuple[bytes, bytes, bytes, bytes, bytes]  # see PENDING_TYPES
    final: tuple[bytes, bytes, bytes]  # see LEGACY_FINAL_TYPES
    deleted: bytes


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(Chunk)
_LEGACY_DECODER = msgspec.msgpack.Decoder(LegacyChunk)


def encode(
    kinds: list[tuple[str, str, int]],
    pending: Sequence[Sequence[Any]],
    final: FinalColumns,
    deleted: list[int],
) -> bytes:
    """A chunk, encoded."""
    packed = tuple(pack(code, column) for code, column in zip(PENDING_TYPES, pending, strict=True))
    # one array a typecode: the tuple has the length the field declares
    return _ENCODER.encode(Chunk(kinds, packed, final, pack("q", deleted)))  # type: ignore[arg-type]


def decode(blob: bytes) -> Chunk | LegacyChunk:
    """A chunk of either layout."""
    try:
        return _DECODER.decode(blob)
    except msgspec.ValidationError:
        return _LEGACY_DECODER.decode(blob)


def final_columns_of(
    ids: Sequence[int],
    seconds: Sequence[int],
    codes: Sequence[int],
    exact: tuple[list[int], list[float]],
) -> FinalColumns:
    """The columns of final messages in id order, their creation seconds as they are: the
    changes of one poll, encoded with one pass a column."""
    if not ids:
        return _columns((0, 0), (array("B"), array("I"), array("B")), exact)
    id_steps = _narrowest("BHIQ", map(operator.sub, islice(ids, 1, None), ids))
    columns = (id_steps, array("I", seconds), _narrowest("BHI", codes))
    return _columns((ids[0], seconds[0]), columns, exact)


def final_columns(
    blocks: Callable[[], Iterable[Block]], exact: tuple[list[int], list[float]]
) -> FinalColumns:
    """The columns of final messages given in id order as blocks, creation seconds as steps
    (a snapshot: ``blocks`` is called twice, to size the columns, then to fill them), with the
    positions and times of those whose creation time is not their second."""
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
    return _columns(sizes.first or (0, 0), (id_steps, created_steps, codes), exact)


def pending_columns(chunk: Chunk | LegacyChunk) -> list[array[Any]]:
    """A chunk's pending columns (see :data:`PENDING_TYPES`)."""
    return [unpack(code, data) for code, data in zip(PENDING_TYPES, chunk.pending, strict=True)]


def final_blocks(columns: FinalColumns) -> Iterator[Finals]:
    """What :func:`final_columns` or :func:`final_columns_of` wrote, a block at a time."""
    if len(columns.types) != len("qIB"):  # one typecode a column
        raise ValueError(f"chunk: bad final column types {columns.types!r}")
    codes = unpack(columns.types[2], columns.codes)
    count = len(codes)
    id_steps = unpack(columns.types[0], columns.id_steps)
    created = unpack(columns.types[1], columns.created)
    positions, times = unpack("q", columns.exact[0]), unpack("d", columns.exact[1])
    absolute = columns.types[1] == "I"
    if count and (len(id_steps) != count - 1 or len(created) != count - (not absolute)):
        raise ValueError("chunk: final columns of different lengths")
    if len(positions) != len(times) or any(not 0 <= p < count for p in positions):
        raise ValueError("chunk: exact creation times without their positions")
    first_id, first_second = columns.first
    ids = accumulate(chain((first_id,), id_steps))
    steps = accumulate(chain((first_second,), created))
    exact = sorted(zip(positions, times, strict=True))
    for start in range(0, count, BLOCK):
        block_ids = array("q", islice(ids, BLOCK))
        end = start + len(block_ids)
        seconds = created[start:end] if absolute else array("I", islice(steps, BLOCK))
        found = exact[bisect_left(exact, (start, -math.inf)) : bisect_left(exact, (end, -math.inf))]
        moments = {block_ids[position - start]: time for position, time in found}
        yield block_ids, seconds, codes[start:end], moments


def legacy_final_blocks(chunk: LegacyChunk) -> Iterator[Finals]:
    """The final messages of a legacy chunk (in the order written, an id maybe more than once)."""
    ids, created, codes = (
        unpack(code, data) for code, data in zip(LEGACY_FINAL_TYPES, chunk.final, strict=True)
    )
    if not len(ids) == len(created) == len(codes):
        raise ValueError("chunk: final columns of different lengths")
    if len(ids):
        times = created.tolist()
        seconds, inexact = whole_seconds(times)
        yield ids, seconds, codes, {ids[position]: times[position] for position in inexact}


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


def _columns(
    first: tuple[int, int],
    columns: tuple[array[int], array[int], array[int]],
    exact: tuple[list[int], list[float]],
) -> FinalColumns:
    """The final columns (id steps, creation seconds or steps, kind codes), in bytes."""
    id_steps, created, codes = columns
    return FinalColumns(
        id_steps.typecode + created.typecode + codes.typecode,
        first,
        _bytes(id_steps),
        _bytes(created),
        _bytes(codes),
        (pack("q", exact[0]), pack("d", exact[1])),
    )


def _narrowest(typecodes: str, values: Iterable[int]) -> array[int]:
    """The values in an array of the first of ``typecodes`` that holds them all."""
    values = list(values) if len(typecodes) > 1 else values
    for typecode in typecodes[:-1]:
        try:
            return array(typecode, values)
        except OverflowError:
            continue
    return array(typecodes[-1], values)


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
