"""``groundwatch demo``: synthetic traffic into SQLite, the sampler in this process, a real
worker process on an embedded broker, the exporter; it ends with the report, a Prometheus
snapshot, the least faithful answer explained and the HTML page. No Redis, no LLM, no network.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluator import demo_traffic
from evaluator.config import load_config
from evaluator.errors import ConfigError
from evaluator.scorers import check_scorer_name
from groundwatch.explain import format_explanation
from groundwatch.progress import StepProgress
from groundwatch.report import build_report, format_report, report_rules
from groundwatch.report_html import write_html_report
from metrics.exporter import snapshot_text
from workers.children import spawn_worker, stop_on_signals, stop_processes, stop_timeout_s
from workers.process import ProcessContext
from workers.sampler import StepResult

log = logging.getLogger("groundwatch")


DEMO_CONFIG = """\
# Written by `groundwatch demo`: the demo's own config, a real one you can read and reuse.
[store]
url = "sqlite:///{workdir}/groundwatch.db"

[broker]
# An embedded broker (kombu's filesystem transport): no Redis needed for the demo.
url = "filesystem://{workdir}/broker"
batch_size = 50

[source]
name = "demo_app"
kind = "sql"
poll_interval_s = 0.5
read_batch_rows = 500

[source.sql]
url = "sqlite:///{workdir}/app_logs.db"
table = "chat_logs"

[source.columns]
# The demo app names its columns its own way; groundwatch maps them.
{columns}

[sampling]
salt = "demo"
default_rate = 0.6
# No cap: the demo replays half an hour of traffic in seconds.
max_items_per_minute = 0

[[sampling.rules]]
name = "thumbs_down"
match = {{ feedback = -1 }}
rate = 1.0

[[sampling.rules]]
name = "errors"
match = {{ status = "error" }}
rate = 1.0

[[sampling.rules]]
name = "no_contexts"
match = {{ contexts_empty = true }}
rate = 1.0

[scoring]
scorer = "{scorer}"
# The cascade's judge ("" = none): `groundwatch demo --judge-url URL` sets it and [judge].
judge = "{judge_mode}"

[scoring.scope]
# What the demo app is for: questions far from these are detected as out_of_scope.
description = '''Nimbus Cloud documentation assistant: storage buckets, compute regions and
GPU instances, uploads, encryption, billing and invoices, refunds, payments, API keys,
support plans and team members.'''
in_scope = [
    "How long are deleted buckets kept?",
    "Which regions have GPU instances?",
    "How do I upload a large file?",
    "Is my data encrypted?",
    "When will I receive my invoice?",
    "Can I get a refund?",
    "How do I pay my bill?",
    "How do I reset my API key?",
    "What are the support hours?",
    "How many users can I invite to my organization?",
]
out_of_scope = [
    "Give me a recipe for dinner.",
    "Who won the match last night?",
    "Write a poem for me.",
    "What is the capital of France?",
]

[worker]
pool = "threads"
concurrency = 2

[metrics]
multiproc_dir = "{workdir}/prometheus"
port = 0
"""


@dataclass(frozen=True)
class DemoJudge:
    """The judge the demo's cascade calls (``groundwatch demo --judge-url``)."""
    url: str
    model: str
    mode: str = "compact"
    key_env: str = "OPENAI_API_KEY"
    share: float = 0.2

    def section(self) -> str:
        return (f'\n[judge]\nbase_url = {json.dumps(self.url)}\nmodel = {json.dumps(self.model)}'
                f'\napi_key_env = {json.dumps(self.key_env)}\n\n[judge.cascade]\n'
                f"share = {self.share}\n")


def default_demo_scorer() -> str:
    """``embedded`` when its extra is installed, else ``lexical`` (with a notice)."""
    try:
        check_scorer_name("embedded")
    except ConfigError as exc:
        print(f"note: using the lexical scorer ({exc.problem})")
        return "lexical"
    return "embedded"


def run_demo(*, items: int = 1000, workdir: str = ".groundwatch/demo", seed: int = 7,
             scorer: str | None = None, timeout_s: float = 300.0,
             judge: DemoJudge | None = None) -> int:
    """Synthetic traffic → sampler → embedded broker → a real worker process → store → report."""
    scorer = scorer or default_demo_scorer()

    root = Path(workdir).resolve()
    if root.exists():
        shutil.rmtree(root)
    (root / "broker").mkdir(parents=True)
    started = time.monotonic()
    print(f"groundwatch demo: writing {items} synthetic log rows of the 'Nimbus Cloud' docs "
          f"assistant into {root / 'app_logs.db'} (table {demo_traffic.TABLE})")
    demo_traffic.write_demo_log(root / "app_logs.db", items, seed=seed)
    columns = "\n".join(f'{k} = "{v}"' for k, v in demo_traffic.COLUMNS.items())
    config_path = root / "groundwatch.toml"
    config_path.write_text(DEMO_CONFIG.format(workdir=root.as_posix(), columns=columns,
                                              scorer=scorer,
                                              judge_mode=judge.mode if judge else "")
                           + (judge.section() if judge is not None else ""))
    # The demo is self-contained: GROUNDWATCH__* overrides meant for a real deployment
    # (a Redis URL, a store) must not leak into it.
    config = load_config(config_path, environ={})
    if judge is None:
        print("judge: none configured (--judge-url): the cascade is skipped; every item gets "
              f"the {scorer} scores only")
    else:
        print(f"judge: {judge.mode} on {judge.url} (model {judge.model}): the cascade sends "
              f"{judge.share:.0%} of the items, and the low and uncertain ones, to it; "
              f"budgets {config.judge.budget.tokens_per_day} tokens/day, "
              f"{config.judge.budget.usd_per_hour} USD/hour")


    with ProcessContext(config, metrics="clean") as process:
        store = process.store
        worker_log = (root / "worker.log").open("wb")
        process.on_close(worker_log.close)
        worker = spawn_worker(str(config_path), name="demo@%h", output=worker_log,
                              ignore_overrides=True)
        _, port = process.exporter()
        process.workers([worker])
        print(f"exporter (up while the demo runs): http://127.0.0.1:{port}/metrics   worker "
              f"pid {worker.pid}, embedded broker {root / 'broker'}")

        totals = StepResult()
        sampling = StepProgress("sampler: read", total=items, unit="rows")

        def on_step(step: StepResult) -> None:
            totals.add(step)
            sampling.update(totals.rows, f"sampled {totals.sampled}, rejected {totals.rejected}")

        sampler = process.sampler()
        stop = threading.Event()
        stop_on_signals(stop)
        code = 0
        problem = ""
        try:
            with sampling:
                sampler.run(stop, on_step=on_step, until_idle=True)
            deadline = time.monotonic() + timeout_s
            with StepProgress("workers: finished", total=totals.sampled) as scoring:
                while not stop.is_set():
                    counts = store.queries.count_items_by_status()
                    queued = counts.get("queued", 0)
                    done = counts.get("scored", 0) + counts.get("failed", 0)
                    scoring.update(done, f"scored {counts.get('scored', 0)}, failed "
                                         f"{counts.get('failed', 0)}, waiting {queued}")
                    if queued == 0 and done >= totals.sampled:
                        break
                    if worker.poll() is not None:
                        problem = (f"the worker exited with code {worker.returncode}; see "
                                   f"{root}/worker.log")
                        break
                    if time.monotonic() > deadline:
                        problem = (f"gave up waiting after {timeout_s:.0f}s with {queued} "
                                   "items unscored")
                        break
                    stop.wait(0.2)
            if problem:  # after the bar is closed, not drawn over it
                print(problem, file=sys.stderr)
                code = 1
        finally:
            # Every score is in before the report: the worker stops now (a second stop, on
            # the context's close, finds it gone).
            stop_processes([worker], stop_timeout_s(config.worker.stop_grace_s))

        print()
        rules, why = report_rules(config.scoring.thresholds)
        if why:
            print(why)
        print(format_report(build_report(store.queries.scores(), worst=2, rules=rules),
                            rules=rules))
        snapshot = root / "metrics.prom"
        snapshot.write_text(snapshot_text(config.metrics.multiproc_dir))
        _print_summary(store, snapshot, totals, time.monotonic() - started)
        if judge is not None:
            _print_judge_summary(store, snapshot, judge)
        worst = min((s for s in store.queries.scores()
                     if s.metric == "faithfulness" and s.value is not None),
                    key=lambda s: (s.value, s.request_id), default=None)
        if worst is not None:
            print(f"\nThe least faithful answer ({scorer}), as `groundwatch --config "
                  f"{config_path} explain {worst.request_id}` shows it:")
            print(format_explanation(store.queries, worst.request_id))
        page = write_html_report(store.queries, root / "report.html",
                                 thresholds=config.scoring.thresholds, source=store.safe_url,
                                 rules=rules)
        print(f"\nHTML report (charts, failure modes, coverage, worst items): {page}")
    _print_next_steps(config_path)
    return code


def _print_next_steps(config_path: Path) -> None:
    """The three steps from the demo to one's own app."""
    print(f"""
Next steps, on your own app's logs:
  1. Point it at your table: in configs/groundwatch.toml set [source.sql] url and table
     (your log table: it is only read), [source.columns] to your column names, [store] url
     and [broker] url (Redis). The demo's config maps its own columns the same way:
     {config_path}
  2. groundwatch check-config   validates it and connects read-only to the table, store and
     broker; it says which rows would be rejected, and why.
  3. groundwatch run            the sampler, workers and exporter (/metrics on metrics.port).""")


def judged_items(scores: Iterable[Any], scorer: str) -> tuple[Counter[str], Counter[str]]:
    """The judge's items by what became of them (``scored``: at least one metric has a judge
    value; else the first error kind, ``error:timeout``, or ``not_applicable``), and its
    metric scores by outcome. An item the judge was sent but never scored is not "judged"."""
    per_item: dict[str, list[str]] = {}
    metrics: Counter[str] = Counter()
    for s in scores:
        if s.scorer != scorer:
            continue
        outcome = s.outcome if s.outcome != "error" else f"error:{s.reason}"
        metrics[outcome] += 1
        per_item.setdefault(s.request_id, []).append(outcome)
    items: Counter[str] = Counter()
    for found in per_item.values():
        if "ok" in found:
            items["scored"] += 1
        else:
            items[next((o for o in found if o.startswith("error")), found[0])] += 1
    return items, metrics


def _print_judge_summary(store: Any, snapshot: Path, judge: DemoJudge) -> None:
    """What the cascade's judge did: items by outcome, metric scores, calls, tokens, cost,
    agreement."""
    items, outcomes = judged_items(store.queries.scores(), judge.mode)
    values: dict[str, float] = {}
    for line in snapshot.read_text().splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, _, number = line.rpartition(" ")
        try:
            values[name] = values.get(name, 0.0) + float(number)
        except ValueError:
            continue

    def summed(prefix: str) -> float:
        return sum(v for k, v in values.items() if k.startswith(prefix))

    agree = sum(v for k, v in values.items()
                if k.startswith("groundwatch_cascade_compared_total") and 'agree="yes"' in k)
    compared = summed("groundwatch_cascade_compared_total")
    others = ", ".join(f"{k} {v}" for k, v in sorted(items.items()) if k != "scored")
    print(f"judge ({judge.mode}, {judge.model}): {sum(items.values())} items sent, "
          f"{items['scored']} with a judge score" + (f" ({others} without)" if others else "")
          + "; metric scores " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
          + f"; {summed('groundwatch_judge_requests_total'):.0f} calls, "
          f"{summed('groundwatch_judge_tokens_total'):.0f} tokens, "
          f"{summed('groundwatch_judge_cost_usd_total'):.4f} USD")
    if compared:
        print(f"agreement with the cheap scorer on the random share: {agree:.0f} of "
              f"{compared:.0f} metric scores on the same side of the threshold")


def _print_summary(store: Any, snapshot: Path, totals: StepResult, elapsed: float) -> None:
    counts = store.queries.count_items_by_status()
    detections: dict[str, int] = {}
    lines = snapshot.read_text().splitlines()
    for line in lines:
        if line.startswith("groundwatch_detections_total{"):
            kind = line.split('kind="', 1)[1].split('"', 1)[0]
            detections[kind] = detections.get(kind, 0) + int(float(line.rsplit(" ", 1)[1]))
    print(f"\nrows read {totals.rows}, sampled {totals.sampled}, rejected "
          f"{totals.rejected}; scored {counts.get('scored', 0)}, failed "
          f"{counts.get('failed', 0)} in {elapsed:.1f}s")
    if detections:
        print("detections: " + ", ".join(f"{k} {v}" for k, v in sorted(detections.items())))
    print(f"Prometheus snapshot of the metrics: {snapshot} ({len(lines)} lines: what the "
          "exporter served; it stopped with the demo)")
