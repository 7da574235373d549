"""Video-level metrics not in :mod:`train.metrics` (pure numpy): weighted precision and
recall, binary AUROC, mean ± sd over folds.

Table II of Roy et al. 2020 reports precision, recall and F1 *weighted* over classes by their
support. Confusion matrices, F1 and QWK come from :mod:`train.metrics`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from train.metrics import confusion_matrix, f1_scores


def auroc(y_true: Sequence[int] | np.ndarray, score: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve of a binary problem (Mann-Whitney U, ties count one half).

    ``AUROC = P(score(pos) > score(neg)) + 0.5 * P(score(pos) == score(neg))``.

    Args:
        y_true: (N,) 0/1 labels.
        score: (N,) higher = more likely positive.

    Returns:
        AUROC in [0, 1], or NaN when one class is absent.
    """
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    # Average ranks handle ties exactly.
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = ranks[y].sum() - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(pos) * len(neg)))


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for one value) ignoring NaN."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def weighted_prf(y_true: Sequence[int], y_pred: Sequence[int],
                 n_classes: int = 4) -> tuple[float, float, float]:
    """Precision, recall and F1 per class, averaged with weights = class support.

    ``P_c = TP_c / (TP_c + FP_c)``, ``R_c = TP_c / (TP_c + FN_c)`` (0 where undefined), F1 from
    :func:`train.metrics.f1_scores` (``weighted_f1``), each weighted by the number of true
    videos of class c: the "weighted" average of Roy et al. 2020 Table II. Weighted recall
    equals accuracy.
    """
    cm = confusion_matrix(np.asarray(y_true), np.asarray(y_pred), n_classes).astype(np.float64)
    tp = np.diag(cm)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    p = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    r = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    n = support.sum()
    if n == 0:
        return 0.0, 0.0, 0.0
    f1 = f1_scores(cm)["weighted_f1"]
    return float((p * support).sum() / n), float((r * support).sum() / n), float(f1)
