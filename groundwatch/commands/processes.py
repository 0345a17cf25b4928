"""The commands that run groundwatch's processes: ``worker``, ``sampler``, ``backfill``,
``exporter``, ``health`` and ``run`` (imported only when one of them runs; ``demo`` is in
:mod:`groundwatch.commands.demo`, so a cold worker does not import the demo's report and HTML
modules)."""

from __future__ import annotations

import argparse
import sys

from groundwatch.commands.common import config_of
from groundwatch.progress import StepProgress
from workers.health import check_role
from workers.services import run_all, run_backfill, run_exporter, run_sampler, run_worker


def cmd_worker(args: argparse.Namespace) -> int:
    run_worker(config_of(args), name=args.name, loglevel=args.log_level)
    return 0


def cmd_sampler(args: argparse.Namespace) -> int:
    totals = run_sampler(config_of(args), until_idle=args.until_idle)
    if args.until_idle:
        held = " The cursor is held: see the error above." if totals.held else ""
        print(f"sampler: {totals.summary()}; {totals.batches} batch(es) enqueued.{held}")
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    if args.rate is not None and not 0.0 <= args.rate <= 1.0:
        print(f"--rate must be between 0 and 1, got {args.rate}", file=sys.stderr)
        return 2
    if args.since and args.until and args.since >= args.until:
        print(f"--since ({args.since.isoformat()}) must be before --until "
              f"({args.until.isoformat()})", file=sys.stderr)
        return 2
    with StepProgress(f"backfill {args.name!r}: read", unit="rows") as progress:
        t = run_backfill(config_of(args), args.name, since=args.since, until=args.until,
                         rate=args.rate, on_progress=lambda t: progress.update(
                             t.rows, f"enqueued {t.sampled}, rejected {t.rejected}, "
                                     f"{t.outside} outside the range"))
    print(f"backfill {args.name!r}: read {t.rows} rows ({t.outside} outside the range, "
          f"{t.rejected} rejected); enqueued {t.sampled} items, {t.already_stored} sampled "
          f"items were already stored, {t.capped} capped, {t.skipped} skipped by the rate")
    return 0


def cmd_exporter(args: argparse.Namespace) -> int:
    run_exporter(config_of(args))
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    """Exit 0 while a live heartbeat of the role exists (a container's HEALTHCHECK)."""
    report = check_role(config_of(args), args.role, any_host=args.any_host)
    print(report.line)
    return 0 if report.ok else 1


def cmd_run(args: argparse.Namespace) -> int:
    config = config_of(args)
    return run_all(config, workers=args.workers)
