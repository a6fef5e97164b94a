"""Serving: the HTTP server (``server``), the metric families (``collector``) and the status
page (``landing``), all reading the published state.

Must not import: httpx, the BSG client, or the polling package.
"""
