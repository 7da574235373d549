"""Scan-region detection on a real scanner screen recording (device-screen clip)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engines.preprocess import to_grey
from stream.roi import Roi, RoiTracker, detect_roi, iou
from stream.sources import decode_file
from tests._shared_data import DATA

SCREEN = DATA / "device-screen" / "cit_linear_image_93029618565613.mp4"
ANNOT = SCREEN.with_name("cit_linear_image_93029618565613.annotations.json")
needs_screen = pytest.mark.skipif(not SCREEN.exists(), reason="shared/data/device-screen absent")


def _annotation_bounds() -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of the union of every CVAT polygon of the clip (screen pixels)."""
    doc = json.loads(ANNOT.read_text())
    pts = np.concatenate([np.asarray(s["points"], float).reshape(-1, 2)
                          for d in doc for s in d["shapes"]])
    return (*pts.min(axis=0), *pts.max(axis=0))


@pytest.fixture(scope="module")
def screen_frames() -> list[np.ndarray]:
    return [to_grey(f.image) for f in decode_file(SCREEN, max_frames=80)]


@needs_screen
def test_device_screen_crop_matches_annotated_scan_area(screen_frames):
    x0, y0, x1, y1 = _annotation_bounds()
    tracker = RoiTracker("auto")
    rois = [tracker.update(g) for g in screen_frames]
    first = next(i for i, r in enumerate(rois) if r is not None)
    assert first <= 3  # a crop from the third frame on
    roi = rois[-1]
    assert roi is not None
    # Every annotated polygon lies inside the crop (10 px tolerance) ...
    assert roi.x <= x0 + 10 and roi.y <= y0 + 10
    assert roi.x + roi.w >= x1 - 10 and roi.y + roi.h >= y1 - 10
    # ... and the crop's sides hug the annotated area: the polygons span the image's full
    # width (x 559..705; the image's own dim right edge ends at 715). The top is the skin line
    # (y 110), above the first annotated finding (the pleura, y 192), so only containment is
    # checked vertically; the crop must still exclude the screen's text and rulers.
    assert abs(roi.x - x0) <= 10
    assert abs(roi.x + roi.w - x1) <= 12
    assert roi.w * roi.h < 0.1 * 1280 * 720
    # The crop is stable from frame to frame once found.
    later = [r for r in rois[first:] if r is not None]
    assert all(iou(r, later[0]) > 0.9 for r in later)
    assert len(set(later)) <= 2


@needs_screen
def test_detect_on_a_short_stack(screen_frames):
    roi = detect_roi(screen_frames[40:48])
    x0, _, x1, _ = _annotation_bounds()
    assert roi is not None and abs(roi.x - x0) <= 10 and abs(roi.x + roi.w - x1) <= 12


def test_synthetic_sector_on_a_screen():
    """A moving speckle sector + static text on a black screen -> the sector's box."""
    rng = np.random.default_rng(1)
    H, W = 360, 640
    yy, xx = np.mgrid[0:H, 0:W]
    ang = np.arctan2(xx - 320, yy - 40)
    r = np.hypot(xx - 320, yy - 40)
    sector = (np.abs(ang) < 0.6) & (r > 30) & (r < 300)
    frames = []
    for _ in range(6):
        f = np.zeros((H, W), np.uint8)
        f[sector] = rng.integers(30, 200, sector.sum())
        f[10:22, 20:200] = 255  # patient bar text (static, bright)
        f[100:300:20, 600:606] = 255  # ruler ticks
        frames.append(f)
    roi = detect_roi(frames)
    ys, xs = np.nonzero(sector)
    assert roi is not None and roi.shape == "sector"
    assert abs(roi.x - xs.min()) <= 6 and abs(roi.x + roi.w - xs.max()) <= 6
    assert abs(roi.y - ys.min()) <= 6 and abs(roi.y + roi.h - ys.max()) <= 6


def test_manual_and_off():
    t = RoiTracker("10,20,30,40")
    assert t.update(np.zeros((100, 100), np.uint8)) == Roi(10, 20, 30, 40)
    assert RoiTracker("off").update(np.zeros((100, 100), np.uint8)) is None
    img = np.arange(100 * 100, dtype=np.int32).reshape(100, 100)
    assert Roi(10, 20, 30, 40).crop(img).shape == (40, 30)
    with pytest.raises(ValueError, match="x,y,w,h"):
        Roi.parse("10,20")
