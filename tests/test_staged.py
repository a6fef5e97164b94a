"""Property test (hypothesis) of the staged messages against a plain dict of them.

Messages staged a page at a time, one by one and by merging another staging, in any id order
and with repeats: the staging answers what a dict updated the same way answers, and rebuilds
each message equal to the last version staged, field by field.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from exporter.bsg.staged import StagedMessages
from exporter.bsg.wire import MAX_ID, Epoch, Message, Price

ids = st.one_of(st.integers(1, 60), st.integers(MAX_ID - 5, MAX_ID))
times = st.one_of(
    st.none(), st.floats(1.7e9, 1.8e9).map(Epoch), st.sampled_from([Epoch(1.7e9), Epoch(1.7e9 + 1)])
)
prices = st.one_of(
    st.none(),
    st.builds(Price, st.one_of(st.none(), st.integers(0, 10**9)), st.sampled_from(["EUR", None])),
)
messages = st.builds(
    Message,
    ids,
    st.sampled_from(["sent", "delivered", "failed", "expired"]),
    st.sampled_from(["sms", "viber"]),
    st.one_of(st.none(), st.integers(1, 3)),
    times,
    times,
    times,
    prices,
    st.one_of(st.none(), st.integers(1, 72)),
    st.sampled_from([None, "UA", "DE"]),
    st.sampled_from([None, "Shop", "Bank"]),
)
pages = st.lists(st.lists(messages, max_size=12), max_size=8)


def model_of(*passes: list[list[Message]]) -> dict[int, Message]:
    """What a dict holds after the same pages, the last version of an id winning."""
    model: dict[int, Message] = {}
    for page in (page for one in passes for page in one):
        model.update((m.id, m) for m in page)
    return model


def staged_of(pass_pages: list[list[Message]]) -> StagedMessages:
    """A staging fed page by page."""
    staged = StagedMessages()
    for page in pass_pages:
        staged.add(page)
    return staged


@given(pages)
def test_staged_pages_answer_as_a_dict(pass_pages: list[list[Message]]) -> None:
    """Length, membership, lookup, keys and items agree with a dict."""
    staged, model = staged_of(pass_pages), model_of(pass_pages)
    assert len(staged) == len(model)
    assert sorted(staged) == sorted(model)
    assert dict(staged.items()) == model
    assert sorted(staged.values(), key=lambda m: m.id) == sorted(model.values(), key=lambda m: m.id)
    for msg_id, message in model.items():
        assert msg_id in staged
        assert staged[msg_id] == message
    for missing in {0, 61, MAX_ID - 6, 2**70, -1} - model.keys():
        assert missing not in staged
        with pytest.raises(KeyError):
            staged[missing]


@example(  # read while out of order, then a higher id that was staged before
    [[Message(5, "sent"), Message(3, "sent")], [Message(5, "delivered")]], [], [True] * 16
)
@given(pages, pages, st.lists(st.booleans(), min_size=16, max_size=16))
def test_reads_between_stagings_never_keep_a_repeat(
    first: list[list[Message]], second: list[list[Message]], reads: list[bool]
) -> None:
    """Read (and so deduplicated) between pages and merges, the staging still answers as a
    dict: rising ids after a read do not prove that none repeats an earlier one."""
    staged, model = StagedMessages(), dict[int, Message]()
    for step, page in enumerate(first):
        staged.add(page)
        model.update((m.id, m) for m in page)
        if reads[step]:
            assert len(staged) == len(model)
    other = staged_of(second)
    if reads[8]:
        assert len(other) == len(model_of(second))
    staged.extend(other)
    model.update(model_of(second))
    assert len(staged) == len(model)
    assert dict(staged.items()) == model


@given(pages, pages, st.integers(1, 5))
def test_a_merged_staging_wins_and_batches_hold_each_id_once(
    first: list[list[Message]], second: list[list[Message]], size: int
) -> None:
    """Merging keeps the later versions; batches are at most ``size`` long, one of each id."""
    staged = staged_of(first)
    staged.extend(staged_of(second))
    batches = list(staged.batches(size))
    assert all(0 < len(batch) <= size for batch in batches)
    rebuilt = [message for batch in batches for message in batch]
    assert len({m.id for m in rebuilt}) == len(rebuilt)
    assert {m.id: m for m in rebuilt} == model_of(first, second)


def test_rebuilt_messages_share_the_staged_objects() -> None:
    """A price or a time is the object the decoder shared, not a copy of it."""
    price, at = Price(25_000_000, "EUR"), Epoch(1.7e9 + 0.25)
    staged = StagedMessages([Message(7, "sent", created_at=at, amount=price)])
    staged[7] = Message(7, "delivered", created_at=at, delivered_at=at, amount=price)
    (message,) = staged.values()
    assert message.status == "delivered"
    assert message.amount is price
    assert message.created_at is at and message.delivered_at is at
    assert message.sent_at is None
    assert type(message.created_at) is Epoch
    with pytest.raises(ValueError, match="staged as 8"):
        staged[8] = message


@given(pages, pages, st.integers(1, 5))
def test_taken_batches_are_the_batches_and_leave_the_staging_empty(
    first: list[list[Message]], second: list[list[Message]], size: int
) -> None:
    """Taking the batches gives what reading them gives, then nothing is staged any more."""
    staged, again = staged_of(first), staged_of(first)
    staged.extend(staged_of(second))
    again.extend(staged_of(second))
    expected = list(again.batches(size))
    taken = list(staged.take_batches(size))
    assert taken == expected
    assert len(staged) == 0
    assert list(staged.batches()) == []
    staged.add([Message(5, "sent")])  # still a staging: more can come
    assert dict(staged.items()) == {5: Message(5, "sent")}


def test_a_field_with_more_values_than_a_byte_codes_is_kept_whole() -> None:
    """Past 256 distinct values (senders here) a field's codes widen; no value is confused."""
    senders = [f"Shop {n}" for n in range(70_000)]
    staged = StagedMessages(Message(n + 1, "sent", sender=s) for n, s in enumerate(senders[:300]))
    other = StagedMessages(
        Message(n + 1, "delivered", sender=s) for n, s in enumerate(senders) if n >= 200
    )
    staged.extend(other)
    rebuilt = {m.id: m for batch in staged.batches() for m in batch}
    assert len(rebuilt) == 70_000
    assert all(rebuilt[n + 1].sender == s for n, s in enumerate(senders))
    assert rebuilt[1].status == "sent" and rebuilt[201].status == "delivered"
