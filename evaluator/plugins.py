"""The one plugin seam: every scorer and source backend declares itself once, beside its code.

A backend module (or a backend package's ``__init__``) holds ``PLUGINS``, a tuple of
:class:`ScorerPlugin` or :class:`SourcePlugin`: its name in config, the factory that builds it
(``"module:Class"``, imported only when that backend is built), the pip extra it needs and the
modules that extra installs (checked with ``find_spec``, never imported, so a missing extra
fails at start-up without importing torch), and what the rest of groundwatch needs to know
about it without building it (a scorer's per-item time, whether it is an LLM judge; a source's
config keys).

The registry finds the declarations by walking the backend homes below: every direct module
and package of ``evaluator.scorers`` and ``evaluator.sources``, and the ``evaluator.judge``
package itself (the judge is one family of scorers with a package of its own). So adding a
backend is one new module under ``evaluator/scorers/`` or ``evaluator/sources/`` with its
``PLUGINS``: no table elsewhere to extend. The modules walked must import no optional extra
at module level (``tests/test_plugins.py`` checks that discovery imports none).

A team's own scorer, named ``"module:Factory"`` in config, needs no declaration.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

from evaluator.errors import ConfigError

#: Where backends declare themselves: ``"pkg.*"`` walks the package's direct children (each
#: module, and each sub-package's ``__init__``); a plain name is that module alone.
SCORER_HOMES = ("evaluator.scorers.*", "evaluator.judge")
SOURCE_HOMES = ("evaluator.sources.*",)

#: The per-item time of a scorer named ``module:Factory`` (no declaration): taken to be an LLM
#: judge (seconds per call, plus retries that honour Retry-After).
UNKNOWN_ITEM_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Plugin:
    """What every backend declares."""

    name: str
    #: ``"module:Class"``; the class has a ``from_config(config)`` classmethod.
    factory: str
    #: The pip extra that installs ``requires`` (``pip install 'groundwatch[EXTRA]'``).
    extra: str | None = None
    #: Top-level modules the backend imports when built, checked without importing them.
    requires: tuple[str, ...] = ()

    def missing(self) -> list[str]:
        """The modules of ``requires`` that are not installed."""
        return [m for m in self.requires if importlib.util.find_spec(m) is None]

    def load(self) -> Any:
        """The factory class (imports the backend's module)."""
        module_name, _, attr = self.factory.partition(":")
        return getattr(importlib.import_module(module_name), attr)


@dataclass(frozen=True, slots=True)
class ScorerPlugin(Plugin):
    """A scoring backend (``[scoring] scorer`` or, for a judge, ``[scoring] judge``)."""

    #: A pessimistic time per item, in seconds: what sizes the broker's visibility timeout
    #: when ``broker.visibility_timeout_s`` is unset (workers.app.visibility_timeout). Say
    #: where the figure was measured, beside the declaration.
    item_seconds: float = UNKNOWN_ITEM_SECONDS
    #: An LLM judge on ``[judge]``'s endpoint: as ``[scoring] scorer`` it scores every item,
    #: as ``[scoring] judge`` it is the cascade's second scorer.
    judge: bool = False


@dataclass(frozen=True, slots=True)
class SourcePlugin(Plugin):
    """A log source (``[source] kind``)."""

    #: The config key a problem with what the source reads is reported on (``check-config``).
    key: str = "source"
    #: The config key a problem reaching the source is reported on.
    connect_key: str = "source"


def _modules(homes: tuple[str, ...]) -> Iterator[Any]:
    for home in homes:
        if home.endswith(".*"):
            package = importlib.import_module(home[:-2])
            for info in pkgutil.iter_modules(package.__path__):
                yield importlib.import_module(f"{package.__name__}.{info.name}")
        else:
            yield importlib.import_module(home)


def _declared(homes: tuple[str, ...], kind: type[Plugin]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for module in _modules(homes):
        for plugin in getattr(module, "PLUGINS", ()):
            if not isinstance(plugin, kind):
                continue
            if plugin.name in found:
                raise RuntimeError(f"two {kind.__name__}s named {plugin.name!r}: "
                                   f"{found[plugin.name].factory} and {plugin.factory}")
            found[plugin.name] = plugin
    return found


@cache
def scorer_plugins() -> dict[str, ScorerPlugin]:
    """Every declared scoring backend, by name."""
    return _declared(SCORER_HOMES, ScorerPlugin)


@cache
def source_plugins() -> dict[str, SourcePlugin]:
    """Every declared source, by ``source.kind``."""
    return _declared(SOURCE_HOMES, SourcePlugin)


def source_plugin(kind: str, *, path: str | None = None) -> SourcePlugin:
    """The source declared as ``kind``; a :class:`ConfigError` on ``source.kind`` listing the
    valid kinds otherwise."""
    plugins = source_plugins()
    plugin = plugins.get(kind)
    if plugin is None:
        raise ConfigError(f"unknown source kind {kind!r}; valid: {', '.join(plugins)}",
                          path=path, key="source.kind")
    return plugin
