"""The shape of the product code, measured from its syntax trees and import graph.

Prints (or writes as JSON with ``--json``) what a redesign is judged by: the largest classes
and functions (lines, methods), the import graph between product modules (cycles, arrows from
``evaluator/`` to a package above it), and the imports written inside functions, each with the
line above it (where the reason is kept). ``tests/test_layout.py`` asserts the rules; this
script shows the figures.

    python scripts/layout_report.py [--json out.json]
"""

from __future__ import annotations

import argparse
import ast
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The product packages, top to bottom: a module may import its own package and those after
#: it in this list, never one before it (``evaluator`` is the domain, at the bottom).
PACKAGES = ("groundwatch", "workers", "metrics", "evaluator")


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    imports: set[str] = field(default_factory=set)  # product modules imported at module level
    all_imports: set[str] = field(default_factory=set)  # the same, and inside functions
    local_imports: list[tuple[int, str, str]] = field(default_factory=list)  # (line, what, reason)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def product_modules() -> dict[str, Module]:
    found: dict[str, Module] = {}
    for package in PACKAGES:
        base = ROOT / package
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.py")):
            if "migrations" in path.parts:
                continue  # Alembic's scripts are loaded by Alembic, not imported
            name = module_name(path)
            found[name] = Module(name, path, ast.parse(path.read_text(), str(path)))
    return found


def _resolve(mod: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = mod.name.split(".")
    if mod.path.name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(mod: Module, node: ast.Import | ast.ImportFrom, known: set[str]) -> Iterator[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = _resolve(mod, node)
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name:
            yield name


def _in_type_checking(parents: list[ast.AST]) -> bool:
    return any(isinstance(p, ast.If) and "TYPE_CHECKING" in ast.unparse(p.test) for p in parents)


def _reason_above(lines: list[str], lineno: int) -> str:
    """The comment that gives a function-level import its reason: on the line above the
    import, or above the run of imports (and blank lines) it belongs to."""
    for index in range(lineno - 2, max(-1, lineno - 9), -1):
        text = lines[index].strip()
        if text.startswith("#"):
            return text[1:].strip()
        if text and not text.startswith(("import ", "from ")):
            return ""
    return ""


def scan(mods: dict[str, Module]) -> None:
    known = set(mods)
    for mod in mods.values():
        lines = mod.path.read_text().splitlines()

        def visit(node: ast.AST, parents: list[ast.AST], mod: Module = mod,
                  lines: list[str] = lines) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.Import | ast.ImportFrom):
                    in_function = any(isinstance(p, ast.FunctionDef | ast.AsyncFunctionDef)
                                      for p in parents)
                    if _in_type_checking(parents):
                        pass
                    elif in_function:
                        what = ast.unparse(child)
                        tail = lines[child.lineno - 1].partition("#")[2].strip()
                        reason = _reason_above(lines, child.lineno)
                        mod.local_imports.append((child.lineno, what, tail or reason))
                        mod.all_imports.update(t for t in _targets(mod, child, known)
                                               if t != mod.name)
                    else:
                        found = {t for t in _targets(mod, child, known) if t != mod.name}
                        mod.imports.update(found)
                        mod.all_imports.update(found)
                visit(child, [*parents, child])

        visit(mod.tree, [])


def cycles(mods: dict[str, Module], *, local: bool = False) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan); with ``local``,
    imports inside functions count as arrows too (they hide a cycle, they do not remove it)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in (mods[v].all_imports if local else mods[v].imports):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(mods):
        if v not in index:
            strong(v)
    return out


def upward(mods: dict[str, Module], *, local: bool = True) -> list[tuple[str, str]]:
    """(importer, imported) pairs where a package imports one above it in :data:`PACKAGES`;
    with ``local``, imports inside functions count too."""
    rank = {p: i for i, p in enumerate(PACKAGES)}
    known = set(mods)
    found = []
    for mod in mods.values():
        targets = set(mod.imports)
        if local:
            for _, what, _ in mod.local_imports:
                node = ast.parse(what).body[0]
                assert isinstance(node, ast.Import | ast.ImportFrom)
                targets.update(_targets(mod, node, known))
        for target in sorted(targets):
            if rank[target.split(".")[0]] < rank[mod.name.split(".")[0]]:
                found.append((mod.name, target))
    return found


def sizes(mods: dict[str, Module]) -> tuple[list[tuple[str, int, int]], list[tuple[str, int]]]:
    classes, functions = [], []
    for mod in mods.values():
        for node in ast.walk(mod.tree):
            if isinstance(node, ast.ClassDef):
                methods = sum(isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
                              for n in node.body)
                classes.append((f"{mod.name}.{node.name}",
                                (node.end_lineno or node.lineno) - node.lineno + 1, methods))
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                functions.append((f"{mod.name}.{node.name}",
                                  (node.end_lineno or node.lineno) - node.lineno + 1))
    classes.sort(key=lambda c: -c[1])
    functions.sort(key=lambda f: -f[1])
    return classes, functions


def report() -> dict[str, object]:
    mods = product_modules()
    scan(mods)
    classes, functions = sizes(mods)
    local = [(m.name, line, what, reason) for m in mods.values()
             for line, what, reason in m.local_imports]
    return {
        "modules": len(mods),
        "lines": sum(len(m.path.read_text().splitlines()) for m in mods.values()),
        "lines_per_package": {p: sum(len(m.path.read_text().splitlines())
                                     for m in mods.values() if m.name.split(".")[0] == p)
                              for p in PACKAGES},
        "largest_classes": classes[:8],
        "largest_functions": functions[:8],
        "cycles": cycles(mods),
        "cycles_counting_function_imports": cycles(mods, local=True),
        "upward_imports": upward(mods),
        "function_level_imports": len(local),
        "function_level_imports_without_reason": [x for x in local if not x[3]],
        "function_level_import_list": local,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--all", action="store_true", help="list every function-level import")
    args = parser.parse_args()
    data = report()
    if args.json:
        args.json.write_text(json.dumps(data, indent=1, default=str))
    print(f"product modules: {data['modules']}, lines: {data['lines']} "
          f"{data['lines_per_package']}")
    print("largest classes (lines, methods):")
    for name, n, methods in data["largest_classes"]:  # type: ignore[attr-defined]
        print(f"  {n:5d} {methods:3d}  {name}")
    print("largest functions (lines):")
    for name, n in data["largest_functions"]:  # type: ignore[attr-defined]
        print(f"  {n:5d}  {name}")
    print(f"import cycles (module level): {data['cycles']}")
    print(f"import cycles (imports inside functions counted): "
          f"{data['cycles_counting_function_imports']}")
    up = data["upward_imports"]
    print(f"imports running up the layers: {len(up)}")  # type: ignore[arg-type]
    for a, b in up:  # type: ignore[attr-defined]
        print(f"  {a} -> {b}")
    print(f"imports inside functions: {data['function_level_imports']}, without a reason: "
          f"{len(data['function_level_imports_without_reason'])}")  # type: ignore[arg-type]
    if args.all:
        for name, line, what, reason in data["function_level_import_list"]:  # type: ignore
            print(f"  {name}:{line}  {what}   # {reason}")


if __name__ == "__main__":
    main()
