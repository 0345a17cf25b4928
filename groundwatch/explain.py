"""``groundwatch explain``: one item's scores, claims, verdicts and evidence, as text.

Below the CLI in the import graph, so the demo and the HTML report show the same text as the
command without importing the CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from evaluator.calibration.maps import ALL_ROUTES, FittedMap
from evaluator.records import PassageInfo


def format_explanation(store: Any, request_id: str, *,
                       map_of: Callable[[int], FittedMap | None] | None = None) -> str | None:
    """What the store knows about ``request_id`` (None when nothing): the item, its scores
    (with the calibration map that applied, described by ``map_of`` when given), detections,
    claims and failures, or why its source row was rejected."""
    item = store.item(request_id)
    scores = store.scores_for(request_id)
    rejected = store.rejections_for(request_id)
    if item is None and not scores and not rejected:
        return None
    lines = [f"request {request_id}"]
    if item is None and not scores:
        lines.append("  not sampled: the sampler could not map this source row onto a log "
                     "record")
    for r in rejected:
        lines.append(f"  rejected {r.created_at.isoformat(timespec='seconds')} by source "
                     f"{r.source!r}: field {r.field!r}: {r.reason}: {r.detail}")
    if item is None and not scores:
        return "\n".join(lines)
    p = (item.payload or {}) if item is not None else {}
    contexts = [str(c) for c in p.get("contexts") or []]
    retrieved = retrieved_passages(p, len(contexts))
    if item is not None:
        lines += [f"  status: {item.status}   route: {item.route}   model: {item.model}   "
                  f"rule: {item.rule}",
                  f"  question: {p.get('question', '')}",
                  f"  answer:   {p.get('answer', '')}"]
        for i, ctx in enumerate(contexts):
            info = retrieved[i]
            said = f" [{info.describe()}]" if info is not None else ""
            lines.append(f"  context[{i}]{said}: {ctx[:300]}{'...' if len(ctx) > 300 else ''}")
        if not p.get("contexts"):
            lines.append("  contexts: (none retrieved)")
    lines.append("  scores:")
    for s in sorted(scores, key=lambda s: (s.scorer, s.metric)):
        shown = f"{s.value:.3f}" if s.value is not None else s.outcome
        why = f" ({s.reason})" if s.reason else ""
        lines.append(f"    {s.scorer}/{s.metric}: {shown}{why}"
                     + calibration_note(s.value, getattr(s, "calibrated", None),
                                        getattr(s, "calibration", None), map_of))
    # The scorers leave blank passages out: their i-th relevance is the i-th passage with text.
    scored = [i for i, c in enumerate(contexts) if c.strip()]
    for exp in store.explanations(request_id):
        body = exp.explanation
        for det in exp.detections or []:
            lines.append(f"  detection: {det.kind}: {det.detail}")
        relevance = body.answer_relevance
        if relevance is not None:
            lines.append(f"  answer relevance ({exp.scorer}): on topic "
                         f"{relevance.on_topic:.3f} x useful {relevance.useful:.3f}")
        relevant = body.context_relevance
        if relevant is not None and relevant.per_context:
            lines.append(f"  context relevance per passage ({exp.scorer}): " + ", ".join(
                f"[{i}] {v:.3f}{_beside(retrieved, scored, i)}"
                for i, v in enumerate(relevant.per_context)))
        claims = body.claims or ()
        if claims:
            lines.append(f"  claims ({exp.scorer} {exp.scorer_version}):")
        for c in claims:
            extra = ""
            if c.evidence:
                where = (f"context[{c.evidence_context}]" if c.evidence_context is not None
                         else "evidence")
                extra = f"\n        {where}: {c.evidence[:200]}"
            elif c.missing:
                extra = f"  missing: {', '.join(c.missing[:8])}"
            if c.unsupported_facts:
                extra += ("\n        facts not found in any passage: "
                          + "; ".join(f'"{f}"' for f in c.unsupported_facts[:4]))
            why = c.reason or c.mismatch
            if why:
                kind = f" ({c.clash} clash)" if c.clash else ""
                extra += f"\n        {'why' if c.reason else 'note'}{kind}: {why}"
            strength = f", strength {c.strength}" if c.strength is not None else ""
            lines.append(f"    [{c.verdict}{strength}] {c.claim}{extra}")
        evidence = evidence_line(exp.scorer, body.extra)
        if evidence:
            lines.append(f"  {evidence}")
        trace = body.judge
        if trace is not None:
            lines.append(judge_line(exp.scorer, trace))
    for f in store.failures(request_id=request_id):
        lines.append(f"  failure: {f.stage}/{f.kind} after {f.attempts} attempt(s): {f.reason}")
    return "\n".join(lines)


def calibration_note(value: float | None, calibrated: float | None, name: str | None,
                     map_of: Callable[[int], FittedMap | None] | None) -> str:
    """`` -> calibrated 0.412 by judge#12 (route chat, 400 pairs, ...)`` for a score that went
    through a calibration map, else ""."""
    if calibrated is None or name is None:
        return ""
    note = f" -> calibrated {calibrated:.3f} by {name}"
    _, _, number = name.partition("#")
    if map_of is None or not number.isdigit():
        return note
    fitted = map_of(int(number))
    if fitted is None:
        return note + " (no longer kept: newer fits replaced it)"
    lo, hi = fitted.band_at(value) if value is not None else (0.0, 1.0)
    route = "all routes" if fitted.route == ALL_ROUTES else f"route {fitted.route or '(none)'}"
    return (note + f" ({route}, {fitted.n} pairs from the {fitted.source}, fitted "
            f"{fitted.fitted_at.isoformat(timespec='minutes')}, band {lo:.2f}-{hi:.2f})")


def evidence_line(scorer: str, extra: Any) -> str | None:
    """What the embedded scorer's evidence filter kept, when it dropped anything."""
    units = extra.get("evidence_units") if isinstance(extra, Mapping) else None
    if not isinstance(units, Mapping) or not units.get("dropped"):
        return None
    kept, dropped = units.get("kept", 0), units["dropped"]
    return (f"evidence ({scorer}): {kept} of {kept + dropped} context sentences embedded (the "
            "best BM25 matches of the question and of each claim; "
            "scoring.embedded.evidence_keep_all)")


def retrieved_passages(payload: dict[str, Any], n: int) -> list[PassageInfo | None]:
    """Per passage, what the retriever said of it (stored with the item since issue 16)."""
    said = [PassageInfo.from_message(d) if isinstance(d, dict) else None
            for d in payload.get("passages") or []]
    return (said + [None] * n)[:n]


def _beside(retrieved: list[PassageInfo | None], scored: list[int], i: int) -> str:
    """`` (retriever score 0.830)`` beside the i-th scored passage's relevance, when the
    retriever scored it (naming the passage when blank ones before it shift the index)."""
    if i >= len(scored):
        return ""
    j = scored[i]
    info = retrieved[j]
    if info is None or info.score is None:
        return ""
    return f" (retriever score {info.score:.3f}{f' of context[{j}]' if j != i else ''})"


def judge_line(scorer: str, trace: Any) -> str:
    """The judge's calls for the item, and why it was picked or not judged."""
    parts = [f"  judge ({scorer}, model {trace.model}): {trace.calls} call(s), "
             f"{trace.prompt_tokens}+{trace.completion_tokens} tokens, "
             f"{trace.cost_usd:.5f} USD"]
    if trace.selected_by:
        parts.append(f"picked by the cascade: {trace.selected_by}")
    if trace.cached:
        parts.append(f"from the cache: {', '.join(trace.cached)}")
    if trace.redacted:
        parts.append("redacted before sending: " + ", ".join(
            f"{k} {v}" for k, v in sorted(trace.redacted.items())))
    line = "; ".join(parts)
    if trace.not_judged:
        line += f"\n    NOT JUDGED: {trace.not_judged} (the cheap scores above stand)"
    if trace.reply_excerpt:
        ended = f" (finish_reason {trace.finish_reason})" if trace.finish_reason else ""
        line += f"\n    the judge replied{ended}: {trace.reply_excerpt!r}"
    if trace.parse_error:
        line += f"\n    why it did not count: {trace.parse_error}"
    return line
