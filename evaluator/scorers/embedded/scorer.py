"""``embedded``: the offline default scorer (all-MiniLM-L6-v2 on CPU, no network, no LLM).

- faithfulness: the answer is split into claims (sentences; long ones at clauses); each claim is
  aligned with the context's sentences and a calibrated logistic regression over named features
  (sentence and token-level similarity, IDF-weighted word coverage, numbers, names, negation)
  gives the probability that it is supported. faithfulness is the expected share of supported
  claims (the mean probability); each claim also gets a verdict (supported / unsupported /
  contradicted) with its evidence sentence.
- groundedness: mean evidence strength of the claims: the IDF-weighted share of each claim's
  tokens matched (contextual token embeddings, BERTScore-style precision) in its best evidence
  sentences, the attribution signal an operator can read next to the evidence.
- answer_relevance: P(on topic) x P(useful): the first from similarity to the question
  (calibrated on real answers against answers swapped between questions), the second from
  evasive-answer patterns and answer type (calibrated on labelled usefulness).
- context_relevance: calibrated relevance of the best retrieved passage to the question; the
  mean over passages is in the explanation.

Weights and thresholds come from ``calibration.json`` (``scripts/calibrate.py``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from evaluator.config import Config, EmbeddedConfig, ScopeConfig
from evaluator.errors import ConfigError
from evaluator.records import LogRecord
from evaluator.scorers.base import Detection, MetricResult, Usage
from evaluator.scorers.embedded import clash as cl
from evaluator.scorers.embedded import facts as fa
from evaluator.scorers.embedded import features as ft
from evaluator.scorers.embedded import signals as sg
from evaluator.scorers.embedded import textops as tx
from evaluator.scorers.embedded.calibration import Calibration
from evaluator.scorers.embedded.model import Encoded, Encoder, release_free_memory
from evaluator.scorers.embedded.prefilter import Selection, select_units
from evaluator.scorers.embedded.runtime import TorchRuntime, model_key
from evaluator.scorers.embedded.shared_cache import SharedCache
from evaluator.scorers.explanation import (
    AnswerRelevanceParts,
    Claim,
    ContextRelevanceParts,
    Explanation,
    ScopeCheck,
    Verdict,
)
from evaluator.scorers.gates import Assessment, Gated, GatedScorer
from evaluator.scorers.text import content_words

_FAITH = ("faithfulness", "groundedness")


@dataclass(slots=True)
class _Prepared:
    """One record cut to size and split, before any model call."""

    gated: Gated
    question: str
    answer: str
    claims: list[str]
    passages: list[str]
    units: list[list[str]]
    evidence: Selection | None = None  # set when the evidence filter dropped sentences


class EmbeddedScorer(GatedScorer):
    """MiniLM-based scorer. Built once per worker process; the model loads on first use.

    Thread-safe: the model load and the passage cache are locked; counters are updated under
    a lock. Each batch reports its truncations (inputs cut to the configured size) and
    passage-cache lookups in its :class:`Usage`; ``truncations`` and ``encoder.cache_hits`` /
    ``encoder.cache_misses`` are this process's running totals (for benchmarks)."""

    name = "embedded"

    def __init__(self, settings: EmbeddedConfig | None = None, scope: ScopeConfig | None = None,
                 calibration: Calibration | None = None, shared_cache_url: str = "") -> None:
        self.settings = settings or EmbeddedConfig()
        self.scope = scope or ScopeConfig()
        self.calibration = calibration or Calibration.load()
        self.calibration.faithfulness.check(list(ft.faith_inputs([0.0] * len(ft.FAITH_FEATURES))))
        self.calibration.answer_relevance.check(ft.ANSWER_MODEL)
        self.calibration.answer_topic.check(ft.ANSWER_MODEL)
        self.calibration.context_relevance.check(ft.CONTEXT_MODEL)
        # The int8 model's values differ a little from the float32 one's (both runtimes run
        # that): results say which they came from.
        self.version = f"1+cal{self.calibration.version}" + (
            "+int8" if self.settings.precision == "int8" else "")
        shared = None
        if shared_cache_url:
            shared = SharedCache(shared_cache_url, model=model_key(self.settings.runtime,
                                                                   self.settings.precision),
                                 max_mb=self.settings.shared_cache_mb)
        self.encoder = Encoder(threads=self.settings.threads,
                               cache_size=self.settings.cache_size,
                               cache_mb=self.settings.cache_mb,
                               runtime=self.settings.runtime,
                               precision=self.settings.precision, shared=shared)
        self._counter_lock = threading.Lock()
        self.truncations = 0
        self._scope_lock = threading.Lock()
        self._scope: tuple[list[str], np.ndarray, list[str], np.ndarray] | None = None

    @classmethod
    def from_config(cls, config: Config) -> EmbeddedScorer:
        settings = config.scoring.embedded
        if settings.runtime == "torch":
            missing = [m for m in TorchRuntime.MODULES if importlib.util.find_spec(m) is None]
            if missing:
                raise ConfigError(
                    f"runtime = \"torch\" needs {', '.join(missing)}, not installed: pip "
                    "install 'groundwatch[torch]', or leave the default runtime \"onnx\"",
                    key="scoring.embedded.runtime")
        url = settings.shared_cache
        if url == "broker":
            url = config.broker.url.get_secret_value()
            if not url.startswith(("redis://", "rediss://", "unix://")):
                raise ConfigError(
                    "shared_cache = \"broker\" needs a Redis broker (broker.url is not redis://"
                    "...): give the cache's own redis:// URL, or \"\" for none",
                    key="scoring.embedded.shared_cache")
        return cls(settings, config.scoring.scope, shared_cache_url=url)

    def warm_up(self) -> None:
        """Load the model (the runtime and its weights) and score one tiny item, so
        tokenizer, kernels and the scope vectors are ready before the first real batch. The
        passage cache and the running totals are put back as they were: the warm-up item is
        nobody's traffic (its usage is dropped, never reported).

        ONNX Runtime builds its session in C++ without the GIL, so the model loads on a
        thread while this one imports the word-frequency table the token weights read
        (each about half a second of a cold worker's start); the runtime's own imports are
        made here first (:meth:`Runtime.import_modules`). The torch baseline loads without
        the overlap: its load imports more as it goes (sentence-transformers, transformers'
        lazy modules)."""
        if self.settings.runtime != "onnx":
            self.encoder.load()
            tx.idf("the")
        else:
            self.encoder.runtime.import_modules()
            with ThreadPoolExecutor(1, thread_name_prefix="gw-model-load") as pool:
                loading = pool.submit(self.encoder.load)
                tx.idf("the")
                loading.result()  # the model's own error (a missing or altered file), if any
        before = (self.truncations, self.encoder.cache_hits, self.encoder.cache_misses)
        self.score_batch([_warm_up_record()])
        self.encoder.clear_cache()
        self.truncations, self.encoder.cache_hits, self.encoder.cache_misses = before

    def close(self) -> None:
        self.encoder.close()
        self._scope = None

    @property
    def cache_hits(self) -> int:
        return self.encoder.cache_hits

    # -- preparation -------------------------------------------------------------------------

    def _cut(self, text: str, limit: int) -> tuple[str, int]:
        return (text, 0) if len(text) <= limit else (text[:limit], 1)

    def _prepare(self, gated: Gated) -> tuple[_Prepared, int]:
        """The record cut to size, and how many inputs were cut."""
        record = gated.record
        s = self.settings
        cut = 0
        question, n = self._cut(record.question.strip(), s.max_question_chars)
        cut += n
        answer, n = self._cut(record.answer.strip(), s.max_answer_chars)
        cut += n
        passages: list[str] = []
        budget = s.max_context_chars
        for passage in record.contexts:
            passage = passage.strip()
            if not passage:
                continue
            if budget <= 0:
                cut += 1
                continue
            if len(passage) > budget:
                passage, cut = passage[:budget], cut + 1
            budget -= len(passage)
            passages.append(passage)
        if cut:
            with self._counter_lock:
                self.truncations += cut
        units = [tx.split_units(p) or [p] for p in passages]
        claims = tx.split_claims(answer) if answer else []
        selection = select_units(units, [question, *claims], keep_all=s.evidence_keep_all,
                                 per_query=s.evidence_per_query)
        if not selection.n_dropped:
            return _Prepared(gated, question, answer, claims, passages, units), cut
        kept = [[us[i] for i in keep] for us, keep in zip(units, selection.kept, strict=True)]
        return _Prepared(gated, question, answer, claims, passages, kept, selection), cut

    # -- scope -------------------------------------------------------------------------------

    def _scope_vectors(self) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
        if self._scope is None:
            with self._scope_lock:
                if self._scope is None:
                    inside = [t for t in [self.scope.description, *self.scope.in_scope]
                              if t.strip()]
                    outside = [t for t in self.scope.out_of_scope if t.strip()]
                    encs = self.encoder.encode(inside + outside)
                    vecs = np.stack([e.vec for e in encs])
                    self._scope = (inside, vecs[:len(inside)], outside, vecs[len(inside):])
        return self._scope

    def _check_scope(self, q_enc: Encoded) -> tuple[Detection | None, ScopeCheck]:
        inside, in_vecs, outside, out_vecs = self._scope_vectors()
        sims = in_vecs @ q_enc.vec
        best = int(np.argmax(sims))
        threshold = (self.scope.threshold if self.scope.threshold is not None
                     else self.calibration.scope_threshold)
        info = ScopeCheck(round(float(sims[best]), 4), inside[best], threshold)
        out_best = None
        if outside:
            out_sims = out_vecs @ q_enc.vec
            j = int(np.argmax(out_sims))
            out_best = (outside[j], float(out_sims[j]))
            info = dataclasses.replace(info, nearest_out_of_scope=outside[j],
                                       out_of_scope_similarity=round(float(out_sims[j]), 4))
        if out_best is not None and out_best[1] > float(sims[best]):
            return Detection("out_of_scope", f"nearest scope example is out of scope: "
                             f"{out_best[0]!r} ({out_best[1]:.2f})"), info
        if float(sims[best]) < threshold:
            return Detection("out_of_scope", f"nearest in-scope example {inside[best]!r} "
                             f"is only {float(sims[best]):.2f} similar"), info
        return None, info

    # -- scoring -----------------------------------------------------------------------------

    def assess(self, items: Sequence[Gated]) -> tuple[list[Assessment], Usage]:
        prepared: list[_Prepared | None] = []
        truncations = 0
        for gated in items:
            try:
                one, cut = self._prepare(gated)
            except Exception:
                prepared.append(None)
            else:
                prepared.append(one)
                truncations += cut
        texts: list[str] = []
        slots: list[tuple[int, int, int]] = []  # (question index, answer index, claims start)
        for p in prepared:
            if p is None:
                slots.append((-1, -1, -1))
                continue
            qi = len(texts)
            texts.append(p.question or " ")
            ai = len(texts)
            texts.append(p.answer or " ")
            slots.append((qi, ai, len(texts)))
            texts.extend(p.claims)
        encs = self.encoder.encode(texts)
        flat = [(text, units) for p in prepared if p is not None
                for text, units in zip(p.passages, p.units, strict=True)]
        encoded, lookups = self.encoder.encode_passages_counted(flat)
        passage_encs = iter(encoded)
        results = []
        for p, (qi, ai, ci) in zip(prepared, slots, strict=True):
            if p is None:
                results.append(_failed("internal"))
                continue
            pencs = [next(passage_encs) for _ in p.passages]
            try:
                results.append(self._assess_one(p, encs[qi], encs[ai],
                                                encs[ci:ci + len(p.claims)], pencs))
            except Exception:
                results.append(_failed("internal"))
        release_free_memory()
        return results, Usage(truncations=truncations, cache_hits=lookups.hits,
                              cache_misses=lookups.misses,
                              shared_cache_hits=lookups.shared_hits,
                              shared_cache_misses=lookups.shared_misses,
                              shared_cache_errors=lookups.shared_errors)

    def _assess_one(self, p: _Prepared, q_enc: Encoded, a_enc: Encoded,
                    claim_encs: Sequence[Encoded], pencs: list[list[Encoded]]) -> Assessment:
        cal = self.calibration
        g = p.gated
        detections: list[Detection] = []
        results: list[MetricResult] = []
        scope = context_relevance = answer_relevance = None
        claims: tuple[Claim, ...] | None = None
        supported_share = None

        if self.scope.configured and g.has_question_terms:
            detection, scope = self._check_scope(q_enc)
            if detection:
                detections.append(detection)

        if g.wants_context_relevance:  # independent of the answer
            rel = [cal.context_relevance.prob_named(dict(zip(
                       ft.CONTEXT_MODEL, ft.context_features(p.question, q_enc, text, e)
                       + sg.context_signals(p.question, text), strict=True)))
                   for text, e in zip(p.passages, pencs, strict=True)]
            best = max(rel)
            results.append(MetricResult.ok("context_relevance", best))
            context_relevance = ContextRelevanceParts(
                round(best, 4), round(sum(rel) / len(rel), 4), rel.index(best),
                tuple(round(r, 4) for r in rel))
            if best < cal.no_relevant_context:
                detections.append(Detection(
                    "no_relevant_context", f"best passage relevance {best:.2f} < "
                    f"{cal.no_relevant_context:.2f}"))

        if g.wants_answer_relevance:
            x = (ft.answer_features(p.question, q_enc, p.answer, a_enc, claim_encs)
                 + sg.answer_signals(p.question, p.answer))
            named = dict(zip(ft.ANSWER_MODEL, x, strict=True))
            useful = cal.answer_relevance.prob_named(named)
            on_topic = cal.answer_topic.prob_named(named)
            results.append(MetricResult.ok("answer_relevance", useful * on_topic))
            answer_relevance = AnswerRelevanceParts(
                round(on_topic, 4), round(useful, 4), {k: round(v, 4) for k, v in named.items()})

        if g.wants_support:
            if not p.claims:
                results.extend(MetricResult.not_applicable(m, "no_claims") for m in _FAITH)
            else:
                claims, support = self._support(p, claim_encs, pencs)
                results.extend(support)
                supported_share = round(sum(c.supported for c in claims) / len(claims), 4)
        explanation = Explanation(
            scorer=self.name, version=self.version, scope=scope,
            context_relevance=context_relevance, answer_relevance=answer_relevance,
            claims=claims, supported_share=supported_share,
            extra={} if p.evidence is None else {"evidence_units": p.evidence.to_dict()})
        return Assessment(tuple(results), explanation, tuple(detections))

    def _support(self, p: _Prepared, claim_encs: Sequence[Encoded], pencs: list[list[Encoded]],
                 ) -> tuple[tuple[Claim, ...], list[MetricResult]]:
        cal = self.calibration
        units = [ft.Unit(text, n, enc)
                 for n, (texts, encs) in enumerate(zip(p.units, pencs, strict=True))
                 for text, enc in zip(texts, encs[1:], strict=True)]
        context_text = " ".join(p.passages)
        context_words = set(content_words(context_text)) | tx.lower_words(context_text)
        context_numbers = tx.context_numbers(context_text)
        claims: list[Claim] = []
        probs: list[float] = []
        strengths: list[float] = []
        for claim, enc in zip(p.claims, claim_encs, strict=True):
            f = ft.claim_features(claim, enc, units, context_words, context_numbers)
            inputs = ft.faith_inputs(f.values)
            prob = cal.faithfulness.prob_named(inputs)
            strength = float(np.clip(inputs["strength"], 0.0, 1.0))
            kind = ft.contradiction_kind(f)
            cue = (cl.find_clash(claim, f.top_evidence, context_text, kinds=cal.clash_kinds,
                                 min_overlap=cal.clash_overlap) if cal.clash_kinds else None)
            if kind is not None and kind in cal.contradiction_kinds:
                verdict = Verdict.CONTRADICTED
                prob = min(prob, cal.contradicted_claim)
            elif cue is not None:
                verdict = Verdict.CONTRADICTED
                prob = min(prob, cal.contradicted_claim)
                kind = cue.kind
                f.contradiction = cue.detail
                f.evidence = cue.evidence
                f.evidence_passage = next((u.passage for u in units if u.text == cue.evidence),
                                          f.evidence_passage)
            elif prob >= cal.support_threshold:
                verdict = Verdict.SUPPORTED
            else:
                verdict = Verdict.UNSUPPORTED
            probs.append(prob)
            strengths.append(strength)
            reason = mismatch = None
            if verdict is Verdict.CONTRADICTED:
                reason = f.contradiction
            elif kind is not None:
                # A clash calibration did not adopt (negation): shown, not flipping the verdict.
                # A clash with off-topic evidence is no clash at all and is not shown.
                mismatch = f.contradiction
            claims.append(Claim(claim, verdict, strength=round(strength, 4),
                                support_probability=round(prob, 4), evidence=f.evidence,
                                evidence_context=f.evidence_passage, reason=reason,
                                mismatch=mismatch,
                                clash=kind if reason is not None or mismatch is not None
                                else None,
                                unsupported_facts=fa.not_found(claim, context_words,
                                                               context_numbers) or None))
        contradicted = sum(c.verdict is Verdict.CONTRADICTED for c in claims) / len(claims)
        value = cal.answer_faithfulness(float(np.mean(probs)), contradicted)
        return tuple(claims), [
            MetricResult.ok("faithfulness", float(np.clip(value, 0.0, 1.0))),
            MetricResult.ok("groundedness", float(np.clip(
                cal.map_groundedness(float(np.mean(strengths))), 0.0, 1.0)))]


def _warm_up_record() -> LogRecord:
    return LogRecord(request_id="groundwatch-warm-up", timestamp=datetime.now(UTC),
                     question="How long are deleted files kept?",
                     contexts=("Deleted files are kept for 30 days.",),
                     answer="Deleted files are kept for 30 days.")


def _failed(kind: str) -> Assessment:
    return Assessment(explanation=Explanation(scorer="embedded", error=kind), error=kind)
