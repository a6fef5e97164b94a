"""The counting contract, one rule at a time, on the tracker alone."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import pytest

from exporter.bsg.staged import StagedMessages
from exporter.bsg.wire import Channel, Epoch, Message, Status, is_final, normalize_status
from exporter.config.schema import MetricsConfig, PollConfig, RecheckTier, TargetConfig
from exporter.defaults import FEED_OVERLAP, FEED_RETRY_INTERVALS, FEED_SWEEP_FACTOR
from exporter.model import FINAL_STATUSES, NULL_FIRST, PENDING_STATUSES, RISING
from exporter.tracking.codec import Counters, FeedProgress, Progress, dump, restore
from exporter.tracking.schedule import FeedRead, FeedResult
from exporter.tracking.snapshot import SEP
from exporter.tracking.store import MEMORY, StateStore
from exporter.tracking.tracker import PRUNE_MARGIN, TargetTracker
from tests.harness import price

NOW = 1_780_000_000.0
WINDOW = 3600.0


def tracker(
    count_existing: bool = False,
    store: StateStore | None = None,
    *,
    recheck: Sequence[tuple[float, float]] | None = None,
    interval: float = 60.0,
    abandon_grace: float = 3600.0,
    labels: tuple[str, ...] = (),
    max_label_values: int = 50,
    on_count: Callable[[Message, float], None] | None = None,
) -> TargetTracker:
    """A tracker with a one-hour window and simple buckets, over an in-memory store."""
    poll = PollConfig(interval, abandon_grace=abandon_grace)
    if recheck is not None:
        tiers = tuple(RecheckTier(age, every) for age, every in recheck)
        poll = PollConfig(interval, tiers, abandon_grace)
    return TargetTracker(
        store or StateStore(MEMORY),
        TargetConfig("t", WINDOW, None, labels=labels, max_label_values=max_label_values),
        poll=poll,
        metrics=MetricsConfig((1, 10, 100), (1, 10)),
        count_existing_on_start=count_existing,
        on_count=on_count,
    )


def msg(
    msg_id: int,
    status: Status,
    *,
    channel: Channel = "sms",
    created: float = NOW - 60,
    sent: float | None = None,
    delivered: float | None = None,
    cost: int | None = 10_000_000,
    currency: str | None = "EUR",
) -> Message:
    """A message with sensible defaults."""
    return Message(
        id=msg_id,
        status=status,
        channel=channel,
        created_at=Epoch(created),
        sent_at=None if sent is None else Epoch(sent),
        delivered_at=None if delivered is None else Epoch(delivered),
        amount=price(cost, currency),
    )


def test_cold_start_final_messages_are_the_baseline() -> None:
    t = tracker()
    result = t.apply([msg(1, "delivered"), msg(2, "failed"), msg(3, "sent")], NOW)
    snap = t.snapshot(NOW)
    assert result.finalized == 0
    assert sum(snap.messages.values()) == 0 and sum(snap.submitted.values()) == 0
    assert snap.window == {("sms", "delivered"): 1, ("sms", "failed"): 1, ("sms", "sent"): 1}
    # the baseline's pending message is counted when it turns final, but never as submitted
    t.apply([msg(3, "delivered")], NOW + 60)
    snap = t.snapshot(NOW + 60)
    assert snap.messages == {("sms", "delivered"): 1}
    assert snap.submitted == {}


def test_a_staged_poll_is_emptied_as_it_is_applied() -> None:
    """The tracker takes a staging's batches away as it applies them (their memory goes)."""
    t = tracker()
    staged = StagedMessages([msg(1, "delivered"), msg(2, "sent"), msg(1, "failed")])
    t.apply(staged, NOW)
    assert len(staged) == 0
    assert t.snapshot(NOW).window == {("sms", "failed"): 1, ("sms", "sent"): 1}


def test_count_existing_on_start_counts_the_baseline() -> None:
    t = tracker(count_existing=True)
    t.apply([msg(1, "delivered"), msg(2, "failed"), msg(3, "sent")], NOW)
    snap = t.snapshot(NOW)
    assert snap.messages == {("sms", "delivered"): 1, ("sms", "failed"): 1}
    assert snap.submitted == {}


def test_each_message_counts_once_at_its_first_final_status() -> None:
    t = tracker()
    t.apply([], NOW)  # empty baseline
    t.apply([msg(1, "accepted"), msg(2, "sent")], NOW + 1)
    t.apply([msg(1, "delivered"), msg(2, "sent")], NOW + 2)
    t.apply([msg(1, "delivered"), msg(2, "undelivered")], NOW + 3)
    t.apply([msg(1, "delivered"), msg(2, "undelivered")], NOW + 4)
    snap = t.snapshot(NOW + 4)
    assert snap.messages == {("sms", "delivered"): 1, ("sms", "undelivered"): 1}
    assert snap.submitted == {"sms": 2}
    assert snap.cost_nanos == {
        ("sms", "delivered", "EUR"): 10_000_000,
        ("sms", "undelivered", "EUR"): 10_000_000,
    }


def test_a_later_final_status_is_a_change_not_a_count() -> None:
    t = tracker()
    t.apply([], NOW)
    t.apply([msg(1, "delivered", channel="viber")], NOW + 1)
    t.apply([msg(1, "read", channel="viber")], NOW + 2)
    t.apply([msg(1, "read", channel="viber")], NOW + 3)
    snap = t.snapshot(NOW + 3)
    assert snap.messages == {("viber", "delivered"): 1}
    assert snap.changes == {("delivered", "read"): 1}
    assert snap.window == {("viber", "read"): 1}
    assert "viber" in snap.channels and "sms" in snap.channels


def test_baseline_messages_changing_status_are_not_changes() -> None:
    t = tracker()
    t.apply([msg(1, "delivered")], NOW)
    t.apply([msg(1, "read")], NOW + 1)
    snap = t.snapshot(NOW + 1)
    assert snap.changes == {} and snap.window == {("sms", "read"): 1}


def test_a_final_status_never_goes_back_to_pending() -> None:
    t = tracker()
    t.apply([], NOW)
    t.apply([msg(1, "failed")], NOW + 1)
    t.apply([msg(1, "sent")], NOW + 2)
    t.apply([msg(1, "failed")], NOW + 3)
    snap = t.snapshot(NOW + 3)
    assert snap.messages == {("sms", "failed"): 1}
    assert snap.changes == {} and snap.window == {("sms", "failed"): 1}


def test_unknown_status_is_pending_other() -> None:
    t = tracker()
    t.apply([], NOW)
    t.apply([msg(1, "other")], NOW + 1)
    snap = t.snapshot(NOW + 1)
    assert snap.pending == 1 and snap.window == {("sms", "other"): 1}
    t.apply([msg(1, "delivered")], NOW + 2)
    assert t.snapshot(NOW + 2).messages == {("sms", "delivered"): 1}


def test_latencies_are_observed_at_count_time() -> None:
    t = tracker()
    t.apply([], NOW)
    created = NOW - 100
    t.apply([msg(1, "sent", created=created, sent=created + 2)], NOW)
    t.apply([msg(1, "delivered", created=created, sent=created + 2, delivered=created + 7)], NOW)
    t.apply([msg(2, "failed", created=created, sent=created + 20)], NOW)
    snap = t.snapshot(NOW)
    latency = snap.delivery_latency["sms"]
    assert latency.count == 1 and latency.total == 5.0
    assert latency.cumulative() == [("1.0", 0), ("10.0", 1), ("100.0", 1), ("+Inf", 1)]
    send = snap.send_delay["sms"]
    assert send.count == 2 and send.total == 22.0
    assert send.cumulative() == [("1.0", 0), ("10.0", 1), ("+Inf", 2)]


def test_negative_latency_from_clock_skew_is_clamped() -> None:
    t = tracker()
    t.apply([], NOW)
    t.apply([msg(1, "delivered", sent=NOW - 10, delivered=NOW - 12)], NOW)
    assert t.snapshot(NOW).delivery_latency["sms"].total == 0.0


def test_window_gauge_and_oldest_pending_follow_the_clock() -> None:
    t = tracker()
    t.apply([msg(1, "sent", created=NOW - 100), msg(2, "delivered", created=NOW - 50)], NOW)
    snap = t.snapshot(NOW)
    assert snap.oldest_pending_age == 100.0
    later = NOW + WINDOW - 75  # message 1 has left the window, message 2 has not
    snap = t.snapshot(later)
    assert snap.window == {("sms", "delivered"): 1}
    assert snap.oldest_pending_age == later - (NOW - 100)
    assert t.rechecks(later).due == ((1, NOW - 100),)


def test_final_messages_are_pruned_after_the_window_but_never_recounted() -> None:
    t = tracker()
    t.apply([], NOW)
    t.apply([msg(1, "delivered", created=NOW), msg(2, "sent", created=NOW)], NOW)
    far = NOW + WINDOW + PRUNE_MARGIN + 10
    t.apply([], far)
    snap = t.snapshot(far)
    assert snap.tracked == 1  # the pending one stays until final
    # a read reaching back past the window shows message 1 again: it must not count twice
    result = t.apply([msg(1, "delivered", created=NOW), msg(2, "failed", created=NOW)], far + 1)
    assert result.ignored == 1 and result.finalized == 1
    snap = t.snapshot(far + 1)
    assert snap.messages == {("sms", "delivered"): 1, ("sms", "failed"): 1}
    assert snap.submitted == {"sms": 2}


def test_random_observation_sequences_keep_the_contract() -> None:
    """Whatever order statuses are seen in, each message counts at most once and sums agree."""
    rng = random.Random(7)
    # as Status: the vocabulary normalises to itself
    statuses = tuple(map(normalize_status, (*PENDING_STATUSES, *FINAL_STATUSES, "other")))
    for _ in range(50):
        t = tracker()
        t.apply([], NOW)
        first_final: dict[int, Status] = {}
        previous_total = 0
        for step in range(30):
            seen = []
            for msg_id in rng.sample(range(1, 40), 10):
                status = rng.choice(statuses)
                seen.append(msg(msg_id, status, created=NOW))
                if is_final(status):
                    first_final.setdefault(msg_id, status)
            t.apply(seen, NOW + step)
            snap = t.snapshot(NOW + step)
            total = sum(snap.messages.values())
            assert total >= previous_total
            previous_total = total
            assert sum(snap.window.values()) == snap.tracked
        expected: dict[tuple[str, str], int] = {}
        for status in first_final.values():
            expected[("sms", status)] = expected.get(("sms", status), 0) + 1
        assert dict(t.snapshot(NOW).messages) == expected


def test_messages_older_than_the_baseline_window_are_never_new() -> None:
    """A read widened for stragglers can reach past the first window: those are not new."""
    t = tracker()
    t.apply([msg(1, "sent", created=NOW - 100)], NOW)
    result = t.apply(
        [msg(1, "delivered", created=NOW - 100), msg(2, "delivered", created=NOW - WINDOW - 50)],
        NOW + 60,
    )
    assert result.ignored == 1 and result.finalized == 1
    assert t.snapshot(NOW + 60).submitted == {}


def test_rechecks_of_a_tier_fall_due_together() -> None:
    """Messages first seen at different times are re-checked together, with their tier."""
    t = tracker(recheck=[(600.0, 60.0), (7200.0, 300.0)], interval=60.0)
    t.apply([], NOW)  # the tiers start their clocks
    t.apply([msg(1, "sent", created=NOW - 900)], NOW + 20)
    t.apply([msg(2, "sent", created=NOW - 900), msg(3, "sent", created=NOW + 100)], NOW + 200)
    assert t.rechecks(NOW + 240).due == ((3, NOW + 100),)  # the young tier, every minute
    recheck = t.rechecks(NOW + 300)
    assert recheck.ids == {1, 2, 3}  # and now the older tier, as a whole
    result = t.apply([], NOW + 300, checked={1, 3}, recheck=recheck)  # the budget left 2 unread
    assert t.snapshot(NOW + 300).backlog == 1 and result.new == 0
    assert t.rechecks(NOW + 330).due[0] == (2, NOW - 900)  # the backlog comes first


def test_a_baseline_spread_over_polls_counts_what_changed_after_it_began() -> None:
    """With a budget too small for the window, the first read takes several polls."""
    t = tracker()
    t.apply([msg(1, "sent")], NOW, resume=(NOW - WINDOW, 500))  # unfinished: still cold
    assert t.cold
    t.apply(
        [
            msg(2, "delivered", delivered=NOW + 30),  # final after the baseline began: counted
            msg(3, "delivered", delivered=NOW - 10),  # final before: the baseline
            msg(4, "failed", created=NOW + 20),  # created after it began: new
        ],
        NOW + 60,
    )
    assert not t.cold
    snap = t.snapshot(NOW + 60)
    assert snap.messages == {("sms", "delivered"): 1, ("sms", "failed"): 1}
    assert snap.submitted == {"sms": 1}


def test_a_message_is_read_once_more_when_its_validity_ends() -> None:
    """Whatever its tier's period, the outcome is read before the message would be abandoned."""
    t = tracker(
        recheck=[(600.0, 60.0), (30 * 86400.0, 86400.0)],  # old messages: once a day
        abandon_grace=3600.0,
        interval=60.0,
    )
    one_hour = Message(1, "sent", "sms", created_at=Epoch(NOW - 1800), validity_hours=1)
    t.apply([one_hour], NOW)
    assert t.rechecks(NOW + 600).due == ()  # its tier is not due for a day
    recheck = t.rechecks(NOW + 1800)
    assert recheck.due == ((1, NOW - 1800),)  # validity over: read the outcome now
    t.apply([one_hour], NOW + 1800, checked={1}, recheck=recheck)  # still pending
    assert t.rechecks(NOW + 1860).due == ()
    assert t.rechecks(NOW + 1800 + 3600).due == ((1, NOW - 1800),)  # once more, before abandoning


def labelled(msg_id: int, country: str) -> Message:
    """A delivered message of ``country``."""
    return msgspec.structs.replace(msg(msg_id, "delivered"), country=country)


def test_a_value_over_its_cap_is_counted_as_overflow_every_time() -> None:
    t = tracker(labels=("country",), max_label_values=1)
    t.apply([labelled(1, "UA"), labelled(2, "PL"), labelled(3, "UA"), labelled(4, "PL")], NOW)
    t.apply([labelled(5, "PL"), labelled(6, "UA"), labelled(7, "PL")], NOW + 60)
    snap = t.snapshot(NOW + 60)
    assert snap.overflow == {"country": 4}  # every PL, each time
    assert snap.messages == {(f"sms{SEP}UA", "delivered"): 1, (f"sms{SEP}other", "delivered"): 2}


def test_label_values_admitted_by_a_failed_poll_are_not_remembered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = StateStore(MEMORY)
    t = tracker(store=store, labels=("country",), max_label_values=1)
    t.apply([], NOW)  # the baseline
    with monkeypatch.context() as patch:

        def refuse(*args: Any) -> None:
            raise sqlite3.OperationalError("disk I/O error")

        patch.setattr(store, "append_chunk", refuse)  # the poll's save fails: all of it undone
        with pytest.raises(sqlite3.OperationalError):
            t.apply([labelled(1, "UA")], NOW + 60)
    t.apply([labelled(2, "PL"), labelled(3, "UA")], NOW + 120)
    snap = t.snapshot(NOW + 120)
    assert snap.messages == {(f"sms{SEP}PL", "delivered"): 1, (f"sms{SEP}other", "delivered"): 1}
    assert snap.overflow == {"country": 1}


def test_a_recheck_is_a_value_the_poll_hands_back_and_nothing_waits_in_the_tracker() -> None:
    t = tracker(recheck=[(600.0, 60.0)], interval=60.0)
    t.apply([], NOW)
    t.apply([msg(1, "sent", created=NOW - 30), msg(2, "sent", created=NOW - 20)], NOW + 1)
    first = t.rechecks(NOW + 70)
    assert first.ids == {1, 2} and first.tiers == {0}
    assert t.rechecks(NOW + 70) == first  # asking again changes nothing
    t.apply([], NOW + 70)  # an apply without the recheck: no tier ran, no backlog
    assert t.rechecks(NOW + 75) == first and t.snapshot(NOW + 75).backlog == 0
    t.apply([], NOW + 75, checked={1, 2}, recheck=first)
    assert t.rechecks(NOW + 80).due == ()  # the tier ran: due again a period later
    assert t.rechecks(NOW + 75 + 60).ids == {1, 2}


def passed(
    top: float | None,
    asked: FeedRead | None = None,
    *,
    disorder: str | None = None,
    reached: bool = True,
    complete: bool = True,
) -> FeedResult:
    """What a feed pass asked for by ``asked`` found (by default: in order, to its end)."""
    return FeedResult(asked or FeedRead(NOW, None), top, disorder, reached, complete)


def test_the_feed_reads_from_the_oldest_pending_message_down_to_its_mark() -> None:
    t = tracker(interval=60.0)  # a mark is young for the overlap (30s) plus half an interval
    assert t.feed_read(NOW) is None  # nothing pending: nothing to follow
    t.apply([msg(1, "sent", created=NOW - 50), msg(2, "delivered", created=NOW - 90)], NOW)
    first = t.feed_read(NOW + 60)
    assert first == FeedRead(NOW - 50, NOW - FEED_OVERLAP, cover=NOW)  # since the tiers ran
    t.apply([], NOW + 60, feed=passed(NOW + 30, first))
    assert t.feed_trusted and t.snapshot(NOW + 60).feed_trusted
    assert t.feed_read(NOW + 90) == FeedRead(NOW - 50, NOW + 30 - FEED_OVERLAP)  # young
    assert t.feed_read(NOW + 91 + FEED_OVERLAP) == FeedRead(NOW - 50, NOW + 31)  # settled
    t.apply([], NOW + 80, feed=passed(NOW + 20))  # an older top
    assert t.feed_read(NOW + 85) == FeedRead(NOW - 50, NOW + 30 - FEED_OVERLAP)  # kept
    t.apply([], NOW + 88, feed=passed(NOW + 87, reached=False))  # the page cap: a long stop
    assert t.feed_read(NOW + 89) == FeedRead(NOW - 50, NOW + 87 - FEED_OVERLAP)  # from its top
    assert t.rechecks(NOW + 89, passed(NOW + 88)).ids == {1}  # its tier ran before: as set
    t.apply([msg(1, "delivered", created=NOW - 50)], NOW + 180, feed=passed(None))
    assert t.feed_read(NOW + 240) is None  # nothing pending any more


def test_a_feed_out_of_order_is_counted_and_tried_again_later() -> None:
    t = tracker(interval=60.0)
    t.apply([msg(1, "sent")], NOW)
    t.apply([], NOW + 30, feed=passed(NOW - 5, t.feed_read(NOW + 30)))
    assert t.feed_trusted
    t.apply([], NOW + 60, feed=passed(NOW, disorder=RISING, reached=False))
    snap = t.snapshot(NOW + 60)
    assert not t.feed_trusted and not snap.feed_trusted and snap.feed_disorders == {RISING: 1}
    retry = NOW + 60 + FEED_RETRY_INTERVALS * 60.0
    assert t.feed_read(retry - 1) is None
    assert t.feed_read(retry) == FeedRead(NOW - 60, NOW - FEED_OVERLAP, cover=NOW)


def test_a_first_pass_that_covers_the_tiers_last_runs_lets_them_sweep_at_once() -> None:
    t = tracker(recheck=[(3600.0, 60.0)], interval=60.0)
    t.apply([msg(1, "sent", created=NOW - 10)], NOW)  # the first poll: the tier ran now
    ask = t.feed_read(NOW + 60)
    assert ask is not None and ask.cover == NOW
    assert t.rechecks(NOW + 60, passed(NOW + 50, ask)).due == ()  # swept 30 times more rarely
    assert t.rechecks(NOW + 60).ids == {1}  # no feed this poll: the tier as configured
    assert t.rechecks(NOW + 60, passed(NOW + 50, ask, reached=False)).ids == {1}  # capped
    assert t.rechecks(NOW + 60, passed(NOW + 50, ask, disorder=RISING)).ids == {1}
    assert t.rechecks(NOW + 60, passed(None, ask)).ids == {1}  # no report yet: no mark
    t.apply([], NOW + 60, feed=passed(NOW + 50, ask))
    sweep = NOW + 60.0 * FEED_SWEEP_FACTOR
    assert t.rechecks(sweep - 31, passed(NOW + 90)).due == ()
    assert t.rechecks(sweep, passed(NOW + 90)).ids == {1}


def test_a_first_pass_too_long_to_cover_trusts_the_feed_from_then_on() -> None:
    t = tracker(recheck=[(3600.0, 60.0)], interval=60.0)
    t.apply([msg(1, "sent", created=NOW - 10)], NOW)
    ask = t.feed_read(NOW + 30)
    t.apply([], NOW + 30, feed=passed(NOW + 20, ask, reached=False))  # the page cap
    assert t.feed_trusted  # from NOW + 30: the tier keeps its period until it has run since
    first = t.rechecks(NOW + 60, passed(NOW + 50))
    assert first.ids == {1}
    t.apply([], NOW + 60, checked={1}, recheck=first, feed=passed(NOW + 50))
    assert t.rechecks(NOW + 120, passed(NOW + 110)).due == ()  # it ran since: it sweeps


def test_once_the_feed_shows_expiries_the_end_of_validity_is_left_to_it() -> None:
    """An API that gives an expiry a report time shows it in the feed: no read at the end of
    validity while the feed is trusted; the read before abandoning stays, as a last resort."""
    t = tracker(recheck=[(600.0, 60.0), (30 * 86400.0, 86400.0)], interval=60.0)
    one_hour = Message(1, "sent", "sms", created_at=Epoch(NOW - 1800), validity_hours=1)
    t.apply([one_hour], NOW)
    ask = t.feed_read(NOW + 60)
    t.apply([], NOW + 60, feed=passed(NOW + 50, ask))
    assert t.rechecks(NOW + 1800, passed(NOW + 1790)).ids == {1}  # not shown expiries yet
    shows = FeedResult(FeedRead(NOW, NOW), NOW + 1790, None, True, True, expiry_reported=True)
    t.apply([], NOW + 1790, feed=shows)
    assert t.rechecks(NOW + 1800, passed(NOW + 1795)).due == ()  # the feed will show it
    assert t.rechecks(NOW + 1800).ids == {1}  # without the feed this poll: read it
    assert t.rechecks(NOW + 1800 + 3600, passed(NOW + 5390)).ids == {1}  # before abandoning


def test_the_feed_progress_survives_a_restart_and_old_state_has_none() -> None:
    store = StateStore(MEMORY)
    t = tracker(store=store)
    t.apply([msg(1, "sent")], NOW, feed=passed(NOW - 5))
    t.apply([], NOW + 60, feed=passed(NOW, disorder=NULL_FIRST, reached=False))
    again = tracker(store=store)
    assert again.snapshot(NOW + 60).feed_disorders == {NULL_FIRST: 1}
    assert again.feed_read(NOW + 61) is None  # the retry time was saved
    c, p = Counters(), Progress()
    saved = dump(c, p)
    del saved["feed"], saved["disorders"]  # a state file from before the feed
    restore(c, p, saved, (1.0,), (1.0,))
    assert p.feed == FeedProgress() and c.disorders == {}


def test_report_feed_off_never_asks_for_the_feed() -> None:
    t = TargetTracker(
        StateStore(MEMORY), TargetConfig("t", WINDOW, None), poll=PollConfig(report_feed=False)
    )
    t.apply([msg(1, "sent")], NOW)
    assert t.feed_read(NOW + 60) is None and not t.snapshot(NOW + 60).feed_trusted
