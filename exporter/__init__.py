"""bsg-exporter: Prometheus metrics for SMS delivery health on the BSG One API."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bsg-exporter")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
