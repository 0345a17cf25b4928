"""``embedded``: offline scoring with the shipped all-MiniLM-L6-v2 model (see ``scorer``).

This ``__init__`` only declares the backend: importing it imports neither numpy nor ONNX
Runtime (the model loads on the first ``score_batch``, or in ``warm_up``).
"""

from evaluator.plugins import ScorerPlugin

PLUGINS = (ScorerPlugin(
    "embedded", "evaluator.scorers.embedded.scorer:EmbeddedScorer", extra="embedded",
    requires=("onnxruntime", "tokenizers", "wordfreq"),
    # Measured (docs/scorers.md, 1 torch thread, a shared 2-core host): 1/12 s on short QA,
    # 1/7 s on ExpertQA-sized items, 0.7 s on whole web pages (WiCE), so 1 s covers its
    # slowest measured inputs on a busier host.
    item_seconds=1.0),)
