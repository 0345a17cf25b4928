"""The commands that need no running deployment: ``check-config`` (the preflight),
``score FILE`` (offline scoring) and ``golden`` (the judge's golden set, once)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from evaluator.judge import golden
from evaluator.offline import FileSummary, Progress, is_failure, score_file
from evaluator.records import RowLimits
from evaluator.scorers import build_scorer
from groundwatch.commands.common import EXIT_CONFIG, config_of
from groundwatch.preflight import run_preflight
from groundwatch.progress import StepProgress
from workers.process import ProcessContext


def cmd_check_config(args: argparse.Namespace) -> int:
    config = config_of(args)
    report = run_preflight(config, offline=args.offline, sample_rows=args.sample_rows,
                           judge_probe=not args.no_judge_probe)
    for finding in report.findings:
        print(finding.line(), file=sys.stderr)
    if not report.ok:
        return EXIT_CONFIG
    print(f"# {config.path}: valid")
    for line in report.checked:
        print(f"# {line}")
    print("# summary (where each value came from: file, default or env VARIABLE)")
    width = max(len(what) for what, _ in report.summary)
    for what, value in report.summary:
        print(f"#   {what:<{width}}  {value}")
    if args.show_config:  # the whole config is ~200 lines: only when asked for
        print(json.dumps(config.masked(), indent=2))
    return 0


def _progress_printer(quiet: bool) -> StepProgress | None:
    """Progress on stderr: a live bar on a terminal, a line per step of progress in a log."""
    return None if quiet else StepProgress("scored", unit="items")


def cmd_score(args: argparse.Namespace) -> int:
    if not os.path.isfile(args.path):
        print(f"groundwatch score: {args.path}: no such file", file=sys.stderr)
        return EXIT_CONFIG
    config = config_of(args)
    try:
        scorer = build_scorer(config, args.scorer)
    except ImportError as exc:
        print(f"groundwatch score: cannot build scorer {args.scorer or config.scoring.scorer!r}: "
              f"{exc}", file=sys.stderr)
        return EXIT_CONFIG
    limits = RowLimits.of(config.source)
    failed = 0
    summary = FileSummary()
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
            summary.add(row)
            out.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    finally:
        if progress is not None:
            progress.close()
        if out is not sys.stdout:
            out.close()
        scorer.close()
    if not args.quiet:
        print("per metric (below: under its scoring.thresholds value; n/a: not applicable):",
              file=sys.stderr)
        for line in summary.lines(config.scoring.thresholds):
            print(line, file=sys.stderr)
        if failed:
            print(f"{failed} record(s) failed", file=sys.stderr)
    return 1 if failed else 0


def cmd_golden(args: argparse.Namespace) -> int:
    """Run the judge's golden set once, now (no claim: the schedule is untouched) and print
    per metric its mean, its drift from the baseline and the items that moved most; where the
    items carry labels, the judge's and the cheap scorer's accuracy against them."""
    config = config_of(args)
    if not config.judge.golden.path.strip():
        print("groundwatch golden: judge.golden.path is empty: set it to a JSON Lines file of "
              "golden items (docs/judge-golden.md)", file=sys.stderr)
        return EXIT_CONFIG
    items = golden.load_labelled(config.judge.golden.path)
    labels = {i.record.request_id: i.labels for i in items if i.labels}
    judge = golden.build_golden_judge(config)
    if judge is None:
        print("groundwatch golden: no judge is configured: set judge.base_url and judge.model, "
              "and scoring.judge (or scoring.scorer = \"ragas\" or \"compact\")",
              file=sys.stderr)
        return EXIT_CONFIG
    cheap = build_scorer(config) if labels and config.scoring.scorer != judge.name else None
    try:
        # metrics="keep": the gauges and the run's count join the exporter's, as a
        # scheduled run's do.
        with ProcessContext(config, metrics="keep") as process:
            try:
                run = golden.run_golden(judge, [i.record for i in items], process.store.golden,
                                        process.metrics, judge_version=golden.judge_version(judge),
                                        labels=labels, cheap=cheap,
                                        thresholds=config.scoring.thresholds)
            except Exception as exc:
                print(f"groundwatch golden: the run failed: {type(exc).__name__}: "
                      f"{' '.join(str(exc).split())[:500]}", file=sys.stderr)
                return 1
    finally:
        judge.close()
        if cheap is not None:
            cheap.close()
    print(golden.format_golden(run))
    return 0
