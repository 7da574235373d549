"""The pleural line on real B-mode frames: a classical detector and a tracker.

The composite generator (:mod:`train.synth.composite`) draws pathology *below the pleura* of
real healthy clips, so it needs to know, for every frame, where the pleura is. This is a
classical detector, no learning:

1. **Geometry** (:mod:`train.synth.scan_geometry`): frames are resampled onto a *beam grid*
   (rows = depth along a scan line, columns = scan lines: radial on a convex probe) where the
   pleura is roughly horizontal.
2. **Detection** (:func:`detect_pleura`) on the beam image averaged over a clip: a horizontal
   ridge filter (bright line, darker above and below) weighted by how much the image *below*
   a candidate row decorrelates from frame to frame compared with above it (the lung slides and
   shimmers, the chest wall does not) and by an A-line echo at twice the candidate's depth; a
   dynamic programme picks the best smooth path across the scan lines. Scan lines under a rib
   (an acoustic shadow: dark from the rib's surface to the bottom) carry no pleura.
3. **Tracking** (:func:`track_pleura`): the same path search per frame, restricted to a band
   around the clip's path, then smoothed over time (Gaussian, ``sigma_t`` frames) and across
   lines; the lateral motion of the lung just below the pleura (sliding, probe drift) is
   measured by phase correlation so that drawn artefacts can move with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from train.synth.scan_geometry import FittedGeometry, beam_valid, fit_geometry

__all__ = ["FittedGeometry", "PleuraTrack", "beam_valid", "detect_pleura", "fit_geometry",
           "track_pleura"]

#: Shallowest / deepest beam row (fraction of the depth) where a pleura is searched.
DEPTH_RANGE = (0.05, 0.72)
#: Weight of the A-line cue (an echo at twice a candidate's depth) in :func:`pleura_score`.
ALINE_WEIGHT = 0.5


def _blur(x: np.ndarray, sy: float, sx: float) -> np.ndarray:
    return cv2.GaussianBlur(x, (0, 0), sigmaX=max(sx, 0.1), sigmaY=max(sy, 0.1))


def ridge_response(beam: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(D, L) float32 >= 0: a bright horizontal line, darker above *and* below.

    The beam image is smoothed across lines (the pleura is laterally continuous, speckle is
    not) and compared with the rows ``k`` above and below it (``k`` = 2 % of the depth).
    """
    D, L = beam.shape
    b = np.where(valid, beam, 0).astype(np.float32)
    w = _blur(valid.astype(np.float32), 1.0, L / 60) + 1e-3
    s = _blur(b, 1.0, L / 60) / w
    k = max(2, round(0.02 * D))
    up = np.roll(s, k, axis=0)
    down = np.roll(s, -k, axis=0)
    r = np.clip(s - np.maximum(up, down) * 0.5 - np.minimum(up, down) * 0.5, 0, None)
    # An edge (bright on one side only) is not a line: cap by the contrast to the brighter side.
    r = np.minimum(r, np.clip(s - 0.8 * np.maximum(up, down), 0, None) + 0.3 * r)
    r[:k], r[-k:] = 0, 0
    # Only where the rows k above and below are in the sector: the sector's own top edge
    # (black above, lit below) is not a line.
    inner = cv2.erode(valid.astype(np.uint8), np.ones((2 * k + 1, 1), np.uint8)).astype(bool)
    return np.where(inner, r, 0).astype(np.float32)


def decorrelation(beams: np.ndarray, valid: np.ndarray, lag: int = 2) -> np.ndarray:
    """(D, L) float32 in [0, 1]: 1 - local correlation of frame t with frame t + ``lag``.

    The lung below the pleura slides and shimmers; the chest wall above it moves, if at all,
    as a whole, so its speckle stays correlated. Windows of 2 % of the depth x 3 % of the lines.
    """
    T, D, L = beams.shape
    if lag >= T:
        return np.zeros((D, L), np.float32)
    ks = (max(3, round(0.03 * L)) | 1, max(3, round(0.02 * D)) | 1)
    pairs = range(0, T - lag, max(1, (T - lag) // 12))
    acc = np.zeros((D, L), np.float32)
    for t in pairs:
        a = beams[t].astype(np.float32)
        b = beams[t + lag].astype(np.float32)
        ma, mb = cv2.blur(a, ks), cv2.blur(b, ks)
        va = cv2.blur(a * a, ks) - ma * ma
        vb = cv2.blur(b * b, ks) - mb * mb
        cov = cv2.blur(a * b, ks) - ma * mb
        acc += cov / np.sqrt(np.maximum(va * vb, 1e-6))
    dec = 1.0 - acc / len(pairs)
    return np.where(valid, np.clip(dec, 0, 1), 0).astype(np.float32)


def _column_mean(x: np.ndarray, valid: np.ndarray, i0: np.ndarray, i1: np.ndarray) -> np.ndarray:
    """Mean of ``x`` over rows [i0, i1) of every column (valid samples only), per row offset."""
    c = np.cumsum(np.where(valid, x, 0), axis=0)
    n = np.cumsum(valid, axis=0)
    D = x.shape[0]
    a = np.clip(i0, 0, D - 1)
    b = np.clip(i1, 0, D - 1)
    cols = np.arange(x.shape[1])[None, :]
    s = c[b, cols] - c[a, cols]
    m = n[b, cols] - n[a, cols]
    return s / np.maximum(m, 1)


def pleura_score(mean_beam: np.ndarray, dec: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(D, L) float32: how much each beam sample looks like the pleural line.

    ``ridge * (0.25 + lung-below) * (1 + ALINE_WEIGHT * A-line) * (0.8 + 0.4 * depth)``,
    each cue in [0, 1]:

    - ridge: :func:`ridge_response`, over its 99.5th percentile (clipped at 1.5);
    - lung below: the decorrelation 2..10 % of the depth below the row minus that 2..10 %
      above it, over 0.15;
    - A-line: the ridge at twice the row's depth (beam row 0 is the probe face, when the clip
      shows it);
    - depth: the row over the depth (a mild preference for the deeper of two lines: fascia
      lie above the pleura, only A-lines below it).

    Outside ``DEPTH_RANGE`` the score is 0, outside the sector -0.2.
    """
    D, L = mean_beam.shape
    b = mean_beam / (np.percentile(mean_beam[valid], 99) + 1e-6)
    r = ridge_response(b, valid)
    r = r / (np.percentile(r[valid], 99.5) + 1e-6)
    rows = np.arange(D)[:, None]
    h0, h1 = max(2, round(0.02 * D)), max(4, round(0.10 * D))
    below = _column_mean(dec, valid, rows + h0, rows + h1)
    above = _column_mean(dec, valid, rows - h1, rows - h0)
    step = np.clip((below - above) / 0.15, 0, 1)
    step = _blur(step.astype(np.float32), 1.0, L / 30)
    aline = np.zeros_like(r)
    two = 2 * np.arange(D)
    ok = two < D
    aline[ok] = _blur(r, 1.0, L / 20)[two[ok]]
    aline = np.clip(aline / 0.3, 0, 1)
    deeper = 0.8 + 0.4 * rows / D  # fascia lie above the pleura, only A-lines below it
    score = np.clip(r, 0, 1.5) * (0.25 + step) * (1.0 + ALINE_WEIGHT * aline) * deeper
    lo, hi = (round(f * D) for f in DEPTH_RANGE)
    score[:lo], score[hi:] = 0, 0
    return np.where(valid, score, -0.2).astype(np.float32)


def best_path(score: np.ndarray, max_step: int, jump_cost: float,
              lines: np.ndarray | None = None) -> np.ndarray:
    """Row per column maximising sum(score) - jump_cost * sum |row change| (Viterbi).

    Args:
        score: (D, L) float32.
        max_step: the largest row change between neighbouring columns.
        jump_cost: cost per row of change.
        lines: (L,) bool, columns that count (others contribute no score: the path is
            interpolated through them, e.g. under a rib shadow).

    Returns:
        (L,) int rows.
    """
    D, L = score.shape
    sc = score if lines is None else np.where(lines[None, :], score, 0)
    acc = sc[:, 0].copy()
    back = np.zeros((D, L), np.int16)
    steps = range(-max_step, max_step + 1)
    for j in range(1, L):
        best = np.full(D, -np.inf, np.float32)
        arg = np.zeros(D, np.int16)
        for k in steps:  # came from row i - k
            prev = np.full(D, -np.inf, np.float32)
            if k >= 0:
                prev[k:] = acc[:D - k] if k else acc
            else:
                prev[:k] = acc[-k:]
            cand = prev - jump_cost * abs(k)
            better = cand > best
            best[better] = cand[better]
            arg[better] = k
        acc = best + sc[:, j]
        back[:, j] = arg
    path = np.zeros(L, np.int64)
    path[-1] = int(np.argmax(acc))
    for j in range(L - 1, 0, -1):
        path[j - 1] = path[j] - back[path[j], j]
    return path


def rib_shadows(mean_beam: np.ndarray, valid: np.ndarray, path: np.ndarray,
                frac: float = 0.4) -> np.ndarray:
    """(L,) bool: scan lines in an acoustic shadow (dark from the pleura level down).

    A line is shadowed when its mean echo 3..35 % of the depth below ``path`` is under
    ``frac`` of the 90th percentile over lines; runs shorter than 2 % of the lines are ignored.
    """
    D, L = mean_beam.shape
    p = np.asarray(path, np.int64)[None, :]
    level = _column_mean(mean_beam.astype(np.float32), valid, p + round(0.03 * D),
                         p + round(0.35 * D))[0]
    has = valid[np.clip(p[0] + round(0.1 * D), 0, D - 1), np.arange(L)]
    ref = np.percentile(level[has], 90) if has.any() else 0.0
    dark = (level < frac * ref) & has
    k = max(1, round(0.02 * L))
    dark = cv2.morphologyEx(dark.astype(np.uint8)[None, :], cv2.MORPH_OPEN,
                            np.ones((1, k), np.uint8))[0].astype(bool)
    return dark


def detect_pleura(mean_beam: np.ndarray, dec: np.ndarray,
                  valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pleural line on one (clip-averaged) beam image.

    Args:
        mean_beam: (D, L) float beam image.
        dec: (D, L) decorrelation (:func:`decorrelation`; zeros when unknown).
        valid: (D, L) bool sector.

    Returns:
        ``(rows, visible)``: (L,) float32 beam row of the pleura on every line, and (L,) bool
        True where the pleura is seen (inside the sector, not under a rib shadow).
    """
    D, L = mean_beam.shape
    score = pleura_score(mean_beam, dec, valid)
    step = max(1, round(D / L))
    cost = 0.15
    path = best_path(score, step, cost)
    shadow = rib_shadows(mean_beam, valid, path)
    if shadow.any():
        path = best_path(score, step, cost, lines=~shadow)
        shadow = rib_shadows(mean_beam, valid, path)
    inside = valid[np.clip(path, 0, D - 1), np.arange(L)]
    visible = inside & ~shadow
    return _fill_invisible(path.astype(np.float32), visible, L), visible


def _fill_invisible(path: np.ndarray, visible: np.ndarray, L: int) -> np.ndarray:
    """Smooth the path across lines; where the pleura is not seen, interpolate it linearly
    between the seen parts (constant beyond them)."""
    if visible.sum() >= 2:
        j = np.arange(L)
        path = np.interp(j, j[visible], path[visible]).astype(np.float32)
    return _blur(path[None, :], 0.1, max(1.0, L / 80))[0].astype(np.float32)


@dataclass(frozen=True)
class PleuraTrack:
    """The pleural line over a clip.

    Attributes:
        geometry: the clip's scan geometry.
        rows: (T, L) float32 beam row of the pleura on every scan line of every frame.
        visible: (T, L) bool, where the pleura is seen (not under a rib, inside the sector).
        slide: (T,) float32 lateral displacement of the pleura's texture since frame 0, in
            scan lines (lung sliding and probe drift), for moving drawn artefacts with it.
        contrast: the pleura's echo over the sector's median echo (clip mean; about 1 when
            there is no line to find, 2-6 on real lung views).
    """

    geometry: FittedGeometry
    rows: np.ndarray
    visible: np.ndarray
    slide: np.ndarray
    contrast: float = 0.0

    def image_curve(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Image (x, y) points (L, 2) of the pleura in frame ``t`` and their visibility."""
        L = self.rows.shape[1]
        return self.geometry.beam_to_xy(self.rows[t], np.arange(L)), self.visible[t]


def lateral_shift(a: np.ndarray, b: np.ndarray, min_response: float = 0.3) -> float:
    """Lateral shift (columns) of ``b`` relative to ``a``, by phase correlation; 0 when the
    correlation peak is weaker than ``min_response`` (no reliable match: assume no motion)."""
    if a.shape[0] < 2 or a.shape[1] < 8:
        return 0.0
    win = cv2.createHanningWindow((a.shape[1], a.shape[0]), cv2.CV_32F)
    (dx, _dy), resp = cv2.phaseCorrelate(a.astype(np.float32), b.astype(np.float32), win)
    return float(dx) if resp > min_response else 0.0


def track_pleura(frames: np.ndarray, probe: str | None = None, band: float = 0.06,
                 sigma_t: float = 1.5) -> PleuraTrack:
    """Detect the pleura on a clip and follow it frame by frame.

    Args:
        frames: (T, H, W) uint8 grey frames cropped to the scan region.
        probe: "convex", "linear" or None (guessed from the sector).
        band: per frame, the path is searched within ``band`` x depth of the clip's path.
        sigma_t: temporal smoothing of the per-frame paths (Gaussian, frames).

    Returns:
        The :class:`PleuraTrack`.
    """
    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.shape[0] < 1:
        raise ValueError(f"frames must be (T, H, W) grey, got shape {frames.shape}")
    fg = fit_geometry(frames, probe)
    valid = beam_valid(fg)
    beams = np.stack([fg.to_beam(f) for f in frames]).astype(np.float32)
    T, D, L = beams.shape
    dec = decorrelation(beams, valid)
    mean = beams.mean(axis=0)
    rows0, vis0 = detect_pleura(mean, dec, valid)
    rows_i = np.arange(D, dtype=np.float32)[:, None]
    near = np.abs(rows_i - rows0[None, :]) <= max(2.0, band * D)
    step = max(1, round(D / L))
    paths = np.empty((T, L), np.float32)
    for t in range(T):
        lo, hi = max(0, t - 1), min(T, t + 2)  # 3-frame mean: speckle averages out
        sc = np.where(near, pleura_score(beams[lo:hi].mean(axis=0), dec, valid), -1.0)
        paths[t] = best_path(sc, step, 0.15, lines=vis0 if vis0.sum() >= 2 else None)
    if T > 1 and sigma_t > 0:
        paths = cv2.GaussianBlur(paths, (1, 0), sigmaX=0.1, sigmaY=sigma_t,
                                 borderType=cv2.BORDER_REFLECT)
    rows = np.stack([_fill_invisible(p, vis0, L) for p in paths])
    inside = valid[np.clip(np.round(rows).astype(int), 0, D - 1), np.arange(L)[None, :]]
    visible = inside & vis0[None, :]
    # Lateral motion of the band around the pleura (chest wall just above it moves with the
    # probe, the pleura with the sliding lung); uncertain steps count as no motion.
    r0 = int(np.clip(np.median(rows0) - 0.05 * D, 0, D - 2))
    r1 = int(np.clip(np.median(rows0) + 0.2 * D, r0 + 2, D))
    shifts = [0.0] + [np.clip(lateral_shift(beams[t - 1, r0:r1], beams[t, r0:r1]),
                              -0.03 * L, 0.03 * L) for t in range(1, T)]
    slide = np.cumsum(shifts).astype(np.float32)
    return PleuraTrack(fg, rows.astype(np.float32), visible, slide,
                       pleura_contrast(mean, valid, rows0, vis0))


def pleura_contrast(mean_beam: np.ndarray, valid: np.ndarray, rows: np.ndarray,
                    visible: np.ndarray) -> float:
    """Median (over seen lines) brightest echo within 1 % of the depth of ``rows``, over the
    median echo of the sector (+1 grey level)."""
    if not visible.any() or not valid.any():
        return 0.0
    D, L = mean_beam.shape
    k = max(1, round(0.01 * D))
    r = np.clip(np.round(rows).astype(int), k, D - k - 1)
    j = np.arange(L)
    peak = np.max([mean_beam[r + i, j] for i in range(-k, k + 1)], axis=0)
    return float(np.median(peak[visible]) / (np.median(mean_beam[valid]) + 1.0))
