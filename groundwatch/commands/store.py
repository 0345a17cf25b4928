"""The commands that read or change the store: ``report``, ``explain``, ``purge`` and
``cursor``. They export no metrics and never load Celery."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from evaluator.config import Config
from evaluator.errors import LockHeldError
from groundwatch.commands.common import (
    EXIT_CONFIG,
    cannot_confirm,
    config_of,
    confirmed,
    store_process,
)
from groundwatch.explain import format_explanation
from groundwatch.report import build_report, format_report, report_rules
from groundwatch.report_html import write_html_report


def cmd_report(args: argparse.Namespace) -> int:
    config = config_of(args)
    since = datetime.now(UTC) - timedelta(hours=args.hours) if args.hours else None
    rules, why = report_rules(config.scoring.thresholds, args.alerts)
    if why:
        print(why, file=sys.stderr)
    if args.html:
        with store_process(config) as process:
            store = process.store
            path = write_html_report(store.queries, args.html, thresholds=config.scoring.thresholds,
                                     since=since, scorer=args.scorer, worst=args.html_worst,
                                     source=store.safe_url, rules=rules)
        print(f"HTML report: {path}")
        return 0
    with store_process(config) as process:
        queries = process.store.queries
        rows = build_report(queries.scores(since=since, scorer=args.scorer), worst=args.worst,
                            rules=rules)
        questions = {rid: _question(queries, rid) for r in rows for rid, _ in r.worst}
    if args.json:
        print(json.dumps([{**r.__dict__, "share_below": r.share_below} for r in rows],
                         indent=2, default=str))
    else:
        print(format_report(rows, rules=rules, question_of=lambda rid: questions.get(rid, "")))
    return 0


def _question(queries: Any, request_id: str) -> str:
    item = queries.item(request_id)
    return str(((item.payload or {}) if item is not None else {}).get("question", ""))


def cmd_explain(args: argparse.Namespace) -> int:
    with store_process(config_of(args)) as process:
        text = format_explanation(process.store.queries, args.request_id,
                                  map_of=process.store.calibration.map_by_id)
    if text is None:
        print(f"no item, score or rejection with request id {args.request_id!r}",
              file=sys.stderr)
        return 1
    print(text)
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    """Delete what is older than the retention: with --dry-run print the rows of each table
    that would go; else ask first (on a terminal) unless --yes."""
    if cannot_confirm(args, "purge"):
        return EXIT_CONFIG
    config = config_of(args)
    days = args.days or config.store.retention_days
    cutoff = datetime.now(UTC) - timedelta(days=days)
    with store_process(config) as process:
        store = process.store
        if args.dry_run or not args.yes:
            planned = store.purge_tables(cutoff, dry_run=True)
            print(f"rows older than {days} days (before {cutoff.isoformat(timespec='seconds')}) "
                  f"in {store.safe_url}:")
            _print_tables(planned)
            if args.dry_run:
                print("dry run: nothing deleted")
                return 0
            if not sum(planned.values()):
                print("nothing to delete")
                return 0
            if not confirmed(args, f"delete these {sum(planned.values())} rows?"):
                print("nothing deleted")
                return 1
        removed = store.purge_tables(cutoff)
    _print_tables(removed)
    print(f"removed {sum(removed.values())} rows older than {days} days")
    return 0


def _print_tables(counts: dict[str, int]) -> None:
    width = max(map(len, counts))
    for table, count in counts.items():
        print(f"  {table:<{width}}  {count:>9}")


def cmd_cursor(args: argparse.Namespace) -> int:
    """Show or move a source's cursor (where the sampler reads next)."""
    if args.action != "show" and cannot_confirm(args, f"cursor {args.action}"):
        return EXIT_CONFIG
    config = config_of(args)
    name = args.source or config.source.name
    with store_process(config) as process:
        return _cursor(args, config, name, process.store, process.source())


def _cursor(args: argparse.Namespace, config: Config, name: str, store: Any,
            source: Any) -> int:
    """``cursor show|reset|set`` on ``store`` and ``source``."""
    state = store.ledger.cursor_state(name)
    if args.action == "show":
        position = state.position if state is not None else None
        print(f"source {name!r}: " + source.describe_cursor(position))
        if state is not None and state.lock_owner:
            alive = state.lock_expires_at is not None and state.lock_expires_at > datetime.now(UTC)
            print(f"  lock: {state.lock_owner} "
                  f"({'held until' if alive else 'expired at'} "
                  f"{state.lock_expires_at.isoformat() if state.lock_expires_at else '?'})")
        if state is not None:
            print(f"  updated: {state.updated_at.isoformat()}")
        print(json.dumps(position, indent=2, default=str))
        return 0
    if args.action == "reset":
        new: dict[str, Any] | None = None
    elif args.json is not None:
        try:
            new = json.loads(args.json)
        except json.JSONDecodeError as exc:
            print(f"groundwatch cursor set: --json is not JSON: {exc.msg}", file=sys.stderr)
            return EXIT_CONFIG
    else:
        if not source.positions_by_time:
            print(f"groundwatch cursor set: a {config.source.kind} source takes --json "
                  "(the position as `cursor show` prints it)", file=sys.stderr)
            return EXIT_CONFIG
        try:
            new = source.cursor_at(args.at, value=args.value)
        except ValueError as exc:
            print(f"groundwatch cursor set: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    if args.dry_run or not args.yes:
        _print_move(name, store, source, state, new)
        if args.dry_run:
            print("dry run: nothing changed")
            return 0
        if not confirmed(args, f"move the cursor of {name!r}?"):
            print("nothing changed")
            return 1
    try:
        old = store.ledger.reset_cursor(name, new)
    except LockHeldError as exc:
        print(f"groundwatch cursor {args.action}: {exc}: stop that sampler first (or wait "
              f"for its lock to expire, sampler.lock_ttl_s)", file=sys.stderr)
        return 1
    print(f"source {name!r}: was {json.dumps(old, default=str)}")
    print(f"source {name!r}: now " + source.describe_cursor(new))
    return 0


def _print_move(name: str, store: Any, source: Any, state: Any,
                new: dict[str, Any] | None) -> None:
    """What ``cursor reset|set`` would change: the old and the new position, the read-row
    records it forgets, and the lock that would refuse it."""
    old = state.position if state is not None else None
    print(f"source {name!r}: the cursor would move")
    print(f"  from: {source.describe_cursor(old)}  {json.dumps(old, default=str)}")
    print(f"  to:   {source.describe_cursor(new)}  {json.dumps(new, default=str)}")
    print(f"  and forget the {store.ledger.count_reads(name)} read-row records of its "
          "lookback window")
    if state is not None and state.lock_owner and state.lock_expires_at is not None \
            and state.lock_expires_at > datetime.now(UTC):
        print(f"  refused now: {state.lock_owner} holds its lock until "
              f"{state.lock_expires_at.isoformat()} (stop that sampler first)")
