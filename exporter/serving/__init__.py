"""Serving: the HTTP server (``server``) and its basic auth (``auth``), the metric families
(``collector``) and their render cache (``exposition``), and the status page (``landing``), all
reading the published state.

Must not import: httpx, the BSG client, or the polling package.
"""
