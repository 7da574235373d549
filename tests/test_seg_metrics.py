"""Table IV metrics and MC summaries on hand-made label maps with known answers."""

from __future__ import annotations

import math

import numpy as np

from train.seg import metrics as M


def _maps():
    gt = np.zeros((10, 10), np.uint8)
    gt[0:4, 0:5] = 1          # score 0: 20 px
    gt[5:10, 0:4] = 3         # score 2: 20 px
    pred = gt.copy()
    pred[5:10, 0:2] = 2       # 10 px of score 2 predicted as score 1
    pred[0:2, 5:10] = 4       # 10 px of BG predicted as score 3
    return pred, gt


def test_dice_known_masks():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2] = True              # 8 px
    b[1:3] = True             # 8 px, 4 shared
    assert M.dice(a, b) == 0.5
    assert M.dice(a, a) == 1.0
    assert M.dice(a, ~a) == 0.0
    assert math.isnan(M.dice(np.zeros_like(a), np.zeros_like(a)))


def test_pixel_accuracy_and_ignore():
    pred, gt = _maps()
    assert M.pixel_accuracy(pred, gt) == 80 / 100
    gt2 = gt.copy()
    gt2[0:2, 5:10] = M.IGNORE  # the 10 wrong BG pixels are now ignored
    assert M.pixel_accuracy(pred, gt2) == 80 / 90


def test_binary_covid_dice_is_union_of_scores_1_to_3():
    pred, gt = _maps()
    # COVID union: gt = 20 px (score 2); pred = 10 (score 1, inside gt) + 10 (score 2, inside
    # gt) + 10 (score 3, outside) = 30 px; overlap 20.
    assert M.binary_covid_dice(pred, gt) == 2 * 20 / (20 + 30)


def test_categorical_dice_mean_over_scores_0_2_3():
    pred, gt = _maps()
    d = M.class_dice(pred, gt)
    # score 0: perfect; score 2: 2*10/(10+20); score 3: in pred only -> 0
    np.testing.assert_allclose(d, [1.0, 2 * 10 / 30, 0.0])
    assert M.categorical_dice(pred, gt) == np.mean([1.0, 2 / 3, 0.0])
    # a class absent from both maps does not count
    assert M.categorical_dice(gt, gt) == 1.0
    assert math.isnan(M.categorical_dice(np.zeros_like(gt), np.zeros_like(gt)))


def test_mc_summary_std_of_predicted_class():
    p = np.zeros((2, 3, 1, 2), np.float32)
    p[0, :, 0, 0] = [0.8, 0.2, 0.0]
    p[1, :, 0, 0] = [0.6, 0.4, 0.0]
    p[:, :, 0, 1] = [0.1, 0.1, 0.8]           # identical passes -> std 0
    mean, std = M.mc_summary(p)
    np.testing.assert_allclose(mean[:, 0, 0], [0.7, 0.3, 0.0], atol=1e-6)
    np.testing.assert_allclose(std[0], [0.1, 0.0], atol=1e-6)


def test_boundary_vs_inside_split():
    pred = np.zeros((20, 20), np.uint8)
    pred[5:15, 5:15] = 2
    std = np.zeros((20, 20), np.float32)
    bnd = M.region_boundary(pred)
    std[bnd] = 0.3
    inside, boundary = M.uncertainty_inside_vs_boundary(std, pred)
    assert inside == 0.0 and abs(boundary - 0.3) < 1e-6
    assert bnd[5, 10] and bnd[4, 10] and not bnd[10, 10]
