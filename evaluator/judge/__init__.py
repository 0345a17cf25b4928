"""The LLM judge: ``ragas`` (ragas's metrics) and ``compact`` (our own one-call judge), on any
OpenAI-compatible endpoint (``[judge]``), alone or as the cascade's second scorer.

This ``__init__`` only declares the two backends (nothing here imports httpx, openai or
ragas); ``scorer`` builds them.
"""

from evaluator.plugins import ScorerPlugin

# A judge's time per item: seconds per call plus retries that honour Retry-After. ragas makes
# about 6.6 calls per item (make bench, benchmarks/results/judge.json), compact one.
PLUGINS = (
    ScorerPlugin("ragas", "evaluator.judge.scorer:JudgeScorer", extra="ragas",
                 requires=("ragas", "openai", "httpx", "langchain_community"),
                 item_seconds=30.0, judge=True),
    ScorerPlugin("compact", "evaluator.judge.scorer:CompactJudgeScorer", extra="judge",
                 requires=("openai", "httpx"), item_seconds=10.0, judge=True),
)
