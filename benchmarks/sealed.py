"""The sealed part of the labelled dev data (issue 17): set aside on 2026-12-07, before any of
that issue's changes, so that what is tuned on the rest can be measured on items nobody tuned
on.

An item is sealed when the hash of its *group* falls in the first ``SEALED_SHARE`` of the hash
range. The group is what the calibration's cross-validation groups by (scripts/calibrate.py):
the question, or, for claim checking without a question, the first context (the cited page).
So a question's claims, its whole answer and its passages fall on the same side in every file
(ExpertQA's answers and claims share their questions), and the split does not depend on the
order or the number of rows. The salt names the day it was drawn: changing it, or the share,
unseals the data and is not done.

Rules (docs/scorers.md, "The sealed test"): nothing is fitted, tuned or chosen on sealed items
(scripts/calibrate.py drops them before it reads a feature); the sealed column of
``make bench-quality`` is reported next to the tuned-on column for every figure; a rule, cue or
feature ships only if the sealed column does not get worse; sealed misses are not read until an
issue's closing measurement, and the note says when they were.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

__all__ = ["SALT", "SEALED_SHARE", "group_of", "is_sealed", "part_of"]

SALT = "groundwatch-sealed-2026-12-07"
SEALED_SHARE = 0.3
PARTS = ("tuned", "sealed")


def group_of(row: Mapping[str, Any]) -> str:
    """The question, else the first context's head, else the id."""
    question = row.get("question")
    if isinstance(question, str) and question:
        return question
    contexts = row.get("contexts")
    if isinstance(contexts, list) and contexts and isinstance(contexts[0], str):
        return contexts[0][:300]
    return str(row.get("id", ""))


def is_sealed(row: Mapping[str, Any]) -> bool:
    digest = hashlib.sha256(f"{SALT}\n{group_of(row)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < SEALED_SHARE * 2**64


def part_of(row: Mapping[str, Any]) -> str:
    """``"sealed"`` or ``"tuned"``."""
    return PARTS[is_sealed(row)]
