"""What the LLM judge costs per item: ragas's metrics against groundwatch's compact judge.

``python -m benchmarks.judge`` (part of ``make bench``) scores the same 50 short dev items (the
seeded mixture of :func:`benchmarks.pipeline.dev_mixture`) with both judge modes, in this
process, through groundwatch's real judge path (redaction, transport, ragas or the compact
prompt) against the scripted OpenAI-protocol server of ``tests/judge_server.py`` on 127.0.0.1.
The server counts the prompt and completion tokens of every request with ONE tokenizer for
both modes: the word pieces of the shipped all-MiniLM-L6-v2 tokenizer (an LLM's BPE differs
by a constant-ish factor, the same for both modes, so the ratio holds). Calls are counted by
the server too. Embeddings for ragas's AnswerRelevancy go to the same server (one more
request per item and per generated question), and are listed apart.

The replies come from the server's toy judge, so this measures the *prompts* (the cost), not
judge quality: a real model's replies differ in length, and only the completion tokens and the
prompts of later steps (faithfulness's verdict prompt lists the statements found first)
depend on them.

Writes ``benchmarks/results/judge.json``; prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "judge.json"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.provenance import measured_on  # noqa: E402


def minilm_tokenizer() -> tuple[Callable[[str], int], str]:
    """Word pieces of the shipped MiniLM tokenizer (no special tokens), or the server's regex
    count where the embedded extra is missing."""
    try:
        from tokenizers import Tokenizer

        from evaluator.scorers.embedded.runtime import OUT_DIR, TOKENIZER_FILE

        tok = Tokenizer.from_file(str(OUT_DIR / TOKENIZER_FILE))
        tok.no_truncation()
        tok.no_padding()
    except Exception:  # no embedded extra: a rough but single count for both modes
        from tests.judge_server import count_tokens

        return count_tokens, "regex words and punctuation"

    def count(text: str) -> int:
        return len(tok.encode(text, add_special_tokens=False).ids)

    return count, "all-MiniLM-L6-v2 word pieces"


def run_mode(mode: str, records: Sequence[Any], tokenizer: Callable[[str], int]) -> dict[str, Any]:
    from evaluator.config import load_config
    from evaluator.judge.scorer import JudgeScorer
    from evaluator.scorers.gates import apply_gates
    from tests.judge_server import CHAT_PATH, EMBEDDINGS_PATH, JudgeServer

    with JudgeServer(tokenizer=tokenizer) as server:
        config = load_config(None, environ={
            "GROUNDWATCH__JUDGE__BASE_URL": server.url, "GROUNDWATCH__JUDGE__MODEL": "bench",
            "GROUNDWATCH__JUDGE__API_KEY_ENV": "GW_BENCH_JUDGE_KEY",
            "GROUNDWATCH__JUDGE__EMBEDDINGS__SOURCE": "openai",
            "GROUNDWATCH__JUDGE__CACHE_TTL_S": "0",
            "GROUNDWATCH__JUDGE__BUDGET__TOKENS_PER_DAY": "0",
            "GROUNDWATCH__JUDGE__BUDGET__USD_PER_HOUR": "0",
            "GROUNDWATCH__BROKER__URL": "filesystem:///nonexistent"})
        judge = JudgeScorer(config, mode)
        judge.warm_up()
        started = time.perf_counter()
        try:
            results, usage = judge.score_gated(apply_gates(records))
        finally:
            judge.close()
        elapsed = time.perf_counter() - started
        chat = [r for r in server.requests if r.path == CHAT_PATH]
        emb = [r for r in server.requests if r.path == EMBEDDINGS_PATH]
        chat_prompt = sum(tokenizer(_messages_text(r.messages)) for r in chat)
        ok = sum(m.outcome.value == "ok" for r in results for m in r.metrics)
        n = len(records)
        return {
            "mode": mode, "items": n, "seconds": round(elapsed, 2),
            "calls_per_item": round(len(chat) / n, 2),
            "embedding_calls_per_item": round(len(emb) / n, 2),
            "prompt_tokens_per_item": round(chat_prompt / n, 1),
            "all_prompt_tokens_per_item": round(server.usage_served["prompt_tokens"] / n, 1),
            "completion_tokens_per_item": round(
                server.usage_served["completion_tokens"] / n, 1),
            "usage_prompt_tokens": usage.prompt_tokens,
            "ok_scores": ok,
        }


def _messages_text(messages: list[dict[str, Any]]) -> str:
    from tests.judge_server import message_text

    return message_text(messages)


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import warnings

    warnings.filterwarnings("ignore", message="FUNCTIONS is deprecated")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=50)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    from benchmarks.pipeline import dev_mixture

    records = dev_mixture(args.items, args.seed)
    tokenizer, tokenizer_name = minilm_tokenizer()
    rows = {mode: run_mode(mode, records, tokenizer) for mode in ("ragas", "compact")}
    ragas, compact = rows["ragas"], rows["compact"]
    ratio = ragas["prompt_tokens_per_item"] / max(compact["prompt_tokens_per_item"], 1e-9)
    print(f"judge cost per item, {len(records)} dev items, tokens counted as {tokenizer_name}")
    print(f"{'mode':<9}{'calls/item':>11}{'emb calls':>10}{'prompt tok/item':>16}"
          f"{'completion tok':>15}{'ok scores':>10}{'seconds':>9}")
    for row in rows.values():
        print(f"{row['mode']:<9}{row['calls_per_item']:>11}{row['embedding_calls_per_item']:>10}"
              f"{row['prompt_tokens_per_item']:>16}{row['completion_tokens_per_item']:>15}"
              f"{row['ok_scores']:>10}{row['seconds']:>9}")
    print(f"compact needs {ratio:.1f}x fewer prompt tokens per item than the ragas set "
          f"(goal: >= 4x), in {compact['calls_per_item']} call(s) (goal: 1)")
    out = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "items": len(records), "seed": args.seed, "tokenizer": tokenizer_name,
        "server": "tests/judge_server.py (scripted toy judge)",
        "ragas_calls_per_item": ragas["calls_per_item"],
        "ragas_prompt_tokens_per_item": ragas["prompt_tokens_per_item"],
        "compact_calls_per_item": compact["calls_per_item"],
        "compact_prompt_tokens_per_item": compact["prompt_tokens_per_item"],
        "prompt_token_ratio": round(ratio, 2),
        "modes": rows,
        "provenance": measured_on(),
        "note": "prompt tokens are chat prompts only; embeddings requests are counted "
                "apart (embedding_calls_per_item, all_prompt_tokens_per_item)",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
