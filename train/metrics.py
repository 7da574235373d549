"""Frame-level evaluation metrics and the evaluation settings of Roy et al. 2020 (Table I).

Pure numpy. ``micro F1`` (the F1 of the paper's released code) equals accuracy for
single-label classification; ``weighted F1`` averages per-class F1 weighted by class support.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = 4) -> np.ndarray:
    """(n_classes, n_classes) int64 counts, rows = truth, columns = prediction."""
    t = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(y_pred, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape} vs {p.shape}")
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def f1_scores(cm: np.ndarray) -> dict[str, float]:
    """F1 variants from a confusion matrix.

    Per class: F1_c = 2·TP / (2·TP + FP + FN) (0 where the class never occurs nor is predicted).
    micro = Σ TP / N (= accuracy); macro = mean_c F1_c; weighted = Σ_c n_c F1_c / N.
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    denom = 2 * tp + fp + fn
    per = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    n = cm.sum()
    support = cm.sum(1)
    return {
        "micro_f1": float(tp.sum() / n) if n else 0.0,
        "macro_f1": float(per.mean()),
        "weighted_f1": float((per * support).sum() / n) if n else 0.0,
        "per_class_f1": [float(v) for v in per],
    }


def quadratic_weighted_kappa(cm: np.ndarray) -> float:
    """Cohen's kappa with quadratic weights w_ij = (i − j)² / (C − 1)².

    κ = 1 − Σ w·O / Σ w·E, with E the outer product of the marginals scaled to N.
    """
    o = np.asarray(cm, dtype=np.float64)
    c = o.shape[0]
    n = o.sum()
    if n == 0:
        return 0.0
    i, j = np.indices((c, c))
    w = (i - j) ** 2 / (c - 1) ** 2
    e = np.outer(o.sum(1), o.sum(0)) / n
    den = (w * e).sum()
    return float(1.0 - (w * o).sum() / den) if den > 0 else 1.0


def within_one_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of predictions with |pred − truth| ≤ 1."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    return float(np.mean(np.abs(t - p) <= 1)) if t.size else 0.0


def classification_report(y_true: np.ndarray, y_pred: np.ndarray,
                          n_classes: int = 4) -> dict[str, object]:
    """All Setting-1 numbers: micro F1 (= accuracy), weighted/macro F1, confusion, QWK, ±1 acc."""
    cm = confusion_matrix(y_true, y_pred, n_classes)
    rep: dict[str, object] = dict(f1_scores(cm))
    rep.update({"accuracy": rep["micro_f1"], "qwk": quadratic_weighted_kappa(cm),
                "within_one": within_one_accuracy(y_true, y_pred), "n": int(cm.sum()),
                "confusion": cm.tolist()})
    return rep


def near_change_mask(scores: Sequence[int], k: int) -> np.ndarray:
    """Setting 2 of Roy et al. 2020: drop K frames on each side of every score change.

    For consecutive frames t−1, t with s[t] ≠ s[t−1], frames t−K … t+K−1 are dropped
    (K before the change and K after it).

    Args:
        scores: (N,) ground-truth scores of one video in frame order.
        k: frames dropped on each side (0 keeps everything).

    Returns:
        (N,) bool, True = keep.
    """
    s = np.asarray(scores)
    keep = np.ones(s.shape[0], dtype=bool)
    if k <= 0 or s.size < 2:
        return keep
    for t in np.nonzero(s[1:] != s[:-1])[0] + 1:
        keep[max(0, t - k):min(s.size, t + k)] = False
    return keep


def annotator_agreement(annotators: Sequence[int | None]) -> int:
    """Largest number of annotators giving the same video score (None = not annotated)."""
    votes = Counter(a for a in annotators if a is not None)
    return max(votes.values()) if votes else 0


def setting3_videos(annotations: dict[str, Sequence[int | None]],
                    min_agree: int | None) -> list[str]:
    """Setting 3: video ids annotated at video level, with ≥ ``min_agree`` agreeing annotators.

    Args:
        annotations: {video_id: five annotator scores (None = missing)}.
        min_agree: A (3 or 4 in Table I); None keeps every annotated video ("video-ann.").
    """
    need = 1 if min_agree is None else min_agree
    return sorted(v for v, a in annotations.items() if annotator_agreement(a) >= need)
