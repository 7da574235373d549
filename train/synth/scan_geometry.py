"""Scan geometry of a real clip: its sector, a convex probe's apex and the beam grid.

The pleural-line detector (:mod:`train.synth.pleura_line`) and the composite renderer work on
a *beam grid* (rows = depth along a scan line, columns = scan lines: radial lines from the
apex for a convex probe, image columns for a linear one), where the pleura is roughly
horizontal, the B-lines are vertical and the A-lines horizontal, as in the simulator
(:mod:`train.synth.geometry`). The sector is what is ever lit over the clip; the apex is where
the sector's two straight sides meet (one side and symmetry, or the centre of the curved top
when the sides are cropped away, as in many published clips).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from train.synth.geometry import Geometry


@dataclass(frozen=True)
class FittedGeometry:
    """The scan geometry of a real clip.

    Attributes:
        geom: image -> beam maps and the sector (:class:`train.synth.geometry.Geometry`).
        beam_x, beam_y: (D, L) float32 image column / row of every beam sample (for
            ``cv2.remap`` of a frame onto the beam grid).
        apex: (x, y) fan apex in image pixels (convex), None for a linear probe.
        radii: (r0, r1) image-pixel radius of beam row 0 and row D - 1 (convex) or the image
            rows of beam rows 0 and D - 1 (linear).
    """

    geom: Geometry
    beam_x: np.ndarray
    beam_y: np.ndarray
    apex: tuple[float, float] | None
    radii: tuple[float, float]

    @property
    def probe(self) -> str:
        return self.geom.probe

    @property
    def beam_hw(self) -> tuple[int, int]:
        return self.geom.beam_hw

    def to_beam(self, image: np.ndarray) -> np.ndarray:
        """(H, W) image -> (D, L) beam image (bilinear)."""
        return cv2.remap(image, self.beam_x, self.beam_y, cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def beam_to_xy(self, rows: np.ndarray, lines: np.ndarray) -> np.ndarray:
        """Image (x, y) of beam points at float ``rows``/``lines``: (N, 2) float32."""
        pts = np.stack([np.asarray(lines, np.float32), np.asarray(rows, np.float32)], -1)
        x = cv2.remap(self.beam_x, pts[None, :, 0], pts[None, :, 1], cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_REPLICATE)[0]
        y = cv2.remap(self.beam_y, pts[None, :, 0], pts[None, :, 1], cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_REPLICATE)[0]
        return np.stack([x, y], -1)


def sector_mask(frames: np.ndarray, level: int = 8) -> np.ndarray:
    """(H, W) bool: the convex hull of the largest region lit in some frame."""
    mx = frames.max(axis=0) if frames.ndim == 3 else frames
    m = (cv2.GaussianBlur(mx, (5, 5), 0) >= level).astype(np.uint8)
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    # The sector is (nearly) convex: its hull also covers rib shadows darker than ``level``.
    hull = largest_region_hull(m)
    return np.ones(mx.shape, bool) if hull is None else hull


def largest_region_hull(binary: np.ndarray) -> np.ndarray | None:
    """(H, W) bool: the convex hull of the largest 8-connected region of a 0/1 uint8 image;
    None when it has no region."""
    n, lab, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if n <= 1:
        return None
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    pts = cv2.findNonZero((lab == best).astype(np.uint8))
    filled = np.zeros(binary.shape, np.uint8)
    cv2.fillConvexPoly(filled, cv2.convexHull(pts), 1)
    return filled.astype(bool)


def _fit_side(ys: np.ndarray, xs: np.ndarray) -> tuple[float, float, float] | None:
    """Robust line x = a y + b through edge points; (a, b, rms) or None if too few."""
    if len(ys) < 8:
        return None
    a, b = np.polyfit(ys, xs, 1)
    for _ in range(2):  # drop outliers (a notch in the edge, a label), refit
        res = np.abs(xs - (a * ys + b))
        keep = res <= max(1.5, 2.5 * np.median(res))
        if keep.sum() < 8:
            break
        a, b = np.polyfit(ys[keep], xs[keep], 1)
    rms = float(np.sqrt(np.mean((xs - (a * ys + b)) ** 2)))
    return float(a), float(b), rms


def estimate_apex(mask: np.ndarray) -> tuple[float, float] | None:
    """Apex (x, y) of a fan-shaped sector from its straight sides, None if it is a rectangle.

    The sides are the first/last lit pixel of each row, left out where they touch the image
    border (a side cropped away by the clip's curator). With one side only the fan is assumed
    symmetric about the sector's centre column; with none, the curved top is fitted by a circle.
    """
    H, W = mask.shape
    rows = np.flatnonzero(mask.any(axis=1))
    if len(rows) < 16:
        return None
    y0, y1 = rows[0], rows[-1]
    sel = rows[(rows > y0 + 0.15 * (y1 - y0)) & (rows < y1 - 0.1 * (y1 - y0))]
    left = np.array([np.argmax(mask[y]) for y in sel], float)
    right = np.array([W - 1 - np.argmax(mask[y, ::-1]) for y in sel], float)
    fits = []
    for xs, border, sign in ((left, 0, -1), (right, W - 1, 1)):
        ok = np.abs(xs - border) > 1
        f = _fit_side(sel[ok].astype(float), xs[ok])
        # a fan side widens with depth by at least ~0.1 px per row and is straight
        fits.append(f if f is not None and sign * f[0] > 0.08 and f[2] < 3.0 else None)
    (fl, fr) = fits
    cols = np.flatnonzero(mask.any(axis=0))
    cx_mask = 0.5 * (cols[0] + cols[-1])
    if fl is not None and fr is not None:
        y = (fr[1] - fl[1]) / (fl[0] - fr[0])
        return float(fl[0] * y + fl[1]), float(y)
    if fl is not None or fr is not None:
        a, b, _ = fl if fl is not None else fr
        return float(cx_mask), float((cx_mask - b) / a)
    return _apex_from_top(mask, cols)


def _apex_from_top(mask: np.ndarray, cols: np.ndarray) -> tuple[float, float] | None:
    """Centre of the circle through the sector's curved top edge (Kasa fit), if curved."""
    xs = cols[2:-2].astype(float)
    tops = np.array([np.argmax(mask[:, int(x)]) for x in xs], float)
    if len(xs) < 16 or tops.max() - tops.min() < 3:  # a flat top: cropped, no fan cue
        return None
    A = np.stack([xs, tops, np.ones_like(xs)], 1)
    sol, *_ = np.linalg.lstsq(A, xs ** 2 + tops ** 2, rcond=None)
    cx, cy = sol[0] / 2, sol[1] / 2
    if cy >= tops.min():  # the apex must lie above the top edge
        return None
    return float(cx), float(cy)


def fit_geometry(frames: np.ndarray, probe: str | None = None,
                 beam_hw: tuple[int, int] | None = None) -> FittedGeometry:
    """Scan geometry of a clip.

    Args:
        frames: (T, H, W) uint8 grey frames (T >= 1), cropped to the scan region.
        probe: "convex", "linear" or None (guessed: convex when the sector's sides converge).
        beam_hw: (D, L) beam grid size; default (H, W).

    Returns:
        The :class:`FittedGeometry`. A "convex" clip whose sector shows no fan cue at all (sides
        and top cropped) gets a distant apex (gentle radial lines), 2.5 image heights above.
    """
    frames = np.asarray(frames)
    if frames.ndim == 2:
        frames = frames[None]
    T, H, W = frames.shape
    D, L = beam_hw or (H, W)
    mask = sector_mask(frames)
    apex = estimate_apex(mask) if probe != "linear" else None
    if probe == "convex" and apex is None:
        cols = np.flatnonzero(mask.any(axis=0))
        apex = (0.5 * (cols[0] + cols[-1]), -2.5 * H)
    ys, xs = np.nonzero(mask)
    if apex is None:  # linear: beam lines are image columns spanning the sector
        x0, x1 = float(xs.min()), float(xs.max())
        top = np.array([np.argmax(mask[:, x]) if mask[:, x].any() else H for x in range(W)])
        y0, y1 = float(np.median(top[int(x0):int(x1) + 1])), float(ys.max())
        jj, ii = np.meshgrid(np.linspace(x0, x1, L), np.linspace(y0, y1, D))
        beam_x, beam_y = jj.astype(np.float32), ii.astype(np.float32)
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        map_x = (xx - x0) / max(x1 - x0, 1) * (L - 1)
        map_y = (yy - y0) / max(y1 - y0, 1) * (D - 1)
        radii, kind = (y0, y1), "linear"
    else:
        cx, cy = apex
        r = np.hypot(xs - cx, ys - cy)
        th = np.arctan2(xs - cx, ys - cy)
        r0, r1 = float(np.percentile(r, 0.2)), float(r.max())
        t0, t1 = float(th.min()), float(th.max())
        tt, rr = np.meshgrid(np.linspace(t0, t1, L), np.linspace(r0, r1, D))
        beam_x = (cx + rr * np.sin(tt)).astype(np.float32)
        beam_y = (cy + rr * np.cos(tt)).astype(np.float32)
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        map_x = (np.arctan2(xx - cx, yy - cy) - t0) / max(t1 - t0, 1e-6) * (L - 1)
        map_y = (np.hypot(xx - cx, yy - cy) - r0) / max(r1 - r0, 1) * (D - 1)
        radii, kind = (r0, r1), "convex"
    inside = mask & (map_x >= 0) & (map_x <= L - 1) & (map_y >= 0) & (map_y <= D - 1)
    geom = Geometry(kind, np.where(inside, map_x, -1).astype(np.float32),
                    np.where(inside, map_y, -1).astype(np.float32), inside, (D, L))
    return FittedGeometry(geom, beam_x, beam_y, apex, radii)


def beam_valid(fg: FittedGeometry, mask: np.ndarray | None = None) -> np.ndarray:
    """(D, L) bool: beam samples inside the sector."""
    m = (fg.geom.sector if mask is None else mask).astype(np.uint8)
    return cv2.remap(m, fg.beam_x, fg.beam_y, cv2.INTER_NEAREST,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
