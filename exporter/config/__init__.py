"""Configuration: the exporter's YAML file (``schema``) and the web configuration file
(``webconfig``), both read strictly by ``reader``, every problem named by its field.

Must not import: httpx, prometheus_client, or any exporter module outside this package but
the vocabulary and the defaults.
"""
