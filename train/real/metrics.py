"""Clip-level metrics of the real-scan evaluation (grouped CV, LOSO, reference rows)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from train.metrics import within_one_accuracy
from train.video.evaluate import video_summary


def video_metrics(y: Sequence[int], preds: Sequence[tuple[int, float]]) -> dict[str, Any]:
    """Clip-level metrics of one method (:func:`train.video.evaluate.video_summary`) plus
    within-one accuracy and the specificity on healthy clips."""
    base = video_summary(y, preds)
    yt = np.asarray(y, dtype=np.int64)
    yp = np.asarray([p[0] for p in preds], dtype=np.int64)
    healthy = yt == 0
    return {"weighted_f1": base["f1"], "accuracy": base["accuracy"], "qwk": base["qwk"],
            "within_one": within_one_accuracy(yt, yp),
            "auroc_0_vs_1plus": base["auroc_0_vs_1plus"],
            "specificity_healthy": float(np.mean(yp[healthy] == 0)) if healthy.any()
            else float("nan"),
            "confusion": base["confusion"], "n": base["n"]}
