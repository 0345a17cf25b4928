"""``embedded``: offline scoring with the shipped all-MiniLM-L6-v2 model (see ``scorer``).

Importing this package does not import torch; the model loads on the first ``score_batch``.
"""

from evaluator.scorers.embedded.scorer import EmbeddedScorer

__all__ = ["EmbeddedScorer"]
