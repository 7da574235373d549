"""Model outputs -> geometry in source-frame pixels: STN crop corners, whole-frame check,
label maps and uncertainty images (stage 3 of :mod:`engines.scorer`).

Pure numpy (cv2 only to map masks back through the letterbox); coordinates are *continuous*
pixel coordinates (0 = the left edge of the first pixel, W = the right edge of the last), the
convention of :meth:`engines.preprocess.Letterbox.to_source`. Scaling to the display frame and
encoding for the wire are the caller's (:mod:`stream.result_fields`).
"""

from __future__ import annotations

import cv2
import numpy as np

from engines.base import FrameOutput
from engines.preprocess import Letterbox

UNIT_SQUARE = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
"""Corners of the output sampling grid in normalised coordinates: TL, TR, BR, BL."""

IDENTITY_ATOL = 1e-3
"""Largest deviation of a θ from the identity that still counts as "no crop"."""

UNCERTAINTY_FULL_SCALE = 0.5
"""Std that maps to 255 in :func:`uncertainty_u8` (the RESULT's ``unc`` array)."""


def theta_corners(theta: np.ndarray, in_hw: tuple[int, int]) -> np.ndarray:
    """Corners of an STN crop in model-input pixels.

    The STN samples its crop at input points ``[x_in, y_in]^T = theta @ [x_out, y_out, 1]^T``
    for output-grid points in [-1, 1]^2 (``affine_grid``, Jaderberg et al. 2015; Roy et al.
    2020 section 1). With ``align_corners=False`` the normalised -1 and 1 are the outer edges of
    the image, so the pixel coordinate is ``px = (x_in + 1) * W / 2``, ``py = (y_in + 1) * H / 2``.

    Args:
        theta: (2, 3) affine transform.
        in_hw: (H, W) of the model input the STN saw (224, 224).

    Returns:
        (4, 2) float64 corners (x, y): top-left, top-right, bottom-right, bottom-left of the
        crop's output grid (a rotated quadrilateral in general).
    """
    theta = np.asarray(theta, dtype=np.float64).reshape(2, 3)
    h, w = in_hw
    src = UNIT_SQUARE @ theta[:, :2].T + theta[:, 2]  # (4, 2) normalised input coordinates
    return (src + 1.0) * np.array([w, h]) / 2.0


def theta_corners_batch(theta: np.ndarray, in_hw: tuple[int, int]) -> np.ndarray:
    """(B, 2, 3) transforms -> (B, 4, 2) corners, as :func:`theta_corners`."""
    theta = np.asarray(theta, dtype=np.float64).reshape(-1, 2, 3)
    h, w = in_hw
    src = np.einsum("kj,bij->bki", UNIT_SQUARE, theta[:, :, :2]) + theta[:, None, :, 2]
    return (src + 1.0) * np.array([w, h]) / 2.0


def crop_boxes(out: FrameOutput, in_hw: tuple[int, int]) -> np.ndarray:
    """Both STN crops of a batch: (B, 2, 4, 2) model-input pixel corners (crop 1, crop 2)."""
    return np.stack([theta_corners_batch(out.theta1, in_hw),
                     theta_corners_batch(out.theta2, in_hw)], axis=1)


def is_identity(*thetas: np.ndarray, atol: float = IDENTITY_ATOL) -> bool:
    """True when every (2, 3) affine θ is the identity: the "crop" is the whole model input.

    A whole-frame model (e.g. CNN + SORD) exports θ = identity so the runtime stays the same;
    its boxes would frame the whole letterboxed input and mean nothing.
    """
    eye = np.eye(2, 3)
    return all(np.allclose(np.asarray(t, dtype=np.float64).reshape(2, 3), eye, rtol=0.0,
                           atol=atol) for t in thetas)


def label_map(probs: np.ndarray) -> np.ndarray:
    """(B, 5, H, W) or (5, H, W) class probabilities -> uint8 labels, 0 = BG, s + 1 = score s."""
    return np.asarray(probs).argmax(axis=-3).astype(np.uint8)


def uncertainty_u8(std: np.ndarray) -> np.ndarray:
    """Per-pixel MC std -> uint8 image, ``round(255 * min(std / 0.5, 1))`` (wire format)."""
    s = np.clip(np.asarray(std, dtype=np.float64) / UNCERTAINTY_FULL_SCALE, 0.0, 1.0)
    return np.round(s * 255.0).astype(np.uint8)


def mask_in_source(probs: np.ndarray, std: np.ndarray | None, lb: Letterbox,
                   ) -> tuple[np.ndarray, np.ndarray | None]:
    """One frame's segmentation, from the seg model's input space to source-frame pixels.

    Args:
        probs: (5, h, w) softmax over {BG, score 0..3} in the seg model's input space.
        std: (h, w) MC-dropout std, or None.
        lb: the seg input's letterbox of the source frame.

    Returns:
        labels: (H, W) uint8 label map (:func:`label_map`), nearest-neighbour.
        unc: (H, W) uint8 (:func:`uncertainty_u8`), bilinear, or None without ``std``.
    """
    labels = lb.unletterbox(label_map(probs))
    unc = None
    if std is not None:
        unc = lb.unletterbox(uncertainty_u8(std), interpolation=cv2.INTER_LINEAR)
    return labels, unc
