"""Table I (markdown) from the JSON files of `pleura eval frame --json`.

Usage:
    pleura eval frame --run runs/frame-cnn-sord --data data/sim-test --split all --json a.json
    python scripts/frame_table.py "CNN + SORD=a.json" "CNN + Reg-STN + SORD=b.json" [--weighted]

One row per ``LABEL=FILE``: micro F1 (= accuracy, %) per column of the paper's Table I (S1,
K = 1/3/5/7 frames dropped around score changes, video-annotated subset, A = 3/4 annotators
agreeing, average); ``--weighted`` prints weighted F1 instead. A second block lists Setting 1
details (weighted F1, QWK, within-one accuracy, per-class F1) and the localisation measures
where the file has them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLUMNS = ("S1", "K=1", "K=3", "K=5", "K=7", "video-ann.", "A=3", "A=4", "avg")


def load(spec: str) -> tuple[str, dict]:
    """``"LABEL=FILE"`` -> (label, parsed eval JSON). Raises ValueError on a bad spec."""
    label, sep, path = spec.rpartition("=")
    if not sep or not label:
        raise ValueError(f"{spec!r}: expected LABEL=FILE.json")
    doc = json.loads(Path(path).read_text())
    if "table" not in doc or "setting1" not in doc:
        raise ValueError(f"{path}: not a `pleura eval frame --json` file (no table/setting1)")
    return label, doc


def table_rows(docs: list[tuple[str, dict]], key: str = "micro_f1") -> list[str]:
    head = "| model | " + " | ".join(COLUMNS) + " |"
    rows = [head, "|---" * (len(COLUMNS) + 1) + "|"]
    for label, doc in docs:
        cells = []
        for col in COLUMNS:
            v = doc["table"].get(col, {})
            val = v.get(key) if isinstance(v, dict) else v
            cells.append("–" if val is None else f"{100 * val:.1f}")
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return rows


def detail_rows(docs: list[tuple[str, dict]]) -> list[str]:
    rows = ["| model | frames (stride) | weighted F1 | QWK | within-one | per-class F1 (0/1/2/3) "
            "| σ₁ / σ₂ | pointing: crop 1 vs Grad-CAM |", "|---" * 8 + "|"]
    for label, doc in docs:
        s = doc["setting1"]
        loc = doc.get("localisation") or {}
        crop = (loc.get("stn_crop1") or {}).get("pointing")
        cam = (loc.get("gradcam") or {}).get("pointing")
        sig = (f"{loc['sigma1_mean']:.3f} / {loc['sigma2_mean']:.3f}"
               if "sigma1_mean" in loc else "–")
        point = (f"{100 * crop:.1f} vs {100 * cam:.1f}" if crop is not None and cam is not None
                 else (f"– vs {100 * cam:.1f}" if cam is not None else "–"))
        pc = " / ".join(f"{100 * v:.0f}" for v in s["per_class_f1"])
        rows.append(f"| {label} | {s['n']} ({doc.get('stride', 1)}) | {100 * s['weighted_f1']:.1f} "
                    f"| {s['qwk']:.3f} | {100 * s['within_one']:.1f} | {pc} | {sig} | {point} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", metavar="LABEL=FILE")
    ap.add_argument("--weighted", action="store_true", help="weighted F1 instead of micro F1")
    args = ap.parse_args()
    docs = [load(s) for s in args.runs]
    print("\n".join(table_rows(docs, "weighted_f1" if args.weighted else "micro_f1")))
    print()
    print("\n".join(detail_rows(docs)))


if __name__ == "__main__":
    main()
