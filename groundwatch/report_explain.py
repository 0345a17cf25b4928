"""One item's explanation as HTML for ``groundwatch report --html``: the question, answer and
passages, the scores, then each claim with its verdict and its evidence, the words it shares
with the claim highlighted, so a reader sees *why* an item scored low without reading the
preformatted text of ``groundwatch explain`` (kept below it, folded, for copying).

Every string from the store is user data and is escaped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from html import escape
from typing import Any

from groundwatch.explain import (
    evidence_line,
    format_explanation,
    judge_line,
    retrieved_passages,
)

_MAX_TEXT = 1200  # characters of a question, answer or passage shown
_MAX_PASSAGE = 600
_MAX_RAW = 8000
_WORD = re.compile(r"\w+", re.UNICODE)
# Words too common to say anything about support; the rest of a claim's words that also occur
# in its evidence are the overlap a reader checks.
_COMMON = frozenset(("a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "has",
                     "have", "in", "is", "it", "its", "of", "on", "or", "that", "the", "this",
                     "to", "was", "were", "will", "with", "not", "no"))

CSS = """
.explanation .facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:4px 0}
.explanation .facts dt{color:#5b6270}.explanation .facts dd{margin:0;white-space:pre-wrap}
.explanation ol.passages{margin:4px 0;padding-left:28px}
.explanation ol.passages li{margin:2px 0}
.explanation ul.claims{list-style:none;padding:0;margin:6px 0}
.explanation ul.claims li{background:#fff;border:1px solid #d9dce3;border-left-width:5px;
  border-radius:4px;padding:6px 10px;margin:6px 0}
.explanation li.supported{border-left-color:#2e7d32}
.explanation li.unsupported{border-left-color:#ef8a00}
.explanation li.contradicted{border-left-color:#c62828}
.verdict{display:inline-block;font-size:11px;font-weight:700;text-transform:uppercase;
  letter-spacing:.04em;border-radius:3px;padding:1px 6px;margin-right:8px;color:#fff}
.verdict.supported{background:#2e7d32}.verdict.unsupported{background:#ef8a00}
.verdict.contradicted{background:#c62828}
.explanation blockquote{margin:6px 0 0;padding:4px 10px;border-left:3px solid #c9cedb;
  background:#f8f9fb;color:#30384a}
.explanation mark{background:#fff0a8;padding:0 1px}
.explanation mark.missing{background:#fde0e0}
.explanation .why{color:#5b6270;margin-top:4px}
.explanation details{margin:6px 0}
"""


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def highlight(evidence: str, claim: str) -> str:
    """``evidence`` escaped, with each word it shares with ``claim`` (bar the commonest) in
    ``<mark>``."""
    wanted = {w.lower() for w in _WORD.findall(claim)} - _COMMON
    out, last = [], 0
    for m in _WORD.finditer(evidence):
        out.append(escape(evidence[last:m.start()]))
        word = m.group(0)
        out.append(f"<mark>{escape(word)}</mark>" if word.lower() in wanted else escape(word))
        last = m.end()
    out.append(escape(evidence[last:]))
    return "".join(out)


def render_explanation(store: Any, request_id: str, dom_id: str,
                       thresholds: Mapping[str, float]) -> str:
    """The section for ``request_id`` (``dom_id`` its fragment id)."""
    item = store.item(request_id)
    scores = store.scores_for(request_id)
    head = f'<section class="explanation" id="{escape(dom_id)}"><h3>{escape(request_id)}</h3>'
    text = format_explanation(store, request_id)
    if text is None:
        return head + '<p class="note">Nothing stored.</p></section>'
    out = [head]
    payload: dict[str, Any] = (item.payload or {}) if item is not None else {}
    if item is not None:
        facts = [("route", item.route or "-"), ("status", item.status), ("model", item.model or "-"),
                 ("rule", item.rule),
                 ("question", _short(str(payload.get("question", "")), _MAX_TEXT)),
                 ("answer", _short(str(payload.get("answer", "")), _MAX_TEXT))]
        out.append('<dl class="facts">' + "".join(
            f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in facts) + "</dl>")
        contexts = [str(c) for c in payload.get("contexts") or []]
        retrieved = retrieved_passages(payload, len(contexts))
        if contexts:
            out.append('<h4>Passages</h4><ol class="passages" start="0">' + "".join(
                f"<li>{escape(_short(c, _MAX_PASSAGE))}"
                + (f' <small>[{escape(info.describe())}]</small>' if info is not None else "")
                + "</li>" for c, info in zip(contexts, retrieved, strict=True)) + "</ol>")
        else:
            out.append('<p class="note">No passages were retrieved.</p>')
    if scores:
        rows = []
        for s in sorted(scores, key=lambda s: (s.scorer, s.metric)):
            t = thresholds.get(s.metric)
            low = s.value is not None and t is not None and s.value < t
            shown = f"{s.value:.3f}" if s.value is not None else str(s.outcome)
            rows.append(f"<tr><td>{escape(s.scorer)}</td><td>{escape(s.metric)}</td>"
                        f'<td class="num{" low" if low else ""}">{escape(shown)}</td>'
                        f"<td>{'-' if t is None else f'{t:.2f}'}</td>"
                        f"<td>{escape(s.reason or '')}</td></tr>")
        out.append("<table><thead><tr><th>scorer</th><th>metric</th><th>score</th>"
                   "<th>threshold</th><th>reason</th></tr></thead><tbody>" + "".join(rows)
                   + "</tbody></table>")
    for exp in store.explanations(request_id):
        out.append(_explanation_body(exp))
    for f in store.failures(request_id=request_id):
        out.append(f'<p class="why">failure: {escape(f.stage)}/{escape(f.kind)} after '
                   f"{f.attempts} attempt(s): {escape(f.reason)}</p>")
    for r in store.rejections_for(request_id):
        out.append(f'<p class="why">rejected by source {escape(r.source)}: field '
                   f"{escape(r.field)}: {escape(r.reason)}: {escape(r.detail)}</p>")
    raw = text if len(text) <= _MAX_RAW else text[:_MAX_RAW] + "\n… (cut)"
    out.append(f"<details><summary>As text: <code>groundwatch explain {escape(request_id)}"
               f"</code></summary><pre>{escape(raw)}</pre></details>"
               '<a href="#worst">back to the worst items</a></section>')
    return "".join(out)


def _explanation_body(exp: Any) -> str:
    body = exp.explanation
    out = []
    for det in exp.detections or []:
        out.append(f'<p class="why"><b>detection</b>: {escape(det.kind)}: '
                   f"{escape(det.detail)}</p>")
    if body.answer_relevance is not None:
        r = body.answer_relevance
        out.append(f'<p class="why">answer relevance ({escape(exp.scorer)}): on topic '
                   f"{r.on_topic:.3f} × useful {r.useful:.3f}</p>")
    if body.context_relevance is not None and body.context_relevance.per_context:
        out.append(f'<p class="why">context relevance per passage ({escape(exp.scorer)}): '
                   + ", ".join(f"[{i}] {v:.3f}"
                               for i, v in enumerate(body.context_relevance.per_context))
                   + "</p>")
    claims = body.claims or ()
    if claims:
        out.append(f"<h4>Claims of the answer <small>({escape(exp.scorer)} "
                   f"{escape(exp.scorer_version)})</small></h4><ul class=\"claims\">")
        for c in claims:
            verdict = str(c.verdict.value)
            strength = f" <small>strength {c.strength:.2f}</small>" if c.strength is not None \
                else ""
            li = [f'<li class="{verdict}"><span class="verdict {verdict}">{verdict}</span>'
                  f"{escape(c.claim)}{strength}"]
            if c.evidence:
                where = (f"context[{c.evidence_context}]" if c.evidence_context is not None
                         else "evidence")
                li.append(f"<blockquote><small>{where}:</small> "
                          f"{highlight(_short(c.evidence, _MAX_PASSAGE), c.claim)}</blockquote>")
            elif c.missing:
                li.append('<div class="why">not found in any passage: ' + ", ".join(
                    f'<mark class="missing">{escape(w)}</mark>' for w in c.missing[:12])
                    + "</div>")
            if c.unsupported_facts:
                li.append('<div class="why">facts not found in any passage: ' + "; ".join(
                              f'<mark class="missing">{escape(f)}</mark>'
                              for f in c.unsupported_facts[:4]) + "</div>")
            if c.reason or c.mismatch:
                li.append(f'<div class="why">{"why" if c.reason else "note"}: '
                          f"{escape(c.reason or c.mismatch or '')}</div>")
            out.append("".join(li) + "</li>")
        out.append("</ul>")
    evidence = evidence_line(exp.scorer, body.extra)
    if evidence:
        out.append(f'<p class="why">{escape(evidence)}</p>')
    if body.judge is not None:
        out.append(f'<p class="why">{escape(judge_line(exp.scorer, body.judge).strip())}</p>')
    return "".join(out)
