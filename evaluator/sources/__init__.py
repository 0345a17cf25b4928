"""Log sources: where groundwatch reads the watched app's requests from.

Each backend declares itself beside its code (``PLUGINS``, :mod:`evaluator.plugins`);
:func:`build_source` builds the one named by ``source.kind``, importing only its module, so
that a SQL deployment never imports ``datasets``.
"""

from __future__ import annotations

from evaluator.config import Config
from evaluator.plugins import source_plugin, source_plugins
from evaluator.sources.base import PreflightScope, Source, SourceBatch, SourceNote

__all__ = ["PreflightScope", "Source", "SourceBatch", "SourceNote", "build_source",
           "source_plugins"]


def build_source(config: Config) -> Source:
    """The source configured in ``config.source``; raises :class:`ConfigError` on bad settings."""
    plugin = source_plugin(config.source.kind, path=config.path)
    source: Source = plugin.load().from_config(config)
    return source
