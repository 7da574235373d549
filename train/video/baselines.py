"""Video-level predictors of Table II (Roy et al. 2020, PAPER.md section 2).

- ``max_argmax``: the highest frame score, max over frames of argmax(p_frame).
- ``argmax_mean``: argmax of the mean frame probabilities.
- ``uninorms``: argmax of the per-class uninorm aggregate (its softmax is monotone), compared
  in the log domain so long clips whose aggregate underflows still get a score.

Each predictor returns ``(score, abnormal)``: the video score 0..3 and a number that ranks
videos by how abnormal (score >= 1 rather than 0) they look, for the binary AUROC:
max_argmax: the score itself; argmax_mean: 1 - mean p_0; uninorms:
max_{c>=1} log U_c - log U_0.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from engines.uninorm import uninorm_reduce_log


def max_argmax(P: np.ndarray, e: np.ndarray | None = None) -> tuple[int, float]:
    """(N, C) frame probabilities -> (max over frames of the frame argmax, same)."""
    s = int(np.max(np.argmax(P, axis=1)))
    return s, float(s)


def argmax_mean(P: np.ndarray, e: np.ndarray | None = None) -> tuple[int, float]:
    """(N, C) -> (argmax of the mean probabilities, 1 - mean p_0)."""
    m = P.mean(axis=0)
    return int(np.argmax(m)), float(1.0 - m[0])


def uninorms(P: np.ndarray, e: np.ndarray) -> tuple[int, float]:
    """(N, C), (C,) -> (argmax of the uninorm aggregate, max_{c>=1} log U_c - log U_0)."""
    log_agg = np.nan_to_num(uninorm_reduce_log(P, e), neginf=-1e300)
    return int(np.argmax(log_agg)), float(log_agg[1:].max() - log_agg[0])


METHODS: dict[str, Callable[[np.ndarray, np.ndarray], tuple[int, float]]] = {
    "max_argmax": max_argmax,
    "argmax_mean": argmax_mean,
    "uninorms": uninorms,
}
"""Table II's rows, in the paper's order."""


def predict_all(P: np.ndarray, e: np.ndarray) -> dict[str, tuple[int, float]]:
    """All three predictors on one video's (N, C) frame probabilities."""
    P = np.asarray(P, dtype=np.float64)
    if P.ndim != 2 or len(P) == 0:
        raise ValueError(f"need (N >= 1, C) frame probabilities, got shape {P.shape}")
    return {name: fn(P, np.asarray(e, dtype=np.float64)) for name, fn in METHODS.items()}
