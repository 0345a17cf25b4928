"""Where and when a benchmark ran, written into every ``benchmarks/results/*.json``.

A throughput figure means nothing without its machine: the docs quote the figures with this
block (``benchmarks/figures.py`` renders it), so a reader sees a 2-CPU shared box and a date,
not a bare number.
"""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evaluator.scorers.embedded.runtime import int8_instructions

ROOT = Path(__file__).resolve().parent.parent


def git_commit() -> str:
    """The checked-out commit, with ``-dirty`` when tracked files differ from it."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True, check=True).stdout
        return sha + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what :mod:`platform` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def measured_on() -> dict[str, Any]:
    """The ``provenance`` block: date (UTC), machine and commit of this run."""
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpu_count": os.cpu_count(), "cpu_model": cpu_model(),
                    "int8": int8_instructions(),
                    "platform": platform.platform(), "python": platform.python_version()},
        "git_commit": git_commit(),
        "recorded_by": "the benchmark itself",
    }
