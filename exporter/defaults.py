"""Every default of the exporter: of the config file's fields and of the command-line flags.

One home, so that the config reader, the client, the tracker and the flags cannot each carry
their own copy. Limits (what a value may be) stay with the code that checks them.

Must not import: anything (like :mod:`exporter.model`, it is the bottom of every module).
"""

from __future__ import annotations

# api:
DEFAULT_API_URL = "https://one-api.bsg.world"
DEFAULT_TIMEOUT = 10.0
"""Seconds one whole request may take, headers and body."""
DEFAULT_TIMEZONE = "UTC"
DEFAULT_MAX_RETRIES = 3
DEFAULT_MAX_REQUESTS_PER_MINUTE = 300
DEFAULT_MAX_RESPONSE_SIZE = 64 * 2**20
"""Bytes of an answer's body, counted after decompression."""

# poll:
DEFAULT_POLL_INTERVAL = 60.0
DEFAULT_ABANDON_GRACE = 3600.0
DEFAULT_RECHECK: tuple[tuple[float, float], ...] = (
    (600.0, 1.0),
    (3600.0, 2.0),
    (21600.0, 30.0),
    (259200.0, 120.0),
)
"""(max_age, every) tiers, ``every`` in poll intervals: young pending messages are re-read
often, old ones rarely (at the default interval of 60s: every 1m, 2m, 30m and 2h)."""
DEFAULT_REPORT_FEED = True
"""Read the delivery-report feed (sort=delivered) while its order holds."""
FEED_SWEEP_FACTOR = 30
"""While the report feed is trusted, the re-check tiers run this many times more rarely: they
only sweep for what the feed cannot show (a final status without a report time) or missed."""
FEED_RETRY_INTERVALS = 30
"""Poll intervals after a disorder of the report feed before it is tried again."""
FEED_MAX_PAGES = 200
"""Pages a feed pass reads at most (100,000 reports). A first pass that would need more to
cover the reports since the tiers last all ran, or a later one that would to reach its mark
(after a long stop), makes the feed trusted from that poll on instead: each tier keeps its
period until it has run once more."""
COLD_CHUNK_PAGES = 5
"""Pages of a cold read (the baseline) committed as a poll of their own, read on in the same
cycle: what a poll holds while it is applied stays bounded, however much the budget allows
(a chunk of a sparse account's reads, three distinct times a message, is ~0.4 MB staged and as
much again while it is applied)."""
FEED_OVERLAP = 30.0
"""Seconds of report time each feed pass reads again below the last one's mark: a report that
turns up a little after its own time is still read (known messages cost nothing more)."""

# targets:
DEFAULT_MAX_LABEL_VALUES = 50
DEFAULT_VALIDITY_HOURS = 72
"""The API's validity of a message that states none: when a pending one may expire."""

# metrics:
DEFAULT_DELIVERY_LATENCY_BUCKETS: tuple[float, ...] = (
    1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0,
)  # fmt: skip
DEFAULT_SEND_DELAY_BUCKETS: tuple[float, ...] = (
    0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip

# state:
DEFAULT_STATE_PATH = "bsg-exporter.db"

# flags:
DEFAULT_LISTEN_ADDRESS = ":9746"
DEFAULT_TELEMETRY_PATH = "/metrics"
DEFAULT_MAX_REQUESTS = 40
"""Requests served at once (--web.max-requests), the official exporters' default."""
