"""Is this a lung-ultrasound image a model may score? The "not scorable" gate (issue #29).

A frame model scores whatever it is given: a black screen (the probe lifted off the skin),
random noise or an eye scan all got a confident "0 — normal" before this gate. This module
looks at the decoded frame itself — no model, numpy and OpenCV only — and says ``"scorable"``
or why not, in plain words:

- :data:`NO_IMAGE` ("no image"): no scan image in the frame — black, one grey level, or only a
  thin band of signal (the near-field ring-down of a probe held in the air). Found by the
  *image region* (:func:`image_region`): the pixels that are lit and textured (local standard
  deviation), joined by a small closing, cleaned of text strokes by an opening, and the convex
  hull of the largest such blob (with the big pieces above and below it: an eye's dark globe
  splits the image in two). Too small, too short or too dark a region is no image.
- :data:`NOISE` ("noise"): the region has no ultrasound structure. B-mode speckle and anatomy
  are spatially correlated over several pixels (the point-spread function is wider than a
  pixel); independent noise is not: its normalised autocorrelation at lags of 1-2 px is ~0
  (:func:`speckle_correlation`).
- :data:`NOT_LUNG` ("not a lung view"): an eye's globe — a large, round, anechoic disc
  enclosed by echoic tissue (:func:`globe_shape`). See "What it cannot tell" below.

A clip is scorable when at least :attr:`GateThresholds.min_share` of its checked frames (every
:data:`CHECK_EVERY`-th, the first always) pass (:class:`ClipGate`); otherwise its reason is the
most common reason among the checked frames that did not pass. The thresholds are chosen on
data and measured by ``scripts/scorable_scan.py`` (docs/reliability.md, "Not-scorable gate"):
no clip of the 124 POCUS lung clips of ``shared/data`` is refused, nor the device-screen lung
recording; the synthetic black, grey, noise and probe-in-air clips all are.

What it cannot tell: "no pleural line" does not mean "not lung". The POCUS set holds basal views
of consolidated lung and effusions (liver, spleen, diaphragm in view) where no pleural line is
visible; the best pleural-line measure tried here (a bright horizontal ridge under echoic tissue,
upper half of the image, ``scripts/scorable_scan.py --pleura``) is as weak on 106 of the 124
POCUS clips as on the eye scans and phantoms, so it is not used. The same views hold dark fluid
bounded by tissue that looks like an eye's globe; only a *round*, fully enclosed disc is taken
for a globe, and an effusion clip still comes within a few per cent of that rule
(docs/reliability.md). Phantoms, resolution targets and globes the scanner cuts off at the top
of the image are not recognised: of the eight non-lung vendor files only the two Clarius eye
scans are caught.

Cost: a frame is downscaled to at most 320 px first; a check took about 3 ms on one core of the
(shared) development machine, i.e. about 1 ms per decoded frame with one frame in three checked.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import cv2
import numpy as np

from engines.preprocess import to_grey

SCORABLE = "scorable"
NO_IMAGE = "no image"
NOISE = "noise"
NOT_LUNG = "not a lung view"
REASONS = (SCORABLE, NO_IMAGE, NOISE, NOT_LUNG)
"""Every value :attr:`FrameCheck.reason` takes, the good one first."""

ADVICE = {
    NO_IMAGE: "no lung image — probe off the skin?",
    NOISE: "no ultrasound image — the signal is random noise",
    NOT_LUNG: "not a lung view — this looks like an eye (a round fluid-filled globe)",
}
"""What to tell the user, per reason (the page, the CLI line, the exam entry)."""

REGION_SIDE = 320
"""Frames are downscaled to at most this many pixels on their long side to find the image."""
WORK_SIDE = 160
"""The image region is resampled to at most this long side for the shape measures."""
CORR_SIDE = 256
"""The speckle correlation is measured at native resolution, downscaled to at most this."""


@dataclass(frozen=True)
class GateThresholds:
    """Where each test draws its line (defaults measured in docs/reliability.md).

    Attributes:
        min_level: grey level a pixel (5x5 blurred) needs to count as lit.
        min_texture: local standard deviation (7x7) a pixel needs to count as textured.
        min_area: share of the frame the image region must cover.
        min_height: share of the frame's height the image region must span (a probe in the air
            shows a thin band of ring-down at the top).
        min_bright: 90th grey-level percentile the image region must reach.
        min_corr: speckle correlation (lags 1-2 px) below which the region is noise.
        globe_area: share of the image region a globe covers at least.
        globe_solidity: area / convex-hull area of the globe, at least.
        globe_aspect: minor / major axis of the globe's fitted ellipse, at least.
        globe_enclosure: share of the globe's rim that is echoic tissue inside the image.
        min_share: share of a clip's frames that must pass for the clip to be scorable.
    """

    min_level: float = 12.0
    min_texture: float = 3.0
    min_area: float = 0.01
    min_height: float = 0.2
    min_bright: float = 20.0
    min_corr: float = 0.3
    globe_area: float = 0.12
    globe_solidity: float = 0.85
    globe_aspect: float = 0.7
    globe_enclosure: float = 0.4
    min_share: float = 0.5


DEFAULT_THRESHOLDS = GateThresholds()


@dataclass(frozen=True)
class Region:
    """The scan image inside a frame, found at a reduced scale.

    Attributes:
        hull: (h, w) uint8 0/1 convex-hull mask at the reduced scale (the whole frame).
        box: (x, y, w, h) bounding box of the hull, reduced-scale pixels.
        scale: reduced / source pixels.
        area: hull share of the frame.
        height: box height share of the frame height.
    """

    hull: np.ndarray
    box: tuple[int, int, int, int]
    scale: float
    area: float
    height: float


@dataclass(frozen=True)
class GlobeShape:
    """The roundest large anechoic blob of an image region (all 0 when there is none).

    Attributes:
        area: its share of the image region.
        solidity: its area / its convex hull's area.
        aspect: minor / major axis of its fitted ellipse.
        enclosure: share of its rim that lies inside the image and is echoic.
    """

    area: float = 0.0
    solidity: float = 0.0
    aspect: float = 0.0
    enclosure: float = 0.0

    def is_globe(self, th: GateThresholds) -> bool:
        return (self.area >= th.globe_area and self.solidity >= th.globe_solidity
                and self.aspect >= th.globe_aspect and self.enclosure >= th.globe_enclosure)


@dataclass(frozen=True)
class FrameCheck:
    """One frame through the gate: the verdict and the measures behind it.

    Attributes:
        reason: one of :data:`REASONS`.
        area, height: the image region's share of the frame and of its height (0: none).
        bright: 90th grey-level percentile inside the region (0: none).
        corr: speckle correlation inside the region (None when not measured).
        globe: the globe measures (None when not measured).
    """

    reason: str
    area: float = 0.0
    height: float = 0.0
    bright: float = 0.0
    corr: float | None = None
    globe: GlobeShape | None = None

    @property
    def scorable(self) -> bool:
        return self.reason == SCORABLE


def _downscale(grey: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    """``grey`` with its long side at most ``side`` (area interpolation) and the scale used."""
    s = min(1.0, side / max(grey.shape))
    if s >= 1.0:
        return grey, 1.0
    size = (max(1, round(grey.shape[1] * s)), max(1, round(grey.shape[0] * s)))
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA), s


def _active(small: np.ndarray, th: GateThresholds) -> np.ndarray:
    """Lit and textured pixels, closed (speckle joined) and opened (text strokes removed)."""
    f = small.astype(np.float32)
    lit = cv2.GaussianBlur(f, (5, 5), 0) >= th.min_level
    m = cv2.blur(f, (7, 7))
    sd = np.sqrt(np.maximum(cv2.blur(f * f, (7, 7)) - m * m, 0.0))
    act = (lit & (sd >= th.min_texture)).astype(np.uint8)
    act = cv2.morphologyEx(act, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    return cv2.morphologyEx(act, cv2.MORPH_OPEN, np.ones((7, 7), np.uint8))


def image_region(grey: np.ndarray, th: GateThresholds = DEFAULT_THRESHOLDS) -> Region | None:
    """The scan image of a frame (a screen capture has UI around it), or None.

    The largest lit-and-textured blob, with the blobs at least a tenth its size that share its
    columns (the parts of an image split by a dark structure), and their convex hull.

    Args:
        grey: (H, W) uint8.
    """
    small, s = _downscale(grey, REGION_SIDE)
    n, lab, st, _ = cv2.connectedComponentsWithStats(_active(small, th), connectivity=8)
    if n < 2:
        return None
    big = 1 + int(np.argmax(st[1:, cv2.CC_STAT_AREA]))
    bx, bw = st[big, cv2.CC_STAT_LEFT], st[big, cv2.CC_STAT_WIDTH]
    keep = [i for i in range(1, n) if st[i, cv2.CC_STAT_AREA] >= 0.1 * st[big, cv2.CC_STAT_AREA]
            and st[i, cv2.CC_STAT_LEFT] < bx + bw
            and st[i, cv2.CC_STAT_LEFT] + st[i, cv2.CC_STAT_WIDTH] > bx]
    sel = np.zeros(n, np.uint8)
    sel[keep] = 1
    contours, _ = cv2.findContours(sel[lab], cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    outline = cv2.convexHull(np.vstack(contours))
    hull = np.zeros(small.shape, np.uint8)
    cv2.fillConvexPoly(hull, outline, 1)
    x, y, w, h = cv2.boundingRect(outline)
    return Region(hull, (x, y, w, h), s, float(hull.mean()), h / small.shape[0])


def _crop(grey: np.ndarray, region: Region) -> tuple[np.ndarray, np.ndarray]:
    """The region's bounding box at source resolution and its hull mask at that size."""
    x, y, w, h = region.box
    s = region.scale
    x0, y0 = int(x / s), int(y / s)
    x1 = min(grey.shape[1], int(np.ceil((x + w) / s)))
    y1 = min(grey.shape[0], int(np.ceil((y + h) / s)))
    crop = grey[y0:y1, x0:x1]
    mask = cv2.resize(region.hull[y:y + h, x:x + w], (crop.shape[1], crop.shape[0]),
                      interpolation=cv2.INTER_NEAREST)
    return crop, mask


def _lag_corr(a: np.ndarray, lag: int, axis: int) -> float:
    """Normalised correlation of ``a`` with itself shifted by ``lag`` pixels along ``axis``."""
    p = a[:, :-lag] if axis == 1 else a[:-lag]
    q = a[:, lag:] if axis == 1 else a[lag:]
    p = p - p.mean()
    q = q - q.mean()
    d = float(np.sqrt((p * p).sum() * (q * q).sum()))
    return float((p * q).sum() / d) if d > 0 else 1.0


def speckle_correlation(patch: np.ndarray) -> float:
    """Mean normalised autocorrelation at lags 1 and 2 px, along x and y.

    Real B-mode images: 0.68-0.99 (the speckle and the anatomy are wider than a pixel);
    independent noise: ~0 (docs/reliability.md). The patch is downscaled (area) to at most
    :data:`CORR_SIDE`, never enlarged: enlarging would correlate noise.

    Args:
        patch: (h, w) uint8, at least 4 x 4.
    """
    a = _downscale(patch, CORR_SIDE)[0].astype(np.float64)
    if min(a.shape) < 4:
        return 1.0
    return float(np.mean([_lag_corr(a, lag, axis) for lag in (1, 2) for axis in (0, 1)]))


def _blob_shape(comp: np.ndarray, n_region: float, rim_ok: np.ndarray) -> GlobeShape:
    """Shape measures of one dark component (``rim_ok``: echoic image pixels)."""
    contours, _ = cv2.findContours(comp, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    c = max(contours, key=cv2.contourArea)
    area = float(comp.sum())
    solidity = min(1.0, area / (cv2.contourArea(cv2.convexHull(c)) + 1e-6))  # px vs polygon
    aspect = 0.0
    if len(c) >= 5:
        (_cx, _cy), (a, b), _angle = cv2.fitEllipse(c)
        aspect = min(a, b) / max(a, b, 1e-6)
    rim = cv2.dilate(comp, np.ones((7, 7), np.uint8)) - comp
    enclosure = float(rim_ok[rim > 0].mean()) if rim.any() else 0.0
    return GlobeShape(area / n_region, solidity, aspect, enclosure)


def globe_shape(crop: np.ndarray, mask: np.ndarray) -> GlobeShape:
    """The roundest large anechoic blob of an image region (an eye's globe, if any).

    Anechoic: smoothed (Gaussian, sigma 2 px at :data:`WORK_SIDE`) below a quarter of the
    region's median grey level. Of the blobs covering at least 3 % of the region, the one with
    the largest area x solidity x enclosure is returned.

    Args:
        crop: (h, w) uint8 region bounding box; mask: (h, w) 0/1 image pixels in it.
    """
    k = WORK_SIDE / max(crop.shape)
    size = (max(8, round(crop.shape[1] * k)), max(8, round(crop.shape[0] * k)))
    im = cv2.resize(crop, size, interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
    m = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
    if not m.any():
        return GlobeShape()
    im = im.astype(np.float32)
    med = float(np.median(im[m > 0]))
    sm = cv2.GaussianBlur(im, (0, 0), 2.0)
    inner = cv2.erode(m, np.ones((5, 5), np.uint8))
    dark = ((sm < 0.25 * med) & (inner > 0)).astype(np.uint8)
    dark = cv2.morphologyEx(dark, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, lab, st, _ = cv2.connectedComponentsWithStats(dark, connectivity=4)
    n_region = float(m.sum())
    rim_ok = (inner > 0) & (sm > 0.5 * med)
    best, best_key = GlobeShape(), 0.0
    for i in range(1, n):
        if st[i, cv2.CC_STAT_AREA] < 0.03 * n_region:
            continue
        shape = _blob_shape((lab == i).astype(np.uint8), n_region, rim_ok)
        key = shape.area * shape.solidity * shape.enclosure
        if key > best_key:
            best, best_key = shape, key
    return best


def check_frame(image: np.ndarray, th: GateThresholds = DEFAULT_THRESHOLDS) -> FrameCheck:
    """One decoded frame (any size, grey or RGB) -> scorable, or the reason it is not.

    Raises:
        ValueError: the frame is not an image (:func:`engines.preprocess.to_grey`).
    """
    grey = to_grey(image)
    region = image_region(grey, th)
    if region is None:
        return FrameCheck(NO_IMAGE)
    crop, mask = _crop(grey, region)
    inside = crop[mask > 0]
    bright = float(np.percentile(inside, 90)) if inside.size else 0.0
    sized = dict(area=region.area, height=region.height, bright=bright)
    if region.area < th.min_area or region.height < th.min_height or bright < th.min_bright:
        return FrameCheck(NO_IMAGE, **sized)
    h, w = crop.shape
    corr = speckle_correlation(crop[h // 4: h - h // 4, w // 4: w - w // 4])
    if corr < th.min_corr:
        return FrameCheck(NOISE, corr=corr, **sized)
    globe = globe_shape(crop, mask)
    reason = NOT_LUNG if globe.is_globe(th) else SCORABLE
    return FrameCheck(reason, corr=corr, globe=globe, **sized)


@dataclass(frozen=True)
class ClipVerdict:
    """A clip through the gate.

    Attributes:
        scorable: at least ``min_share`` of the checked frames passed.
        reason: None when scorable, else the most common reason among the refused frames.
        share: share of the checked frames that passed (0 when none was checked).
        n_checked: frames checked (every :data:`CHECK_EVERY`-th of a clip by default).
        counts: frames per reason (every reason of :data:`REASONS`).
        needed_pct: the share a clip needs, in per cent (for the message).
    """

    scorable: bool
    reason: str | None
    share: float
    n_checked: int
    counts: dict[str, int] = field(default_factory=dict)
    needed_pct: int = 50

    def message(self) -> str:
        """One line for the user: ``"not scorable: no lung image — probe off the skin? (0 of
        17 checked frames scorable, 50 % needed)"``; "" when scorable."""
        if self.scorable:
            return ""
        ok = self.counts.get(SCORABLE, 0)
        return (f"not scorable: {ADVICE.get(self.reason or '', self.reason)} ({ok} of "
                f"{self.n_checked} checked frames scorable, {self.needed_pct} % needed)")


CHECK_EVERY = 3
"""A clip's frames 0, 3, 6, ... are checked: the verdict is a share, and a frame the scanner
sends 1/10 s later looks the same; checking all would cost ``pleura score`` 2.4 ms a frame."""


class ClipGate:
    """A clip's (or stream's) running gate: O(1) memory, :func:`check_frame` on every
    ``every``-th frame (the first always).

    Args:
        th: the thresholds (``min_share`` decides the clip).
        every: check one frame in this many (1: all).
    """

    def __init__(self, th: GateThresholds = DEFAULT_THRESHOLDS, every: int = CHECK_EVERY) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.th, self.every = th, every
        self.counts: Counter[str] = Counter()
        self.n_seen = 0

    def update(self, image: np.ndarray) -> FrameCheck | None:
        """Count one frame; check it when it is due. Returns its check, or None (not due)."""
        due = self.n_seen % self.every == 0
        self.n_seen += 1
        if not due:
            return None
        check = check_frame(image, self.th)
        self.counts[check.reason] += 1
        return check

    def verdict(self) -> ClipVerdict:
        """The clip's verdict from the frames counted so far."""
        n = sum(self.counts.values())
        ok = self.counts.get(SCORABLE, 0)
        share = ok / n if n else 0.0
        scorable = n > 0 and share >= self.th.min_share
        refused = Counter({r: c for r, c in self.counts.items() if r != SCORABLE})
        reason = None if scorable else (refused.most_common(1)[0][0] if refused else NO_IMAGE)
        return ClipVerdict(scorable, reason, share, n, {r: self.counts.get(r, 0) for r in REASONS},
                           round(100 * self.th.min_share))
