"""The simulated lung under the probe: echogenicity and score labels on a *world* beam grid.

The world is wider than the field of view (``Uw = 3 L`` scan lines). Along it lie *zones*,
each with a Soldati score (Roy et al. 2020, sec. II; PAPER.md "The score"):

- 0: continuous pleural line, horizontal A-lines at multiples of the pleural depth;
- 1: irregular/indented pleura, a few vertical B-lines (pleura to bottom, erasing A-lines);
- 2: broken pleura, small dark subpleural consolidations with white areas below;
- 3: white lung (confluent B-lines) and/or a large consolidation.

The probe looks at a window of ``L`` lines; drifting it across a zone border changes the
frame score part-way through a video. Two layers move differently: the chest wall (skin, fat,
muscle, ribs) moves with the probe; the lung (pleura and everything below) also *slides*.
Label values are 0 = background, s + 1 = score s (the dataset's mask convention).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class World:
    """Static layers of one video, all (D, Uw) on the world beam grid.

    Attributes:
        tissue: chest-wall echogenicity (moves with the probe).
        lung: lung echogenicity, pleura included (moves with the probe plus lung sliding).
        lung_region: True at and below the pleura (where ``lung`` replaces ``tissue``).
        lung_label: 0 = background, s + 1 = marker of score s (slides with the lung).
        shadow: rib-shadow attenuation multiplier (1 = none), moves with the probe.
        zone_scores: (Uw,) int, the score of the zone each world line belongs to.
    """

    tissue: np.ndarray
    lung: np.ndarray
    lung_region: np.ndarray
    lung_label: np.ndarray
    shadow: np.ndarray
    zone_scores: np.ndarray


def smooth_noise(n: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    """(n,) float32 Gaussian noise low-passed with a Gaussian of ``scale`` samples, std 1."""
    x = rng.standard_normal(n + 8 * int(scale + 1)).astype(np.float32)
    k = max(1, int(3 * scale)) * 2 + 1
    y = cv2.GaussianBlur(x[None, :], (k, 1), sigmaX=max(scale, 0.3))[0]
    y = y[4 * int(scale + 1): 4 * int(scale + 1) + n]
    return (y - y.mean()) / (y.std() + 1e-6)


def _gauss(x: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * (x / sigma) ** 2).astype(np.float32)


def chest_wall(D: int, Uw: int, pleura: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Skin, subcutaneous fat with septa, fascia lines and striated muscle above the pleura."""
    d = np.arange(D, dtype=np.float32)[:, None]
    p = float(pleura.mean())
    skin = rng.uniform(0.015, 0.04) * D
    fat_end = skin + rng.uniform(0.15, 0.45) * max(p - skin, 4.0)
    k = Uw / 384.0  # lateral lengths below were tuned for L = 128 lines
    echo = np.full((D, Uw), rng.uniform(0.3, 0.6), np.float32)
    echo += rng.uniform(1.5, 3.5) * _gauss(d - skin * 0.5, skin * 0.6)
    # Muscle: horizontally streaked texture below the fat.
    streak = cv2.GaussianBlur(rng.standard_normal((D, Uw)).astype(np.float32), (0, 0),
                              sigmaX=rng.uniform(5, 16) * k, sigmaY=rng.uniform(0.4, 0.9))
    streak = 1.0 + rng.uniform(0.6, 1.4) * streak / (streak.std() + 1e-6)
    muscle = np.clip(rng.uniform(0.5, 1.0) * streak, 0.05, None)
    echo = np.where(d > fat_end, muscle, echo)
    # Fascia: thin bright wavy lines between the layers.
    u = np.arange(Uw)
    for depth in [fat_end, *rng.uniform(skin, p - 3, rng.integers(1, 7))]:
        wave = depth + rng.uniform(0.5, 2.5) * smooth_noise(Uw, rng.uniform(15, 40) * k, rng)
        echo += rng.uniform(0.8, 3.5) * _gauss(d - wave[None, u], rng.uniform(0.4, 1.0))
    return (rng.uniform(0.04, 0.2) * echo).astype(np.float32)


def _pleura_band(label: np.ndarray, pleura: np.ndarray, u0: int, u1: int, value: int,
                 below: float, above: float = 3.0) -> None:
    D = label.shape[0]
    d = np.arange(D)[:, None]
    p = pleura[None, u0:u1]
    band = (d >= p - above) & (d <= p + below)
    label[:, u0:u1][band] = value


def _b_line(lung: np.ndarray, aline_gain: np.ndarray, pleura: np.ndarray, c: float, w: float,
            amp: float, rng: np.random.Generator) -> tuple[int, int]:
    """Add one B-line (bright vertical comet tail, pleura to bottom); return its label span."""
    D, Uw = lung.shape
    u = np.arange(Uw, dtype=np.float32)
    prof = _gauss(u - c, w)
    d = np.arange(D, dtype=np.float32)[:, None]
    p = pleura[int(np.clip(c, 0, Uw - 1))]
    depth = np.clip((d - p) / 3.0, 0, 1) * (1.0 - rng.uniform(0.0, 0.5) * (d - p) / D)
    lung += amp * depth * prof[None, :]
    aline_gain *= 1.0 - 0.95 * prof
    return int(max(0, c - 2.2 * w)), int(min(Uw, c + 2.2 * w + 1))


def _blob(D: int, Uw: int, cu: float, cd: float, ru: float, rd: float,
          rng: np.random.Generator) -> np.ndarray:
    """(D, Uw) bool irregular ellipse (a consolidation's outline)."""
    d, u = np.mgrid[0:D, 0:Uw].astype(np.float32)
    ang = np.arctan2((d - cd) / rd, (u - cu) / ru)
    wob = 1.0 + 0.0 * ang
    for k in (2, 3, 5):
        wob += rng.uniform(0.04, 0.15) * np.cos(k * ang + rng.uniform(0, 2 * np.pi))
    return ((u - cu) / ru) ** 2 + ((d - cd) / rd) ** 2 < wob ** 2


def _consolidation(lung: np.ndarray, label: np.ndarray, pleura: np.ndarray,
                   intact: np.ndarray, zone: tuple[int, int], value: int, large: bool,
                   rng: np.random.Generator) -> None:
    """A hypoechoic tissue-like region under the pleura, bright deep border, white tail."""
    D, Uw = lung.shape
    u0, u1 = zone
    L = Uw / 3.0
    ru = rng.uniform(0.2, 0.4) * L if large else rng.uniform(0.035, 0.09) * L
    ru = min(ru, 0.5 * (u1 - u0))
    rd = rng.uniform(0.16, 0.32) * D if large else rng.uniform(0.03, 0.08) * D
    cu = rng.uniform(u0 + ru * 0.7, max(u0 + ru * 0.7 + 1, u1 - ru * 0.7))
    p = float(pleura[int(np.clip(cu, 0, Uw - 1))])
    cd = p + rd * rng.uniform(0.6, 0.95)
    blob = _blob(D, Uw, cu, cd, ru, rd, rng)
    blob &= np.arange(D)[:, None] > pleura[None, :]
    if not blob.any():
        return
    tex = rng.uniform(0.04, 0.25) * (1.0 + 0.4 * cv2.GaussianBlur(
        rng.standard_normal((D, Uw)).astype(np.float32), (0, 0), 2.0))
    lung[blob] = tex[blob]
    # Air bronchograms: a few bright specks / short streaks inside.
    ys, xs = np.nonzero(blob)
    for i in rng.integers(0, len(ys), rng.integers(2, 8 if large else 4)):
        cv2.ellipse(lung, (int(xs[i]), int(ys[i])), (int(rng.integers(1, 4) * L / 128), 1),
                    float(rng.uniform(0, 180)), 0, 360, float(rng.uniform(0.5, 2.5)), -1)
    edge = cv2.dilate(blob.astype(np.uint8), np.ones((3, 3), np.uint8)) - blob.astype(np.uint8)
    edge = edge.astype(bool) & (np.arange(D)[:, None] > cd)
    lung[edge] += rng.uniform(0.4, 2.0)
    lo, hi = int(max(u0, cu - ru)), int(min(u1, cu + ru + 1))
    intact[lo:hi] *= rng.uniform(0.0, 0.35)
    # The white area starts at the consolidation's deep border, column by column.
    rows = np.arange(D, dtype=np.float32)[:, None]
    has = blob.any(axis=0)
    deepest = np.where(has, D - 1 - np.argmax(blob[::-1], axis=0), cd + 0.5 * rd)
    tail = np.zeros_like(blob)
    if rng.random() < 0.8:  # the white area below (Roy et al.: "white areas below them")
        w = ru * rng.uniform(0.3, 0.7)
        prof = _gauss(np.arange(Uw, dtype=np.float32) - cu, w)
        amp = rng.uniform(0.3, 1.8)
        start = np.clip((rows - deepest[None, :]) / 4.0, 0, 1)
        lung += amp * prof[None, :] * start
        span = np.zeros(Uw, bool)
        span[max(0, int(cu - 1.8 * w)):int(cu + 1.8 * w) + 1] = True
        tail = (rows >= deepest[None, :]) & span[None, :]
    label[blob | tail] = value
    _pleura_band(label, pleura, lo, hi, value, below=3)


def _zone_markers(lung: np.ndarray, label: np.ndarray, aline_gain: np.ndarray,
                  intact: np.ndarray, pleura: np.ndarray, zone: tuple[int, int, int], L: int,
                  rng: np.random.Generator) -> None:
    """Draw the markers of one zone of score 1, 2 or 3 (in place) and label them s + 1."""
    u0, u1, s = zone
    D = lung.shape[0]
    k = L / 128.0  # lateral lengths below were tuned for L = 128 lines
    d = np.arange(D, dtype=np.float32)[:, None]
    width = u1 - u0
    if s == 1:
        _pleura_band(label, pleura, u0, u1, 2, below=4)
    n_b = {1: max(1, rng.poisson(width / L * rng.uniform(2, 4.5))),
           2: rng.poisson(width / L * 1.0), 3: 0}[s]
    for _ in range(n_b):
        w = rng.uniform(1.0, 3.5) * k
        c = rng.uniform(u0 + 2 * w, max(u0 + 2 * w + 1, u1 - 2 * w))
        lo, hi = _b_line(lung, aline_gain, pleura, c, w, rng.uniform(0.08, 0.8), rng)
        label[:, lo:hi][d[:, 0] >= pleura[int(c)] - 3] = s + 1
    if s == 2:
        _pleura_band(label, pleura, u0, u1, 3, below=4)
        for _ in range(max(1, rng.poisson(width / L * rng.uniform(1.5, 3.0)))):
            _consolidation(lung, label, pleura, intact, (u0, u1), 3, False, rng)
    if s == 3:
        below = d > pleura[None, u0:u1]
        # confluent B-lines: bright bands of varying width and strength that merge
        mod = np.clip(0.55 + rng.uniform(0.25, 0.5)
                      * smooth_noise(width, rng.uniform(1.5, 4.0) * k, rng), 0.1, 1.6)
        ramp = np.clip((d - pleura[None, u0:u1]) / 4.0, 0, 1)
        fade = 1.0 - rng.uniform(0.0, 0.7) * d / D
        lung[:, u0:u1] += rng.uniform(0.04, 0.4) * mod[None, :] * ramp * fade
        intact[u0:u1] *= np.clip(0.6 + 0.4 * smooth_noise(width, 2.0 * k, rng), 0.1, 1.2)
        if rng.random() < 0.4:
            _consolidation(lung, label, pleura, intact, (u0, u1), 4, True, rng)
        label[:, u0:u1][below | (d > pleura[None, u0:u1] - 3)] = 4


def _pleura_and_a_lines(lung: np.ndarray, pleura: np.ndarray, smooth: np.ndarray,
                        intact: np.ndarray, thick: np.ndarray, aline_gain: np.ndarray,
                        rng: np.random.Generator) -> int:
    """The pleural line, then its reverberations (A-lines) at multiples of its depth.

    A-line m sits at m times the (smooth) pleural depth: the echo bounces m times between
    the probe face and the pleura. Returns the deepest A-line index drawn.
    """
    D = lung.shape[0]
    d = np.arange(D, dtype=np.float32)[:, None]
    amp = rng.uniform(2.0, 8.0)
    sig = rng.uniform(0.7, 1.6)
    lung += amp * intact[None, :] * _gauss(d - pleura[None, :], 1.0) ** (1.0 / (sig * thick) ** 2)
    # First reverberation 13-25 dB below the pleura, then -2 to -5 dB per further bounce.
    first, decay = 10 ** (-rng.uniform(1.3, 2.5)), rng.uniform(0.3, 0.65)
    k_max = 1
    for m in range(2, 8):  # A-lines follow the smooth pleura, not its small irregularities
        if (m * smooth.min() > D) or first * decay ** (m - 2) < 1e-4:
            break
        k_max = m
        lung += (amp * first * decay ** (m - 2) * aline_gain[None, :]
                 * _gauss(d - m * smooth[None, :], sig * (1.0 + 0.25 * m)))
    return k_max


def _ribs(tissue: np.ndarray, pleura: np.ndarray, ribs: list[tuple[float, float]], k: float,
          rng: np.random.Generator) -> np.ndarray:
    """Bright arched rib surfaces (added to ``tissue``); returns the (D, Uw) shadow multiplier."""
    D, Uw = tissue.shape
    d = np.arange(D, dtype=np.float32)[:, None]
    shadow = np.ones((D, Uw), np.float32)
    u = np.arange(Uw, dtype=np.float32)
    for c, hw in ribs:
        top = float(pleura[int(np.clip(c, 0, Uw - 1))]) - rng.uniform(0.02, 0.07) * D
        top = max(top, 0.08 * D)
        arch = top + rng.uniform(1.0, 4.0) * ((u - c) / hw) ** 2
        inside = np.clip((hw - np.abs(u - c)) / (rng.uniform(1.5, 4.0) * k), 0, 1)
        tissue += rng.uniform(0.5, 3.0) * inside[None, :] * _gauss(d - arch[None, :], 1.2)
        under = np.clip((d - arch[None, :] - 1.5) / 2.0, 0, 1) * inside[None, :]
        shadow *= 1.0 - (1.0 - rng.uniform(0.001, 0.01)) * under
    return shadow


def build_world(D: int, L: int, zones: list[tuple[int, int, int]], pleura_depth: float,
                ribs: list[tuple[float, float]], rng: np.random.Generator) -> World:
    """Echogenicity and labels for a world of zones ``(u0, u1, score)`` covering ``[0, Uw)``.

    Args:
        D, L: beam grid rows (depth samples) and visible scan lines.
        zones: contiguous, sorted, covering 0..Uw.
        pleura_depth: mean pleural depth in rows.
        ribs: (centre line, half width) of each rib, in world lines.
        rng: the video's generator.
    """
    Uw = zones[-1][1]
    k = L / 128.0  # lateral lengths below were tuned for L = 128 lines
    d = np.arange(D, dtype=np.float32)[:, None]
    zs = np.zeros(Uw, np.int64)
    for u0, u1, s in zones:
        zs[u0:u1] = s
    rough_amp = np.array([0.0, rng.uniform(0.5, 1.5), rng.uniform(0.8, 2.0),
                          rng.uniform(1.0, 2.5)], np.float32)[zs]
    rough_amp = cv2.GaussianBlur(rough_amp[None, :], (0, 0), 3.0 * k)[0]  # no step at borders
    smooth = pleura_depth + rng.uniform(0.5, 3.0) * smooth_noise(Uw, rng.uniform(30, 90) * k, rng)
    smooth = np.clip(smooth, 0.1 * D, 0.6 * D).astype(np.float32)
    pleura = smooth + rough_amp * smooth_noise(Uw, rng.uniform(1.2, 3.5) * k, rng)
    thick = np.array([1.0, rng.uniform(1.0, 1.5), rng.uniform(1.2, 2.0),
                      rng.uniform(1.4, 2.4)], np.float32)[zs]
    intact = np.clip(1.0 + 0.25 * smooth_noise(Uw, rng.uniform(2, 8) * k, rng), 0.4, 1.6)
    aline_gain = np.array([1.0, rng.uniform(0.2, 0.7), rng.uniform(0.0, 0.3), 0.0],
                          np.float32)[zs]
    lung = np.full((D, Uw), rng.uniform(0.0002, 0.002), np.float32)
    label = np.zeros((D, Uw), np.uint8)
    for zone in zones:
        if zone[2] > 0:
            _zone_markers(lung, label, aline_gain, intact, pleura, zone, L, rng)
    k_max = _pleura_and_a_lines(lung, pleura, smooth, intact, thick, aline_gain, rng)
    healthy = zs == 0
    if healthy.any():  # score 0 marks the pleura and the A-line band
        band_end = np.minimum(k_max * smooth + 4, D)
        band = (d >= pleura[None, :] - 3) & (d <= band_end[None, :]) & healthy[None, :]
        label[band & (label == 0)] = 1
    tissue = chest_wall(D, Uw, pleura, rng)
    shadow = _ribs(tissue, pleura, ribs, k, rng)
    return World(tissue=tissue, lung=lung, lung_region=d >= pleura[None, :] - 3,
                 lung_label=label, shadow=shadow, zone_scores=zs)
