"""Polling: the loop that schedules targets and reads the API (``poller``) and its pure read
planner (``planner``).

Must not import: prometheus_client, or the serving package.
"""
