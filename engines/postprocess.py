"""Model outputs -> things to draw: STN crop corners, label maps, uncertainty images.

Pure numpy; coordinates are *continuous* pixel coordinates of the model input (0 = the left
edge of the first pixel, W = the right edge of the last), the convention of
:meth:`engines.preprocess.Letterbox.to_source`.
"""

from __future__ import annotations

import numpy as np

from engines.base import FrameOutput

UNIT_SQUARE = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
"""Corners of the output sampling grid in normalised coordinates: TL, TR, BR, BL."""

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


def label_map(probs: np.ndarray) -> np.ndarray:
    """(B, 5, H, W) or (5, H, W) class probabilities -> uint8 labels, 0 = BG, s + 1 = score s."""
    return np.asarray(probs).argmax(axis=-3).astype(np.uint8)


def uncertainty_u8(std: np.ndarray) -> np.ndarray:
    """Per-pixel MC std -> uint8 image, ``round(255 * min(std / 0.5, 1))`` (wire format)."""
    s = np.clip(np.asarray(std, dtype=np.float64) / UNCERTAINTY_FULL_SCALE, 0.0, 1.0)
    return np.round(s * 255.0).astype(np.uint8)
