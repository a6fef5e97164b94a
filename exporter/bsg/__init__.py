"""The only code that speaks to the BSG One API: auth, paging, retries and typed records.

Importing the package loads nothing: import the module you need (``exporter.bsg.client`` pulls
in httpx, ``exporter.bsg.wire`` only msgspec).

Must not import: prometheus_client, or any exporter module outside this package but the
vocabulary and the defaults.
"""
