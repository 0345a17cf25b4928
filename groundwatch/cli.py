"""The ``groundwatch`` command line: the parser and ``main``.

This package sits at the top of the import graph (``groundwatch`` → ``workers`` → ``metrics`` →
``evaluator``). The commands live in :mod:`groundwatch.commands`; the parser names each one as
``module:function`` and ``main`` imports only the module of the command that runs, so
``check-config``, ``report`` and ``explain`` never import Celery.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import select
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from evaluator import __version__
from evaluator.errors import ConfigError
from evaluator.scorers import JUDGES
from groundwatch.commands.common import EXIT_CONFIG

# What a shell reports for a process killed by SIGPIPE (128 + 13): `groundwatch report | head`
# ends like `yes | head`, quietly, and `set -o pipefail` scripts still see that it was cut off.
EXIT_BROKEN_PIPE = 141

for _name, _value in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"),
                      ("RAGAS_DO_NOT_TRACK", "true"), ("TOKENIZERS_PARALLELISM", "false")):
    os.environ.setdefault(_name, _value)

__all__ = ["EXIT_BROKEN_PIPE", "EXIT_CONFIG", "build_parser", "main"]


def _command(target: str) -> Callable[[argparse.Namespace], int]:
    """The function of ``module:function``, importing only that command's module."""
    module, _, name = target.partition(":")
    function: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module), name)
    return function


def _instant(text: str) -> datetime:
    """An ISO-8601 date or time for --since/--until; a time without a zone is UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO-8601 date or time: {text!r} (e.g. 2026-11-01 or "
            f"2026-11-01T12:00:00+00:00)") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


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


# -- parser ---------------------------------------------------------------------------------
class DeprecatedAlias(argparse.Action):
    """An old spelling of an option, kept so that scripts using it still work: hidden from
    ``--help``, it stores into the new option's ``dest`` and says on stderr what to use."""

    deprecated = True  # what the help test looks for (and Python 3.13's own name for it)

    def __init__(self, option_strings: Sequence[str], dest: str, *, use: str,
                 **kwargs: Any) -> None:
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)
        self.use = use

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        print(f"groundwatch: {option_string} is deprecated and will be removed: use "
              f"{self.use}", file=sys.stderr)
        setattr(namespace, self.dest, values)


_Subparsers = argparse._SubParsersAction  # one name for the type hints below


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, filling each paragraph of a description on its own, and keeping a
    paragraph with indented lines (the examples) exactly as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n\n".join(
            "\n".join(indent + line for line in paragraph.splitlines())
            if "\n  " in paragraph else super(_HelpFormatter, self)._fill_text(paragraph, width,
                                                                             indent)
            for paragraph in text.split("\n\n"))


def _add_command(sub: _Subparsers[argparse.ArgumentParser], name: str, *, help: str,
                 examples: Sequence[str], description: str = "") -> argparse.ArgumentParser:
    """A command with its one-line ``help`` (the list of commands), a ``description`` (its
    own ``--help``; the help line when empty) and the examples its ``--help`` ends with."""
    return sub.add_parser(name, help=help, description=description or help.replace("%%", "%"),
                          epilog=_examples(examples), formatter_class=_HelpFormatter)


def _examples(examples: Sequence[str]) -> str:
    return "example" + ("s" if len(examples) > 1 else "") + ":\n" + "\n".join(
        f"  {line}" for line in examples)


def _confirmation_options(p: argparse.ArgumentParser, what: str) -> None:
    """--dry-run and --yes of a command that deletes or moves something."""
    p.add_argument("--dry-run", action="store_true",
                   help=f"print {what} and change nothing")
    p.add_argument("--yes", "-y", action="store_true",
                   help="do not ask for confirmation (required when stdin is not a terminal)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="groundwatch",
        description="Continuous quality evaluation of a production LLM/RAG app: samples its "
                    "request logs, scores them (faithfulness, relevance, ...), exports "
                    "Prometheus metrics and explains each score.",
        epilog=_examples(["groundwatch demo", "groundwatch check-config", "groundwatch run"])
        + "\n\nEach command's --help describes it and ends with an example.",
        formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"groundwatch {__version__}")
    parser.add_argument("--config", "-c", default=None,
                        help="config file (default: $GROUNDWATCH_CONFIG or configs/groundwatch.toml)")
    parser.add_argument("--log-level", default=os.environ.get("GROUNDWATCH_LOG_LEVEL", "INFO"),
                        help="logging level: DEBUG, INFO, WARNING, ERROR (default: "
                             "$GROUNDWATCH_LOG_LEVEL or INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _process_commands(sub)
    _check_and_read_commands(sub)
    _store_commands(sub)
    _accept_global_options_after_the_command(sub.choices.values())
    return parser


def _process_commands(sub: _Subparsers[argparse.ArgumentParser]) -> None:
    """demo, run, sampler, backfill, worker, exporter, health."""
    p = _add_command(
        sub, "demo", help="run everything on synthetic traffic: no Redis, no LLM, no network",
        description="Run everything on synthetic traffic: no Redis, no LLM, no network. Writes "
                    "fake request logs of a docs assistant into SQLite, samples and scores "
                    "them with a real worker process, then prints the report, explains the "
                    "least faithful answer and writes an HTML page and a Prometheus "
                    "snapshot.",
        examples=["groundwatch demo --items 300"])
    p.add_argument("--items", type=int, default=1000, help="log rows to generate (default 1000)")
    p.add_argument("--workdir", default=".groundwatch/demo",
                   help="where the demo writes its databases, broker and snapshot")
    p.add_argument("--seed", type=int, default=7,
                   help="seed of the synthetic traffic: the same seed writes the same rows "
                        "(default 7)")
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
    p.set_defaults(run="groundwatch.commands.demo:cmd_demo")

    p = _add_command(
        sub, "run", help="all-in-one: sampler, workers and exporter",
        description="All-in-one: the sampler, N worker processes and the exporter, supervised "
                    "in one process tree (a dead child is restarted). For one host; at scale "
                    "run `sampler`, `worker` and `exporter` as separate services.",
        examples=["groundwatch run --workers 4 --config configs/groundwatch.toml"])
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.set_defaults(run="groundwatch.commands.processes:cmd_run")

    p = _add_command(
        sub, "sampler", help="read the source and enqueue sampled items",
        description="Read the source from its cursor, sample rows by the sampling rules and "
                    "enqueue them for the workers. One per source: it holds the cursor's "
                    "lock.",
        examples=["groundwatch sampler --until-idle"])
    p.add_argument("--until-idle", action="store_true", help="stop once the source is caught up")
    p.set_defaults(run="groundwatch.commands.processes:cmd_sampler")

    p = _add_command(
        sub, "backfill", help="replay the source's rows of a time range once (own cursor): "
        "score what the live sampler did not take",
        examples=["groundwatch backfill incident-1107 --since 2026-11-07T09:00 "
                  "--until 2026-11-07T12:00 --rate 1"])
    p.add_argument("name", help="name of this backfill; re-running it resumes where it stopped")
    p.add_argument("--since", type=_instant, default=None,
                   help="first log time to take (ISO-8601; no zone = UTC)")
    p.add_argument("--until", type=_instant, default=None,
                   help="log time to stop at, exclusive (ISO-8601; no zone = UTC)")
    p.add_argument("--rate", type=float, default=None,
                   help="default sampling rate for this run (rules still apply)")
    p.set_defaults(run="groundwatch.commands.processes:cmd_backfill")

    p = _add_command(
        sub, "worker", help="a Celery worker that scores batches",
        description="A Celery worker that takes batches from the broker's queue, scores them "
                    "and records the results. Its Celery log level is --log-level.",
        examples=["groundwatch worker --name scorer1@%h --log-level WARNING"])
    p.add_argument("--name", default=None, help="Celery node name (default: celery@host)")
    p.add_argument("--loglevel", dest="log_level", default=argparse.SUPPRESS,
                   action=DeprecatedAlias, use="--log-level")
    p.set_defaults(run="groundwatch.commands.processes:cmd_worker")

    p = _add_command(
        sub, "exporter", help="serve /metrics and /healthz",
        description="Serve the Prometheus metrics of every groundwatch process of this host "
                    "(/metrics) and a health check (/healthz) on metrics.port.",
        examples=["groundwatch exporter"])
    p.set_defaults(run="groundwatch.commands.processes:cmd_exporter")

    # The roles of workers.health.ROLES (not imported here: the CLI imports workers lazily).
    p = _add_command(sub, "health", help="exit 0 while a sampler, worker or exporter of this "
                                         "host is alive (its heartbeat); 1 otherwise",
                     examples=["groundwatch health worker --any-host"])
    p.add_argument("role", choices=("sampler", "worker", "exporter"),
                   help="the kind of process whose heartbeat to look for")
    p.add_argument("--any-host", action="store_true",
                   help="count a live heartbeat of any host, not only this one")
    p.set_defaults(run="groundwatch.commands.processes:cmd_health")


def _check_and_read_commands(sub: _Subparsers[argparse.ArgumentParser]) -> None:
    """check-config, report, explain, score, golden, calibrate."""
    p = _add_command(sub, "check-config", help="preflight: validate the config, connect "
                     "(read-only) to the source, store and broker, print the config with "
                     "secrets masked",
                     examples=["groundwatch check-config --config configs/groundwatch.toml",
                               "groundwatch check-config --offline"])
    p.add_argument("--offline", action="store_true",
                   help="schema and scorer name only: connect to nothing")
    p.add_argument("--sample-rows", type=_positive_int, default=200,
                   help="source rows read to estimate rejections (default 200)")
    p.add_argument("--show-config", action="store_true",
                   help="print the whole config (secrets masked) as JSON after the summary")
    p.add_argument("--no-judge-probe", action="store_true",
                   help="skip the one real judgement of two built-in probe items (a few "
                        "hundred to a few thousand tokens on a paid API)")
    p.set_defaults(run="groundwatch.commands.offline:cmd_check_config")

    p = _add_command(sub, "report",
                     help="per route and metric: count, mean, 95%% CI, share below the "
                          "threshold, the quality alerts it would fire, worst items",
                     examples=["groundwatch report --hours 24 --worst 5",
                               "groundwatch report --html report.html"])
    p.add_argument("--hours", type=float, default=None, help="only scores of the last N hours")
    p.add_argument("--scorer", default=None,
                   help="only the scores of this scoring backend (e.g. lexical, compact; "
                        "default: all)")
    p.add_argument("--worst", type=int, default=3,
                   help="lowest-scored request ids listed per route and metric (default 3)")
    p.add_argument("--json", action="store_true",
                   help="print the rows as JSON instead of a table")
    p.add_argument("--alerts", metavar="FILE", default=None,
                   help="the alerts.yml whose quality rules flag rows (default: the "
                        "repository's configs/alerts.yml)")
    p.add_argument("--html", metavar="FILE", default=None,
                   help="write one self-contained HTML page instead (charts over time, failure "
                        "modes, sampling coverage, worst items and their explanations)")
    p.add_argument("--html-worst", type=_positive_int, default=20,
                   help="worst items (and explanations) per metric in the HTML page (default 20)")
    p.set_defaults(run="groundwatch.commands.store:cmd_report")

    p = _add_command(sub, "explain", help="an item's scores, claims, verdicts and evidence, or "
                                          "why its source row was rejected",
                     examples=["groundwatch explain 7f3c9a2e-req"])
    p.add_argument("request_id", help="the request id of the log row (as `report` lists it)")
    p.set_defaults(run="groundwatch.commands.store:cmd_explain")

    p = _add_command(sub, "score", help="score a JSONL file of records offline (no queue, no "
                                        "store)",
                     description="Score a JSONL file of records offline (no queue, no store): "
                                 "one output line per record, then on stderr per metric the "
                                 "mean, the share below its threshold (scoring.thresholds), "
                                 "n and the errors. Exits 1 when a record failed.",
                     examples=["groundwatch score dev.jsonl --scorer lexical -o scored.jsonl"])
    p.add_argument("path", help="JSONL: groundwatch field names, or the dev-data schema (id, ...)")
    p.add_argument("--scorer", default=None, help="backend name (default: the config's scorer)")
    p.add_argument("--out", "-o", default="-", help="output JSONL (default: stdout)")
    p.add_argument("--batch-size", type=_positive_int, default=64,
                   help="records per score_batch call (default 64)")
    p.add_argument("--explain", action="store_true", help="include each item's explanation")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress and no summary on stderr")
    p.set_defaults(run="groundwatch.commands.offline:cmd_score")

    p = _add_command(sub, "golden", help="run the judge's golden set once: per metric the mean "
                                         "score and its drift from the first run, and the "
                                         "items that moved most",
                     examples=["groundwatch golden"])
    p.set_defaults(run="groundwatch.commands.offline:cmd_golden")

    p = _add_command(sub, "calibrate", help="fit the cheap scorer's calibration maps now: "
                                            "from the judge's pairs, or from a labelled file",
                     description="Fit, per route and metric, the monotone map from the cheap "
                                 "scorer's value to what it should have been: from the "
                                 "judge's verdicts on the cascade's random share (as the "
                                 "workers' scheduled refit does), or with --labels from a "
                                 "JSONL file of items with a person's labels. Prints each "
                                 "map's pairs, ROC-AUC, ECE raw and calibrated (out of fold) "
                                 "and whether it applies (docs/calibration.md).",
                     examples=["groundwatch calibrate",
                               "groundwatch calibrate --labels labelled.jsonl --dry-run",
                               "groundwatch calibrate --show"])
    group = p.add_mutually_exclusive_group()
    group.add_argument("--labels", metavar="FILE", default=None,
                       help="JSONL of items (question, contexts, answer, route) each with "
                            "\"labels\": {\"faithfulness\": 1, ...}")
    group.add_argument("--show", action="store_true",
                       help="print the newest fit of each route and metric; fit nothing")
    p.add_argument("--dry-run", action="store_true",
                   help="with --labels: fit and print, store nothing")
    p.set_defaults(run="groundwatch.commands.calibrate:cmd_calibrate")


def _store_commands(sub: _Subparsers[argparse.ArgumentParser]) -> None:
    """cursor (show, reset, set), purge."""
    p = _add_command(sub, "cursor", help="show or move where the sampler reads the source next",
                     examples=["groundwatch cursor show",
                               "groundwatch cursor set --at 2026-11-07T09:00 --dry-run"])
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    source_help = ("the cursor's source name (default: source.name; a backfill's is "
                   "SOURCE.backfill.NAME)")

    q = _add_command(actions, "show", help="print the position (as a time), its lock and the "
                                           "raw position", examples=["groundwatch cursor show"])
    q.add_argument("--source", default=None, help=source_help)

    q = _add_command(actions, "reset", help="move the cursor to the start of the source "
                                            "(refused while a sampler holds its lock)",
                     examples=["groundwatch cursor reset --dry-run",
                               "groundwatch cursor reset --yes"])
    q.add_argument("--source", default=None, help=source_help)
    _confirmation_options(q, "the old and the new position")

    q = _add_command(actions, "set", help="move the cursor to a time, a value of the order "
                                          "column or a position (refused while a sampler holds "
                                          "its lock)",
                     examples=["groundwatch cursor set --at 2026-11-07T09:00 --dry-run",
                               "groundwatch cursor set --at 2026-11-07T09:00 --yes"])
    q.add_argument("--source", default=None, help=source_help)
    where = q.add_mutually_exclusive_group()
    where.add_argument("--at", type=_instant, default=None,
                       help="read rows logged at or after this time next (ISO-8601; no "
                            "zone = UTC; timestamp mode)")
    where.add_argument("--value", type=_cursor_value, default=None,
                       help="read rows after this value of the order column next "
                            "(incrementing mode: the last id to skip)")
    where.add_argument("--json", default=None,
                       help="the position exactly as `cursor show` printed it")
    _confirmation_options(q, "the old and the new position")
    p.set_defaults(run="groundwatch.commands.store:cmd_cursor")

    p = _add_command(sub, "purge", help="delete what is older than the retention",
                     description="Delete finished items, scores, explanations, failures, "
                                 "rejections and source reads older than the retention "
                                 "(store.retention_days). Queued items, cursors and the golden "
                                 "set stay.",
                     examples=["groundwatch purge --days 30 --dry-run",
                               "groundwatch purge --yes"])
    p.add_argument("--days", type=_positive_int, default=None,
                   help="delete what is older than this many days (default: "
                        "store.retention_days)")
    _confirmation_options(p, "how many rows of each table would be deleted")
    p.set_defaults(run="groundwatch.commands.store:cmd_purge")


def _accept_global_options_after_the_command(
        subparsers: Iterable[argparse.ArgumentParser]) -> None:
    """``--config`` and ``--log-level`` work after the command too (``groundwatch check-config
    --config X``), and after a sub-command's action (``cursor show -c X``). SUPPRESS keeps a
    subcommand that was not given the option from overwriting the value given before the
    command with a default."""
    for p in subparsers:
        p.add_argument("--config", "-c", default=argparse.SUPPRESS,
                       help="config file (also accepted before the command)")
        p.add_argument("--log-level", default=argparse.SUPPRESS,
                       help="logging level (also accepted before the command)")
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                _accept_global_options_after_the_command(action.choices.values())


def _reader_gone(fd: int) -> bool:
    """Whether ``fd`` is a pipe whose reading end is closed (poll reports POLLERR for it)."""
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
        code = int(_command(args.run)(args) or 0)
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
