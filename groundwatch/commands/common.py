"""What every command shares: how it loads its config and opens the store."""

from __future__ import annotations

import argparse
import sys

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


def cannot_confirm(args: argparse.Namespace, command: str) -> bool:
    """Whether a command that changes the store must stop before it starts: neither
    ``--dry-run`` nor ``--yes`` was given and there is no terminal to ask on (a script, a
    cron job, a pipe). Says so on stderr in one line; the command then exits EXIT_CONFIG."""
    if args.dry_run or args.yes or sys.stdin.isatty():
        return False
    print(f"groundwatch {command}: refusing to change the store without --yes (stdin is not "
          f"a terminal to confirm on); --dry-run shows what would change", file=sys.stderr)
    return True


def confirmed(args: argparse.Namespace, question: str) -> bool:
    """``--yes``, or the operator's answer to ``question`` on the terminal (default no)."""
    if args.yes:
        return True
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        answer = ""
    return answer.strip().lower() in ("y", "yes")
