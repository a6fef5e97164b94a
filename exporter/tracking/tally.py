"""Adding messages that just reached a final status to a target's counters: the count, the
cost per currency, the delivery latency and the send delay.

Must not import: prometheus_client, httpx, sqlite3, or any exporter module outside tracking but
the API's records and the vocabulary.
"""

from __future__ import annotations

from exporter.bsg.wire import Message
from exporter.model import DELIVERED_STATUSES
from exporter.tracking.codec import Counters
from exporter.tracking.snapshot import channel_of


def tally_finals(
    c: Counters, messages: list[Message], keys: list[tuple[str, str]], labelled: bool
) -> None:
    """Count ``messages`` under their key (series, status); ``labelled`` when series carry
    labels beyond the channel.

    One loop over locals: it runs for every message counted.
    """
    delivered_statuses = DELIVERED_STATUSES
    counted, cost, latency, send_delay = c.counted, c.cost, c.latency, c.send_delay
    for message, key in zip(messages, keys, strict=True):
        counted[key] = counted.get(key, 0) + 1
        series, status = key
        price = message.amount
        if price is not None and price.nanos is not None and price.currency:
            cost_key = (series, status, price.currency)
            cost[cost_key] = cost.get(cost_key, 0) + price.nanos
        sent = message.sent_at
        if sent is None:
            continue
        # Without extra labels a series is its channel. Clock skew between the provider's
        # systems can order two stamps wrongly: such a delay counts as none.
        channel = channel_of(series) if labelled else series
        delivered, created = message.delivered_at, message.created_at
        if delivered is not None and status in delivered_statuses:
            latency[channel].observe(delivered - sent if delivered > sent else 0.0)
        if created is not None:
            send_delay[channel].observe(sent - created if sent > created else 0.0)
