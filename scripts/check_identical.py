"""Behaviour unchanged, byte for byte: this tree against another commit, in one run.

A refactoring must not change what groundwatch computes or shows. This script runs the same
work on two trees — the working tree, and ``--against REF`` checked out into a temporary git
worktree — with the same Python environment, and compares:

- the scorer results and explanation JSON (``groundwatch score --explain``) of the lexical and
  embedded scorers on the demo's records and on edge cases written here (no contexts, empty
  answer, refusal, a missing field, bad JSON, unicode, long text, duplicate ids);
- the demo's output (``groundwatch demo``), with times, durations, pids and ports masked;
- the help of the command line and of every command;
- every row the demo stored (all ``gw_*`` tables, columns holding wall-clock times dropped);
- the demo's Prometheus snapshot (``metrics.prom``), minus the series that measure time.

Only the command line and the database are read, never Python APIs, so the same capture runs
on both sides of a change of layout. Exit status 0 when everything is identical; otherwise a
unified diff of each part that differs.

    python scripts/check_identical.py --against 01c8b35 [--items 300] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Columns that hold when something happened on the wall clock, not what was computed.
TIME_COLUMNS = {"sampled_at", "updated_at", "scored_at", "created_at", "lock_expires_at",
                "baseline_at", "last_at", "next_at", "last_run_at", "read_at"}
# Series whose values are durations, ages or clock readings.
TIME_SERIES = re.compile(r"_seconds|_timestamp|_age|heartbeat|_created")
# The demo is not deterministic from one run of one commit to the next, and this script says
# exactly where (measured by running one commit against itself): its worker scores batches on
# two threads, so which passages an embedding batch holds depends on timing. A batch's padding
# changes the encoder's last float bits (two runs differ at about 1e-7 relative:
# context_relevance 0.0286504758953 vs 0.0286504795153), the passage cache's split into hits
# and misses varies (their sum does not), sums of scores are added in the order batches
# finish, and items whose scores tie may be listed in either order. So the demo's parts are
# compared with numbers equal within TOLERANCE (relative), the cache's lookups as their sum,
# and tied worst items in one order. Everything else, and `score --explain` (one process,
# deterministic batches) and the help texts, must be identical byte for byte.
TOLERANCE = 1e-5
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?")
TOLERANT_PARTS = ("demo: stored rows", "demo: /metrics snapshot", "demo: output")


def close_enough(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` are the same text but for numbers within TOLERANCE."""
    lines_a, lines_b = a.splitlines(), b.splitlines()
    if len(lines_a) != len(lines_b):
        return False
    for x, y in zip(lines_a, lines_b, strict=True):
        if x == y:
            continue
        if NUMBER.split(x) != NUMBER.split(y):
            return False
        for u, v in zip(NUMBER.findall(x), NUMBER.findall(y), strict=True):
            p, q = float(u), float(v)
            if abs(p - q) > TOLERANCE * max(abs(p), abs(q)) + 1e-12:
                return False
    return True


def tied_in_one_order(text: str) -> str:
    """Worst-item lists (``req-1 (0.01), req-2 (0.01)``) with tied items in id order."""
    def ordered(m: re.Match[str]) -> str:
        items = re.findall(r"(\S+) \((\d+(?:\.\d+)?)\)", m.group(0))
        return ", ".join(f"{rid} ({v})" for rid, v in sorted(items, key=lambda i: (i[1], i[0])))
    return re.sub(r"\S+ \(\d+(?:\.\d+)?\)(?:, \S+ \(\d+(?:\.\d+)?\))+", ordered, text)

COMMANDS = ("demo", "run", "sampler", "backfill", "worker", "exporter", "health", "check-config",
            "report", "explain", "score", "golden", "cursor", "purge")

EDGE_CASES = [
    {"request_id": "edge-no-contexts", "question": "How do I reset my password?",
     "contexts": [], "answer": "Open Settings and choose Reset password."},
    {"request_id": "edge-empty-answer", "question": "What is the refund window?",
     "contexts": ["Refunds are accepted within 30 days of purchase."], "answer": ""},
    {"request_id": "edge-refusal", "question": "What is the CEO's home address?",
     "contexts": ["Our office is at 1 Main Street."],
     "answer": "I'm sorry, but I can't help with that request."},
    {"request_id": "edge-missing-answer", "question": "Where is the office?",
     "contexts": ["Our office is at 1 Main Street."]},
    {"request_id": "edge-unicode", "question": "Ist die Rückgabe kostenlos? 返品は無料ですか",
     "contexts": ["Rücksendungen innerhalb der EU sind kostenlos. 返品は30日以内無料です。"],
     "answer": "Ja, Rücksendungen innerhalb der EU sind kostenlos — 返品は無料です。"},
    {"request_id": "edge-contradiction", "question": "Can I cancel at any time?",
     "contexts": ["Subscriptions cannot be cancelled during the first 12 months."],
     "answer": "Yes, you can cancel your subscription at any time."},
    {"request_id": "edge-long", "question": "Summarise the policy.",
     "contexts": ["The policy covers accidental damage. " * 400],
     "answer": "It covers accidental damage, theft and loss for 24 months. " * 20},
    {"request_id": "edge-numbers", "question": "How many seats does the plan have?",
     "contexts": ["The Team plan includes 25 seats and costs $12 per seat per month."],
     "answer": "The Team plan includes 52 seats at $21 per seat."},
    {"request_id": "edge-number-contexts", "question": "q", "contexts": "not a list",
     "answer": "a"},
    {"request_id": "edge-no-contexts", "question": "a duplicate id", "contexts": ["x"],
     "answer": "y"},
]


def cli(tree: Path) -> list[str]:
    """How to run ``groundwatch`` from ``tree`` (its own layout decides the module)."""
    if (tree / "groundwatch" / "__main__.py").exists():
        return [sys.executable, "-m", "groundwatch"]
    return [sys.executable, "-m", "evaluator.cli"]


def env_for(tree: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROUNDWATCH__")}
    env.update(PYTHONPATH=str(tree), RAGAS_DO_NOT_TRACK="true", HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONHASHSEED="0",
               COLUMNS="120", NO_COLOR="1")
    return env


def run(tree: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cli(tree), *args], cwd=cwd, env=env_for(tree), text=True,
                          capture_output=True, timeout=900, check=False)


def mask(text: str, workdir: Path, tree: Path) -> str:
    text = text.replace(sys.prefix, "<VENV>")
    text = text.replace(str(workdir), "<WORKDIR>").replace(str(tree), "<TREE>")
    # Library chatter on stderr (the model loader's log lines and progress bars) is not ours.
    text = "".join(line for line in text.splitlines(keepends=True)
                   if not re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (INFO|DEBUG) ", line)
                   and "it/s]" not in line)
    text = re.sub(r"\b\d+(\.\d+)?\s?(s|ms|items/s)\b", "<T>", text)
    text = re.sub(r"pid \d+", "pid <PID>", text)
    text = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:<PORT>", text)
    text = re.sub(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?(\+00:00|Z)?", "<TIME>", text)
    return text


def relative_times(text: str, base: float) -> str:
    """Log times as offsets from the demo's first log row: the demo writes its traffic
    relative to now, so only the offsets are the same from one run to the next. Rows are 250
    ms apart; offsets are shown to 10 ms, because the source's cursor keeps whole
    milliseconds of a microsecond time."""
    def dt(m: re.Match[str]) -> str:
        when = datetime.fromisoformat(m.group(0)).replace(tzinfo=UTC).timestamp()
        return f"t+{when - base:.2f}"
    text = re.sub(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?", dt, text)
    text = re.sub(r"\b1[6-9]\d{11}\b", lambda m: f"t+{int(m.group(0)) / 1000 - base:.2f}", text)
    return re.sub(r"\b1[6-9]\d{8}(\.\d+)?\b", lambda m: f"t+{float(m.group(0)) - base:.2f}",
                  text)


def dump_store(db: Path, base: float) -> str:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    out = []
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 'gw_%' "
            "ORDER BY name")]
        for table in tables:
            cols = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
            keep = [c for c in cols if c not in TIME_COLUMNS and c != "id"]
            rows = conn.execute(f'SELECT {", ".join(keep)} FROM "{table}"').fetchall()
            out.append(f"## {table} ({', '.join(keep)}): {len(rows)} rows")
            out.extend(sorted(relative_times(json.dumps(r, default=str, ensure_ascii=False),
                                             base) for r in rows))
    finally:
        conn.close()
    return "\n".join(out) + "\n"


def metric_lines(snapshot: str) -> str:
    kept = []
    lookups: dict[str, float] = {}
    for line in snapshot.splitlines():
        if line.startswith("groundwatch_scorer_cache_lookups_total{"):
            scorer = re.sub(r'result="[^"]*",?', "", line.rpartition(" ")[0])
            lookups[scorer] = lookups.get(scorer, 0.0) + float(line.rpartition(" ")[2])
            continue
        if line.startswith("#"):
            kept.append(line)
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        series = line.rpartition(" ")[0]
        if TIME_SERIES.search(name):
            kept.append(series + " <T>")  # the series exists; its value is time
        else:
            kept.append(line)
    kept += [f"{series} {total:g}  # hits + misses" for series, total in lookups.items()]
    return "\n".join(sorted(kept)) + "\n"


def first_log_time(db: Path) -> float:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        first = conn.execute("SELECT min(created_at) FROM chat_logs").fetchone()[0]
    finally:
        conn.close()
    return datetime.fromisoformat(first).replace(tzinfo=UTC).timestamp()


def demo_records(db: Path, path: Path) -> None:
    """The demo's log rows in groundwatch's field names (the score command's input)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        with path.open("w", encoding="utf-8") as f:
            for row in conn.execute("SELECT * FROM chat_logs ORDER BY req_uuid"):
                contexts = row["retrieved_docs"]
                with contextlib.suppress(TypeError, ValueError):
                    contexts = json.loads(contexts)
                f.write(json.dumps({"request_id": row["req_uuid"],
                                    "question": row["user_question"], "contexts": contexts,
                                    "answer": row["llm_output"], "route": row["endpoint"]},
                                   ensure_ascii=False) + "\n")
    finally:
        conn.close()


def capture(tree: Path, work: Path, items: int, scorers: list[str]) -> dict[str, str]:
    """Everything compared, from one tree, as text."""
    work.mkdir(parents=True)
    demo_dir = work / "demo"
    parts: dict[str, str] = {}
    demo = run(tree, ["demo", "--items", str(items), "--workdir", str(demo_dir), "--seed", "7",
                      "--scorer", "embedded" if "embedded" in scorers else scorers[0]], work)
    parts["demo: exit status"] = f"{demo.returncode}\n"
    parts["demo: output"] = tied_in_one_order(mask(demo.stdout, demo_dir, tree))
    parts["demo: stored rows"] = dump_store(demo_dir / "groundwatch.db",
                                            first_log_time(demo_dir / "app_logs.db"))
    parts["demo: /metrics snapshot"] = metric_lines((demo_dir / "metrics.prom").read_text())
    for command in ("", *COMMANDS):
        shown = run(tree, [*([command] if command else []), "--help"], work)
        parts[f"help: groundwatch {command}".rstrip()] = shown.stdout + shown.stderr
    inputs = work / "inputs.jsonl"
    demo_records(demo_dir / "app_logs.db", inputs)
    with inputs.open("a", encoding="utf-8") as f:
        for case in EDGE_CASES:
            f.write(json.dumps(case, ensure_ascii=False) + "\n")
        f.write("{not json\n")
    for scorer in scorers:
        scored = run(tree, ["--config", str(demo_dir / "groundwatch.toml"), "score",
                            str(inputs), "--scorer", scorer, "--explain", "--quiet"], work)
        parts[f"score --scorer {scorer}: exit status"] = f"{scored.returncode}\n"
        parts[f"score --scorer {scorer}: results and explanations"] = scored.stdout
        parts[f"score --scorer {scorer}: errors"] = mask(scored.stderr, work, tree)
    return parts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", required=True, help="the commit to compare with")
    parser.add_argument("--items", type=int, default=300, help="demo rows (default 300)")
    parser.add_argument("--scorers", default="lexical,embedded",
                        help="comma-separated backends for `score` (default lexical,embedded)")
    parser.add_argument("--keep", type=Path, help="keep both captures in this directory")
    args = parser.parse_args()
    scorers = [s for s in args.scorers.split(",") if s]
    base = Path(tempfile.mkdtemp(prefix="gw-identical-"))
    ref_tree = base / "ref-tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(ref_tree),
                    args.against], check=True)
    try:
        # The same working directory name on both sides, so masked paths match.
        before = capture(ref_tree, base / "ref", args.items, scorers)
        (base / "ref").rename(base / "ref.done")
        after = capture(ROOT, base / "ref", args.items, scorers)
        (base / "ref").rename(base / "new.done")
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(ref_tree)],
                       check=False)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        (args.keep / "before.json").write_text(json.dumps(before, indent=1, ensure_ascii=False))
        (args.keep / "after.json").write_text(json.dumps(after, indent=1, ensure_ascii=False))
    shutil.rmtree(base, ignore_errors=True)
    differ = within = 0
    for name in before.keys() | after.keys():
        a, b = before.get(name, "<missing>\n"), after.get(name, "<missing>\n")
        digest = hashlib.sha256(b.encode()).hexdigest()[:12]
        lines = b.count("\n")
        if a == b:
            print(f"identical  {name}: {lines} lines, sha256 {digest}")
        elif name in TOLERANT_PARTS and close_enough(a, b):
            within += 1
            print(f"identical within {TOLERANCE:g}  {name}: {lines} lines (numbers differ "
                  "only as two runs of one commit do)")
        else:
            differ += 1
            print(f"DIFFERENT  {name}:")
            sys.stdout.writelines(list(difflib.unified_diff(
                a.splitlines(keepends=True), b.splitlines(keepends=True),
                f"{args.against}", "working tree", n=1))[:80])
    print(f"{'all identical' if not differ else f'{differ} part(s) differ'}"
          f"{f' ({within} within the demo tolerance)' if within else ''} "
          f"(against {args.against}, demo {args.items} rows, scorers {', '.join(scorers)})")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
