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


def int8_instructions() -> str:
    """Whether the CPU has VNNI (one-instruction int8 dot products), which ONNX Runtime's
    int8 kernels use; without it the exact int8 kernel the scorer asks for is slower, so
    int8 figures differ by this more than by the clock."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])
    if "avx512_vnni" in flags or "avx_vnni" in flags:
        return "VNNI"
    return "AVX2, no VNNI" if "avx2" in flags else "no AVX2"


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
