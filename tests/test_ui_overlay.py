"""Overlay drawing on known arrays: box colours where the boxes are, mask alpha blending."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ui import overlay, timeline


def test_boxes_crop1_red_crop2_green_where_drawn():
    grey = np.full((100, 120), 50, np.uint8)
    rgb = overlay.to_rgb(grey)
    crop1 = [[10, 10], [50, 10], [50, 50], [10, 50]]
    crop2 = [[70, 40], [110, 40], [110, 90], [70, 90]]
    overlay.draw_boxes(rgb, [crop1, crop2], thickness=1)
    # On the edges: the pure box colours (axis-aligned, so anti-aliasing leaves them exact).
    assert tuple(rgb[10, 30]) == overlay.CROP1_RGB
    assert tuple(rgb[30, 50]) == overlay.CROP1_RGB
    assert tuple(rgb[90, 90]) == overlay.CROP2_RGB
    assert tuple(rgb[60, 70]) == overlay.CROP2_RGB
    # Inside and outside the boxes: untouched grey.
    assert tuple(rgb[30, 30]) == (50, 50, 50)
    assert tuple(rgb[65, 90]) == (50, 50, 50)
    assert tuple(rgb[95, 5]) == (50, 50, 50)
    assert overlay.CROP1_RGB == (255, 0, 0) and overlay.CROP2_RGB == (0, 255, 0)


def test_crop1_drawn_on_top_where_boxes_overlap():
    rgb = overlay.to_rgb(np.zeros((60, 60), np.uint8))
    same = [[10, 10], [40, 10], [40, 40], [10, 40]]
    overlay.draw_boxes(rgb, [same, same], thickness=1)
    assert tuple(rgb[10, 25]) == overlay.CROP1_RGB


def test_nonfinite_box_is_skipped():
    rgb = overlay.to_rgb(np.zeros((20, 20), np.uint8))
    overlay.draw_boxes(rgb, [[[np.nan, 0], [5, 0], [5, 5], [0, 5]]])
    assert rgb.max() == 0


def test_mask_alpha_blending_exact():
    grey = np.full((40, 40), 100, np.uint8)
    labels = np.zeros((40, 40), np.uint8)
    labels[10:20, 10:20] = 3  # score 2
    labels[25:30, 25:30] = 255  # ignore
    alpha = 0.25
    out = overlay.blend_mask(overlay.to_rgb(grey), labels, alpha)
    want = np.round((1 - alpha) * 100 + alpha * np.array(overlay.SCORE_RGB[2]))
    assert np.abs(out[15, 15].astype(int) - want).max() <= 1
    assert tuple(out[5, 5]) == (100, 100, 100)     # background untouched
    assert tuple(out[27, 27]) == (100, 100, 100)   # ignore untouched
    assert np.array_equal(overlay.blend_mask(overlay.to_rgb(grey), labels, 0.0),
                          overlay.to_rgb(grey))


def test_mask_of_other_size_is_resized_nearest():
    labels = np.zeros((10, 10), np.uint8)
    labels[:, 5:] = 4  # right half score 3
    out = overlay.blend_mask(overlay.to_rgb(np.zeros((20, 20), np.uint8)), labels, 1.0)
    assert tuple(out[10, 15]) == overlay.SCORE_RGB[3]
    assert tuple(out[10, 4]) == (0, 0, 0)


def test_mask_colours_palette():
    lab = np.array([[0, 1, 2], [3, 4, 255]], np.uint8)
    col = overlay.mask_colours(lab)
    assert col.shape == (2, 3, 3)
    assert tuple(col[0, 0]) == (0, 0, 0) and tuple(col[1, 2]) == (0, 0, 0)
    for s in range(4):
        assert tuple(col[(s + 1) // 3, (s + 1) % 3]) == overlay.SCORE_RGB[s]


def test_uncertainty_zero_leaves_frame_and_full_uses_alpha():
    rgb = overlay.to_rgb(np.full((8, 8), 80, np.uint8))
    assert np.array_equal(overlay.blend_uncertainty(rgb, np.zeros((8, 8), np.uint8)), rgb)
    out = overlay.blend_uncertainty(rgb, np.full((8, 8), 255, np.uint8), alpha=1.0)
    heat = cv2.cvtColor(cv2.applyColorMap(np.full((1, 1), 255, np.uint8),
                                          cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)[0, 0]
    assert np.abs(out[4, 4].astype(int) - heat.astype(int)).max() <= 1


def test_render_result_draws_the_wire_mask_arrays_and_boxes():
    grey = np.full((60, 80), 30, np.uint8)
    labels = np.zeros((60, 80), np.uint8)
    labels[40:55, 5:20] = 1  # score 0
    result = {"boxes": [[[30, 5], [70, 5], [70, 35], [30, 35]],
                        [[2, 2], [20, 2], [20, 20], [2, 20]]],
              "score": 1, "probs": [0.1, 0.6, 0.2, 0.1],
              "video": {"score": 1, "probs": [0.2, 0.5, 0.2, 0.1]}}
    off = overlay.render_result(grey, result, show_mask=False, show_text=False, mask=labels)
    on = overlay.render_result(grey, result, show_mask=True, show_text=False, mask_alpha=0.5,
                               mask=labels)
    assert tuple(off[47, 12]) == (30, 30, 30)
    assert tuple(on[47, 12]) != (30, 30, 30)
    unc = np.zeros((60, 80), np.uint8)
    unc[:10, :10] = 255
    u = overlay.render_result(grey, result, show_mask=False, show_uncertainty=True,
                              show_text=False, show_boxes=False, unc=unc)
    assert tuple(u[5, 5]) != (30, 30, 30) and tuple(u[50, 70]) == (30, 30, 30)
    assert tuple(on[35, 50]) == overlay.CROP1_RGB
    assert tuple(on[10, 20]) == overlay.CROP2_RGB
    text = overlay.render_result(grey, result, show_mask=False, show_text=True)
    assert not np.array_equal(text[:25], off[:25])  # the score label is written


def test_render_result_tolerates_missing_and_bad_fields():
    grey = np.zeros((30, 30), np.uint8)
    bad = {"boxes": None, "score": 9, "probs": None}
    for mask in (None, np.zeros((0, 0), np.uint8), np.zeros((30, 30), np.float32),
                 np.zeros((3, 30, 30), np.uint8)):  # absent or not a label map: not drawn
        out = overlay.render_result(grey, bad, mask=mask, unc=mask, show_uncertainty=True)
        assert out.shape == (30, 30, 3)


def test_timeline_plots_dots_and_line():
    img = timeline.render_timeline([0, 3, 3, 2], [0.0, 1.0, 2.0, 2.0], width=300, height=120)
    assert img.shape == (120, 300, 3)
    for s in (0, 2, 3):
        assert (np.abs(img.astype(int) - overlay.SCORE_RGB[s]).sum(axis=2) < 30).any()
    assert (img.sum(axis=2) < 100).any()  # the dark running-score line
    empty = timeline.render_timeline([], [], width=200, height=80)
    assert empty.shape == (80, 200, 3)
    with pytest.raises(ValueError, match="same length"):
        timeline.render_timeline([0, 1], [0.0])


def test_encoders_roundtrip():
    rgb = overlay.to_rgb(np.tile(np.arange(64, dtype=np.uint8), (32, 1)))
    png = cv2.imdecode(np.frombuffer(overlay.encode_png(rgb), np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(cv2.cvtColor(png, cv2.COLOR_BGR2RGB), rgb)
    jpg = overlay.encode_jpeg(rgb)
    assert jpg[:2] == b"\xff\xd8"


# --------------------------------------------------------------------------- findings (issue #13)

FINDINGS_RESULT = {
    "score": 1, "probs": [0.1, 0.6, 0.2, 0.1],
    "findings": {"b_lines": 0.82, "effusion": 0.1, "a_lines": 0.5},
    "video": {"score": 1, "probs": [0.2, 0.5, 0.2, 0.1], "findings": {
        "b_lines": {"mean": 0.7, "max": 0.9, "fraction": 0.8, "present": True},
        "effusion": {"mean": 0.05, "max": 0.2, "fraction": 0.0, "present": False},
        "a_lines": {"mean": 0.3, "max": 0.5, "fraction": 0.1, "present": False}}},
}


def test_finding_rows_in_clinical_words_frame_and_clip_values():
    rows = overlay.finding_rows(FINDINGS_RESULT)
    assert rows == [
        {"name": "b_lines", "label": "B-lines", "frame": 0.82, "clip": 0.7, "present": True},
        {"name": "effusion", "label": "pleural effusion", "frame": 0.1, "clip": 0.05,
         "present": False},
        {"name": "a_lines", "label": "A-lines", "frame": 0.5, "clip": 0.3, "present": False}]
    assert overlay.findings_caption(rows) == "B-lines 82%, A-lines 50%"
    assert overlay.findings_caption(rows, "clip") == "B-lines 70%"
    low = [dict(r, frame=0.1) for r in rows]
    assert overlay.findings_caption(low) == "no finding"
    assert overlay.findings_caption([]) == ""


@pytest.mark.parametrize("result", [
    {}, {"findings": None, "video": {"findings": None}}, {"findings": None, "video": None},
    {"score": 1, "video": {"score": 1}}])
def test_no_findings_head_gives_no_rows(result):
    assert overlay.finding_rows(result) == []


def test_finding_rows_tolerate_malformed_values():
    rows = overlay.finding_rows({"findings": {"b_lines": "x", "effusion": float("nan"),
                                              "a_lines": 1.5, "other": True},
                                 "video": {"findings": {"b_lines": 3, "lung_point": {}}}})
    assert [r["frame"] for r in rows] == [None, None, None, None, None]
    assert [r["label"] for r in rows][-1] == "lung point"
    assert all(r["clip"] is None and r["present"] is False for r in rows)


def test_render_result_writes_findings_only_when_the_bundle_has_them():
    grey = np.full((240, 320), 40, np.uint8)
    plain = {k: v for k, v in FINDINGS_RESULT.items() if k != "findings"}
    plain["video"] = {"score": 1, "probs": FINDINGS_RESULT["video"]["probs"]}
    with_f = overlay.render_result(grey, FINDINGS_RESULT, show_text=True)
    without = overlay.render_result(grey, plain, show_text=True)
    assert np.array_equal(with_f[:34], without[:34])  # the two score lines are the same
    assert not np.array_equal(with_f[34:60], without[34:60])  # a third line: the findings
    assert np.array_equal(overlay.render_result(grey, FINDINGS_RESULT, show_text=False),
                          overlay.render_result(grey, plain, show_text=False))
