"""Optional acquisition-chain randomisation (``pleura synth --acquisition``).

Real clips reach pleura through very different chains: a 139-pixel GIF upscaled, a screen
recording re-encoded as JPEG frames, a convex probe whose fan edges fade. These steps act on
the finished image only (the labels are unchanged) and use their own random stream, so a
dataset made without ``--acquisition`` is the same as before the option existed.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from train.synth.geometry import Geometry


@dataclass(frozen=True)
class Acquisition:
    """Per-video settings.

    Attributes:
        scale: the image is resampled down to this fraction of its size and back (1 = off).
        jpeg_quality: JPEG round trip at this quality (0 = off).
        vignette: darkening of the sector's lateral edges, 0 (off) .. 0.6.
        haze: constant grey added inside the sector (0..25 levels), as a raised noise floor.
    """

    scale: float
    jpeg_quality: int
    vignette: float
    haze: float


def draw_acquisition(rng: np.random.Generator) -> Acquisition:
    return Acquisition(scale=rng.uniform(0.3, 1.0) if rng.random() < 0.6 else 1.0,
                       jpeg_quality=int(rng.integers(25, 90)) if rng.random() < 0.5 else 0,
                       vignette=rng.uniform(0.0, 0.6) if rng.random() < 0.6 else 0.0,
                       haze=rng.uniform(0.0, 25.0) if rng.random() < 0.3 else 0.0)


def edge_gain(geom: Geometry, vignette: float) -> np.ndarray:
    """(H, W) float32 multiplier: 1 in the middle of the sector, ``1 - vignette`` at its sides."""
    L = geom.beam_hw[1]
    lateral = np.clip(2.0 * geom.map_x / max(L - 1, 1) - 1.0, -1, 1)
    return (1.0 - vignette * lateral ** 4).astype(np.float32)


def apply_acquisition(img: np.ndarray, geom: Geometry, acq: Acquisition,
                      gain: np.ndarray | None) -> np.ndarray:
    """Apply ``acq`` to one (H, W) uint8 frame; pixels outside the sector stay 0."""
    out = img
    if gain is not None or acq.haze > 0:
        f = out.astype(np.float32)
        if gain is not None:
            f *= gain
        f += np.float32(acq.haze)
        out = np.clip(f, 0, 255).astype(np.uint8)
    if acq.scale < 0.99:
        h, w = out.shape
        small = cv2.resize(out, (max(8, round(w * acq.scale)), max(8, round(h * acq.scale))),
                           interpolation=cv2.INTER_AREA)
        out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if acq.jpeg_quality:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, acq.jpeg_quality])
        out = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE) if ok else out
    out = np.ascontiguousarray(out)
    out[~geom.sector] = 0
    return out
