"""Report times kept in order, so that sort=delivered pages need no sort of the selection."""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Collection, Iterable, Iterator
from heapq import merge
from itertools import chain, compress, islice
from typing import TYPE_CHECKING

from .traffic import FINAL_STATUSES

if TYPE_CHECKING:
    from .store import Message

Pair = tuple[float, int]  # (report time, message id)
# a report's status for each message: the commonest two are not listed (their sets would be big)
_UNLISTED = frozenset({"delivered", "read"})

# mysql: NULLs first ascending, last descending; ignored: id order; nulls_first: NULLs first
# both ways; no_direction: always ascending (each a way a provider's API can get it wrong)
DELIVERED_SORTS = ("mysql", "ignored", "nulls_first", "no_direction")


def check_delivered_sort(mode: object) -> str:
    """A known sort=delivered mode, or ValueError."""
    if not isinstance(mode, str) or mode not in DELIVERED_SORTS:
        raise ValueError(f"unknown delivered sort {mode!r}; known: {list(DELIVERED_SORTS)}")
    return mode


def check_reportless(statuses: Iterable[object]) -> frozenset[str]:
    """Final statuses to serve without a report time, or ValueError."""
    if isinstance(statuses, str):
        raise ValueError(f"reportless takes a list of statuses, not the string {statuses!r}")
    chosen = frozenset(statuses)
    wrong = sorted(map(repr, chosen - FINAL_STATUSES))
    if wrong:
        raise ValueError(f"not final statuses: {', '.join(wrong)}; known: {sorted(FINAL_STATUSES)}")
    return frozenset(s for s in FINAL_STATUSES if s in chosen)


class _Pairs:
    """(time, id) pairs in ascending order, in two parallel arrays (16 bytes a pair)."""

    def __init__(self, times: Iterable[float] = (), ids: Iterable[int] = ()) -> None:
        self._times = array("d", times)
        self._ids = array("q", ids)

    @classmethod
    def of(cls, pairs: Iterable[Pair]) -> _Pairs:
        """The pairs, in any order to begin with."""
        ordered = sorted(pairs)
        return cls((t for t, _ in ordered), (i for _, i in ordered))

    def __len__(self) -> int:
        """Number of pairs."""
        return len(self._ids)

    def _where(self, t: float, msg_id: int) -> int:
        """Position of (t, msg_id), or where it belongs."""
        lo = bisect_left(self._times, t)
        return bisect_left(self._ids, msg_id, lo, bisect_right(self._times, t, lo))

    def insert(self, t: float, msg_id: int) -> None:
        """Add one pair in its place."""
        i = self._where(t, msg_id)
        self._times.insert(i, t)
        self._ids.insert(i, msg_id)

    def remove(self, t: float, msg_id: int) -> None:
        """Remove one pair if present."""
        i = self._where(t, msg_id)
        if i < len(self._ids) and self._ids[i] == msg_id and self._times[i] == t:
            del self._times[i], self._ids[i]

    def update(self, pairs: list[Pair]) -> _Pairs:
        """These pairs and the new ones: inserted one by one, or re-sorted when many."""
        if len(pairs) * 16 <= len(self):  # a few insertions near the end move little
            for t, msg_id in pairs:
                self.insert(t, msg_id)
            return self
        return _Pairs.of(chain(zip(self._times, self._ids, strict=True), pairs))

    def without(self, ids: Collection[int]) -> _Pairs:
        """These pairs minus those of the given message ids."""
        kept = [i not in ids for i in self._ids]
        return _Pairs(compress(self._times, kept), compress(self._ids, kept))

    def upto(self, t: float) -> int:
        """Number of pairs whose time is at most `t`."""
        return bisect_right(self._times, t)

    def ascending(self, end: int) -> Iterator[Pair]:
        """The first `end` pairs, in order."""
        return islice(zip(self._times, self._ids, strict=True), end)

    def descending(self, end: int) -> Iterator[Pair]:
        """The first `end` pairs, last one first."""
        times, ids = self._times, self._ids
        return ((times[i], ids[i]) for i in range(end - 1, -1, -1))

    def ids_from(self, start: int) -> array[int]:
        """The ids of the pairs from position `start` on."""
        return self._ids[start:]


class ReportIndex:
    """Every stored message filed under its report time, from the first sort=delivered on."""

    def __init__(self) -> None:
        self.active = False
        # stored since the last query: only the simulator can draw their timelines to file them
        self._pending: list[Message] = []
        # a timeline's report time is fixed when drawn, but shown once the clock reaches it
        self._timed = _Pairs()
        # a manual message's report time is shown as soon as it is set, even ahead of the clock
        self._fixed = _Pairs()
        self._open: set[int] = set()  # messages with no report time at all
        # ids by the status their report comes with: where reportless statuses' NULLs hide
        self._by_status: dict[str, set[int]] = {}

    def __len__(self) -> int:
        """Number of messages filed (pending ones aside)."""
        return len(self._timed) + len(self._fixed) + len(self._open)

    def added(self, m: Message) -> None:
        """Note a newly stored message (only once the index is in use)."""
        if self.active:
            self._pending.append(m)

    def start(self, messages: Iterable[Message]) -> None:
        """Begin indexing, with every message stored so far pending."""
        if not self.active:
            self.active = True
            self._pending = list(messages)

    def take_pending(self) -> list[Message]:
        """The messages not filed yet; the caller files them."""
        pending, self._pending = self._pending, []
        return pending

    def file(self, filed: Iterable[tuple[Message, float | None, str]]) -> None:
        """File messages under their report times (None: no report yet) and statuses."""
        timed: list[Pair] = []
        fixed: list[Pair] = []
        for m, t, status in filed:
            if status not in _UNLISTED:
                self._by_status.setdefault(status, set()).add(m.id)
            if t is None:
                self._open.add(m.id)
            else:
                (fixed if m.manual else timed).append((t, m.id))
        self._timed = self._timed.update(timed)
        self._fixed = self._fixed.update(fixed)

    def unfile(self, m: Message, t: float | None, status: str) -> None:
        """Take a message out from under the report time and status it was filed with."""
        self._by_status.get(status, set()).discard(m.id)
        if t is None:
            self._open.discard(m.id)
        else:
            (self._fixed if m.manual else self._timed).remove(t, m.id)

    def drop(self, dropped: list[Message]) -> None:
        """Forget pruned messages."""
        if not self.active or not dropped:
            return
        ids = {m.id for m in dropped}
        self._pending = [m for m in self._pending if m.id not in ids]
        self._timed = self._timed.without(ids)
        self._fixed = self._fixed.without(ids)
        self._open -= ids
        for listed in self._by_status.values():
            listed.difference_update(ids)

    def reported(self, now: float, descending: bool) -> Iterator[int]:
        """Ids of the messages with a report time shown at `now`, by (time, id) either way."""
        end = self._timed.upto(now)
        if descending:
            walks = (self._timed.descending(end), self._fixed.descending(len(self._fixed)))
        else:
            walks = (self._timed.ascending(end), self._fixed.ascending(len(self._fixed)))
        return (msg_id for _, msg_id in merge(*walks, reverse=descending))

    def unreported(self, now: float, hidden: frozenset[str]) -> Iterator[int] | None:
        """Ids showing no report time at `now` with `hidden` statuses' reports hidden (or None)."""
        # a report's status stays until the end but for delivered -> read, which are not listed:
        # None says only a scan can tell
        if hidden & _UNLISTED:
            return None
        listed = (self._by_status.get(status, ()) for status in hidden)
        return chain(self._timed.ids_from(self._timed.upto(now)), self._open, *listed)
