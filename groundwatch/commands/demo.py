"""``groundwatch demo``: everything on synthetic traffic (its own module: the demo's report
and HTML modules stay out of a worker's start)."""

from __future__ import annotations

import argparse

from groundwatch.demo import DemoJudge, run_demo


def cmd_demo(args: argparse.Namespace) -> int:
    judge = None
    if args.judge_url:
        judge = DemoJudge(args.judge_url, args.judge_model, args.judge_mode, args.judge_key_env,
                          args.judge_share)
    return run_demo(items=args.items, workdir=args.workdir, seed=args.seed, scorer=args.scorer,
                    judge=judge)
