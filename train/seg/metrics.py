"""Segmentation metrics of Table IV and the MC-dropout uncertainty (pure numpy).

Label maps are (H, W) integer arrays with 0 = BG and s + 1 = score s (values 0..4); pixels
equal to :data:`IGNORE` (255) are left out of every metric. Per-frame values are averaged over
frames by the callers; a Dice that is undefined for a frame (class absent from both prediction
and ground truth) is NaN and left out of the mean (``np.nanmean``).
"""

from __future__ import annotations

import cv2
import numpy as np

IGNORE = 255
COVID_LABELS = (2, 3, 4)
"""Labels of scores 1, 2, 3: the "COVID" union of the paper's binary Dice."""
CAT_DICE_LABELS = (1, 3, 4)
"""Labels of scores 0, 2, 3: the paper's categorical Dice is their mean (PAPER.md, Table IV)."""


def pixel_accuracy(pred: np.ndarray, gt: np.ndarray) -> float:
    """Fraction of correctly labelled pixels, ``sum(pred == gt) / N`` over non-ignored pixels.

    Args:
        pred, gt: (H, W) label maps.

    Returns:
        Accuracy in [0, 1]; NaN if every pixel is ignored.
    """
    valid = gt != IGNORE
    n = int(valid.sum())
    return float(np.sum((pred == gt) & valid) / n) if n else float("nan")


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice coefficient of two boolean masks, ``2 |P ∩ G| / (|P| + |G|)``.

    Args:
        pred, gt: (H, W) bool.

    Returns:
        Dice in [0, 1]; NaN when both masks are empty (undefined, left out of means).
    """
    s = int(pred.sum()) + int(gt.sum())
    if s == 0:
        return float("nan")
    return float(2.0 * np.logical_and(pred, gt).sum() / s)


def binary_covid_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice of the union of COVID classes (scores 1-3, labels 2-4), Roy et al. 2020 Table IV.

    ``dice(pred in {2,3,4}, gt in {2,3,4})`` over non-ignored pixels.
    """
    valid = gt != IGNORE
    return dice(np.isin(pred, COVID_LABELS) & valid, np.isin(gt, COVID_LABELS) & valid)


def class_dice(pred: np.ndarray, gt: np.ndarray, labels: tuple[int, ...] = CAT_DICE_LABELS,
               ) -> np.ndarray:
    """Per-class Dice ``dice(pred == c, gt == c)`` for each label ``c``.

    Returns:
        (len(labels),) float64, NaN where the class is in neither map.
    """
    valid = gt != IGNORE
    return np.array([dice((pred == c) & valid, (gt == c) & valid) for c in labels])


def categorical_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean Dice over scores 0, 2 and 3 (labels 1, 3, 4), Roy et al. 2020 Table IV.

    ``nanmean_c dice(pred == c, gt == c)``; NaN if none of the classes is present.
    """
    d = class_dice(pred, gt)
    return float(np.nanmean(d)) if np.isfinite(d).any() else float("nan")


def mc_summary(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MC-dropout summary of T stochastic softmax outputs (Gal & Ghahramani 2016).

    ``mean = (1/T) sum_t p_t``; uncertainty = per-pixel standard deviation over the T passes of
    the probability of the predicted class ``argmax_c mean_c``.

    Args:
        probs: (T, C, H, W) softmax outputs.

    Returns:
        mean (C, H, W) and std (H, W), both float32.
    """
    mean = probs.mean(axis=0)
    label = mean.argmax(axis=0)
    std_all = probs.std(axis=0)                                   # (C, H, W)
    std = np.take_along_axis(std_all, label[None], axis=0)[0]
    return mean.astype(np.float32), std.astype(np.float32)


def region_boundary(label: np.ndarray, width: int = 1) -> np.ndarray:
    """Pixels within ``width`` of a change of label: dilation != erosion (3x3 cross).

    Args:
        label: (H, W) integer label map.

    Returns:
        (H, W) bool boundary mask.
    """
    lab = label.astype(np.uint8)
    k = cv2.getStructuringElement(cv2.MORPH_CROSS, (2 * width + 1, 2 * width + 1))
    return cv2.dilate(lab, k) != cv2.erode(lab, k)


def uncertainty_inside_vs_boundary(std: np.ndarray, pred: np.ndarray, width: int = 1,
                                   ) -> tuple[float, float]:
    """Mean uncertainty inside predicted regions vs on their boundaries.

    Regions are the predicted non-BG classes. ``boundary`` = :func:`region_boundary` pixels
    touching a region; ``inside`` = region pixels not on a boundary.

    Args:
        std: (H, W) per-pixel uncertainty; pred: (H, W) predicted labels.

    Returns:
        (mean inside, mean boundary); NaN where a set is empty.
    """
    bnd = region_boundary(pred, width)
    region = pred > 0
    k = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    near_region = cv2.dilate(region.astype(np.uint8), k) > 0
    on_bnd = bnd & near_region
    inside = region & ~bnd
    mi = float(std[inside].mean()) if inside.any() else float("nan")
    mb = float(std[on_bnd].mean()) if on_bnd.any() else float("nan")
    return mi, mb
