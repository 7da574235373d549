"""Display-only helpers: the scoring core's outputs -> the RESULT message's fields.

The scoring itself (preprocess, engine, crop boxes and masks in source-frame pixels, running
uninorm and findings) is :mod:`engines.scorer`; nothing here changes a number, it only scales
source-pixel geometry to the display frame (the grey frame the worker scored, shrunk to at most
``max_side`` pixels on its long side), encodes masks and writes the RESULT's ``video``,
``crops`` and ``mask_display`` fields and its mask arrays, so the UI only draws.
"""

from __future__ import annotations

import cv2
import numpy as np

from engines.scorer import RunningScore

WHOLE_FRAME_NOTE = "whole-frame model: it scores the whole frame, so there are no crops to draw"


def display_frame(grey: np.ndarray, max_side: int = 640) -> tuple[np.ndarray, float]:
    """(H, W) uint8 -> (h, w) uint8 with ``max(h, w) <= max_side`` and the scale used."""
    h, w = grey.shape[:2]
    scale = min(1.0, max_side / float(max(h, w)))
    if scale >= 1.0:
        return grey, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA), scale


def display_boxes(boxes: np.ndarray, scale: float) -> list[list[list[float]]]:
    """Both crops' source-pixel corners (:func:`engines.scorer.locate`) in display pixels.

    Args:
        boxes: (2, 4, 2) corners (x, y) in source-frame pixels, crop 1 then crop 2.
        scale: display / source size (:func:`display_frame`).

    Returns:
        [[[x, y] x 4] crop 1, [[x, y] x 4] crop 2], corners TL, TR, BR, BL, rounded to 0.01.
    """
    return np.round(np.asarray(boxes, dtype=np.float64) * scale, 2).tolist()


def crops_meta(whole_frame: bool, localises: bool, note: str) -> dict:
    """The RESULT ``crops`` field: whether the page draws the crop boxes by default and why.

    Args:
        whole_frame: the frame's θ are the identity (:func:`engines.postprocess.is_identity`);
            no boxes are sent.
        localises: the bundle's crops localise the findings (manifest
            ``models.frame.localises``, :attr:`engines.bundle.Bundle.crops_localise`).
        note: the bundle's ``localisation_note`` (shown when the boxes are hidden).

    Returns:
        ``{"whole_frame": bool, "show": bool, "note": str}``: ``show`` is the default of the
        page's crop switch; ``note`` says why boxes are hidden ("" when they are shown).
    """
    if whole_frame:
        return {"whole_frame": True, "show": False, "note": WHOLE_FRAME_NOTE}
    return {"whole_frame": False, "show": bool(localises), "note": "" if localises else note}


def mask_display_meta(shown: bool, note: str) -> dict:
    """The RESULT ``mask_display`` field: the page's default for its mask switch and why
    (:attr:`engines.bundle.Bundle.masks_shown`)."""
    return {"show": bool(shown), "note": "" if shown else note}


def video_meta(running: RunningScore, restarted: bool) -> dict:
    """The RESULT ``video`` field of a stream's running video score.

    ``probs`` is Roy et al.'s softmax of the aggregate (kept for scripts; ~0.25 each once a
    long clip's aggregate saturates); the page shows ``evidence``
    (:func:`engines.uninorm.evidence_shares`, whose argmax is ``score``) and ``frame_share``,
    the fraction of the video's frames whose own score is 0..3.
    """
    agg = running.agg
    n = agg.n_frames
    log_agg = agg.log_value
    return {"probs": agg.probs.tolist(), "score": agg.score, "n_frames": n,
            "restarted": restarted, "evidence": agg.evidence.tolist(),
            "log_aggregate": [float(v) if np.isfinite(v) else None for v in log_agg],
            "frame_share": [c / n if n else 0.0 for c in running.frame_counts],
            "findings": None}


def mask_arrays(labels: np.ndarray, unc: np.ndarray | None,
                display_hw: tuple[int, int]) -> dict[str, np.ndarray]:
    """One frame's masks in source pixels (:func:`engines.scorer.segment`) -> the RESULT's
    ``mask`` / ``unc`` arrays (:class:`stream.messages.Result`; they travel as raw arrays in
    the same wire message, not as images inside the JSON).

    Args:
        labels: (H, W) uint8 label map 0..4 (0 = BG, s + 1 = score s), source pixels.
        unc: (H, W) uint8 uncertainty map or None, source pixels.
        display_hw: (h, w) of the display frame.

    Returns:
        {"mask": (h, w) uint8 labels[, "unc": (h, w) uint8]}, resized to the display frame
        (nearest-neighbour resp. bilinear).
    """
    h, w = display_hw
    out = {"mask": cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)}
    if unc is not None:
        out["unc"] = cv2.resize(unc, (w, h), interpolation=cv2.INTER_LINEAR)
    return out


def timing_ms(stamps: np.ndarray) -> dict[str, float]:
    """Per-stage durations (ms) from the 8 wire stamps; stages not reached are left out."""
    names = ("capture", "transport", "preprocess", "frame_model", "postprocess", "publish",
             "display")
    out = {}
    for i, name in enumerate(names):
        a, b = float(stamps[i]), float(stamps[i + 1])
        if a > 0 and b > 0:
            out[name] = round((b - a) * 1000.0, 3)
    return out
