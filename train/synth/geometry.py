"""Probe geometry: where the beam grid (depth x scan line) lands in the image.

Everything is simulated on a rectangular *beam grid* (rows = depth samples, columns = scan
lines) and scan-converted once per frame with ``cv2.remap``, as a scanner does. A convex probe
gives a fan (curved top, radial lines, black outside); a linear probe a rectangle.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Geometry:
    """Scan conversion for one video.

    Attributes:
        probe: "convex" or "linear".
        map_x, map_y: (H, W) float32 beam-grid column / row of every image pixel
            (-1 outside the sector), for ``cv2.remap``.
        sector: (H, W) bool, True inside the scan sector.
        beam_hw: (D, L) size of the beam grid.
    """

    probe: str
    map_x: np.ndarray
    map_y: np.ndarray
    sector: np.ndarray
    beam_hw: tuple[int, int]

    def to_image(self, beam: np.ndarray, dy: float = 0.0, nearest: bool = False) -> np.ndarray:
        """Scan-convert a (D, L) beam image to (H, W); ``dy`` shifts the content down (rows)."""
        my = self.map_y if dy == 0 else self.map_y - np.float32(dy)
        interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
        out = cv2.remap(beam, self.map_x, my, interp, borderMode=cv2.BORDER_CONSTANT,
                        borderValue=0)
        out[~self.sector] = 0
        return out


def convex_geometry(size: int, beam_hw: tuple[int, int], half_angle_deg: float,
                    inner_ratio: float, fill: float, zoom: float = 1.0,
                    shift: tuple[float, float] = (0.0, 0.0)) -> Geometry:
    """A convex fan.

    Args:
        size: the square image side H = W.
        beam_hw: (D, L) beam grid.
        half_angle_deg: half the sector angle (25-40 deg typical).
        inner_ratio: r0 / r1, the probe-face radius over the deepest radius (0.15-0.4).
        fill: fraction of the image height the fan spans (0.85-1).
        zoom: > 1 enlarges the fan past the image border, like a clip cropped to the scan
            region (the sides or the curved top then fall outside the image).
        shift: (x, y) offset of the fan in pixels.
    """
    D, L = beam_hw
    th = np.deg2rad(half_angle_deg)
    # Unit fan (r1 = 1): height 1 - r0 cos(th), width 2 sin(th); scale it into the image.
    r0u = inner_ratio
    # Height-limited, but a wide fan may lose a little of its sides (as in cropped clips).
    scale = min(fill * size / (1.0 - r0u * np.cos(th)), 1.2 * size / (2 * np.sin(th)))
    scale *= zoom
    r0, r1 = r0u * scale, scale
    top = max(0.0, size - scale * (1.0 - r0u * np.cos(th))) * 0.15 + shift[1]
    cx, ya = (size - 1) / 2.0 + shift[0], top - r0 * np.cos(th)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r = np.hypot(xx - cx, yy - ya)
    phi = np.arctan2(xx - cx, yy - ya)
    my = (r - r0) / (r1 - r0) * D
    mx = (phi + th) / (2 * th) * L
    sector = (my >= 0) & (my <= D - 1) & (mx >= 0) & (mx <= L - 1)
    return Geometry("convex", np.where(sector, mx, -1).astype(np.float32),
                    np.where(sector, my, -1).astype(np.float32), sector, (D, L))


def linear_geometry(size: int, beam_hw: tuple[int, int], width_frac: float,
                    fill: float, shift: float = 0.0) -> Geometry:
    """A linear probe's rectangle, ``width_frac`` of the image wide, ``fill`` of it high."""
    D, L = beam_hw
    w, h = width_frac * size, fill * size
    x0, y0 = (size - w) / 2.0 + shift, (size - h) * 0.3
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    my = (yy - y0) / h * D
    mx = (xx - x0) / w * L
    sector = (my >= 0) & (my <= D - 1) & (mx >= 0) & (mx <= L - 1)
    return Geometry("linear", np.where(sector, mx, -1).astype(np.float32),
                    np.where(sector, my, -1).astype(np.float32), sector, (D, L))


def random_geometry(probe: str, size: int, beam_hw: tuple[int, int],
                    rng: np.random.Generator) -> Geometry:
    """Domain-randomised geometry for ``probe`` ("convex" or "linear")."""
    if probe == "convex":
        zoom = rng.uniform(1.0, 1.4) if rng.random() < 0.45 else 1.0
        shift = (rng.uniform(-0.06, 0.06) * size * (zoom - 0.9),
                 -rng.uniform(0.0, 0.12) * size * (zoom - 1.0) / 0.4)
        return convex_geometry(size, beam_hw, half_angle_deg=rng.uniform(24, 40),
                               inner_ratio=rng.uniform(0.22, 0.5), fill=rng.uniform(0.86, 1.0),
                               zoom=zoom, shift=shift)
    if probe == "linear":
        width = 1.02 if rng.random() < 0.4 else rng.uniform(0.6, 1.0)
        return linear_geometry(size, beam_hw, width_frac=width, fill=rng.uniform(0.85, 1.0),
                               shift=rng.uniform(-0.5, 0.5) * max(0.0, 1.0 - width) * size)
    raise ValueError(f"unknown probe {probe!r}; valid: convex, linear")
