"""Table I (markdown) from the JSON files of `pleura eval frame --json`.

Usage:
    pleura eval frame --run runs/frame-cnn-sord --data data/sim-test --split all --json a.json
    python scripts/frame_table.py "CNN + SORD=a.json" "CNN + Reg-STN + SORD=b.json" [--weighted]

One row per ``LABEL=FILE``: micro F1 (= accuracy, %) per column of the paper's Table I (S1,
K = 1/3/5/7 frames dropped around score changes, video-annotated subset, A = 3/4 annotators
agreeing, average); ``--weighted`` prints weighted F1 instead. A second block lists Setting 1
details (weighted F1, QWK, within-one accuracy, per-class F1) and the localisation measures
where the file has them. The renderings are :mod:`train.frame.report`'s.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from train.frame.report import details_markdown, table_markdown


def load(spec: str) -> tuple[str, dict]:
    """``"LABEL=FILE"`` -> (label, parsed eval JSON). Raises ValueError on a bad spec."""
    label, sep, path = spec.rpartition("=")
    if not sep or not label:
        raise ValueError(f"{spec!r}: expected LABEL=FILE.json")
    doc = json.loads(Path(path).read_text())
    if "table" not in doc or "setting1" not in doc:
        raise ValueError(f"{path}: not a `pleura eval frame --json` file (no table/setting1)")
    return label, doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", metavar="LABEL=FILE")
    ap.add_argument("--weighted", action="store_true", help="weighted F1 instead of micro F1")
    args = ap.parse_args()
    docs = dict(load(s) for s in args.runs)
    print(table_markdown({label: doc["table"] for label, doc in docs.items()},
                         "weighted_f1" if args.weighted else "micro_f1"))
    print(details_markdown(docs), end="")


if __name__ == "__main__":
    main()
