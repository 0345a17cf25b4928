"""``groundwatch calibrate``: fit the cheap scorer's calibration maps now.

- with ``--labels FILE``: from a team's own labelled items (the golden-set format with a
  ``labels`` object), scored here by the configured scorer: for a team without a judge;
- without: from the judge's pairs of the cascade's random share, as the workers' scheduled
  refit does (the schedule is left alone);
- ``--show``: the newest fit of each route and metric, and whether it applies.

docs/calibration.md.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from evaluator.calibration.fit import fit_maps
from evaluator.calibration.maps import NO_ROUTE, FittedMap, Pair
from evaluator.calibration.refit import HEADER, describe, refit, settings_of
from evaluator.config import Config
from evaluator.judge.golden import load_labelled
from evaluator.scorers import build_scorer
from evaluator.scorers.base import Outcome, Scorer
from evaluator.scoring import Scoring
from groundwatch.commands.common import config_of
from workers.process import ProcessContext

BATCH = 64


def cmd_calibrate(args: argparse.Namespace) -> int:
    config = config_of(args)
    scorer = build_scorer(config)
    try:
        if args.labels:
            return _from_labels(config, scorer, args.labels, dry_run=args.dry_run)
        with ProcessContext(config, metrics=None if args.show else "keep") as process:
            store = process.store.calibration
            if args.show:
                maps = store.newest_maps(scorer.name, scorer.version, usable_only=False)
                what = "newest fits"
            else:
                maps = refit(store, scorer=scorer.name, scorer_version=scorer.version,
                             config=config.calibration, thresholds=config.scoring.thresholds)
                if process.metrics is not None and maps:
                    process.metrics.calibration.set_maps(maps)
                    process.metrics.calibration.observe_refit("ok")
                what = "refitted from the judge's pairs"
        if not maps:
            print(f"groundwatch calibrate: nothing for {scorer.name}/{scorer.version}: "
                  + ("no map fitted yet" if args.show else
                     "the judge has scored no random-share item in the window "
                     f"([calibration] window_s = {config.calibration.window_s:g})"),
                  file=sys.stderr)
            return 0
        _print(maps, f"{scorer.name}/{scorer.version}: {what}")
        return 0
    finally:
        scorer.close()


def _from_labels(config: Config, scorer: Scorer, path: str, *, dry_run: bool) -> int:
    items = load_labelled(path, key=None, require_labels=True)
    scoring = Scoring([scorer])
    pairs: list[Pair] = []
    skipped = 0
    for start in range(0, len(items), BATCH):
        chunk = items[start:start + BATCH]
        batch = scoring.score([i.record for i in chunk])
        for item, result in zip(chunk, batch.runs[0].items, strict=True):
            values = {m.metric: m.value for m in result.metrics
                      if m.outcome is Outcome.OK and m.value is not None}
            for metric, label in item.labels.items():
                if metric in values:
                    pairs.append(Pair(item.record.request_id, item.record.route or NO_ROUTE,
                                      metric, values[metric], label))
                else:
                    skipped += 1
    def fit(now: datetime) -> list[FittedMap]:
        return fit_maps(pairs, scorer=scorer.name, scorer_version=scorer.version,
                        source="labels", thresholds=config.scoring.thresholds,
                        settings=settings_of(config.calibration), now=now)

    if dry_run:  # the store is neither opened nor migrated: this host's clock stamps the fit
        maps = fit(datetime.now(UTC))
    else:
        with ProcessContext(config, metrics=None) as process:
            store = process.store.calibration
            maps = store.save_maps(fit(store.now()))
    print(f"{len(items)} labelled items, {len(pairs)} pairs"
          + (f" ({skipped} labels without an ok score: not applicable or error)"
             if skipped else ""))
    _print(maps, f"{scorer.name}/{scorer.version}: fitted from {path}"
           + (" (dry run: not stored)" if dry_run else ""))
    if not dry_run and any(m.usable for m in maps):
        print(f"\nworkers of {scorer.name}/{scorer.version} apply the maps marked 'applies' "
              f"within [calibration] refresh_s ({config.calibration.refresh_s:g} s)")
    return 0


def _print(maps: list[FittedMap], title: str) -> None:
    print(title)
    print(HEADER)
    print(describe(maps))
