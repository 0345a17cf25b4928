"""The layout shows the architecture, and keeps showing it (decision 0017).

Walks the syntax trees and import graph of the product packages (``scripts/layout_report.py``)
and fails on an import cycle (imports inside functions counted: they hide a cycle, they do not
remove it), on a package importing one above it, on a class over 400 lines, and on an import
inside a function that does not say why it is there.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent

#: The most imports inside functions product code may hold: a third of the 131 there were
#: before the redesign (issue 15). Each one left is an optional extra, prometheus_client's
#: import-order rule, or a heavy import kept off the start-up path of the light commands.
MAX_FUNCTION_IMPORTS = 43
MAX_CLASS_LINES = 400
#: Imports whose function's source is hashed into the embedded scorer's calibration
#: (scripts/calibrate.py: feature_code_hash): a comment there would invalidate calibration.json.
#: Both are the [embedded] extra, loaded with the model.
HASHED = {("evaluator.scorers.embedded.model", "import torch"),
          ("evaluator.scorers.embedded.textops", "from wordfreq import zipf_frequency")}


def _layout() -> ModuleType:
    spec = importlib.util.spec_from_file_location("layout_report",
                                                  REPO / "scripts" / "layout_report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report() -> dict[str, object]:
    return _layout().report()  # type: ignore[no-any-return]


def test_no_import_cycle_even_through_imports_inside_functions(report: dict) -> None:
    assert report["cycles_counting_function_imports"] == []


def test_no_package_imports_one_above_it(report: dict) -> None:
    # groundwatch (CLI, presentation) -> workers (Celery) -> metrics (Prometheus) -> evaluator
    assert report["upward_imports"] == []


def test_no_class_over_the_limit(report: dict) -> None:
    too_big = [(name, n) for name, n, _ in report["largest_classes"] if n > MAX_CLASS_LINES]
    assert too_big == []


def test_imports_inside_functions_are_few_and_each_says_why(report: dict) -> None:
    listed = report["function_level_import_list"]
    assert len(listed) <= MAX_FUNCTION_IMPORTS
    silent = [f"{module}:{line} {what}" for module, line, what, reason in listed
              if not reason and (module, what) not in HASHED]
    assert silent == [], "say why on the line above (an optional extra, a heavy import kept " \
                         "off the light commands' start-up path) or move it to the top"


def test_the_walk_sees_what_it_should() -> None:
    """The checks above cannot pass by walking nothing: a cycle, an arrow up, a big class and
    a silent import, planted in a throwaway tree, are all found."""
    layout = _layout()
    with pytest.MonkeyPatch.context() as mp, _planted(layout, mp):
        found = layout.report()
    assert found["cycles_counting_function_imports"] == [["evaluator.a", "evaluator.b"]]
    assert ("evaluator.a", "workers.w") in found["upward_imports"]
    assert found["largest_classes"][0][:2] == ("evaluator.b.Big", 401)  # > MAX_CLASS_LINES
    assert [(m, w) for m, _, w, r in found["function_level_import_list"] if not r] == [
        ("evaluator.b", "import evaluator.a")]


class _planted:
    def __init__(self, layout: ModuleType, mp: pytest.MonkeyPatch) -> None:
        self.layout, self.mp = layout, mp

    def __enter__(self) -> None:
        root = Path(tempfile.mkdtemp(prefix="gw-layout-"))
        (root / "evaluator").mkdir()
        (root / "workers").mkdir()
        (root / "evaluator" / "__init__.py").write_text("")
        (root / "workers" / "__init__.py").write_text("")
        (root / "workers" / "w.py").write_text("X = 1\n")
        (root / "evaluator" / "a.py").write_text("from evaluator import b\nimport workers.w\n")
        body = "\n".join(f"    x{i} = {i}" for i in range(400))
        (root / "evaluator" / "b.py").write_text(
            f"def late():\n    import evaluator.a\n\n\nclass Big:\n{body}\n")
        self.mp.setattr(self.layout, "ROOT", root)

    def __exit__(self, *exc: object) -> None:
        return None


def test_the_walk_leaves_the_interpreter_as_it_was() -> None:
    # It once raised the recursion limit for its graph walk, and json.loads of a line nested
    # 5000 deep then parsed in a later test instead of failing (test_properties).
    limit = sys.getrecursionlimit()
    _layout().report()
    assert sys.getrecursionlimit() == limit
