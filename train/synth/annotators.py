"""Frame and video ground truth, and the five noisy clinicians.

Roy et al. 2020 (sec. IV-B) had five clinicians score videos; they agreed on about two
thirds. Here a *clinician's rule* gives the true video score and each annotator reports a
noisy version of it: right with probability ``p_correct``, otherwise one step off (towards
their personal bias). With ``p_correct = 0.8`` the expected pairwise agreement is about 0.66.
"""

from __future__ import annotations

import cv2
import numpy as np

N_ANNOTATORS = 5
MIN_MARKER_PIXELS = 40
"""A marker smaller than this (frame pixels) does not count towards a frame's score."""


def frame_score(label_map: np.ndarray, sector_area: int, min_frac: float = 0.006,
                min_pixels: int = MIN_MARKER_PIXELS) -> int:
    """Score of a frame from its mask: the highest score whose markers cover enough pixels.

    Args:
        label_map: (H, W) uint8, 0 = background, s + 1 = score s.
        sector_area: pixels inside the scan sector.
        min_frac, min_pixels: a marker counts when it covers ``max(min_pixels,
            min_frac * sector_area)`` pixels (a sliver at the edge of the view does not).

    Returns:
        0..3 (0 also when nothing is visible, e.g. a rib shadow over everything).
    """
    counts = cv2.calcHist([label_map], [0], None, [5], [0, 5]).ravel()
    need = max(min_pixels, min_frac * sector_area)
    present = [s for s in range(4) if counts[s + 1] >= need]
    return max(present) if present else 0


def clinician_video_score(frame_scores: np.ndarray, min_frac: float = 0.15) -> int:
    """The worst score seen in at least ``min_frac`` of the frames (Soldati: worst finding)."""
    counts = np.bincount(np.asarray(frame_scores, np.int64), minlength=4)
    need = max(1.0, min_frac * len(frame_scores))
    present = [s for s in range(4) if counts[s] >= need]
    return max(present) if present else int(np.argmax(counts))


def annotator_biases(rng: np.random.Generator, n: int = N_ANNOTATORS) -> np.ndarray:
    """(n,) probability that an annotator's mistake goes *up* rather than down."""
    return rng.uniform(0.25, 0.75, n)


def noisy_annotations(true_score: int, biases: np.ndarray, rng: np.random.Generator,
                      p_correct: float = 0.8) -> list[int]:
    """Five video scores: each the true one w.p. ``p_correct``, else one step off (clipped)."""
    out = []
    for b in biases:
        s = true_score
        if rng.random() >= p_correct:
            step = 1 if rng.random() < b else -1
            if not 0 <= s + step <= 3:
                step = -step
            s += step
        out.append(int(s))
    return out


def pairwise_agreement(ann: np.ndarray) -> float:
    """Mean fraction of annotator pairs that agree, over videos. ``ann``: (V, A) int."""
    ann = np.asarray(ann)
    a = ann.shape[1]
    pairs = [(i, j) for i in range(a) for j in range(i + 1, a)]
    return float(np.mean([np.mean(ann[:, i] == ann[:, j]) for i, j in pairs]))
