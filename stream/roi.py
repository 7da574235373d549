"""Scan-region detection: find the ultrasound image on a whole scanner screen and crop to it.

A capture card delivers the scanner's screen: patient bar, depth ruler, settings panel, icons
and a comparatively small B-mode image (sector or rectangle). The scan region is the largest
*bright, textured, temporally varying* blob: text and icons are bright but static and thin;
the background is dark. :func:`detect_roi` works on a short stack of grey frames:

1. ``active`` = pixels brighter than ``min_level`` in the max-over-time image and either
   textured (local standard deviation) or changing over time (speckle moves, text does not);
2. a small morphological close joins the speckle into one blob, an open removes text strokes;
3. the largest connected component, scored by area x mean activity, is the scan region; its
   bounding box is the ROI and its fill ratio says "sector" or "rectangle".

:class:`RoiTracker` re-detects every ``every`` frames and only moves the ROI when the new one
is clearly different (IoU < ``min_iou``) twice in a row, so the crop is stable frame to frame.
A manual ROI (``x,y,w,h``) bypasses detection; ``off`` keeps the full frame.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Roi:
    """A crop rectangle in source-frame pixels: columns x..x+w, rows y..y+h."""

    x: int
    y: int
    w: int
    h: int
    shape: str = "rectangle"  # or "sector"

    def crop(self, image: np.ndarray) -> np.ndarray:
        """(H, W[, C]) -> (h, w[, C]) view, clipped to the image."""
        H, W = image.shape[:2]
        x0, y0 = max(0, self.x), max(0, self.y)
        x1, y1 = min(W, self.x + self.w), min(H, self.y + self.h)
        if x1 <= x0 or y1 <= y0:
            return image
        return image[y0:y1, x0:x1]

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]

    @classmethod
    def parse(cls, text: str) -> Roi:
        """``"x,y,w,h"`` -> Roi.

        Raises:
            ValueError: saying the expected format.
        """
        try:
            x, y, w, h = (int(v) for v in text.split(","))
        except ValueError:
            raise ValueError(f"ROI {text!r} must be x,y,w,h in pixels (e.g. 560,110,155,300), "
                             "'auto' or 'off'") from None
        if w <= 0 or h <= 0 or x < 0 or y < 0:
            raise ValueError(f"ROI {text!r}: x, y must be >= 0 and w, h > 0")
        return cls(x, y, w, h)


def iou(a: Roi, b: Roi) -> float:
    """Intersection over union of two rectangles."""
    ix = max(0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    inter = ix * iy
    union = a.w * a.h + b.w * b.h - inter
    return inter / union if union else 0.0


def detect_roi(frames: list[np.ndarray] | np.ndarray, min_level: int = 12,
               min_texture: float = 4.0, min_area_frac: float = 0.01) -> Roi | None:
    """Find the scan region on a stack of grey screen frames.

    Args:
        frames: T >= 1 frames (H, W) uint8 grey (or one (H, W) frame).
        min_level: grey level under which a pixel is background.
        min_texture: local standard deviation (7x7) above which a pixel is "textured".
        min_area_frac: a region smaller than this fraction of the frame is not a scan region.

    Returns:
        The bounding :class:`Roi` of the scan region, or None when nothing qualifies.
    """
    stack = np.asarray(frames)
    if stack.ndim == 2:
        stack = stack[None]
    H, W = stack.shape[1:3]
    mx = stack.max(axis=0)
    mean = stack.mean(axis=0, dtype=np.float32)
    m = cv2.blur(mean, (7, 7))
    var = cv2.blur(mean * mean, (7, 7)) - m * m
    texture = np.sqrt(np.maximum(var, 0))
    change = (stack.max(axis=0).astype(np.float32) - stack.min(axis=0)) if len(stack) > 1 else 0
    active = (mx >= min_level) & ((texture >= min_texture) | (np.asarray(change) >= min_level))
    mask = active.astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((9, 9), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    best, best_score = None, 0.0
    for i in range(1, n):
        x, y, w, h, area = stats[i]
        if area < min_area_frac * H * W or min(w, h) < 16:
            continue
        score = float(area) * float(mean[labels == i].mean())
        if score > best_score:
            best, best_score = i, score
    if best is None:
        return None
    x, y, w, h, area = (int(v) for v in stats[best])
    # Dim far-field rows still belong to the image: extend down while the columns of the
    # region keep any signal above the background.
    col = (mx[:, x:x + w] >= min_level // 2).mean(axis=1)
    y1 = y + h
    while y1 < H and col[y1] > 0.2:
        y1 += 1
    # A linear probe's image is as wide at the top as anywhere; a sector widens with depth.
    widths = (labels[y:y + h, x:x + w] == best).sum(axis=1)
    top = float(np.percentile(widths[: max(1, h // 4)], 75))  # robust to dark bands
    shape = "rectangle" if top >= 0.9 * float(widths.max()) else "sector"
    return Roi(x, y, w, y1 - y, shape)


class RoiTracker:
    """Stable ROI over a stream: ``auto`` detection with hysteresis, a fixed ROI, or ``off``.

    Args:
        mode: "auto", "off" or "x,y,w,h".
        every: frames between re-detections (auto).
        window: frames stacked per detection (auto).
        min_iou: a new detection replaces the current ROI only if IoU < min_iou twice in a row.
    """

    def __init__(self, mode: str = "auto", every: int = 30, window: int = 8,
                 min_iou: float = 0.8) -> None:
        self.mode = mode
        self.every, self.min_iou = every, min_iou
        self.roi: Roi | None = None if mode in ("auto", "off") else Roi.parse(mode)
        self._recent: deque[np.ndarray] = deque(maxlen=window)
        self._n = 0
        self._pending: Roi | None = None

    def reset(self) -> None:
        """Forget the detected ROI (new source)."""
        if self.mode == "auto":
            self.roi, self._pending, self._n = None, None, 0
            self._recent.clear()

    def update(self, grey: np.ndarray) -> Roi | None:
        """Feed one (H, W) uint8 grey frame; returns the ROI to use (None = full frame)."""
        if self.mode != "auto":
            return self.roi
        self._recent.append(grey[::2, ::2])
        self._n += 1
        due = self.roi is None and len(self._recent) >= min(3, self._recent.maxlen or 3)
        if due or self._n % self.every == 0:
            small = detect_roi(list(self._recent))
            if small is not None:
                new = Roi(small.x * 2, small.y * 2, small.w * 2, small.h * 2, small.shape)
                if self.roi is None:
                    self.roi = new
                elif iou(new, self.roi) < self.min_iou:
                    if self._pending is not None and iou(new, self._pending) >= self.min_iou:
                        self.roi, self._pending = new, None
                    else:
                        self._pending = new
                else:
                    self._pending = None
        return self.roi
