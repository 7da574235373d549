"""The timeline plot: frame scores (dots) and the running video score (line) over time.

Drawn with OpenCV (the runtime has no matplotlib). The x axis is in seconds of the video when
the caller gives each point's time (the live page: the frame's presentation time, or when it
was grabbed; the report: the clip's timestamps), else in frames. The key to the marks is
:data:`KEY`, which the page writes under the image in HTML (crisper than the image's font).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ui.overlay import SCORE_RGB

KEY = ("dots: each frame's score (colour = score) · black line: running video score · "
       "grey line: expected frame score")
"""What the marks of the plot mean (shown beside it)."""

NICE_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600)
FONT = cv2.FONT_HERSHEY_DUPLEX
INK = (60, 60, 60)


def tick_step(span: float, max_ticks: int = 8) -> float:
    """The smallest of :data:`NICE_STEPS` that puts at most ``max_ticks`` ticks on ``span``."""
    for step in NICE_STEPS:
        if span / step <= max_ticks:
            return float(step)
    return float(NICE_STEPS[-1] * math.ceil(span / (NICE_STEPS[-1] * max_ticks)))


def ticks(lo: float, hi: float, max_ticks: int = 8) -> list[float]:
    """Multiples of :func:`tick_step` in ``[lo, hi]`` (axis labels)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
        return []
    step = tick_step(max(hi - lo, 1e-9), max_ticks)
    first = math.ceil(lo / step - 1e-9) * step
    n = int(math.floor((hi - first) / step + 1e-9)) + 1
    return [round(first + i * step, 6) for i in range(max(n, 0))]


def tick_label(v: float, step: float, unit: str) -> str:
    """``12 s``, ``1.5 s``, ``2:30`` (minutes past 2 min), or a frame number."""
    if unit != "s":
        return str(int(round(v)))
    if step >= 60 or v >= 120:
        return f"{int(v // 60)}:{int(round(v % 60)):02d}"
    return f"{v:.0f} s" if step >= 1 else f"{v:.1f} s"


def render_timeline(frame_scores: Sequence[float], running_scores: Sequence[float],
                    width: int = 640, height: int = 180,
                    expected: Sequence[float] | None = None,
                    times: Sequence[float] | None = None) -> np.ndarray:
    """Timeline plot of frame scores (dots coloured by score) and the running video score (line).

    The last ``width - margins`` points are shown (one pixel each at most); y is the score 0..3.

    Args:
        frame_scores: per-frame argmax scores 0..3.
        running_scores: running video score after each frame (same length).
        width, height: image size in pixels.
        expected: optional per-frame expected score ``sum_i i * p_i`` drawn as a thin grey line.
        times: optional per-frame time in seconds (same length, non-decreasing), e.g. the
            frame's time in the clip; the axis is then in these seconds, else frame numbers.

    Returns:
        (height, width, 3) uint8 RGB.

    Raises:
        ValueError: ``running_scores`` (or ``times``) has another length than ``frame_scores``.
    """
    n = len(frame_scores)
    if n != len(running_scores):
        raise ValueError(f"frame_scores ({n}) and running_scores ({len(running_scores)}) "
                         "must have the same length")
    if times is not None and len(times) != n:
        raise ValueError(f"times ({len(times)}) must have one value per frame score ({n})")
    img = np.full((height, width, 3), 255, dtype=np.uint8)
    box = _Box(left=26, top=8, pw=width - 26 - 12, ph=height - 8 - 22)
    _grid(img, box)
    if n == 0:
        cv2.putText(img, "waiting for results", (box.left + 8, box.top + box.ph // 2), FONT,
                    0.5, (120, 120, 120), 1, cv2.LINE_AA)
        return img
    start = max(0, n - box.pw)
    t = np.arange(n, dtype=np.float64)
    if times is not None:
        given = np.asarray(times, dtype=np.float64)
        if np.all(np.isfinite(given)):
            t = given
        else:
            times = None
    lo, hi = float(t[start]), float(t[n - 1])
    span = hi - lo

    def x_of_value(v: float) -> float:
        return box.left + (v - lo) * box.pw / span if span > 0 else box.left + box.pw / 2

    _axis(img, lo, hi, x_of_value=x_of_value, y=box.top + box.ph,
          unit="s" if times is not None else "frame", bottom=height - 6)
    xs = [int(round(box.left + (t[i] - lo) * box.pw / span)) if span > 0
          else box.left + box.pw // 2 for i in range(start, n)]
    _series(img, box, xs, frame_scores[start:], running_scores[start:],
            expected[start:] if expected is not None and len(expected) == n else None)
    return img


@dataclass(frozen=True)
class _Box:
    """The plot area in pixels: left and top edges, width and height."""

    left: int
    top: int
    pw: int
    ph: int

    def y_of(self, s: float) -> int:
        """Pixel row of score ``s`` (0 at the bottom, 3 at the top)."""
        return int(round(self.top + self.ph - (s / 3.0) * self.ph))


def _grid(img: np.ndarray, box: _Box) -> None:
    """One grey line and label per score 0..3, and the frame around the plot."""
    for s in range(4):
        y = box.y_of(s)
        cv2.line(img, (box.left, y), (box.left + box.pw, y), (225, 225, 225), 1)
        cv2.putText(img, str(s), (box.left - 16, y + 5), FONT, 0.45, INK, 1, cv2.LINE_AA)
    cv2.rectangle(img, (box.left, box.top), (box.left + box.pw, box.top + box.ph),
                  (160, 160, 160), 1)


def _series(img: np.ndarray, box: _Box, xs: Sequence[int], frame_scores: Sequence[float],
            running_scores: Sequence[float], expected: Sequence[float] | None) -> None:
    """The expected score (thin grey), the running video score (black) and the frame scores
    (dots coloured by score, on top), one point per pixel column ``xs``."""
    if expected is not None:
        pts = np.array([[x, box.y_of(float(e))] for x, e in zip(xs, expected, strict=True)],
                       np.int32)
        cv2.polylines(img, [pts.reshape(-1, 1, 2)], False, (170, 170, 170), 1, cv2.LINE_AA)
    pts = np.array([[x, box.y_of(float(r))] for x, r in zip(xs, running_scores, strict=True)
                    if np.isfinite(r)], np.int32)
    if len(pts):
        cv2.polylines(img, [pts.reshape(-1, 1, 2)], False, (20, 20, 20), 2, cv2.LINE_AA)
    for x, fs in zip(xs, frame_scores, strict=True):
        s = int(fs)
        if 0 <= s < 4:
            cv2.circle(img, (x, box.y_of(s)), 3, SCORE_RGB[s], -1, cv2.LINE_AA)


def _axis(img: np.ndarray, lo: float, hi: float, x_of_value, y: int, unit: str,
          bottom: int) -> None:
    """Tick marks and labels under the plot; the unit is named once, at the right end."""
    step = tick_step(max(hi - lo, 1e-9))
    width = img.shape[1]
    for v in ticks(lo, hi):
        x = int(round(x_of_value(v)))
        cv2.line(img, (x, y), (x, y + 4), (120, 120, 120), 1)
        text = tick_label(v, step, unit)
        (tw, _), _ = cv2.getTextSize(text, FONT, 0.4, 1)
        cv2.putText(img, text, (min(max(0, x - tw // 2), width - tw - 1), bottom), FONT, 0.4,
                    INK, 1, cv2.LINE_AA)
    if unit == "frame":
        (tw, _), _ = cv2.getTextSize("frame", FONT, 0.4, 1)
        cv2.putText(img, "frame", (width - tw - 2, y - 4), FONT, 0.4, INK, 1, cv2.LINE_AA)
