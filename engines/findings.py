"""The frame model's findings output: naming, checking and summarising it over a clip.

A frame model may have a 4th output ``findings``: (B, F) float32 sigmoid probabilities, one
per finding named in the bundle manifest's ``models.frame.finding_names`` (e.g. B-lines,
consolidations). These are whole-frame multi-label probabilities, independent of the score.

Per clip every finding is summarised by its mean, max and the share of frames at or above
:data:`PRESENT_AT`; a finding is *present* in the clip when its mean reaches :data:`PRESENT_AT`.
:class:`RunningFindings` keeps that summary in O(F) memory and O(F) time per frame, so the
live worker and ``pleura score`` report the same numbers from the same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

PRESENT_AT = 0.5
"""Probability at or above which a frame shows a finding (and a clip mean makes it present)."""

FINDING_LABELS: dict[str, str] = {
    "b_lines": "B-lines",
    "consolidations": "consolidation",
    "effusion": "pleural effusion",
    "a_lines": "A-lines",
    "pleural_irregularities": "pleural irregularity",
}
"""Plain clinical words for the finding names a bundle may use."""

ROUND = 6


def finding_label(name: str) -> str:
    """Clinical words for a finding name (``"b_lines"`` -> ``"B-lines"``); unknown names are
    shown with spaces for underscores."""
    return FINDING_LABELS.get(name, name.replace("_", " "))


def resolve_names(names: Sequence[str], n_findings: int) -> tuple[str, ...]:
    """The names of an F-wide findings output: the bundle's, or ``finding_0..`` when the bundle
    names a different number (a manifest that does not match its model)."""
    names = tuple(names)
    return names if len(names) == n_findings else tuple(f"finding_{k}"
                                                         for k in range(n_findings))


def check_findings(p: np.ndarray, n_findings: int) -> np.ndarray:
    """One frame's findings as (F,) float64 in [0, 1].

    Raises:
        ValueError: wrong size or non-finite values (the caller drops the frame).
    """
    v = np.asarray(p, dtype=np.float64).reshape(-1)
    if v.shape != (n_findings,):
        raise ValueError(f"expected {n_findings} finding probabilities, got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"finding probabilities must be finite; got {v.tolist()}")
    return np.clip(v, 0.0, 1.0)


def findings_dict(names: Sequence[str], p: np.ndarray) -> dict[str, float]:
    """(F,) probabilities -> ``{name: prob}`` rounded to 6 decimals (the RESULT / JSON form)."""
    return {n: round(float(v), ROUND) for n, v in zip(names, np.asarray(p).reshape(-1),
                                                      strict=True)}


def summary_dict(names: Sequence[str], mean: np.ndarray, peak: np.ndarray,
                 fraction: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per finding ``{"mean", "max", "fraction", "present"}`` from (F,) statistics."""
    return {n: {"mean": round(float(m), ROUND), "max": round(float(x), ROUND),
                "fraction": round(float(f), ROUND), "present": bool(m >= PRESENT_AT)}
            for n, m, x, f in zip(names, mean, peak, fraction, strict=True)}


def summarise(names: Sequence[str], P: np.ndarray) -> dict[str, dict[str, Any]] | None:
    """Clip summary of (N, F) frame findings at once (None for N = 0).

    mean_f = (1/N) sum_n P[n, f]; max_f = max_n P[n, f]; fraction_f = |{n: P[n, f] >= 0.5}| / N.
    """
    P = np.asarray(P, dtype=np.float64)
    if P.ndim != 2 or P.shape[0] == 0:
        return None
    return summary_dict(names, P.mean(axis=0), P.max(axis=0), (P >= PRESENT_AT).mean(axis=0))


class RunningFindings:
    """Running clip summary of the findings: O(F) state, O(F) per frame.

    Keeps the sum, the max and the count of frames at or above :data:`PRESENT_AT` per finding;
    :meth:`summary` equals :func:`summarise` of every frame so far.

    Args:
        names: the F finding names.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self.reset()

    def reset(self) -> None:
        """Forget every frame (a new clip or a restarted stream)."""
        f = len(self.names)
        self._sum = np.zeros(f)
        self._max = np.zeros(f)
        self._hits = np.zeros(f, dtype=np.int64)
        self._n = 0

    @property
    def n_frames(self) -> int:
        return self._n

    @property
    def mean(self) -> np.ndarray:
        """(F,) running mean (zeros before the first frame)."""
        return self._sum / max(self._n, 1)

    def update(self, p: np.ndarray) -> None:
        """Add one frame's (F,) findings.

        Raises:
            ValueError: from :func:`check_findings`; the state is left unchanged.
        """
        v = check_findings(p, len(self.names))
        self._sum += v
        self._max = np.maximum(self._max, v)
        self._hits += v >= PRESENT_AT
        self._n += 1

    def summary(self) -> dict[str, dict[str, Any]] | None:
        """``{name: {"mean", "max", "fraction", "present"}}``, None before the first frame."""
        if self._n == 0:
            return None
        return summary_dict(self.names, self.mean, self._max, self._hits / self._n)
