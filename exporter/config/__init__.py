"""Configuration: the exporter's YAML file (``schema``) and the web configuration file
(``webconfig``), read strictly, every problem named by its field.

Must not import: httpx, prometheus_client, or any exporter module outside this package.
"""
