"""What a pass or a poll read, held in columns until it is applied: the staged messages.

A decoded :class:`~exporter.bsg.wire.Message` costs ~190 bytes with its place in a dict; a
poll of 300 pages holds 150,000 of them until it commits. Staged, a message is an 8-byte id,
a reference to each object the decoder shares already (its three times and its price) and a
1-byte code for each other field, an index into that field's few distinct values (wider past
256 of them). Messages are rebuilt a batch at a time when the poll is applied, so no poll holds
its decoded pages at once, and an apply takes the batches away as it goes (the staging's memory
goes while the table's grows). The last version of an id wins, as in a dict.

Must not import: httpx, prometheus_client, or any exporter module outside ``exporter.bsg``.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, ItemsView, Iterable, Iterator, Mapping, ValuesView
from itertools import compress, islice, pairwise
from operator import attrgetter, lt
from typing import Any, Literal, cast

from exporter.bsg.wire import Message

_FIELDS = tuple(Message.__struct_fields__)
"""Message's fields in the order its constructor takes them."""
_SHARED = frozenset({"created_at", "sent_at", "delivered_at", "amount"})
"""Fields whose objects the decoder shares, too many distinct ones a poll to code: held as
references (8 bytes), not copied (held as floats instead, they cost less memory but a tenth
of the ingest speed)."""
_WIDER: dict[str, Literal["H", "I", "Q"]] = {"B": "H", "H": "I", "I": "Q"}
_ID = attrgetter("id")
BATCH = 4096
"""Messages rebuilt at a time: enough for the tracker's column-wise work, ~0.8 MB."""


class _Values(dict[Any, int]):
    """The distinct values of one field, each with its code (its index in ``by_code``)."""

    __slots__ = ("by_code",)

    def __init__(self) -> None:
        """No values yet."""
        super().__init__()
        self.by_code: list[Any] = []

    def __missing__(self, value: Any) -> int:
        """Give a value seen for the first time the next code."""
        code = self[value] = len(self.by_code)
        self.by_code.append(value)
        return code


class StagedMessages(Mapping[int, Message]):
    """Messages by id, in columns; the last one added of an id wins."""

    __slots__ = ("_columns", "_ids", "_rising", "_settled")

    def __init__(self, messages: Iterable[Message] = ()) -> None:
        """Stage ``messages``, in order."""
        self._ids = array("q")
        self._columns = tuple(_Column(name) for name in _FIELDS[1:])
        self._rising = True  # the ids rise strictly: none repeats, none needs looking for
        self._settled = True  # no id repeats
        self.add(messages)

    def add(self, messages: Iterable[Message]) -> None:
        """Stage more messages, newer than those staged."""
        batch = messages if isinstance(messages, list) else list(messages)
        if not batch:
            return
        added = array("q", map(_ID, batch))
        self._follow(added, _rising(added))
        self._ids.extend(added)
        for column in self._columns:
            column.add(batch)

    def extend(self, other: StagedMessages) -> None:
        """Stage another's messages after these (its versions win), column by column."""
        if not other._ids:
            return
        self._follow(other._ids, other._rising)
        self._ids.extend(other._ids)
        for column, theirs in zip(self._columns, other._columns, strict=True):
            column.add_column(theirs)

    def batches(self, size: int = BATCH) -> Iterator[list[Message]]:
        """The messages, one of each id, rebuilt ``size`` at a time."""
        self._settle()
        for start in range(0, len(self._ids), size):
            yield self._rebuild(start, start + size)

    def take_batches(self, size: int = BATCH) -> Iterator[list[Message]]:
        """:meth:`batches`, each batch dropped from the staging once rebuilt: the staging is
        empty once they are all taken, and its memory goes while an apply's grows."""
        self._settle()
        while self._ids:
            batch = self._rebuild(0, size)
            del self._ids[:size]
            for column in self._columns:
                column.drop(size)
            yield batch

    def __getitem__(self, msg_id: int) -> Message:
        """The message of this id."""
        self._settle()
        try:
            at = self._ids.index(msg_id)
        except (ValueError, OverflowError, TypeError):
            raise KeyError(msg_id) from None
        return self._rebuild(at, at + 1)[0]

    def __setitem__(self, msg_id: int, message: Message) -> None:
        """Stage ``message`` (``msg_id`` must be its id)."""
        if msg_id != message.id:
            raise ValueError(f"message {message.id} staged as {msg_id}")
        self.add([message])

    def __contains__(self, msg_id: object) -> bool:
        """True when a message of this id is staged."""
        return isinstance(msg_id, int) and msg_id in self._ids

    def __iter__(self) -> Iterator[int]:
        """The staged ids, one each."""
        self._settle()
        return iter(self._ids)

    def __len__(self) -> int:
        """Distinct messages staged."""
        self._settle()
        return len(self._ids)

    def values(self) -> ValuesView[Message]:
        """The messages, read from the columns (not looked up one id at a time)."""
        return _MessageValues(self)

    def items(self) -> ItemsView[int, Message]:
        """(id, message) pairs, read from the columns."""
        return _MessageItems(self)

    def _rebuild(self, start: int, end: int) -> list[Message]:
        """Messages ``start`` to ``end`` (positions), as objects again."""
        columns = [column.values(start, end) for column in self._columns]
        return list(map(Message, self._ids[start:end], *columns))

    def _follow(self, added: array[int], rising: bool) -> None:
        """Note whether ids still rise once ``added`` (rising or not) comes after them."""
        if self._rising and rising and (not self._ids or added[0] > self._ids[-1]):
            return
        self._rising = self._settled = False

    def _settle(self) -> None:
        """Keep only the last version of each id (a no-op while ids only rose)."""
        if self._settled:
            return
        self._settled = True
        ids = self._ids
        ordered = sorted(ids)
        repeated = {a for a, b in pairwise(ordered) if a == b}
        del ordered
        if not repeated:
            return
        keep = bytearray(b"\x01") * len(ids)
        seen: set[int] = set()
        for at in range(len(ids) - 1, -1, -1):
            msg_id = ids[at]
            if msg_id in repeated:
                if msg_id in seen:
                    keep[at] = 0
                seen.add(msg_id)
        self._ids = array("q", compress(ids, keep))
        for column in self._columns:
            column.keep(keep)


class _Column:
    """One field of the staged messages: references to shared objects, or codes of values."""

    __slots__ = ("codes", "data", "get")

    def __init__(self, name: str) -> None:
        """An empty column of the field ``name``."""
        self.get = attrgetter(name)
        self.data: list[Any] | array[int] = [] if name in _SHARED else array("B")
        self.codes = _Values()

    def add(self, messages: list[Message]) -> None:
        """Append the field of each message."""
        data = self.data
        if isinstance(data, list):
            data.extend(map(self.get, messages))
        else:
            codes, get = self.codes.__getitem__, self.get
            self._extend_codes(lambda: map(codes, map(get, messages)))

    def add_column(self, other: _Column) -> None:
        """Append another staging's column of the same field."""
        data, theirs = self.data, other.data
        if isinstance(data, list):
            data.extend(theirs)
            return
        ours = list(map(self.codes.__getitem__, other.codes.by_code))
        their_codes = cast("array[int]", theirs)
        if ours == list(range(len(ours))) and their_codes.typecode == data.typecode:
            data.extend(their_codes)  # the same codes (a first merge into an empty staging)
        else:
            self._extend_codes(lambda: map(ours.__getitem__, their_codes))

    def _extend_codes(self, codes: Callable[[], Iterable[int]]) -> None:
        """Append the codes ``codes()`` gives, widening the array while one does not fit."""
        data = self.data
        assert isinstance(data, array)  # a code column
        held = len(data)
        while True:
            try:
                data.extend(codes())
            except OverflowError:  # a code past the width: wider, and all of them again
                del data[held:]
                data = self.data = array(_WIDER[data.typecode], data)
            else:
                return

    def keep(self, keep: bytearray) -> None:
        """Keep the entries whose ``keep`` byte is set."""
        data = self.data
        kept = compress(data, keep)
        self.data = list(kept) if isinstance(data, list) else array(data.typecode, kept)

    def drop(self, count: int) -> None:
        """Drop the first ``count`` entries."""
        del self.data[:count]

    def values(self, start: int, end: int) -> Iterator[Any]:
        """The field of messages ``start`` to ``end``."""
        held = self.data[start:end]
        if isinstance(held, list):
            return iter(held)
        return map(self.codes.by_code.__getitem__, held)


def _rising(ids: array[int]) -> bool:
    """True when ``ids`` rise strictly."""
    return all(map(lt, ids, islice(ids, 1, None)))


class _MessageValues(ValuesView[Message]):
    """The staged messages, batch by batch."""

    _mapping: StagedMessages

    def __iter__(self) -> Iterator[Message]:
        """Each message once."""
        for part in self._mapping.batches():
            yield from part


class _MessageItems(ItemsView[int, Message]):
    """The staged (id, message) pairs, batch by batch."""

    _mapping: StagedMessages

    def __iter__(self) -> Iterator[tuple[int, Message]]:
        """Each pair once."""
        for part in self._mapping.batches():
            for message in part:
                yield message.id, message
