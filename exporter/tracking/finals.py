"""The final messages of one target's table, in flat arrays: their ids, kinds and creation times.

Owns how a final message is kept while it is in the window: its id in a sorted ``array('q')``,
the code of its kind (an index into the table's (series, status, state) kinds) in an
``array('B')``, widened when there are more kinds, and its creation second in an ``array('I')``.
The arrays are cut into segments of neighbouring ids, found by bisection: an insertion moves the
bytes of one segment, not of the whole window, and pruning drops whole segments (ids grow with
time). A creation time that is not a whole second in that range is kept exactly beside them.

Must not import: any exporter module.
"""

from __future__ import annotations

import math
import operator
from array import array
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Collection, Iterator, Mapping, Sequence
from itertools import compress, islice
from typing import Generic, TypeVar

SEGMENT = 1024
"""Ids a segment is filled with when appended to; one grown to twice that by insertions is split."""
HOT = 8192
"""The newest final messages also kept in a dict: a poll re-reads its youngest messages most."""
HOT_SHARE = 64
"""Below ``HOT * HOT_SHARE`` final messages, the dicts keep one in ``HOT_SHARE`` of them: a
small target re-reads few messages a poll, and two dicts of HOT would be most of its table
(at one in 16, with their id objects, ~9 bytes a message)."""
HOT_MIN = 512
"""The dicts of the newest keep at least this many, however small the target (HOT if less)."""
SECOND_MAX = 2**32 - 1
"""The latest creation second the arrays hold; later (or earlier than 0) is kept exactly."""
K = TypeVar("K")
T = TypeVar("T")
_NO_ID = -(2**63) - 1  # below every id an array('q') holds
_WIDER = {"B": "H", "H": "I"}
_CODE_MAX = {"B": 0xFF, "H": 0xFFFF, "I": 0xFFFFFFFF}


class _Segment:
    """Neighbouring final messages, in id order."""

    __slots__ = ("codes", "created", "high", "ids", "inexact", "low")

    def __init__(self, ids: array[int], codes: array[int], created: array[int], inexact: bool):
        self.ids = ids
        self.codes = codes
        self.created = created  # whole seconds, clipped to [0, SECOND_MAX]
        self.inexact = inexact  # some creation times are the store's exact ones, not these
        self.low = min(created, default=SECOND_MAX)
        self.high = max(created, default=0)

    def bound(self) -> None:
        """Recompute the creation bounds after a change."""
        self.low = min(self.created)
        self.high = max(self.created)


class FinalStore(Generic[K]):
    """Final messages by id: each one's kind (one of ``kinds``, by code) and creation time."""

    __slots__ = (
        "_count",
        "_exact",
        "_firsts",
        "_kinds",
        "_max",
        "_segments",
        "_typecode",
        "hot_from",
        "old",
        "young",
    )

    def __init__(self, kinds: Sequence[K]) -> None:
        self._kinds = kinds  # the table's, by code: it adds kinds as they appear
        # _firsts[i] is at most the first id of _segments[i], and above every id before it.
        self._firsts: list[int] = []
        self._segments: list[_Segment] = []
        self._exact: dict[int, float] = {}  # creation times the seconds array cannot hold
        self._typecode = "B"
        self._count = 0
        self._max = _NO_ID  # the largest id: a poll's new messages are all above it
        # Every final message from hot_from on is in one of these dicts, the young one first (it
        # has the newest changes): a dict lookup finds it (the table's own lookups read them).
        # When the young one holds HOT (fewer for a small target: see HOT_SHARE), the old one
        # is dropped and the young one takes its place.
        self.young: dict[int, K] = {}
        self.old: dict[int, K] = {}
        self.hot_from = _NO_ID

    def __len__(self) -> int:
        return self._count

    def __contains__(self, msg_id: int) -> bool:
        return self.entry(msg_id) is not None

    def entry(self, msg_id: int) -> K | None:
        """The kind of a final message, None when it is not one."""
        if msg_id >= self.hot_from:
            found = self.young.get(msg_id)
            return found if found is not None else self.old.get(msg_id)
        index = bisect_right(self._firsts, msg_id) - 1
        if index < 0:
            return None
        segment = self._segments[index]
        ids = segment.ids
        position = bisect_left(ids, msg_id)
        if position < len(ids) and ids[position] == msg_id:
            return self._kinds[segment.codes[position]]
        return None

    def created_at(self, msg_id: int) -> float | None:
        """When a final message was created, None when it is not one."""
        found = self._find(msg_id)
        if found is None:
            return None
        segment, position = found
        return self._exact.get(msg_id, float(segment.created[position]))

    def isdisjoint(self, ids: Collection[int]) -> bool:
        """True when none of ``ids`` is a final message."""
        if not self._count or not ids or min(ids) > self._max:
            return True
        entry = self.entry
        return all(entry(msg_id) is None for msg_id in ids)

    def put(self, msg_id: int, created_at: float, code: int, *, keep_time: bool = False) -> None:
        """Add a final message, or give a known one this kind and (unless ``keep_time``) this
        creation time: a message pruned, then seen again, is new again."""
        if code > _CODE_MAX[self._typecode]:
            self._widen(code)
        segments = self._segments
        if msg_id > self._max:  # a new message, or one pending until now: the last segment
            if not segments or len(segments[-1].ids) >= SEGMENT:
                self._firsts.append(msg_id)
                segments.append(_Segment(array("q"), array(self._typecode), array("I"), False))
            index, position = len(segments) - 1, len(segments[-1].ids)
            self._max = msg_id
        else:
            index = max(0, bisect_right(self._firsts, msg_id) - 1)
            ids = segments[index].ids
            position = bisect_left(ids, msg_id)
            if position < len(ids) and ids[position] == msg_id:
                segment = segments[index]
                segment.codes[position] = code
                if not keep_time:
                    second = self._second(msg_id, created_at, segment)
                    segment.created[position] = second
                    segment.low = min(segment.low, second)  # bounds may be wider than
                    segment.high = max(segment.high, second)  # the times: they only skip
                index = -1
        if index >= 0:  # one call, inlined: a poll makes young messages final by the thousand
            segment = segments[index]
            second = self._second(msg_id, created_at, segment)
            segment.ids.insert(position, msg_id)
            segment.codes.insert(position, code)
            segment.created.insert(position, second)
            segment.low = min(segment.low, second)
            segment.high = max(segment.high, second)
            self._firsts[index] = min(self._firsts[index], msg_id)
            self._count += 1
            if len(segment.ids) > 2 * SEGMENT:
                self._split(index)
        if msg_id >= self.hot_from:
            self.young[msg_id] = self._kinds[code]
            if len(self.young) >= min(HOT, max(HOT_MIN, self._count // HOT_SHARE)):
                self._rotate()

    def _second(self, msg_id: int, created_at: float, segment: _Segment) -> int:
        """The creation second of a message put in ``segment`` (its exact time noted if not)."""
        try:
            second = int(created_at)
            if second == created_at and 0 <= second <= SECOND_MAX:
                if self._exact:
                    self._exact.pop(msg_id, None)
                return second
        except (ValueError, OverflowError):  # not finite
            pass
        self._exact[msg_id] = float(created_at)
        segment.inexact = True
        return clipped_second(created_at)

    def put_many(
        self,
        ids: Sequence[int],
        seconds: Sequence[int],
        codes: Sequence[int],
        exact: Mapping[int, float],
        *,
        keep_times: bool = False,
    ) -> None:
        """:meth:`put` of many, in any order (of an id given twice, the last counts), with their
        creation times as :func:`whole_seconds` gives them and the exact ones by id."""
        if not ids:
            return
        if max(codes) > _CODE_MAX[self._typecode]:
            self._widen(max(codes))
        if not all(map(operator.lt, ids, islice(ids, 1, None))):
            ids, seconds, codes = sorted_last_wins(ids, seconds, codes)
        split = bisect_right(ids, self._max)  # those after it are new, and come last
        for msg_id, second, code in zip(ids[:split], seconds[:split], codes[:split], strict=True):
            self.put(msg_id, exact.get(msg_id, second), code, keep_time=keep_times)
        if split < len(ids):
            new = {msg_id: t for msg_id, t in exact.items() if msg_id > self._max}
            if not split:
                self._append(ids, seconds, codes, new)
            else:
                self._append(ids[split:], seconds[split:], codes[split:], new)

    def prune(self, before: float) -> int:
        """Forget final messages created before ``before``; returns how many."""
        before = float(before)  # its bound comparison takes ints too
        removed = 0
        hot: list[int] = []  # ids gone that may be in the dicts of the newest (seldom)
        firsts: list[int] = []
        segments: list[_Segment] = []
        for first, segment in zip(self._firsts, self._segments, strict=True):
            if segment.inexact or segment.low < before:
                newest = segment.ids[-1] >= self.hot_from
                if not segment.inexact and segment.high < before:
                    removed += len(segment.ids)
                    hot += segment.ids if newest else ()
                    continue
                dropped = self._drop_before(segment, before)
                removed += len(dropped)
                hot += dropped if newest else ()
                if not segment.ids:
                    continue
            if segments and len(segments[-1].ids) + len(segment.ids) <= SEGMENT:
                _join(segments[-1], segment)  # what pruning left of neighbours, as one
            else:
                firsts.append(first)
                segments.append(segment)
        self._firsts, self._segments = firsts, segments
        self._max = segments[-1].ids[-1] if segments else _NO_ID
        self._count -= removed
        for msg_id in hot:
            self.young.pop(msg_id, None)
            self.old.pop(msg_id, None)
        return removed

    def counts(self, start: float, end: float) -> Counter[int]:
        """Final messages created in ``[start, end)``, by kind code."""
        start, end = float(start), float(end)  # their bound comparisons take ints too
        counts: Counter[int] = Counter()
        for segment in self._segments:
            if not segment.inexact:
                if segment.high < start or segment.low >= end:
                    continue
                if segment.low >= start and segment.high < end:
                    counts.update(segment.codes)
                    continue
            times = self._times(segment)
            inside = map(operator.and_, map(start.__le__, times), map(end.__gt__, times))
            counts.update(compress(segment.codes, inside))
        return counts

    def items(self) -> Iterator[tuple[int, int]]:
        """``(id, kind code)`` of every final message, in id order."""
        for segment in self._segments:
            yield from zip(segment.ids, segment.codes, strict=True)

    def blocks(self) -> Iterator[tuple[array[int], array[int], array[int]]]:
        """Ids, creation seconds and kind codes, a segment at a time, in id order (the exact
        creation times are :meth:`exact_positions`)."""
        for segment in self._segments:
            yield segment.ids, segment.created, segment.codes

    def exact_positions(self) -> tuple[list[int], list[float]]:
        """Where, in id order, the creation times not in :meth:`blocks` are, and what they are."""
        positions: list[int] = []
        times: list[float] = []
        offset = 0
        exact = self._exact
        for segment in self._segments:
            if segment.inexact:
                for index, msg_id in enumerate(segment.ids):
                    if msg_id in exact:
                        positions.append(offset + index)
                        times.append(exact[msg_id])
            offset += len(segment.ids)
        return positions, times

    # --- internals ------------------------------------------------------------------------

    def _find(self, msg_id: int) -> tuple[_Segment, int] | None:
        """The segment of a final message and its position there."""
        if msg_id > self._max:
            return None
        index = bisect_right(self._firsts, msg_id) - 1
        if index < 0:
            return None
        segment = self._segments[index]
        position = bisect_left(segment.ids, msg_id)
        if position < len(segment.ids) and segment.ids[position] == msg_id:
            return segment, position
        return None

    def _append(
        self,
        ids: Sequence[int],
        seconds: Sequence[int],
        codes: Sequence[int],
        exact: Mapping[int, float],
    ) -> None:
        """Add new final messages whose ids, ascending, are all above the largest."""
        start, count = 0, len(ids)
        if self._segments and len(self._segments[-1].ids) < SEGMENT:
            start = min(count, SEGMENT - len(self._segments[-1].ids))
            _join(self._segments[-1], self._segment(ids[:start], seconds[:start], codes[:start]))
        while start < count:
            end = min(count, start + SEGMENT)
            self._firsts.append(ids[start])
            self._segments.append(
                self._segment(ids[start:end], seconds[start:end], codes[start:end])
            )
            start = end
        self._max = ids[-1]
        self._count += count
        if exact:
            self._mark_exact(exact)
        kind = self._kinds.__getitem__
        hot = min(HOT, max(HOT_MIN, self._count // HOT_SHARE))
        if count >= hot:  # the newest are all in this batch
            self.hot_from = ids[count - hot]
            self.young = dict(zip(ids[-hot:], map(kind, codes[-hot:]), strict=True))
            self.old = {}
        else:
            self.young.update(zip(ids, map(kind, codes), strict=True))
            if len(self.young) >= hot:
                self._rotate()

    def _rotate(self) -> None:
        """Drop the old dict of the newest: from after its last id, the young one has them all."""
        if self.old:
            self.hot_from = max(self.hot_from, max(self.old) + 1)
        self.old, self.young = self.young, {}

    def _segment(
        self, ids: Sequence[int], seconds: Sequence[int], codes: Sequence[int]
    ) -> _Segment:
        """A new segment of these messages (their exact creation times noted after)."""
        return _Segment(
            array("q", ids), array(self._typecode, codes), array("I", seconds), inexact=False
        )

    def _mark_exact(self, exact: Mapping[int, float]) -> None:
        """Keep the exact creation times of messages just added, and mark their segments."""
        self._exact.update(exact)
        for msg_id in exact:
            found = self._find(msg_id)
            if found is not None:
                found[0].inexact = True

    def _times(self, segment: _Segment) -> Sequence[float]:
        """The creation times of a segment's messages."""
        if not segment.inexact:
            return segment.created
        exact = self._exact
        return [exact.get(i, t) for i, t in zip(segment.ids, segment.created, strict=True)]

    def _drop_before(self, segment: _Segment, before: float) -> list[int]:
        """Remove a segment's messages created before ``before``; returns their ids."""
        keep = list(map(before.__le__, self._times(segment)))
        if all(keep):
            return []
        dropped = list(compress(segment.ids, map(operator.not_, keep)))
        if segment.inexact:
            for msg_id in dropped:
                self._exact.pop(msg_id, None)
        segment.ids = array("q", compress(segment.ids, keep))
        segment.codes = array(self._typecode, compress(segment.codes, keep))
        segment.created = array("I", compress(segment.created, keep))
        if segment.ids:
            segment.bound()
            segment.inexact = segment.inexact and any(map(self._exact.__contains__, segment.ids))
        return dropped

    def _split(self, index: int) -> None:
        """Cut an overgrown segment in two."""
        segment = self._segments[index]
        half = len(segment.ids) // 2
        upper = _Segment(
            segment.ids[half:], segment.codes[half:], segment.created[half:], segment.inexact
        )
        del segment.ids[half:], segment.codes[half:], segment.created[half:]
        segment.bound()
        self._segments.insert(index + 1, upper)
        self._firsts.insert(index + 1, upper.ids[0])

    def _widen(self, code: int) -> None:
        """Widen the kind codes' arrays until ``code`` fits."""
        while code > _CODE_MAX[self._typecode]:
            self._typecode = _WIDER[self._typecode]
            for segment in self._segments:
                segment.codes = array(self._typecode, segment.codes)


def _join(segment: _Segment, after: _Segment) -> None:
    """Append the messages of ``after``, whose ids are all above, to ``segment``."""
    segment.ids.extend(after.ids)
    segment.codes.extend(after.codes)
    segment.created.extend(after.created)
    segment.low, segment.high = min(segment.low, after.low), max(segment.high, after.high)
    segment.inexact |= after.inexact


def clipped_second(created_at: float) -> int:
    """The whole second of a creation time, within ``[0, SECOND_MAX]``."""
    try:
        second = math.floor(created_at)
    except (ValueError, OverflowError):  # not finite
        return 0
    return second if 0 <= second <= SECOND_MAX else min(max(second, 0), SECOND_MAX)


def whole_seconds(created: list[float]) -> tuple[array[int], list[int]]:
    """Creation times as the whole seconds the arrays hold, and the positions of those that
    are not what they hold (kept exactly beside them)."""
    try:  # one int at a time: a cold read's list of them would be megabytes, freed at once
        if all(map(float.is_integer, created)):
            return array("I", map(int, created)), []
    except (TypeError, OverflowError):  # ints among them; before 0 or after SECOND_MAX
        pass
    seconds = array("I", map(clipped_second, created))
    return seconds, list(compress(range(len(created)), map(operator.ne, seconds, created)))


def sorted_last_wins(
    ids: Sequence[int], created: Sequence[T], codes: Sequence[int]
) -> tuple[list[int], list[T], list[int]]:
    """The columns in id order, an id given more than once kept at its last."""
    order = sorted(range(len(ids)), key=ids.__getitem__)  # stable: repeats stay in order
    by_id = list(map(ids.__getitem__, order))
    last = [*map(operator.ne, by_id, islice(by_id, 1, None)), True]
    order = list(compress(order, last))
    return (
        list(map(ids.__getitem__, order)),
        list(map(created.__getitem__, order)),
        list(map(codes.__getitem__, order)),
    )
