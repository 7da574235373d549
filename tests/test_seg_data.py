"""Segmentation data: LabelMe -> mask through the dataset reader, mask letterboxing,
augmentation alignment, balanced sampling."""

from __future__ import annotations

import json
from collections import Counter

import cv2
import numpy as np
import pytest

from engines.preprocess import SEG_SPEC, letterbox
from train.data.layout import read_dataset
from train.seg.data import (
    AugmentConfig,
    BalancedSampler,
    SegFrames,
    build_augmentation,
    letterbox_mask,
    letterbox_pair,
    load_masked_frames,
)

H, W = 120, 160  # source frame size


@pytest.fixture()
def tiny_dataset(tmp_path):
    """One video of 3 PNG frames; frame 1 has a hand-drawn LabelMe file with two polygons."""
    root = tmp_path / "ds"
    (root / "videos" / "v0").mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(root / "videos" / "v0" / f"{i}.png"), np.full((H, W), 40 * i, np.uint8))
    (root / "videos.csv").write_text("video_id,patient_id,probe\nv0,p0,convex\n")
    (root / "frames.csv").write_text("video_id,frame,score\nv0,0,0\nv0,1,2\nv0,2,2\n")
    (root / "masks" / "v0").mkdir(parents=True)
    shapes = [
        # a square of score 0: x 10..50, y 20..60 (inclusive pixel corners)
        {"label": "0", "points": [[10, 20], [50, 20], [50, 60], [10, 60]],
         "shape_type": "polygon", "group_id": None, "flags": {}},
        # a triangle of score 2 drawn on top of part of the square
        {"label": "2", "points": [[40, 40], [100, 40], [40, 100]],
         "shape_type": "polygon", "group_id": None, "flags": {}},
    ]
    doc = {"version": "5.2.1", "flags": {}, "shapes": shapes, "imagePath": "1.png",
           "imageData": None, "imageHeight": H, "imageWidth": W}
    (root / "masks" / "v0" / "1.json").write_text(json.dumps(doc))
    return root


def test_labelme_polygon_to_mask(tiny_dataset):
    ds = read_dataset(tiny_dataset)
    assert ds.has_mask("v0", 1) and not ds.has_mask("v0", 0)
    m = ds.read_mask("v0", 1)
    assert m.shape == (H, W) and m.dtype == np.uint8
    assert set(np.unique(m)) == {0, 1, 3}
    assert m[30, 20] == 1          # inside the square only -> score 0 -> label 1
    assert m[45, 45] == 3          # square and triangle: the later shape (score 2) wins
    assert m[80, 45] == 3          # inside the triangle only
    assert m[5, 5] == 0 and m[110, 150] == 0
    # the square (41 x 41 px, edges inclusive) minus its part under the triangle (x 40..50,
    # y 40..60: 11 x 21 px, all with x + y <= 140)
    assert int((m == 1).sum()) == 41 * 41 - 11 * 21


def test_load_masked_frames_letterboxes_image_and_mask(tiny_dataset):
    ds = read_dataset(tiny_dataset)
    s = load_masked_frames(ds, ["v0"], progress=False)
    assert len(s) == 1 and s.scores.tolist() == [2] and s.patients.tolist() == ["p0"]
    assert s.images.shape == (1, SEG_SPEC.height, SEG_SPEC.width)
    x, y = s[0]
    assert x.shape == (1, SEG_SPEC.height, SEG_SPEC.width) and y.shape == x.shape[1:]
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    np.testing.assert_allclose(np.unique(x.numpy()), [-1.0, 40 / 255 * 2 - 1], atol=1e-6)


def test_letterbox_mask_matches_image_letterbox():
    """A white rectangle in the frame and label 3 in the mask land on the same pixels."""
    frame = np.zeros((300, 180), np.uint8)
    mask = np.zeros((300, 180), np.uint8)
    frame[60:240, 30:150] = 255
    mask[60:240, 30:150] = 3
    img, lb = letterbox(frame, (SEG_SPEC.height, SEG_SPEC.width))
    lm = letterbox_mask(mask, lb)
    assert lm.shape == img.shape and set(np.unique(lm)) == {0, 3}
    disagree = (img > 127) != (lm == 3)
    assert disagree.sum() <= 2 * (img > 127).sum() ** 0.5   # at most a 1-px rim
    with pytest.raises(ValueError, match="does not match"):
        letterbox_mask(mask[:10], lb)


def test_augmentation_keeps_image_and_mask_aligned():
    """With every op on, a bright square in the image stays where the mask's square is."""
    img = np.zeros((SEG_SPEC.height, SEG_SPEC.width), np.uint8)
    mask = np.zeros_like(img)
    img[70:130, 100:160] = 200
    mask[70:130, 100:160] = 2
    aug = build_augmentation(AugmentConfig(p=1.0, flip_p=0.5, noise_sigma=0.0, blur_sigma=0.3))
    moved = 0
    for seed in range(20):
        aug.set_random_seed(seed)
        out = aug(image=img, mask=mask)
        ai, am = out["image"], out["mask"]
        assert am.dtype == np.uint8 and set(np.unique(am)) <= {0, 2}   # nearest: no new labels
        bright, lab = ai > 60, am == 2
        assert lab.sum() > 100
        iou = (bright & lab).sum() / (bright | lab).sum()
        assert iou > 0.85, f"seed {seed}: image and mask drifted apart (IoU {iou:.2f})"
        moved += not np.array_equal(am, mask)
    assert moved >= 18, "the geometric ops did not move the mask"


def test_balanced_sampler_balances_scores_and_patients():
    # very unbalanced: score 0 has 900 frames of patient a; score 3 has 10 of b and 90 of c
    scores = [0] * 900 + [3] * 100
    patients = ["a"] * 900 + ["b"] * 10 + ["c"] * 90
    sampler = BalancedSampler(scores, patients, num_samples=4000, seed=1)
    draws = list(sampler)
    assert len(draws) == len(sampler) == 4000
    by_score = Counter(scores[i] for i in draws)
    assert abs(by_score[0] - 2000) < 150 and abs(by_score[3] - 2000) < 150
    by_patient = Counter(patients[i] for i in draws if scores[i] == 3)
    assert abs(by_patient["b"] - by_patient["c"]) < 200
    assert list(sampler) != draws                    # a new epoch draws anew
    again = BalancedSampler(scores, patients, num_samples=4000, seed=1)
    assert list(again) == draws                      # reproducible from the seed


def test_segframes_validates_lengths():
    with pytest.raises(ValueError, match="same length"):
        SegFrames(np.zeros((2, 4, 4), np.uint8), np.zeros((1, 4, 4), np.uint8), [0, 1], ["a", "b"])


def test_letterbox_pair_shapes():
    img, m = letterbox_pair(np.zeros((50, 50, 3), np.uint8), np.ones((50, 50), np.uint8))
    assert img.shape == m.shape == (SEG_SPEC.height, SEG_SPEC.width)
    assert m[100, 130] == 1 and m[100, 5] == 0       # centre inside, side padding is BG
