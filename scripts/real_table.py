"""Markdown ablation table of docs/results/real.md from `pleura train/eval real` JSON files.

Usage::

    .venv/bin/python scripts/real_table.py [--pooled] NAME=FILE.json[:METHOD] ... > table.md

FILE is a ``cv.json`` of ``pleura train real --cv`` (METHOD defaults to ``uninorms``, the
product's video score) or the ``--json`` of ``pleura eval real`` (its only method). Cells are
mean ± sd over the grouped folds; with ``--pooled`` (the leave-one-source-out table, whose
folds are single sources, many of one class) the metrics pooled over every held-out clip, then
the mean within-source AUROC, the findings AUROC of B-lines and the source probe's accuracy
where the file has them.
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


POOLED_HEAD = (*HEAD, "within-source AUROC", "B-line AUROC", "source probe")


def _num(v) -> str:
    return "n/a" if v is None or v != v else f"{v:.3f}"


def pooled_row(name: str, spec: str) -> str:
    path, _, method = spec.partition(":")
    rep = json.loads(Path(path).read_text())
    methods = rep["methods"]
    key = method or ("uninorms" if "uninorms" in methods else next(iter(methods)))
    pooled = methods[key]["pooled"]
    ws = (rep.get("within_source") or {}).get(key) or {}
    bl = (rep.get("findings") or {}).get("b_lines") or {}
    probe = rep.get("source_probe") or {}
    cells = [_num(pooled.get(k)) for k in KEYS]
    cells += [_num((ws.get("mean") or {}).get("auroc")), _num(bl.get("auroc")),
              _num(probe.get("accuracy"))]
    return f"| {name} | " + " | ".join(cells) + " |"


def main(argv: list[str]) -> int:
    if argv[:1] == ["--pooled"]:
        print("| row | " + " | ".join(POOLED_HEAD) + " |")
        print("|---|" + "---|" * len(POOLED_HEAD))
        for item in argv[1:]:
            name, _, spec = item.partition("=")
            print(pooled_row(name, spec))
        return 0
    print("| row | " + " | ".join(HEAD) + " |")
    print("|---|" + "---|" * len(HEAD))
    for item in argv:
        name, _, spec = item.partition("=")
        print(row(name, spec))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
