"""The only code that speaks to the BSG One API: auth, paging, retries and typed records.

Must not import: prometheus_client, or any exporter module outside this package.
"""

from exporter.bsg.client import (
    AuthError,
    BsgClient,
    BsgError,
    MessagePass,
    MessageQuery,
    RateLimitedError,
    RequestObserver,
    RetryPolicy,
    safe_text,
)
from exporter.bsg.records import Balance, Message

__all__ = [
    "AuthError",
    "Balance",
    "BsgClient",
    "BsgError",
    "Message",
    "MessagePass",
    "MessageQuery",
    "RateLimitedError",
    "RequestObserver",
    "RetryPolicy",
    "safe_text",
]
