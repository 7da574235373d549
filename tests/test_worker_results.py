"""The worker's pure postprocessing: display frame, STN boxes, masks, timings."""

from __future__ import annotations

import base64

import cv2
import numpy as np
import pytest

from engines.preprocess import FRAME_SPEC, SEG_SPEC, letterbox
from stream.results import crop_boxes_display, display_frame, mask_payload, png_b64, timing_ms


def test_display_frame_limits_long_side():
    small = np.zeros((300, 200), np.uint8)
    out, s = display_frame(small, 640)
    assert out is small and s == 1.0
    big = np.zeros((720, 1280), np.uint8)
    out, s = display_frame(big, 640)
    assert out.shape == (360, 640) and s == pytest.approx(0.5)


@pytest.mark.parametrize("hw", [(720, 1280), (300, 200), (538, 538)])
def test_identity_theta_box_is_the_whole_source_frame(hw):
    """theta = identity samples the whole model input; mapped back through the letterbox it is
    the source frame (plus the letterbox padding, which lies outside it symmetrically)."""
    _, lb = letterbox(np.zeros(hw, np.uint8), (FRAME_SPEC.height, FRAME_SPEC.width))
    eye = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    _, scale = display_frame(np.zeros(hw, np.uint8), 640)
    boxes = crop_boxes_display(eye, eye, lb, (224, 224), scale)
    b = np.array(boxes[0])
    assert b.shape == (4, 2) and boxes[0] == boxes[1]
    # the padded model input maps to [-pad, src + pad]; centre is the source centre
    centre = b.mean(axis=0)
    np.testing.assert_allclose(centre, [hw[1] * scale / 2, hw[0] * scale / 2], atol=0.6)
    h_extent = b[:, 1].max() - b[:, 1].min()
    w_extent = b[:, 0].max() - b[:, 0].min()
    assert max(h_extent, w_extent) == pytest.approx(max(hw) * scale, abs=1.0)
    # half-size crop centred: half the extent
    half = np.array([[0.5, 0, 0], [0, 0.5, 0]])
    hb = np.array(crop_boxes_display(half, half, lb, (224, 224), scale)[0])
    assert hb[:, 0].max() - hb[:, 0].min() == pytest.approx(w_extent / 2, abs=0.6)


def _png(text: str) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(base64.b64decode(text), np.uint8), cv2.IMREAD_UNCHANGED)


def test_mask_payload_is_display_sized_label_map():
    src = np.zeros((120, 90), np.uint8)
    _, lb = letterbox(src, (SEG_SPEC.height, SEG_SPEC.width))
    probs = np.zeros((5, SEG_SPEC.height, SEG_SPEC.width), np.float32)
    probs[0] = 0.5
    probs[3, :100] = 0.9  # top half of the model input: score 2 (label 3)
    std = np.full((SEG_SPEC.height, SEG_SPEC.width), 0.25, np.float32)
    out = mask_payload(probs, std, lb, (60, 45))
    labels, unc = _png(out["png_b64"]), _png(out["unc_png_b64"])
    assert labels.shape == (60, 45) and unc.shape == (60, 45)
    assert set(np.unique(labels)) == {0, 3}
    assert labels[:25].min() == 3 and labels[35:].max() == 0
    assert np.all(np.abs(unc.astype(int) - 128) <= 1)  # 0.25 / 0.5 * 255
    assert mask_payload(probs, None, lb, (60, 45))["unc_png_b64"] is None


def test_png_round_trip_and_timings():
    img = np.random.default_rng(0).integers(0, 5, (31, 17), dtype=np.uint8)
    np.testing.assert_array_equal(_png(png_b64(img)), img)
    stamps = np.array([10.0, 10.001, 10.003, 10.004, 10.024, 10.025, 10.0251, 0.0])
    t = timing_ms(stamps)
    assert t["frame_model"] == pytest.approx(20.0) and t["transport"] == pytest.approx(2.0)
    assert "display" not in t  # not reached yet
