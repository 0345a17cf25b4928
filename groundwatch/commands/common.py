"""What every command shares: how it loads its config and opens the store."""

from __future__ import annotations

import argparse

from evaluator.config import Config, load_config
from workers.process import ProcessContext

#: The exit status of a config, usage or input mistake (argparse's own is 2 as well).
EXIT_CONFIG = 2


def config_of(args: argparse.Namespace) -> Config:
    """The config named by ``--config`` (or found the usual way)."""
    return load_config(args.config)


def store_process(config: Config) -> ProcessContext:
    """The context of a command that reads or writes the store and exports no metrics
    (workers.process: importing it loads neither Celery nor prometheus_client)."""
    return ProcessContext(config, metrics=None)
