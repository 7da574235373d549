"""The preprocessing contract, defined once and used by training and serving alike.

Every model input in pleura is made here, so there is no train/serve skew: ``train/`` calls
these functions to build its tensors, the worker calls them on live frames, and the constants
(size, channels, normalisation) come from the bundle's ``manifest.json`` via
:class:`PreprocessSpec`, never from a loose constant in ``stream/`` or ``ui/``.

Geometry: a frame of any size is converted to grey and *letterboxed* (resized keeping its
aspect ratio, centred, zero padded: ultrasound background is black) into the model's input
size. :class:`Letterbox` keeps the mapping so outputs (STN boxes, masks) can be drawn back on
the source frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np


@dataclass(frozen=True)
class PreprocessSpec:
    """How one model wants its input. Stored in ``manifest.json`` under ``inputs``.

    Attributes:
        height, width: model input size in pixels.
        channels: 1 or 3 (grey replicated, as in Roy et al. 2020).
        mean, std: after scaling to [0, 1], ``x = (x - mean) / std``. The frame model uses
            mean 0, std 1 ([0, 1] input); the segmentation members use mean 0.5, std 0.5
            ([-1, 1] input, as in the paper's segmentation code).
    """

    height: int = 224
    width: int = 224
    channels: int = 3
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        if self.height <= 0 or self.width <= 0:
            raise ValueError(f"input size must be positive, got {self.height}x{self.width}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.std <= 0:
            raise ValueError(f"std must be > 0, got {self.std}")

    def to_dict(self) -> dict[str, Any]:
        return {"height": self.height, "width": self.width, "channels": self.channels,
                "mean": self.mean, "std": self.std, "resize": "letterbox", "colour": "grey"}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessSpec:
        return cls(height=int(d["height"]), width=int(d["width"]),
                   channels=int(d.get("channels", 3)), mean=float(d.get("mean", 0.0)),
                   std=float(d.get("std", 1.0)))


FRAME_SPEC = PreprocessSpec(224, 224, 3, 0.0, 1.0)
"""Reg-STN input: 224x224, 3 channels, [0, 1] (PAPER.md section 1)."""

SEG_SPEC = PreprocessSpec(200, 260, 1, 0.5, 0.5)
"""Segmentation input: 260 wide x 200 high, zero-padded letterbox, [-1, 1] (PAPER.md section 3)."""


@dataclass(frozen=True)
class Letterbox:
    """Maps between source-frame pixels and model-input pixels.

    ``model = source * scale + (pad_x, pad_y)``.
    """

    src_hw: tuple[int, int]
    dst_hw: tuple[int, int]
    scale: float
    pad_x: int
    pad_y: int
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_source(self, xy: np.ndarray) -> np.ndarray:
        """(..., 2) model-input pixel coordinates -> source-frame pixel coordinates."""
        xy = np.asarray(xy, dtype=np.float64)
        return (xy - np.array([self.pad_x, self.pad_y])) / self.scale

    def to_model(self, xy: np.ndarray) -> np.ndarray:
        """(..., 2) source-frame pixel coordinates -> model-input pixel coordinates."""
        xy = np.asarray(xy, dtype=np.float64)
        return xy * self.scale + np.array([self.pad_x, self.pad_y])

    def unletterbox(self, image: np.ndarray, interpolation: int = cv2.INTER_NEAREST) -> np.ndarray:
        """(dst_h, dst_w[, C]) model-space map -> (src_h, src_w[, C]) map on the source frame."""
        h, w = self.src_hw
        nh, nw = max(1, round(h * self.scale)), max(1, round(w * self.scale))
        inner = image[self.pad_y:self.pad_y + nh, self.pad_x:self.pad_x + nw]
        return cv2.resize(inner, (w, h), interpolation=interpolation)


def to_grey(frame: np.ndarray) -> np.ndarray:
    """Any decoded frame -> (H, W) uint8 grey.

    Args:
        frame: (H, W), (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA; uint8, or float in [0, 1].

    Raises:
        ValueError: for any other shape or an empty frame, saying what was received.
    """
    a = np.asarray(frame)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or a.size == 0 or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ValueError(
            f"expected a frame of shape (H, W), (H, W, 3) or (H, W, 4); got {a.shape}"
        )
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating):
            a = np.clip(np.nan_to_num(a) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        else:
            a = np.clip(a, 0, 255).astype(np.uint8)
    if a.ndim == 3:
        a = cv2.cvtColor(a, cv2.COLOR_RGBA2GRAY if a.shape[2] == 4 else cv2.COLOR_RGB2GRAY)
    return np.ascontiguousarray(a)


def letterbox(grey: np.ndarray, dst_hw: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping aspect ratio, centre, zero-pad to ``dst_hw``.

    Args:
        grey: (H, W) uint8.
        dst_hw: (height, width) of the output.

    Returns:
        (dst_h, dst_w) uint8 image and the :class:`Letterbox` that made it.
    """
    h, w = grey.shape[:2]
    dh, dw = dst_hw
    scale = min(dh / h, dw / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(grey, (nw, nh), interpolation=interp)
    out = np.zeros((dh, dw), dtype=np.uint8)
    py, px = (dh - nh) // 2, (dw - nw) // 2
    out[py:py + nh, px:px + nw] = resized
    return out, Letterbox((h, w), (dh, dw), scale, px, py)


def normalise(image: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """(H, W) uint8 -> (C, H, W) float32 normalised as ``spec`` says."""
    x = image.astype(np.float32) * (1.0 / 255.0)
    x = (x - spec.mean) / spec.std
    return np.repeat(x[None], spec.channels, axis=0)


def preprocess_frame(frame: np.ndarray, spec: PreprocessSpec = FRAME_SPEC,
                     ) -> tuple[np.ndarray, Letterbox]:
    """One decoded frame -> (C, H, W) float32 model input and its letterbox."""
    boxed, lb = letterbox(to_grey(frame), (spec.height, spec.width))
    return normalise(boxed, spec), lb


def preprocess_batch(frames: Sequence[np.ndarray], spec: PreprocessSpec = FRAME_SPEC,
                     ) -> tuple[np.ndarray, list[Letterbox]]:
    """Frames -> (B, C, H, W) float32 and their letterboxes."""
    if len(frames) == 0:
        raise ValueError("preprocess_batch needs at least one frame")
    out = np.empty((len(frames), spec.channels, spec.height, spec.width), dtype=np.float32)
    boxes = []
    for i, f in enumerate(frames):
        out[i], lb = preprocess_frame(f, spec)
        boxes.append(lb)
    return out, boxes
