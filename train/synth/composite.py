"""Pathology composited on *real* healthy clips, with exact pixel truth (issue #26).

The simulator's frames look like cartoons next to real scans; real clips have no pixel labels.
Here the background, speckle, probe geometry and device look are a real healthy clip's and only
the findings are drawn, below the pleura that :mod:`train.synth.pleura_line` tracks, at the
paper's four levels (PAPER.md, "The score"):

- 0: the clip as it is; the pleura and A-line band are labelled 0;
- 1: individual B-lines: hyperechoic bands along the scan lines (radial on a convex probe)
  from the pleura to the bottom that erase the A-lines beneath them, plus a slightly indented,
  irregular pleura in the affected zone;
- 2: confluent (wider, brighter, merging) B-lines, a broken or thickened pleura and small
  hypoechoic subpleural consolidations with a bright deep border and a white area below;
- 3: white lung (the whole zone below the pleura bright, of varying strength), in about half of
  the clips a large consolidation with tissue-like texture and air bronchograms, in about a
  third an effusion (an anechoic lens under the parietal pleura with the lung surface beneath).

Everything is drawn in *lung coordinates* (scan line minus the measured lateral sliding, depth
below the tracked pleura), so a finding moves with the pleura from frame to frame. The frame's
own speckle is kept: a pixel becomes ``(1 - w) * I + w * level * texture`` where ``texture`` is
the frame's speckle ratio ``I / local_mean(I)`` (streaked along the scan line for B-lines,
as is) and ``level`` the finding's echo level, measured on the clip (its pleura's brightness,
its chest wall's, its lung haze), times random strength, depth attenuation and gain. Outside the
labelled region ``w = 0``: the frame is unchanged there, so the mask *is* the rendered region.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from train.synth.pleura_line import PleuraTrack
from train.synth.scene import smooth_noise

#: Bumped whenever the composite images or labels change for the same seed.
COMPOSITE_VERSION = 1
LEVELS = (0, 1, 2, 3)


@dataclass(frozen=True)
class Marker:
    """One drawn finding, in lung coordinates (lines relative to the sliding lung, rows below
    the pleura); sizes are fractions of the beam grid's lines L / depth D.

    Attributes:
        kind: "bline", "consolidation", "effusion".
        centre: scan line (lung coordinates, fraction of L).
        width: B-line Gaussian half-width / consolidation or effusion half-width (of L).
        depth: consolidation centre depth below the pleura / effusion thickness (of D).
        height: consolidation half-height (of D).
        amp: echo strength relative to the clip's pleura brightness.
        atten: depth attenuation (nepers over the full depth).
        tail: strength of the white area below a consolidation (0 = none).
        cover: how much a B-line replaces what is under it (1 = all; the A-lines vanish).
        seed: shape/texture randomness of this marker.
    """

    kind: str
    centre: float
    width: float
    depth: float = 0.0
    height: float = 0.0
    amp: float = 1.0
    atten: float = 0.0
    tail: float = 0.0
    cover: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class CompositePlan:
    """Everything random about one composite clip, drawn up front by :func:`plan_composite`.

    Attributes:
        level: target score 0..3.
        zone: (start, end) lateral span of the findings, lung coordinates (fraction of L).
        markers: the findings.
        gain: overall gain applied to every added echo.
        streak: how much B-line texture is streaked along the scan line (0..1).
        irregular: pleural displacement amplitude (rows, fraction of D) in the zone.
        broken: gaps in the pleura, ((centre, half-width), ...) fractions of L.
        thicken: pleura thickening factor (1 = none).
        white: white-lung strength (level 3), 0 otherwise.
        flicker: per-frame B-line strength modulation amplitude and period (frames).
    """

    level: int
    zone: tuple[float, float]
    markers: tuple[Marker, ...] = ()
    gain: float = 1.0
    streak: float = 0.6
    irregular: float = 0.0
    broken: tuple[tuple[float, float], ...] = ()
    thicken: float = 1.0
    white: float = 0.0
    flicker: tuple[float, float] = (0.0, 40.0)
    noise_seed: int = field(default=0)


def plan_composite(level: int, rng: np.random.Generator,
                   visible: np.ndarray | None = None) -> CompositePlan:
    """Draw the findings of one composite clip of target ``level``.

    Args:
        level: 0..3 (Soldati score).
        rng: the clip's generator.
        visible: (L,) bool, lines where the pleura is seen on the clip; the zone is placed
            over them (default: all).

    Raises:
        ValueError: for a level outside 0..3.
    """
    if level not in LEVELS:
        raise ValueError(f"level {level!r}: valid levels are 0, 1, 2, 3")
    seed = int(rng.integers(2 ** 31))
    if level == 0:
        return CompositePlan(level=0, zone=(0.0, 0.0), noise_seed=seed)
    lo, hi = _visible_span(visible)
    span = hi - lo
    frac = 1.0 if level == 3 and rng.random() < 0.5 else rng.uniform(0.45, 1.0)
    z0 = lo + rng.uniform(0, 1 - frac) * span
    zone = (z0, z0 + frac * span)
    gain = rng.uniform(0.75, 1.2)
    markers: list[Marker] = []

    def bline(width: tuple[float, float], amp: tuple[float, float]) -> Marker:
        w = rng.uniform(*width)
        c = _place(rng, zone, 4 * w, visible)
        return Marker("bline", c, w, amp=rng.uniform(*amp), atten=rng.uniform(0.0, 1.6),
                      cover=rng.uniform(0.8, 0.97), seed=int(rng.integers(2 ** 31)))

    if level == 1:
        for _ in range(int(min(5, 1 + rng.poisson(1.3 * frac)))):
            markers.append(bline((0.012, 0.03), (0.15, 0.55)))
    if level == 2:
        for _ in range(int(rng.integers(1, 4))):
            markers.append(bline((0.02, 0.05), (0.2, 0.6)))
        for _ in range(int(rng.integers(1, 4))):
            w = rng.uniform(0.03, 0.08)
            c = _place(rng, zone, 1.2 * w, visible)
            h = rng.uniform(0.03, 0.08)
            markers.append(Marker("consolidation", c, w, depth=h * rng.uniform(0.5, 0.9),
                                  height=h, amp=rng.uniform(0.25, 0.6),
                                  atten=rng.uniform(0.0, 1.6),
                                  tail=rng.uniform(0.15, 0.5) if rng.random() < 0.8 else 0.0,
                                  seed=int(rng.integers(2 ** 31))))
    if level == 3:
        if rng.random() < 0.5:
            w = min(rng.uniform(0.12, 0.3), 0.45 * (zone[1] - zone[0]))
            c = _place(rng, zone, 1.2 * w, visible)
            h = rng.uniform(0.1, 0.25)
            markers.append(Marker("consolidation", c, w, depth=h * rng.uniform(0.6, 0.95),
                                  height=h, amp=rng.uniform(0.3, 0.7),
                                  seed=int(rng.integers(2 ** 31))))
        if rng.random() < 0.33:
            w = min(rng.uniform(0.15, 0.35), 0.5 * (zone[1] - zone[0]))
            c = _place(rng, zone, w, visible)
            markers.append(Marker("effusion", c, w, depth=rng.uniform(0.05, 0.14),
                                  amp=rng.uniform(0.0, 0.06), seed=int(rng.integers(2 ** 31))))
    broken: tuple[tuple[float, float], ...] = ()
    if level >= 2:
        broken = tuple((rng.uniform(*zone), rng.uniform(0.01, 0.04))
                       for _ in range(int(rng.integers(1, 4))))
    return CompositePlan(
        level=level, zone=zone, markers=tuple(markers), gain=gain,
        streak=rng.uniform(0.1, 0.4),
        irregular=rng.uniform(0.003, 0.008),
        broken=broken,
        thicken=1.0 if level == 1 else rng.uniform(1.6, 2.8),
        white=rng.uniform(0.25, 0.7) if level == 3 else 0.0,
        flicker=(rng.uniform(0.0, 0.25), rng.uniform(25, 90)), noise_seed=seed)


def _place(rng: np.random.Generator, zone: tuple[float, float], half: float,
           visible: np.ndarray | None, tries: int = 30) -> float:
    """A centre (fraction of L) in ``zone`` whose whole support ``centre +- half`` lies on seen
    lines (a finding is not drawn into a rib shadow); else the middle of the widest seen run
    in the zone."""
    lo, hi = zone[0] + half, zone[1] - half
    if visible is None or not np.any(visible):
        return float(rng.uniform(lo, hi)) if hi > lo else 0.5 * (zone[0] + zone[1])
    L = len(visible)
    for _ in range(tries):
        c = rng.uniform(lo, hi) if hi > lo else 0.5 * (zone[0] + zone[1])
        a, b = int(np.floor((c - half) * L)), int(np.ceil((c + half) * L))
        if a >= 0 and b <= L and visible[a:b].all():
            return float(c)
    seen = visible.copy()
    seen[:max(0, int(zone[0] * L))] = False
    seen[int(np.ceil(zone[1] * L)):] = False
    if not seen.any():
        seen = visible
    edges = np.flatnonzero(np.diff(np.concatenate([[0], seen.astype(int), [0]])))
    runs = edges.reshape(-1, 2)
    a, b = runs[np.argmax(runs[:, 1] - runs[:, 0])]
    return float(0.5 * (a + b) / L)


def _visible_span(visible: np.ndarray | None) -> tuple[float, float]:
    """(first, last + 1) visible line as fractions of L (0, 1 when unknown)."""
    if visible is None or not np.any(visible):
        return 0.0, 1.0
    idx = np.flatnonzero(visible)
    L = len(visible)
    return idx[0] / L, (idx[-1] + 1) / L


def raised_cosine(x: np.ndarray) -> np.ndarray:
    """1 at 0, 0 for |x| >= 1, cos^2 in between: a compactly supported bump (float32)."""
    x = np.abs(x)
    return np.where(x < 1, np.cos(0.5 * np.pi * np.minimum(x, 1)) ** 2, 0).astype(np.float32)


def _ramp(x: np.ndarray) -> np.ndarray:
    """0 below 0, 1 above 1, smooth in between (float32)."""
    x = np.clip(x, 0, 1)
    return (x * x * (3 - 2 * x)).astype(np.float32)


@dataclass(frozen=True)
class ClipStats:
    """Echo levels measured on a clip (grey levels of its clip-mean beam image).

    Attributes:
        pleura: median brightness of the visible pleura (the B-line / white-lung reference).
        tissue: median level of the chest wall between the skin and the pleura.
    """

    pleura: float
    tissue: float


def clip_stats(frames: np.ndarray, track: PleuraTrack) -> ClipStats:
    """Measure :class:`ClipStats` on the clip's mean beam image."""
    fg = track.geometry
    mean = fg.to_beam(frames.mean(axis=0).astype(np.float32))
    D, L = mean.shape
    rows = np.median(track.rows, axis=0)
    vis = track.visible.mean(axis=0) > 0.5
    if not vis.any():
        vis = np.ones(L, bool)
    band = max(1, round(0.012 * D))
    r = np.clip(np.round(rows).astype(int), band, D - band - 1)
    j = np.arange(L)
    peak = np.max([mean[r + k, j] for k in range(-band, band + 1)], axis=0)
    chest = [mean[int(0.35 * r[i]):max(int(0.35 * r[i]) + 1, int(0.9 * r[i])), i].mean()
             for i in np.flatnonzero(vis)]
    return ClipStats(pleura=float(max(40.0, np.median(peak[vis]))),
                     tissue=float(max(15.0, np.median(chest))))


class _Canvas:
    """A marker pre-drawn in its own local grid (rows = depth below the pleura, columns =
    lung lines), sampled per frame at the lung coordinates of every beam sample."""

    def __init__(self, weight: np.ndarray, level: np.ndarray, x0: float, y0: float) -> None:
        self.weight, self.level, self.x0, self.y0 = weight, level, x0, y0

    def sample(self, lx: np.ndarray, ly: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mx = (lx - self.x0).astype(np.float32)
        my = (ly - self.y0).astype(np.float32)
        w = cv2.remap(self.weight, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                      borderValue=0)
        v = cv2.remap(self.level, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return w, v


def _blob_canvas(m: Marker, D: int, L: int, stats: ClipStats,
                 bronchograms: bool) -> tuple[_Canvas, _Canvas]:
    """A consolidation: irregular hypoechoic ellipse (tissue level, heterogeneous) with air
    bronchograms (bright specks and short branching streaks) and a bright irregular deep border.
    Returns the body and the border canvases."""
    rng = np.random.default_rng(m.seed)
    ru, rd = max(2.0, m.width * L), max(2.0, m.height * D)
    h, w = int(3.2 * rd + 8), int(3.2 * ru + 8)  # room for the wobbly outline
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = h / 2.0, w / 2.0
    ang = np.arctan2((yy - cy) / rd, (xx - cx) / ru)
    wob = np.ones_like(ang)
    for k, a in ((2, 0.12), (3, 0.1), (5, 0.05), (7, 0.03)):  # lobulated, not star-shaped
        wob += rng.uniform(0.3, 1.0) * a * np.cos(k * ang + rng.uniform(0, 2 * np.pi))
    rho = np.sqrt(((xx - cx) / ru) ** 2 + ((yy - cy) / rd) ** 2) / wob
    body = _ramp((1.0 - rho) / 0.35)
    het = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0),
                           max(2.0, 0.15 * min(ru, rd)))
    het /= het.std() + 1e-6
    tissue = max(stats.tissue, 0.4 * stats.pleura)  # hepatised lung: mid-grey, like tissue
    level = tissue * (0.5 + m.amp) * np.clip(1.0 + 0.15 * het, 0.6, 1.4)
    if bronchograms:
        air = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(2, 6))):
            x, y = cx + rng.uniform(-0.6, 0.6) * ru, cy + rng.uniform(-0.6, 0.6) * rd
            for _ in range(int(rng.integers(1, 4))):  # a short branching streak
                a = rng.uniform(0, 2 * np.pi)
                n = rng.uniform(2, 0.35 * ru)
                x1, y1 = x + n * np.cos(a), y + 0.5 * n * np.sin(a)
                cv2.line(air, (round(x), round(y)), (round(x1), round(y1)), 1.0, 1)
                x, y = x1, y1
        air = cv2.GaussianBlur(air, (0, 0), 0.6) * (rho < 0.85) * rng.uniform(0.5, 0.9)
        level = level * (1 - air) + stats.pleura * rng.uniform(0.7, 1.1) * air
    edge = raised_cosine((rho - 1.05) / 0.2) * _ramp((yy - cy + 0.2 * rd) / (0.3 * rd))
    edge *= np.clip(0.5 + 0.4 * het, 0.0, 0.9)
    edge_level = np.full((h, w), stats.pleura * rng.uniform(0.5, 0.85), np.float32)
    x0, y0 = m.centre * L - cx, m.depth * D - cy
    return (_Canvas(body.astype(np.float32), level.astype(np.float32), x0, y0),
            _Canvas(edge.astype(np.float32), edge_level, x0, y0))


class _Layers:
    """Echo layers composited front to back ("over"): weight, level, streak weight."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.w = np.zeros(shape, np.float32)
        self.level = np.zeros(shape, np.float32)
        self.streak = np.zeros(shape, np.float32)

    def over(self, w: np.ndarray, level: np.ndarray | float, streak: float = 0.0) -> None:
        w = np.clip(w, 0, 1).astype(np.float32)
        new = self.w + w * (1 - self.w)
        keep = self.w * (1 - w)
        safe = np.maximum(new, 1e-6)
        self.level = (self.level * keep + level * w) / safe
        self.streak = (self.streak * keep + streak * w) / safe
        self.w = new


class CompositeRenderer:
    """Renders one :class:`CompositePlan` onto the frames of a tracked real clip.

    Args:
        frames: (T, H, W) uint8 grey frames (the ones the track was made on).
        track: the clip's :class:`~train.synth.pleura_line.PleuraTrack`.
        plan: what to draw.
    """

    def __init__(self, frames: np.ndarray, track: PleuraTrack, plan: CompositePlan) -> None:
        self.frames, self.track, self.plan = frames, track, plan
        fg = track.geometry
        D, L = fg.beam_hw
        self.D, self.L = D, L
        self.stats = clip_stats(frames, track)
        self.delta = max(1.5, 0.012 * D)
        rng = np.random.default_rng(plan.noise_seed)
        n = 3 * L  # lateral noise in lung coordinates, lines -L .. 2L
        self.mod = smooth_noise(n, max(1.0, rng.uniform(0.05, 0.12) * L), rng)
        self.frag = smooth_noise(n, max(1.0, rng.uniform(0.006, 0.02) * L), rng)
        self.irr = smooth_noise(n, max(1.0, rng.uniform(0.015, 0.04) * L), rng)
        self.phase = rng.uniform(0, 2 * np.pi, len(plan.markers))
        self.canvases = {i: _blob_canvas(m, D, L, self.stats, bronchograms=plan.level == 3)
                         for i, m in enumerate(plan.markers) if m.kind == "consolidation"}
        self.valid = fg.to_beam(fg.geom.sector.astype(np.float32)) > 0.5
        self._pleura_row = float(np.median(track.rows))
        yy, xx = np.mgrid[0:frames.shape[1], 0:frames.shape[2]].astype(np.float32)
        self._xy = (xx, yy)

    def _lateral(self, noise: np.ndarray, u: np.ndarray) -> np.ndarray:
        return np.interp(u * self.L, np.arange(-self.L, 2 * self.L), noise).astype(np.float32)

    def _coords(self, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Lung coordinates of frame t: u (L,) fraction of L, depth below pleura (D, L) rows,
        and the (L,) visibility of each line: 0 under a rib shadow or outside the sector,
        rising smoothly to 1 over 2.5 % of the lines away from them (a finding fades into a
        shadow instead of ending on a hard edge)."""
        tr = self.track
        u = (np.arange(self.L, dtype=np.float32) - tr.slide[t]) / self.L
        dd = np.arange(self.D, dtype=np.float32)[:, None] - tr.rows[t][None, :]
        seen = np.pad(tr.visible[t].astype(np.uint8), 1)[None, :]  # lines past the ends: unseen
        dist = cv2.distanceTransform(np.repeat(seen, 3, axis=0), cv2.DIST_L1, 3)[1, 1:-1]
        return u, dd, _ramp(dist / max(1.0, 0.025 * self.L))

    def zone_envelope(self, u: np.ndarray) -> np.ndarray:
        z0, z1 = self.plan.zone
        if z1 <= z0:
            return np.zeros_like(u)
        return _ramp((u - z0) / 0.05) * _ramp((z1 - u) / 0.05)

    def render(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame ``t``: the composite (H, W) uint8 and its label map (H, W) uint8
        (0 = background, s + 1 = score s)."""
        fg = self.track.geometry.geom
        image = self.frames[t].astype(np.float32)
        u, dd, vis = self._coords(t)
        env = self.zone_envelope(u)
        if self.plan.level == 0:
            lab = self._labels(t, dd, vis, env, None)
            return self.frames[t].copy(), fg.to_image(lab, nearest=True)
        image = self._warp_pleura(image, u, dd, env, vis)
        layers = self._layers(t, image, u, dd, vis, env)
        lab = self._labels(t, dd, vis, env, layers.w > 0)
        speck, streak = self._textures(image)
        w = fg.to_image(layers.w)
        level = fg.to_image(layers.level)
        s = fg.to_image(layers.streak)
        tex = speck + s * (streak - speck)
        out = image + w * (level * tex - image)
        return np.clip(np.round(out), 0, 255).astype(np.uint8), fg.to_image(lab, nearest=True)

    def _band(self) -> tuple[float, float]:
        """Rows (relative to the pleura) of the pleural band a zone's label covers: the
        displaced, thickened or broken pleura."""
        d = self.delta
        return -3 * d - 1, max(3 * d, (1.5 * self.plan.thicken + 1) * d) + 1

    def _labels(self, t: int, dd: np.ndarray, vis: np.ndarray, env: np.ndarray,
                support: np.ndarray | None) -> np.ndarray:
        """(D, L) uint8 beam label map: the healthy pleura + A-line band (score 0) outside the
        zone, the zone's pleural band (or, at level 3, everything below it) and every drawn
        layer with the plan's level; nothing under a rib shadow or outside the sector."""
        d, lvl = self.delta, self.plan.level
        p = self.track.rows[t][None, :]
        lab = np.zeros((self.D, self.L), np.uint8)
        zone = (env > 0)[None, :]
        lab[(dd >= -d) & (dd <= p + d) & ~zone] = 1  # pleura and the first A-line (at 2 p)
        if lvl >= 1:
            lo, hi = self._band()
            region = zone & (dd >= lo) & ((dd <= hi) if lvl < 3 else True)
            if support is not None:
                region = region | support
            lab[region] = lvl + 1
        lab[:, vis <= 0] = 0
        lab[~self.valid] = 0
        return lab

    def _warp_pleura(self, image: np.ndarray, u: np.ndarray, dd: np.ndarray, env: np.ndarray,
                     vis: np.ndarray) -> np.ndarray:
        """Displace the pleural band along the scan lines: an indented, irregular pleura."""
        if self.plan.irregular <= 0 or not env.any():
            return image
        fg = self.track.geometry
        amp = self.plan.irregular * self.D * self._lateral(self.irr, u) * env * vis
        dr = fg.geom.to_image(amp[None, :] * raised_cosine(dd / (3 * self.delta)))
        moved = np.abs(dr) > 1e-3
        if not moved.any():
            return image
        mx, my = fg.geom.map_x, fg.geom.map_y
        xx, yy = self._xy
        lin, rep = cv2.INTER_LINEAR, cv2.BORDER_REPLICATE
        sx = (cv2.remap(fg.beam_x, mx, my - dr, lin, borderMode=rep)
              - cv2.remap(fg.beam_x, mx, my, lin, borderMode=rep))
        sy = (cv2.remap(fg.beam_y, mx, my - dr, lin, borderMode=rep)
              - cv2.remap(fg.beam_y, mx, my, lin, borderMode=rep))
        src_x = np.where(moved, xx + sx, xx).astype(np.float32)
        src_y = np.where(moved, yy + sy, yy).astype(np.float32)
        return cv2.remap(image, src_x, src_y, lin, borderMode=cv2.BORDER_REFLECT)

    def _textures(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The frame's speckle ratio ``I / local mean`` and a version streaked along the scan
        lines (B-line texture), both (H, W) with mean about 1.

        Where the frame is too dark to carry speckle (the far field of a weak probe), the
        ratio is borrowed from the lit lung just below the pleura of the same frame and line,
        mirrored down in depth, so a bright finding drawn there still has the frame's grain.
        """
        fg = self.track.geometry
        mu = cv2.GaussianBlur(image, (0, 0), 1.5)
        speck = image / np.maximum(mu, 4.0)
        nb = fg.to_beam(speck.astype(np.float32))
        lit = np.clip(fg.to_beam(mu) / (0.25 * self.stats.pleura), 0, 1)
        b0 = int(np.clip(self._pleura_row + 0.04 * self.D, 0, self.D - 2))
        b1 = int(np.clip(self._pleura_row + 0.3 * self.D, b0 + 2, self.D))
        r = np.arange(self.D) - b0
        period = 2 * (b1 - b0)
        src = b0 + np.where(r < 0, 0, np.minimum(r % period, period - r % period))
        borrowed = nb[np.clip(src, 0, self.D - 1)]
        nb = lit * nb + (1 - lit) * borrowed
        ns = cv2.GaussianBlur(nb, (0, 0), sigmaX=0.4, sigmaY=max(1.0, 0.008 * self.D))
        v = self.valid
        k = float((nb[v] - 1).std() / max((ns[v] - 1).std(), 1e-3)) if v.any() else 1.0
        ns = np.clip(1 + (ns - 1) * 0.8 * k, 0, 3).astype(np.float32)
        lit_img = np.clip(mu / (0.25 * self.stats.pleura), 0, 1)
        resampled = fg.geom.to_image(nb)
        ref = (lit_img > 0.9) & fg.geom.sector
        if ref.sum() > 100:  # resampling smooths a little: give the grain its contrast back
            k = float(speck[ref].std() / max(resampled[ref].std(), 1e-3))
            resampled = 1 + (resampled - 1) * min(k, 2.0)
        speck = lit_img * speck + (1 - lit_img) * resampled
        return speck.astype(np.float32), fg.geom.to_image(ns)

    def _layers(self, t: int, image: np.ndarray, u: np.ndarray, dd: np.ndarray,
                vis: np.ndarray, env: np.ndarray) -> _Layers:
        """Every drawn echo of frame t on the beam grid."""
        plan, st, d, D, L = self.plan, self.stats, self.delta, self.D, self.L
        fg = self.track.geometry
        bg = cv2.GaussianBlur(fg.to_beam(image), (0, 0), sigmaX=max(1.0, 0.05 * L),
                              sigmaY=max(1.0, 0.05 * D))
        ref = st.pleura * plan.gain
        lay = _Layers((D, L))
        v = vis[None, :]
        below = _ramp((dd + 0.5 * d) / max(1.0, 0.02 * D))  # from the pleura down
        depth = np.clip(dd, 0, None) / D
        lung = dd >= -3 * d
        if plan.white > 0:
            mod = np.clip(0.7 + 0.45 * self._lateral(self.mod, u), 0.15, 1.3)[None, :]
            lay.over(env[None, :] * below * 0.92 * v,
                     0.5 * bg + plan.white * ref * mod * np.exp(-0.8 * depth), 0.4 * plan.streak)
        lx = np.broadcast_to((u * L)[None, :], (D, L))
        for i, m in enumerate(plan.markers):
            if m.kind == "bline":
                fl = 1 + plan.flicker[0] * np.sin(2 * np.pi * t / plan.flicker[1] + self.phase[i])
                prof = raised_cosine((u - m.centre) / (4 * m.width))[None, :]
                lay.over(m.cover * prof * below * v * lung,
                         bg + m.amp * fl * ref * np.exp(-m.atten * depth), plan.streak)
            elif m.kind == "consolidation":
                body, edge = self.canvases[i]
                wb, lb = body.sample(lx, dd)
                lay.over(wb * v * lung, lb * plan.gain)
                we, le = edge.sample(lx, dd)
                lay.over(we * v * lung, le * plan.gain)
                if m.tail > 0:
                    bottom = (m.depth + 0.9 * m.height) * D
                    prof = raised_cosine((u - m.centre) / (0.7 * m.width))[None, :]
                    lay.over(prof * _ramp((dd - bottom) / max(1.0, 0.02 * D)) * v,
                             bg + m.tail * ref * np.exp(-m.atten * depth), plan.streak)
            elif m.kind == "effusion":
                x = (u - m.centre) / m.width
                wob = np.clip(1 + 0.12 * self._lateral(self.mod, u), 0.7, 1.3)
                th = (m.depth * D * np.clip(1 - x * x, 0, 1) ** 0.8 * wob)[None, :]
                inside = _ramp(np.minimum(th - dd, dd + d) / 3.0) * (th > 0.5)
                lay.over(inside * v, ref * m.amp)
                lay.over(raised_cosine((dd - th - d) / (1.5 * d)) * (th > 1) * v, 0.8 * ref)
        if plan.thicken > 1:
            ct, hw = 0.5 * plan.thicken * d, plan.thicken * d + d
            frag = np.clip(0.85 + 0.35 * self._lateral(self.frag, u), 0.3, 1.3)[None, :]
            lay.over(0.7 * env[None, :] * raised_cosine((dd - ct) / hw) * v,
                     np.maximum(bg, 0.85 * ref * frag))
        for gc, gw in plan.broken:
            gap = raised_cosine((u - gc) / gw)[None, :] * raised_cosine(dd / (2.5 * d))
            lay.over(0.85 * gap * v, 0.8 * bg)
        lay.w[~self.valid] = 0
        return lay


def render_clip(frames: np.ndarray, track: PleuraTrack,
                plan: CompositePlan) -> tuple[np.ndarray, np.ndarray]:
    """Render a whole clip: composite frames (T, H, W) uint8 and label maps (T, H, W) uint8.

    The label maps are what the LabelMe polygons of :func:`labels_to_shapes` rebuild.
    """
    r = CompositeRenderer(frames, track, plan)
    out = [r.render(t) for t in range(len(frames))]
    return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])
