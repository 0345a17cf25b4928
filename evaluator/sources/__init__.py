"""Log sources: where groundwatch reads the watched app's requests from.

:func:`build_source` picks the implementation named by ``source.kind``; the concrete modules are
imported only when chosen, so that a SQL deployment never imports ``datasets``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from evaluator.errors import ConfigError
from evaluator.sources.base import Source, SourceBatch, SourceNote

if TYPE_CHECKING:
    from evaluator.config import Config

__all__ = ["SOURCE_KINDS", "Source", "SourceBatch", "SourceNote", "build_source"]

SOURCE_KINDS = ("files", "sql")


def build_source(config: Config) -> Source:
    """The source configured in ``config.source``; raises :class:`ConfigError` on bad settings."""
    kind = config.source.kind
    if kind == "sql":
        from evaluator.sources.sql import SqlSource

        return SqlSource.from_config(config)
    if kind == "files":
        from evaluator.sources.files import FileSource

        return FileSource.from_config(config)
    raise ConfigError(f"unknown source kind {kind!r}; valid: {', '.join(SOURCE_KINDS)}",
                      path=config.path, key="source.kind")
