"""Tables II and III (Roy et al. 2020) from cross-validated video predictions and real clips."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from train.metrics import confusion_matrix, quadratic_weighted_kappa
from train.video.baselines import METHODS, predict_all
from train.video.metrics import auroc, mean_sd, weighted_prf


def _scores(videos: Sequence[str], probs: Mapping[str, np.ndarray], e: np.ndarray
            ) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {m: [] for m in METHODS}
    for vid in videos:
        for m, pred in predict_all(probs[vid], e).items():
            out[m].append(pred)
    return out


def video_summary(y: Sequence[int], preds: Sequence[tuple[int, float]]) -> dict[str, Any]:
    """Clip-level metrics of one predictor: weighted P/R/F1, accuracy, QWK, confusion, AUROC."""
    y, yhat = list(y), [p[0] for p in preds]
    cm = confusion_matrix(np.asarray(y, dtype=np.int64), np.asarray(yhat, dtype=np.int64))
    p, r, f = weighted_prf(y, yhat)
    acc = float(np.mean(np.equal(y, yhat))) if y else float("nan")
    return {"precision": p, "recall": r, "f1": f, "accuracy": acc,
            "qwk": quadratic_weighted_kappa(cm), "confusion": cm.tolist(),
            "confusion_pct": (100.0 * cm / max(1, cm.sum())).round(1).tolist(),
            "auroc_0_vs_1plus": auroc([int(v >= 1) for v in y], [q[1] for q in preds]),
            "n": len(y)}


def cv_report(folds: Sequence[Mapping[str, Any]], labels: Mapping[str, int],
              probs: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Table II (mean ± sd over folds) and Table III (pooled confusion, % of videos).

    Args:
        folds: per fold ``{"test": [video ids], "e": [4 floats]}``.
        labels: video id -> score.
        probs: video id -> (N, 4) frame probabilities.

    Returns:
        ``{"methods": {name: {"folds": [per-fold summary], "f1"|"precision"|"recall":
        {"mean", "sd"}, "pooled": summary over all test videos}}, "n_videos", "n_folds",
        "label_counts"}``.
    """
    methods: dict[str, Any] = {m: {"folds": []} for m in METHODS}
    pooled_y: list[int] = []
    pooled: dict[str, list[tuple[int, float]]] = {m: [] for m in METHODS}
    for fold in folds:
        vids = list(fold["test"])
        y = [int(labels[v]) for v in vids]
        preds = _scores(vids, probs, np.asarray(fold["e"], dtype=np.float64))
        pooled_y += y
        for m in METHODS:
            methods[m]["folds"].append(video_summary(y, preds[m]))
            pooled[m] += preds[m]
    for m in METHODS:
        for k in ("f1", "precision", "recall", "qwk"):
            mu, sd = mean_sd([f[k] for f in methods[m]["folds"]])
            methods[m][k] = {"mean": mu, "sd": sd}
        methods[m]["pooled"] = video_summary(pooled_y, pooled[m])
    counts = np.bincount(pooled_y, minlength=4).tolist() if pooled_y else [0] * 4
    return {"methods": methods, "n_videos": len(pooled_y), "n_folds": len(folds),
            "label_counts": counts}


def holdout_report(labels: Mapping[str, int], probs: Mapping[str, np.ndarray],
                   e: Sequence[float]) -> dict[str, Any]:
    """The same metrics on one labelled set with one e (e.g. the real clips)."""
    vids = sorted(labels)
    y = [int(labels[v]) for v in vids]
    preds = _scores(vids, probs, np.asarray(e, dtype=np.float64))
    return {"methods": {m: video_summary(y, preds[m]) for m in METHODS}, "n_videos": len(y),
            "label_counts": np.bincount(y, minlength=4).tolist() if y else [0] * 4,
            "e": [float(v) for v in e]}


def _pct(x: float) -> str:
    return "  n/a" if not np.isfinite(x) else f"{100 * x:5.1f}"


def format_cv(rep: Mapping[str, Any]) -> str:
    """Table II (weighted %, mean ± sd over folds), QWK, AUROC and Table III as text."""
    lines = [f"Table II - video score, {rep['n_folds']}-fold CV by patient, "
             f"{rep['n_videos']} videos (labels 0/1/2/3: {rep['label_counts']}); "
             "weighted over classes, %, mean ± sd over folds",
             f"{'method':<12} {'F1':>13} {'precision':>13} {'recall':>13} {'QWK':>6} "
             f"{'AUROC0|1+':>9}"]
    for m, r in rep["methods"].items():
        cells = " ".join(f"{_pct(r[k]['mean'])} ± {_pct(r[k]['sd']).strip():>5}"
                         for k in ("f1", "precision", "recall"))
        lines.append(f"{m:<12} {cells} {r['pooled']['qwk']:6.3f} "
                     f"{r['pooled']['auroc_0_vs_1plus']:9.3f}")
    lines.append("(QWK and AUROC on all test videos pooled over folds)")
    lines += _confusions({m: r["pooled"] for m, r in rep["methods"].items()})
    return "\n".join(lines)


def format_holdout(rep: Mapping[str, Any], title: str) -> str:
    lines = [f"{title}: {rep['n_videos']} videos (labels 0/1/2/3: {rep['label_counts']}), "
             f"e = {np.round(rep['e'], 3).tolist()}",
             f"{'method':<12} {'F1':>6} {'prec.':>6} {'recall':>6} {'QWK':>6} {'AUROC0|1+':>9}"]
    for m, r in rep["methods"].items():
        lines.append(f"{m:<12} {_pct(r['f1'])}  {_pct(r['precision'])}  {_pct(r['recall'])} "
                     f"{r['qwk']:6.3f} {r['auroc_0_vs_1plus']:9.3f}")
    lines += _confusions(rep["methods"])
    return "\n".join(lines)


def _confusions(summaries: Mapping[str, Mapping[str, Any]]) -> list[str]:
    lines = ["Table III - confusion, % of all videos (rows truth 0..3, columns predicted 0..3)"]
    for m, s in summaries.items():
        rows = " / ".join(" ".join(f"{v:4.1f}" for v in row) for row in s["confusion_pct"])
        lines.append(f"  {m:<12} [{rows}]")
    return lines
