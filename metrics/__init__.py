"""Prometheus metrics for groundwatch: every metric defined once, multiprocess-safe.

Importing this package never imports prometheus_client (see the import-order rule in
:mod:`metrics.multiprocess`); call :func:`setup_multiprocess` at process start, then build one
:class:`Metrics` per process.
"""

from metrics.exporter import Exporter, snapshot_text
from metrics.labels import LabelPolicy
from metrics.multiprocess import mark_process_dead, multiprocess_dir, setup_multiprocess
from metrics.registry import Metrics

__all__ = [
    "Exporter",
    "LabelPolicy",
    "Metrics",
    "mark_process_dead",
    "multiprocess_dir",
    "setup_multiprocess",
    "snapshot_text",
]
