"""Tracking: the counting contract (``tracker``), the tracked-message table, the state store
and the counting containers.

Must not import: httpx, prometheus_client, or the polling, serving and config packages.
"""
