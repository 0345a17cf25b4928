"""``python -m metrics.alerts generate [--config FILE] [--profile NAME] [--out DIR] [--check]``
and ``python -m metrics.alerts runbooks [--config FILE] [--dir DIR] [--check]``.

``generate`` writes the generated rule files under ``--out`` (default: the repository root,
i.e. the committed files). ``--profile test`` writes the short-window variant the end-to-end
test loads. ``runbooks`` rewrites the generated header block of every runbook under ``--dir``
(default ``docs/runbooks``) and creates a skeleton for an alert that has none. With
``--check`` either writes nothing and exits 1 when a committed file differs from what the
settings generate.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from evaluator.errors import ConfigError
from metrics.alerts.config import DEFAULT_PATH, REPO_ROOT, load_alerts
from metrics.alerts.render import outputs
from metrics.alerts.rules import build
from metrics.alerts.runbooks import RUNBOOK_DIR, runbooks


def generate(config_path: str | Path | None = None, profile: str | None = None
             ) -> dict[Path, str]:
    """The generated files (relative path → text) for the settings file and profile."""
    config = load_alerts(config_path)
    if profile:
        config = config.scaled(profile)
    return outputs(build(config))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m metrics.alerts")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write the Prometheus, promtool and Grafana files")
    gen.add_argument("--config", default=str(DEFAULT_PATH), help="the alert settings file")
    gen.add_argument("--profile", default=None, help="a profile of the file, e.g. test")
    gen.add_argument("--out", default=str(REPO_ROOT), help="root to write configs/... under")
    gen.add_argument("--check", action="store_true",
                     help="compare with the files under --out instead of writing")
    books = sub.add_parser("runbooks", help="rewrite the generated header of every runbook")
    books.add_argument("--config", default=str(DEFAULT_PATH), help="the alert settings file")
    books.add_argument("--dir", default=str(RUNBOOK_DIR), help="the runbook folder")
    books.add_argument("--check", action="store_true",
                       help="compare with the runbooks instead of writing")
    args = parser.parse_args(argv)
    root = Path(args.out) if args.command == "generate" else Path(".")
    try:
        if args.command == "generate":
            files = generate(args.config, args.profile)
        else:
            files = runbooks(build(load_alerts(args.config)), Path(args.dir))
    except (ConfigError, ValueError) as exc:
        print(exc, file=sys.stderr)
        return 2
    stale = []
    for rel, text in files.items():
        path = root / rel
        if args.check:
            if not path.is_file() or path.read_bytes() != text.encode("utf-8"):
                stale.append(str(rel))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))
        print(f"wrote {path}")
    if stale:
        target = "alerts" if args.command == "generate" else "runbooks"
        print(f"stale (run `make {target}`): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
