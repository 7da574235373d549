"""Video-level table on the severity-labelled POCUS clips from a `pleura score` JSON.

Usage:
    pleura score ../shared/data/pocus --json pocus.json
    python scripts/pocus_video_table.py pocus.json [--manifest ../shared/data/pocus/MANIFEST.csv]

Prints weighted precision / recall / F1 (%) and QWK of max_argmax, argmax_mean and the bundle's
running uninorm score against the clips' severity (Gare et al. 2022 labels), and the AUROC of
healthy (0) vs any finding (>= 1) with 1 - mean p(score 0) as the score.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from train.data.pocus import read_pocus_manifest
from train.metrics import confusion_matrix, quadratic_weighted_kappa
from train.video.metrics import auroc, weighted_prf

DEFAULT_MANIFEST = Path(__file__).resolve().parents[2] / "shared/data/pocus/MANIFEST.csv"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("score_json")
    ap.add_argument("--manifest", default=str(DEFAULT_MANIFEST))
    args = ap.parse_args()
    doc = json.loads(Path(args.score_json).read_text())
    by_name = {Path(c["path"]).name: c for c in doc["clips"]}
    clips = [c for c in read_pocus_manifest(args.manifest) if c.severity is not None]
    y, preds, any_finding = [], {"max_argmax": [], "argmax_mean": [], "uninorms": []}, []
    for clip in clips:
        rec = by_name[clip.filename]
        probs = np.array([f["probs"] for f in rec["frames"]])  # (N, 4)
        y.append(clip.severity)
        preds["max_argmax"].append(int(probs.argmax(1).max()))
        preds["argmax_mean"].append(int(probs.mean(0).argmax()))
        preds["uninorms"].append(int(rec["video"]["score"]))
        any_finding.append(float(1.0 - probs.mean(0)[0]))
    y_arr = np.array(y)
    print(f"{len(y)} clips; method: P / R / F1 (weighted, %), QWK")
    for name, p in preds.items():
        prec, rec_, f1 = weighted_prf(y, p)
        qwk = quadratic_weighted_kappa(confusion_matrix(y_arr, np.array(p)))
        print(f"{name:12s} {100 * prec:5.1f} / {100 * rec_:5.1f} / {100 * f1:5.1f}, QWK {qwk:.3f}")
    print(f"AUROC 0 vs >=1: {auroc((y_arr >= 1).astype(int), any_finding):.3f}")


if __name__ == "__main__":
    main()
