"""Pure helpers that turn model outputs into the RESULT message (display frame, boxes, masks).

The display frame is the grey frame the worker scored, shrunk to at most ``max_side`` pixels on
its long side; boxes and masks are given in its pixel coordinates, so the UI only draws.
"""

from __future__ import annotations

import cv2
import numpy as np

from engines.postprocess import label_map, theta_corners, uncertainty_u8
from engines.preprocess import Letterbox
from engines.uninorm import RunningUninorm

IDENTITY_ATOL = 1e-3
"""Largest deviation of a θ from the identity that still counts as "no crop"."""
WHOLE_FRAME_NOTE = "whole-frame model: it scores the whole frame, so there are no crops to draw"


def display_frame(grey: np.ndarray, max_side: int = 640) -> tuple[np.ndarray, float]:
    """(H, W) uint8 -> (h, w) uint8 with ``max(h, w) <= max_side`` and the scale used."""
    h, w = grey.shape[:2]
    scale = min(1.0, max_side / float(max(h, w)))
    if scale >= 1.0:
        return grey, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA), scale


def crop_boxes_display(theta1: np.ndarray, theta2: np.ndarray, lb: Letterbox,
                       in_hw: tuple[int, int], scale: float) -> list[list[list[float]]]:
    """Both STN crops as display-frame corners.

    model-input pixels (:func:`engines.postprocess.theta_corners`) -> source pixels
    (:meth:`Letterbox.to_source`) -> display pixels (``* scale``).

    Returns:
        [[[x, y] x 4] crop 1, [[x, y] x 4] crop 2], corners TL, TR, BR, BL.
    """
    out = []
    for theta in (theta1, theta2):
        src = lb.to_source(theta_corners(theta, in_hw)) * scale
        out.append(np.round(src, 2).tolist())
    return out


def is_identity(*thetas: np.ndarray, atol: float = IDENTITY_ATOL) -> bool:
    """True when every (2, 3) affine θ is the identity: the "crop" is the whole model input.

    A whole-frame model (e.g. CNN + SORD) exports θ = identity so the runtime stays the same;
    its boxes would frame the whole letterboxed input and mean nothing.
    """
    eye = np.eye(2, 3)
    return all(np.allclose(np.asarray(t, dtype=np.float64).reshape(2, 3), eye, rtol=0.0,
                           atol=atol) for t in thetas)


def crops_meta(whole_frame: bool, localises: bool, note: str) -> dict:
    """The RESULT ``crops`` field: whether the page draws the crop boxes by default and why.

    Args:
        whole_frame: the frame's θ are the identity (:func:`is_identity`); no boxes are sent.
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


def video_meta(agg: RunningUninorm, frame_counts: list[int], restarted: bool) -> dict:
    """The RESULT ``video`` field of a stream's running video score.

    ``probs`` is Roy et al.'s softmax of the aggregate (kept for scripts; ~0.25 each once a
    long clip's aggregate saturates); the page shows ``evidence``
    (:func:`engines.uninorm.evidence_shares`, whose argmax is ``score``) and ``frame_share``,
    the fraction of the video's frames whose own score is 0..3.
    """
    n = agg.n_frames
    log_agg = agg.log_value
    return {"probs": agg.probs.tolist(), "score": agg.score, "n_frames": n,
            "restarted": restarted, "evidence": agg.evidence.tolist(),
            "log_aggregate": [float(v) if np.isfinite(v) else None for v in log_agg],
            "frame_share": [c / n if n else 0.0 for c in frame_counts], "findings": None}


def mask_arrays(probs: np.ndarray, std: np.ndarray | None, lb: Letterbox,
                display_hw: tuple[int, int]) -> dict[str, np.ndarray]:
    """One frame's segmentation -> the RESULT's ``mask`` / ``unc`` arrays
    (:class:`stream.messages.Result`; they travel as raw arrays in the same wire message, not
    as images inside the JSON).

    Args:
        probs: (5, H, W) softmax in the seg model's input space.
        std: (H, W) MC std or None.
        lb: the seg input's letterbox of the source frame.
        display_hw: (h, w) of the display frame.

    Returns:
        {"mask": (h, w) uint8 label map 0..4 (0 = BG, s + 1 = score s)[, "unc": (h, w) uint8
        std map]}, display-frame sized (nearest-neighbour resp. bilinear).
    """
    h, w = display_hw
    labels = lb.unletterbox(label_map(probs))
    out = {"mask": cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)}
    if std is not None:
        u = lb.unletterbox(uncertainty_u8(std), interpolation=cv2.INTER_LINEAR)
        out["unc"] = cv2.resize(u, (w, h), interpolation=cv2.INTER_LINEAR)
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
