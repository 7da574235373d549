"""Markdown ablation table of docs/results/real.md from `pleura train/eval real` JSON files.

Usage::

    .venv/bin/python scripts/real_table.py NAME=FILE.json[:METHOD] ... > table.md

FILE is a ``cv.json`` of ``pleura train real --cv`` (METHOD defaults to ``uninorms``, the
product's video score) or the ``--json`` of ``pleura eval real`` (its only method). Cells are
mean ± sd over the grouped folds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

KEYS = ("weighted_f1", "accuracy", "qwk", "within_one", "auroc_0_vs_1plus",
        "specificity_healthy")
HEAD = ("weighted F1", "accuracy", "QWK", "within-one", "AUROC 0 vs ≥1", "specificity (healthy)")


def cell(s: dict) -> str:
    mu, sd = s.get("mean"), s.get("sd")
    if mu is None or mu != mu:
        return "n/a"
    return f"{mu:.3f} ± {sd:.3f}"


def row(name: str, spec: str) -> str:
    path, _, method = spec.partition(":")
    rep = json.loads(Path(path).read_text())
    methods = rep["methods"]
    m = methods[method] if method else (methods["uninorms"] if "uninorms" in methods
                                        else next(iter(methods.values())))
    return f"| {name} | " + " | ".join(cell(m[k]) for k in KEYS) + " |"


def main(argv: list[str]) -> int:
    print("| row | " + " | ".join(HEAD) + " |")
    print("|---|" + "---|" * len(HEAD))
    for item in argv:
        name, _, spec = item.partition("=")
        print(row(name, spec))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
