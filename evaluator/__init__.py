"""groundwatch: continuous quality evaluation of production LLM/RAG systems.

This package is the domain: records, sources, sampling, scorers, the store, config and errors.
It imports neither celery nor prometheus_client (``workers`` and ``metrics`` own those).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("groundwatch")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
