"""The fitted weights and thresholds of the ``embedded`` scorer (``calibration.json``).

``scripts/calibrate.py`` writes the file from the labelled dev data; the scorer only reads it.
Each head is a logistic regression over named, standardised features.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CALIBRATION_PATH = Path(__file__).resolve().parent / "calibration.json"


@dataclass(frozen=True, slots=True)
class Logistic:
    """p = sigmoid(intercept + sum(coef * (x - mean) / scale))."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Logistic:
        return cls(tuple(d["features"]), tuple(d["mean"]), tuple(d["scale"]),
                   tuple(d["coef"]), float(d["intercept"]))

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(self.features), "mean": [round(v, 6) for v in self.mean],
                "scale": [round(v, 6) for v in self.scale],
                "coef": [round(v, 6) for v in self.coef], "intercept": round(self.intercept, 6)}

    def check(self, available: Sequence[str]) -> None:
        unknown = [n for n in self.features if n not in available]
        if unknown:
            raise ValueError(f"calibration uses features {unknown} the scorer does not compute "
                             f"(it has {list(available)}); re-run `make calibrate`")

    def prob_named(self, values: Mapping[str, float]) -> float:
        return self.prob([values[n] for n in self.features])

    def prob(self, x: Sequence[float]) -> float:
        z = self.intercept + sum(c * (v - m) / s for c, v, m, s
                                 in zip(self.coef, x, self.mean, self.scale, strict=True))
        z = max(-50.0, min(50.0, z))
        return 1.0 / (1.0 + math.exp(-z))


@dataclass(frozen=True, slots=True)
class Calibration:
    version: str
    faithfulness: Logistic
    answer_relevance: Logistic  # does the answer serve the question (labelled usefulness)
    answer_topic: Logistic  # is the answer about the question at all (real vs swapped answers)
    context_relevance: Logistic
    support_threshold: float  # claim probability at or above which a claim is "supported"
    contradiction_kinds: tuple[str, ...]  # clashes (number, negation) that make a claim contradicted
    no_relevant_context: float  # best context relevance below this: detection
    scope_threshold: float  # question-to-scope similarity below this: out_of_scope
    raw: Mapping[str, Any]
    # Contradiction cues (clash.py) that make a claim contradicted, and how much of the claim
    # its evidence must hold for a cue to count.
    clash_kinds: tuple[str, ...] = ()
    clash_overlap: float = 0.6
    # A contradicted claim's support probability is at most this; the calibrated faithfulness
    # of an answer with one (after the answer-level map) at most ``contradicted_answer``.
    contradicted_claim: float = 0.5
    contradicted_answer: float = 1.0
    # ...when at least this share of its claims (and at least one) is contradicted.
    contradicted_share: float = 0.0
    # The answer-level map of the raw faithfulness (mean claim probability, capped as above)
    # to a calibrated probability that the answer is faithful: p = sigmoid(a * logit(raw) + b).
    # Identity (a=1, b=0) when absent.
    faithfulness_map: tuple[float, float] = (1.0, 0.0)
    # The same for groundedness (mean evidence strength -> probability the answer is faithful).
    groundedness_map: tuple[float, float] = (1.0, 0.0)

    def map_faithfulness(self, raw: float) -> float:
        return _platt(raw, self.faithfulness_map)

    def map_groundedness(self, raw: float) -> float:
        return _platt(raw, self.groundedness_map)

    def answer_faithfulness(self, raw: float, contradicted: float) -> float:
        """The reported faithfulness: ``raw`` (mean claim probability) mapped, at most
        ``contradicted_answer`` when the share ``contradicted`` of the claims that are
        contradicted is at least ``contradicted_share`` (and above 0)."""
        return answer_faithfulness(raw, contradicted, self.faithfulness_map,
                                   self.contradicted_answer, self.contradicted_share)

    @classmethod
    def load(cls, path: Path = CALIBRATION_PATH) -> Calibration:
        d = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            version=str(d["version"]),
            faithfulness=Logistic.from_dict(d["faithfulness"]),
            answer_relevance=Logistic.from_dict(d["answer_relevance"]),
            answer_topic=Logistic.from_dict(d["answer_topic"]),
            context_relevance=Logistic.from_dict(d["context_relevance"]),
            support_threshold=float(d["thresholds"]["support"]),
            contradiction_kinds=tuple(d["thresholds"]["contradiction_kinds"]),
            no_relevant_context=float(d["thresholds"]["no_relevant_context"]),
            scope_threshold=float(d["thresholds"]["scope"]),
            raw=d,
            clash_kinds=tuple(d["thresholds"].get("clash_kinds", ())),
            clash_overlap=float(d["thresholds"].get("clash_overlap", 0.6)),
            contradicted_claim=float(d["thresholds"].get(
                "contradicted_claim", 1.0 - float(d["thresholds"]["support"]))),
            contradicted_answer=float(d["thresholds"].get("contradicted_answer", 1.0)),
            contradicted_share=float(d["thresholds"].get("contradicted_share", 0.0)),
            faithfulness_map=_pair(d.get("faithfulness_map", (1.0, 0.0))),
            groundedness_map=_pair(d.get("groundedness_map", (1.0, 0.0))),
        )


def answer_faithfulness(raw: float, contradicted: float, ab: tuple[float, float],
                        cap: float, share: float) -> float:
    """``raw`` mapped by ``ab``, at most ``cap`` when ``contradicted`` (the share of the claims
    that are contradicted) is above 0 and at least ``share``; scripts/calibrate.py chooses
    ``ab`` and ``cap`` with this very function."""
    value = _platt(raw, ab)
    return min(value, cap) if contradicted > 0 and contradicted >= share else value


def _platt(raw: float, ab: tuple[float, float]) -> float:
    """sigmoid(a * logit(raw) + b); ``raw`` itself for the identity (1, 0)."""
    a, b = ab
    if (a, b) == (1.0, 0.0):
        return raw
    r = min(1.0 - 1e-6, max(1e-6, raw))
    z = max(-50.0, min(50.0, a * math.log(r / (1.0 - r)) + b))
    return 1.0 / (1.0 + math.exp(-z))


def _pair(value: Any) -> tuple[float, float]:
    a, b = value
    return float(a), float(b)
