"""What an LLM judge did for one item: the calls, their cost, and why a metric has no score.

Beside the claims (the judge's statements and verdicts, in :mod:`.faithfulness`), the store
keeps the judge's model, how many calls the item cost and their tokens and USD, the metrics
served from the cache, the PII redacted before anything left the process, and, when the judge
did not judge the item (budget spent, circuit open) or answered something unusable, the reason
and an excerpt of the reply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class JudgeTrace:
    model: str
    mode: str
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cached: tuple[str, ...] = ()
    redacted: Mapping[str, int] = field(default_factory=dict)
    not_judged: str | None = None  # budget | circuit_open | unavailable | timeout | ...
    reply_excerpt: str | None = None
    selected_by: str | None = None  # the cascade's reason: random | low | band | all
    details: Mapping[str, Any] = field(default_factory=dict)  # per metric, e.g. a rating
    parse_error: str | None = None  # why an unparseable reply did not count
    finish_reason: str | None = None  # how that reply ended ("stop", "length", ...)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "mode": self.mode, "calls": self.calls,
                               "prompt_tokens": self.prompt_tokens,
                               "completion_tokens": self.completion_tokens,
                               "cost_usd": round(self.cost_usd, 8)}
        if self.cached:
            out["cached"] = list(self.cached)
        if self.redacted:
            out["redacted"] = dict(self.redacted)
        for key in ("not_judged", "reply_excerpt", "selected_by", "parse_error",
                    "finish_reason"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.details:
            out["details"] = dict(self.details)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JudgeTrace:
        return cls(str(data["model"]), str(data["mode"]), int(data.get("calls", 0)),
                   int(data.get("prompt_tokens", 0)), int(data.get("completion_tokens", 0)),
                   float(data.get("cost_usd", 0.0)), tuple(data.get("cached", ())),
                   dict(data.get("redacted", {})), data.get("not_judged"),
                   data.get("reply_excerpt"), data.get("selected_by"),
                   dict(data.get("details", {})), data.get("parse_error"),
                   data.get("finish_reason"))
