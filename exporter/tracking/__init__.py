"""Tracking: the counting contract (``tracker``) and what it is made of: the re-check plan
(``schedule``), series keys (``series``), the saved counters (``codec``), what it hands out
(``snapshot``), the tracked-message table, the counting containers and the state store.

Must not import: httpx, prometheus_client, or the polling and serving packages.
"""
