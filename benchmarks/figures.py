"""Fill the docs' benchmark figures from ``benchmarks/results/*.json`` (``make docs-figures``).

A figure in the README or in ``docs/`` is written between two HTML comments that name where
it comes from::

    <!-- bench:pipeline.raw_celery_items_per_s -->51,375<!-- /bench -->
    <!-- bench:pipeline.pipeline_noop_items_per_s|k -->4.0k<!-- /bench -->
    <!-- bench:pipeline@measured -->2026-12-01, 2 CPUs (Linux-…)<!-- /bench -->

``FILE.key.key`` walks ``benchmarks/results/FILE.json`` (a number indexes a list);
``A/B`` divides one value by another (items / seconds, one rate by another);
``|FORMAT`` is ``k`` (thousands, one decimal under 10k), ``int`` or a :func:`format` spec
(default: thousands separators at 1,000 and above, the stored value below). ``FILE@measured``
is that file's ``provenance`` block: the date and the machine the figures were measured on.

``python -m benchmarks.figures`` rewrites the text between the markers; ``--check`` only
reports files that would change and throughput figures (``N items/s``, ``N/s``) written outside
markers, and exits 1 if there are any (``tests/test_docs_figures.py`` runs the same checks).
Decision records (``docs/decisions/``) keep the figures measured at the time, unmarked.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

MARKER = re.compile(r"<!-- bench:(?P<ref>[^ ]+?) -->(?P<value>.*?)<!-- /bench -->", re.S)
#: A throughput figure: a number (``~7.5k``, ``8,221``, ``10–40``) then ``items/s``,
#: ``embeddings/s``, ``items per second`` or a bare ``/s``. Row rates (``20 rows/s``) are
#: settings of a run, not results, and are not matched.
FIGURE = re.compile(
    r"(?<![\w.])~?\d[\d,]*(?:\.\d+)?\s*k?"
    r"(?:\s*(?:–|-|to)\s*~?\d[\d,]*(?:\.\d+)?\s*k?)?"
    r"\s*(?:items?\s*/\s*s|embeddings\s*/\s*s|items? per second|/\s*s)\b")


class FigureError(ValueError):
    """A marker names a file, key or format the results do not have."""


def load_results(directory: Path = RESULTS) -> dict[str, Any]:
    """Every ``*.json`` in ``directory``, by file stem."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))}


def doc_paths(root: Path = ROOT) -> list[Path]:
    """The documents whose figures must come from the results: the READMEs and ``docs/``,
    except the decision records (history, measured at the time)."""
    docs = [p for p in sorted((root / "docs").rglob("*.md"))
            if "decisions" not in p.relative_to(root / "docs").parts]
    return [root / "README.md", root / "benchmarks" / "README.md", *docs]


def _lookup(results: dict[str, Any], path: str) -> Any:
    name, _, rest = path.partition(".")
    if name not in results:
        raise FigureError(f"no benchmarks/results/{name}.json (have: {sorted(results)})")
    value: Any = results[name]
    for key in rest.split(".") if rest else []:
        try:
            value = value[int(key)] if isinstance(value, list) else value[key]
        except (KeyError, IndexError, ValueError, TypeError):
            raise FigureError(f"benchmarks/results/{name}.json has no {rest!r} "
                              f"(stopped at {key!r})") from None
    return value


def measured(results: dict[str, Any], name: str) -> str:
    """``2026-12-01, 2 CPUs (AMD EPYC), Linux-…`` from the file's provenance block."""
    prov = _lookup(results, f"{name}.provenance")
    machine = prov.get("machine") or {}
    parts = [str(prov["measured_at"])[:10]]
    if machine.get("cpu_count"):
        cpus = f"{machine['cpu_count']} CPUs"
        if machine.get("cpu_model"):
            cpus += f" ({machine['cpu_model']}"
            cpus += f"; {machine['int8']})" if machine.get("int8") else ")"
        parts.append(cpus)
    else:
        parts.append("machine not recorded")
    if machine.get("platform"):
        parts.append(str(machine["platform"]))
    return ", ".join(parts)


def format_value(value: Any, fmt: str | None) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if fmt:
            raise FigureError(f"format {fmt!r} on a value that is not a number: {value!r}")
        return str(value)
    if fmt == "k":
        thousands = value / 1000
        return f"{thousands:.1f}k" if thousands < 10 else f"{thousands:.0f}k"
    if fmt == "int":
        return f"{value:,.0f}"
    if fmt:
        try:
            return format(value, fmt)
        except ValueError as exc:
            raise FigureError(f"bad format {fmt!r}: {exc}") from None
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:g}"


def figure(results: dict[str, Any], ref: str) -> str:
    """The text a marker ``<!-- bench:REF -->`` stands for."""
    path, _, fmt = ref.partition("|")
    if path.endswith("@measured"):
        return measured(results, path.removesuffix("@measured"))
    if "/" in path:
        num, _, den = path.partition("/")
        return format_value(_lookup(results, num) / _lookup(results, den), fmt or None)
    return format_value(_lookup(results, path), fmt or None)


def render(text: str, results: dict[str, Any]) -> str:
    """``text`` with the value of every marker replaced by what the results hold."""
    return MARKER.sub(lambda m: f"<!-- bench:{m['ref']} -->{figure(results, m['ref'])}"
                                f"<!-- /bench -->", text)


def unmarked_figures(text: str) -> Iterator[tuple[int, str]]:
    """(line number, figure) for each throughput figure written outside a marker."""
    # Blank the markers out (newlines kept, so line numbers stay right).
    blanked = MARKER.sub(lambda m: re.sub(r"[^\n]", " ", m[0]), text)
    for m in FIGURE.finditer(blanked):
        yield blanked.count("\n", 0, m.start()) + 1, m[0]


def problems(root: Path = ROOT, results: dict[str, Any] | None = None) -> list[str]:
    """One line per stale file, bad marker or unmarked figure."""
    results = load_results(root / "benchmarks" / "results") if results is None else results
    out = []
    for path in doc_paths(root):
        text = path.read_text()
        rel = path.relative_to(root)
        try:
            if render(text, results) != text:
                out.append(f"{rel}: figures differ from benchmarks/results "
                           f"(run `make docs-figures`)")
        except FigureError as exc:
            out.append(f"{rel}: {exc}")
        out += [f"{rel}:{line}: throughput figure {fig!r} outside a <!-- bench:... --> marker"
                for line, fig in unmarked_figures(text)]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a doc is stale or states a figure "
                             "outside a marker")
    args = parser.parse_args(argv)
    if not args.check:
        results = load_results()
        for path in doc_paths():
            text = path.read_text()
            new = render(text, results)
            if new != text:
                path.write_text(new)
                print(f"updated {path.relative_to(ROOT)}")
    found = problems()
    for line in found:
        print(line, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
