"""The ``groundwatch`` command line.

This module sits at the top of the import graph: it is the one place in ``evaluator`` allowed to
reach into ``workers`` and ``metrics``, and it does so inside the commands that need them, so
``check-config``, ``report`` and ``explain`` never import Celery.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from evaluator import __version__
from evaluator.config import Config, load_config
from evaluator.errors import ConfigError, LockHeldError
from evaluator.explain import format_explanation
from evaluator.scorers import JUDGES

if TYPE_CHECKING:
    from evaluator.offline import Progress
    from evaluator.progress import StepProgress
    from workers.process import ProcessContext

EXIT_CONFIG = 2
# What a shell reports for a process killed by SIGPIPE (128 + 13): `groundwatch report | head`
# ends like `yes | head`, quietly, and `set -o pipefail` scripts still see that it was cut off.
EXIT_BROKEN_PIPE = 141

for _name, _value in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"),
                      ("RAGAS_DO_NOT_TRACK", "true"), ("TOKENIZERS_PARALLELISM", "false")):
    os.environ.setdefault(_name, _value)


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config)


def _process(config: Config) -> ProcessContext:
    """The context of a command that reads or writes the store and exports no metrics
    (workers.process: importing it loads neither Celery nor prometheus_client)."""
    from workers.process import ProcessContext

    return ProcessContext(config, metrics=None)


# -- commands -------------------------------------------------------------------------------
def cmd_check_config(args: argparse.Namespace) -> int:
    from evaluator.preflight import run_preflight

    config = _config(args)
    report = run_preflight(config, offline=args.offline, sample_rows=args.sample_rows)
    for finding in report.findings:
        print(finding.line(), file=sys.stderr)
    if not report.ok:
        return EXIT_CONFIG
    print(f"# {config.path}: valid")
    for line in report.checked:
        print(f"# {line}")
    print(json.dumps(config.masked(), indent=2))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from workers.services import run_worker

    run_worker(_config(args), name=args.name, loglevel=args.loglevel)
    return 0


def cmd_sampler(args: argparse.Namespace) -> int:
    from workers.services import run_sampler

    totals = run_sampler(_config(args), until_idle=args.until_idle)
    if args.until_idle:
        held = " The cursor is held: see the error above." if totals.held else ""
        print(f"sampler: {totals.summary()}; {totals.batches} batch(es) enqueued.{held}")
    return 0


def _instant(text: str) -> datetime:
    """An ISO-8601 date or time for --since/--until; a time without a zone is UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO-8601 date or time: {text!r} (e.g. 2026-11-01 or "
            f"2026-11-01T12:00:00+00:00)") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def cmd_backfill(args: argparse.Namespace) -> int:
    from workers.services import run_backfill

    if args.rate is not None and not 0.0 <= args.rate <= 1.0:
        print(f"--rate must be between 0 and 1, got {args.rate}", file=sys.stderr)
        return 2
    if args.since and args.until and args.since >= args.until:
        print(f"--since ({args.since.isoformat()}) must be before --until "
              f"({args.until.isoformat()})", file=sys.stderr)
        return 2
    from evaluator.progress import StepProgress

    with StepProgress(f"backfill {args.name!r}: read", unit="rows") as progress:
        t = run_backfill(_config(args), args.name, since=args.since, until=args.until,
                         rate=args.rate, on_progress=lambda t: progress.update(
                             t.rows, f"enqueued {t.sampled}, rejected {t.rejected}, "
                                     f"{t.outside} outside the range"))
    print(f"backfill {args.name!r}: read {t.rows} rows ({t.outside} outside the range, "
          f"{t.rejected} rejected); enqueued {t.sampled} items, {t.already_stored} sampled "
          f"items were already stored, {t.capped} capped, {t.skipped} skipped by the rate")
    return 0


def cmd_exporter(args: argparse.Namespace) -> int:
    from workers.services import run_exporter

    run_exporter(_config(args))
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    """Exit 0 while a live heartbeat of the role exists (a container's HEALTHCHECK)."""
    from workers.health import check_role

    report = check_role(_config(args), args.role, any_host=args.any_host)
    print(report.line)
    return 0 if report.ok else 1


def cmd_run(args: argparse.Namespace) -> int:
    from workers.runner import run_all

    config = _config(args)
    return run_all(config, workers=args.workers)


def cmd_demo(args: argparse.Namespace) -> int:
    from workers.runner import DemoJudge, run_demo

    judge = None
    if args.judge_url:
        judge = DemoJudge(args.judge_url, args.judge_model, args.judge_mode, args.judge_key_env,
                          args.judge_share)
    return run_demo(items=args.items, workdir=args.workdir, seed=args.seed, scorer=args.scorer,
                    judge=judge)


def cmd_report(args: argparse.Namespace) -> int:
    from evaluator.report import build_report, format_report

    config = _config(args)
    since = datetime.now(UTC) - timedelta(hours=args.hours) if args.hours else None
    if args.html:
        from evaluator.report_html import write_html_report

        with _process(config) as process:
            store = process.store
            path = write_html_report(store.queries, args.html, thresholds=config.scoring.thresholds,
                                     since=since, scorer=args.scorer, worst=args.html_worst,
                                     source=store.safe_url)
        print(f"HTML report: {path}")
        return 0
    with _process(config) as process:
        rows = build_report(process.store.queries.scores(since=since, scorer=args.scorer),
                            worst=args.worst)
    if args.json:
        print(json.dumps([r.__dict__ for r in rows], indent=2, default=str))
    else:
        print(format_report(rows))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    with _process(_config(args)) as process:
        text = format_explanation(process.store.queries, args.request_id)
    if text is None:
        print(f"no item, score or rejection with request id {args.request_id!r}",
              file=sys.stderr)
        return 1
    print(text)
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    config = _config(args)
    days = args.days or config.store.retention_days
    with _process(config) as process:
        removed = process.store.purge(datetime.now(UTC) - timedelta(days=days))
    print(f"removed {removed} rows older than {days} days")
    return 0


def cmd_cursor(args: argparse.Namespace) -> int:
    """Show or move a source's cursor (where the sampler reads next)."""
    config = _config(args)
    name = args.source or config.source.name
    with _process(config) as process:
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
    try:
        old = store.ledger.reset_cursor(name, new)
    except LockHeldError as exc:
        print(f"groundwatch cursor {args.action}: {exc}: stop that sampler first (or wait "
              f"for its lock to expire, sampler.lock_ttl_s)", file=sys.stderr)
        return 1
    print(f"source {name!r}: was {json.dumps(old, default=str)}")
    print(f"source {name!r}: now " + source.describe_cursor(new))
    return 0


def _cursor_value(text: str) -> Any:
    """A position value for --value: a number when it reads as one, else the text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _progress_printer(quiet: bool) -> StepProgress | None:
    """Progress on stderr: a live bar on a terminal, a line per step of progress in a log."""
    from evaluator.progress import StepProgress

    return None if quiet else StepProgress("scored", unit="items")


def cmd_score(args: argparse.Namespace) -> int:
    from evaluator.offline import is_failure, score_file
    from evaluator.records import RowLimits
    from evaluator.scorers import build_scorer

    if not os.path.isfile(args.path):
        print(f"groundwatch score: {args.path}: no such file", file=sys.stderr)
        return EXIT_CONFIG
    config = _config(args)
    try:
        scorer = build_scorer(config, args.scorer)
    except ImportError as exc:
        print(f"groundwatch score: cannot build scorer {args.scorer or config.scoring.scorer!r}: "
              f"{exc}", file=sys.stderr)
        return EXIT_CONFIG
    limits = RowLimits(config.source.max_field_chars, config.source.max_contexts)
    failed = 0
    progress = _progress_printer(args.quiet)

    def on_progress(p: Progress) -> None:
        if progress is not None:
            rate = "" if progress.live else f", {p.items_per_s:.1f} items/s"
            progress.update(p.done, f"{p.failed} failed{rate}", total=p.total)

    try:
        out = sys.stdout if args.out == "-" else open(args.out, "w", encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        scorer.close()
        print(f"groundwatch score: cannot write {args.out}: {exc.strerror}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        rows = score_file(args.path, scorer, batch_size=args.batch_size, explain=args.explain,
                          on_progress=on_progress, limits=limits)
        for row in rows:
            if "error" in row:
                err = row["error"]
                print(f"{args.path}:{row['line']}: {err['reason']}"
                      f"{' (' + err['field'] + ')' if err['field'] else ''}: {err['detail']}",
                      file=sys.stderr)
            failed += is_failure(row)
            out.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    finally:
        if progress is not None:
            progress.close()
        if out is not sys.stdout:
            out.close()
        scorer.close()
    if failed and not args.quiet:
        print(f"{failed} record(s) failed", file=sys.stderr)
    return 1 if failed else 0


def cmd_golden(args: argparse.Namespace) -> int:
    """Run the judge's golden set once, now (no claim: the schedule is untouched) and print
    per metric its mean, its drift from the baseline and the items that moved most."""
    from evaluator.judge import golden

    config = _config(args)
    if not config.judge.golden.path.strip():
        print("groundwatch golden: judge.golden.path is empty: set it to a JSON Lines file of "
              "golden items (docs/judge-golden.md)", file=sys.stderr)
        return EXIT_CONFIG
    records = golden.load_golden(config.judge.golden.path)
    judge = golden.build_golden_judge(config)
    if judge is None:
        print("groundwatch golden: no judge is configured: set judge.base_url and judge.model, "
              "and scoring.judge (or scoring.scorer = \"ragas\" or \"compact\")",
              file=sys.stderr)
        return EXIT_CONFIG
    from workers.process import ProcessContext

    try:
        # metrics="keep": the gauges and the run's count join the exporter's, as a
        # scheduled run's do.
        with ProcessContext(config, metrics="keep") as process:
            try:
                run = golden.run_golden(judge, records, process.store.golden, process.metrics,
                                        judge_version=golden.judge_version(judge))
            except Exception as exc:
                print(f"groundwatch golden: the run failed: {type(exc).__name__}: "
                      f"{' '.join(str(exc).split())[:500]}", file=sys.stderr)
                return 1
    finally:
        judge.close()
    print(golden.format_golden(run))
    return 0


# -- parser ---------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="groundwatch",
        description="Continuous quality evaluation of a production LLM/RAG app.")
    parser.add_argument("--version", action="version", version=f"groundwatch {__version__}")
    parser.add_argument("--config", "-c", default=None,
                        help="config file (default: $GROUNDWATCH_CONFIG or configs/groundwatch.toml)")
    parser.add_argument("--log-level", default=os.environ.get("GROUNDWATCH_LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="run everything on synthetic traffic: no Redis, no LLM, "
                                    "no network")
    p.add_argument("--items", type=int, default=1000, help="log rows to generate (default 1000)")
    p.add_argument("--workdir", default=".groundwatch/demo",
                   help="where the demo writes its databases, broker and snapshot")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--scorer", default=None,
                   help="scoring backend (default: embedded if installed, else lexical)")
    p.add_argument("--judge-url", default="", metavar="URL",
                   help="an OpenAI-compatible endpoint (e.g. http://127.0.0.1:8000/v1): the "
                        "cascade then sends a share of the items, and the low and uncertain "
                        "ones, to that judge. Without it the cascade is skipped.")
    p.add_argument("--judge-model", default="gpt-4o-mini", help="the judge's model name")
    p.add_argument("--judge-mode", choices=JUDGES, default="compact",
                   help="ragas's metrics, or groundwatch's one-call judge (default)")
    p.add_argument("--judge-key-env", default="OPENAI_API_KEY", metavar="VAR",
                   help="the NAME of the environment variable holding the API key")
    p.add_argument("--judge-share", type=float, default=0.2,
                   help="the random share of items the judge scores (default 0.2)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("run", help="all-in-one: sampler, workers and exporter")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("sampler", help="read the source and enqueue sampled items")
    p.add_argument("--until-idle", action="store_true", help="stop once the source is caught up")
    p.set_defaults(func=cmd_sampler)

    p = sub.add_parser(
        "backfill", help="replay the source's rows of a time range once (own cursor): "
        "score what the live sampler did not take")
    p.add_argument("name", help="name of this backfill; re-running it resumes where it stopped")
    p.add_argument("--since", type=_instant, default=None,
                   help="first log time to take (ISO-8601; no zone = UTC)")
    p.add_argument("--until", type=_instant, default=None,
                   help="log time to stop at, exclusive (ISO-8601; no zone = UTC)")
    p.add_argument("--rate", type=float, default=None,
                   help="default sampling rate for this run (rules still apply)")
    p.set_defaults(func=cmd_backfill)

    p = sub.add_parser("worker", help="a Celery worker that scores batches")
    p.add_argument("--name", default=None, help="Celery node name (default: celery@host)")
    p.add_argument("--loglevel", default="INFO")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("exporter", help="serve /metrics and /healthz")
    p.set_defaults(func=cmd_exporter)

    # The roles of workers.health.ROLES (not imported here: the CLI imports workers lazily).
    p = sub.add_parser("health", help="exit 0 while a sampler, worker or exporter of this host "
                                      "is alive (its heartbeat); 1 otherwise")
    p.add_argument("role", choices=("sampler", "worker", "exporter"))
    p.add_argument("--any-host", action="store_true",
                   help="count a live heartbeat of any host, not only this one")
    p.set_defaults(func=cmd_health)

    p = sub.add_parser("check-config", help="preflight: validate the config, connect (read-only) "
                       "to the source, store and broker, print the config with secrets masked")
    p.add_argument("--offline", action="store_true",
                   help="schema and scorer name only: connect to nothing")
    p.add_argument("--sample-rows", type=_positive_int, default=200,
                   help="source rows read to estimate rejections (default 200)")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("report", help="per route and metric: count, mean, 95%% CI, worst items")
    p.add_argument("--hours", type=float, default=None, help="only scores of the last N hours")
    p.add_argument("--scorer", default=None)
    p.add_argument("--worst", type=int, default=3)
    p.add_argument("--json", action="store_true")
    p.add_argument("--html", metavar="FILE", default=None,
                   help="write one self-contained HTML page instead (charts over time, failure "
                        "modes, sampling coverage, worst items and their explanations)")
    p.add_argument("--html-worst", type=_positive_int, default=20,
                   help="worst items (and explanations) per metric in the HTML page (default 20)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("explain", help="an item's scores, claims, verdicts and evidence, or "
                                       "why its source row was rejected")
    p.add_argument("request_id")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("score", help="score a JSONL file of records offline (no queue, no store)")
    p.add_argument("path", help="JSONL: groundwatch field names, or the dev-data schema (id, ...)")
    p.add_argument("--scorer", default=None, help="backend name (default: the config's scorer)")
    p.add_argument("--out", "-o", default="-", help="output JSONL (default: stdout)")
    p.add_argument("--batch-size", type=_positive_int, default=64,
                   help="records per score_batch call (default 64)")
    p.add_argument("--explain", action="store_true", help="include each item's explanation")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("golden", help="run the judge's golden set once: per metric the mean "
                                      "score and its drift from the first run, and the items "
                                      "that moved most")
    p.set_defaults(func=cmd_golden)

    p = sub.add_parser("cursor", help="show or move where the sampler reads the source next")
    p.add_argument("action", choices=("show", "reset", "set"),
                   help="show it; reset it to the start; set it (--at, --value or --json)")
    p.add_argument("--source", default=None,
                   help="the cursor's source name (default: source.name; a backfill's is "
                        "SOURCE.backfill.NAME)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--at", type=_instant, default=None,
                       help="set: read rows logged at or after this time next (ISO-8601; no "
                            "zone = UTC; timestamp mode)")
    where.add_argument("--value", type=_cursor_value, default=None,
                       help="set: read rows after this value of the order column next "
                            "(incrementing mode: the last id to skip)")
    where.add_argument("--json", default=None,
                       help="set: the position exactly as `cursor show` printed it")
    p.set_defaults(func=cmd_cursor)

    p = sub.add_parser("purge", help="delete what is older than the retention")
    p.add_argument("--days", type=int, default=None)
    p.set_defaults(func=cmd_purge)
    _accept_global_options_after_the_command(sub.choices.values())
    return parser


def _accept_global_options_after_the_command(
        subparsers: Iterable[argparse.ArgumentParser]) -> None:
    """``--config`` and ``--log-level`` work after the command too (``groundwatch check-config
    --config X``). SUPPRESS keeps a subcommand that was not given the option from overwriting
    the value given before the command with a default."""
    for p in subparsers:
        p.add_argument("--config", "-c", default=argparse.SUPPRESS,
                       help="config file (also accepted before the command)")
        p.add_argument("--log-level", default=argparse.SUPPRESS,
                       help="logging level (also accepted before the command)")


def _reader_gone(fd: int) -> bool:
    """Whether ``fd`` is a pipe whose reading end is closed (poll reports POLLERR for it)."""
    import select

    if not hasattr(select, "poll"):
        return True  # cannot tell (Windows): the BrokenPipeError itself is the evidence
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def _quiet_on_closed_pipe() -> bool:
    """After a BrokenPipeError: point every standard stream whose reader went away at
    /dev/null, so that Python's final flush does not raise again and print a traceback, and
    say whether one had (an unrelated socket's broken pipe must still be reported)."""
    closed = False
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for stream in (sys.stdout, sys.stderr):
            try:
                fd = stream.fileno()
            except (AttributeError, OSError, ValueError):  # replaced by a test harness
                continue
            if _reader_gone(fd):
                os.dup2(devnull, fd)
                closed = True
    finally:
        os.close(devnull)
    return closed


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Alembic narrates every start-up at INFO; kombu warns that filesystem:// has no host.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("kombu.connection").setLevel(logging.ERROR)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # output still buffered meets a closed pipe here, not at exit
        return code
    except BrokenPipeError:
        if not _quiet_on_closed_pipe():
            raise
        return EXIT_BROKEN_PIPE
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
