"""Frame evaluation: metrics, Setting 2 frame dropping, Setting 3 filtering, localisation."""

import numpy as np
import pytest
import torch

from tests._frame_fixtures import one_torch_thread, tiny_sim  # noqa: F401 - fixtures
from train.frame.localisation import GradCAM, box_scores, heat_box, polygon_mask, theta_box
from train.metrics import (
    annotator_agreement,
    classification_report,
    near_change_mask,
    quadratic_weighted_kappa,
    setting3_videos,
)


def test_setting2_drops_k_frames_each_side_of_changes():
    s = [0, 0, 0, 0, 1, 1, 1, 1, 1, 3, 3, 3]  # changes before index 4 and before index 9
    keep1 = near_change_mask(s, 1)
    assert keep1.tolist() == [1, 1, 1, 0, 0, 1, 1, 1, 0, 0, 1, 1]
    keep3 = near_change_mask(s, 3)
    assert keep3.tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    assert near_change_mask(s, 0).all()
    assert near_change_mask([2] * 5, 7).all()  # no change: nothing dropped


def test_setting3_filters_by_agreement():
    ann = {"a": (1, 1, 1, 2, None), "b": (0, 1, 2, 3, 0), "c": (None,) * 5,
           "d": (3, 3, 3, 3, 2)}
    assert annotator_agreement(ann["a"]) == 3 and annotator_agreement(ann["c"]) == 0
    assert setting3_videos(ann, None) == ["a", "b", "d"]  # video-annotated subset
    assert setting3_videos(ann, 3) == ["a", "d"]
    assert setting3_videos(ann, 4) == ["d"]


def test_metrics_known_values():
    y = np.array([0, 0, 1, 1, 2, 3])
    p = np.array([0, 1, 1, 1, 3, 3])
    rep = classification_report(y, p)
    assert rep["micro_f1"] == pytest.approx(4 / 6) == rep["accuracy"]
    # per class F1: c0 2/3, c1 0.8, c2 0, c3 2/3; weighted by support (2, 2, 1, 1)
    assert rep["per_class_f1"] == pytest.approx([2 / 3, 0.8, 0.0, 2 / 3])
    assert rep["weighted_f1"] == pytest.approx((2 * 2 / 3 + 2 * 0.8 + 0 + 2 / 3) / 6)
    assert rep["within_one"] == 1.0
    assert rep["confusion"][2] == [0, 0, 0, 1]
    assert quadratic_weighted_kappa(np.diag([3, 2, 4, 1])) == pytest.approx(1.0)
    assert quadratic_weighted_kappa(np.array([[0, 5], [5, 0]])) == pytest.approx(-1.0)


def test_theta_box_and_scores():
    ident = np.array([[1, 0, 0], [0, 1, 0]], float)
    np.testing.assert_allclose(theta_box(ident, (224, 224)),
                               [[0, 0], [224, 0], [224, 224], [0, 224]])
    half = np.array([[0.5, 0, 0.5], [0, 0.5, 0]], float)  # right half, vertically centred
    c = theta_box(half, (100, 100))
    np.testing.assert_allclose(c[0], [50, 25]) and np.testing.assert_allclose(c[2], [100, 75])
    sector = np.zeros((100, 100), bool)
    sector[:, 50:] = True
    target = np.zeros((100, 100), bool)
    target[0:10, 0:10] = True
    s = box_scores(c, sector, target)
    assert s["inside_frac"] == pytest.approx(1.0, abs=0.02) and s["hit"] == 0.0
    target[60:70, 60:70] = True
    assert box_scores(c, sector, target)["hit"] == 1.0
    assert np.isnan(box_scores(c, sector, None)["hit"])
    assert polygon_mask(c, (100, 100)).sum() == pytest.approx(50 * 50, rel=0.05)


def test_heat_box_and_gradcam_point_at_the_evidence():
    heat = np.zeros((50, 60))
    heat[10:20, 30:45] = 1.0
    heat[40, 5] = 0.4
    np.testing.assert_allclose(heat_box(heat), [[30, 10], [45, 10], [45, 20], [30, 20]])
    # a linear "CNN": class 1 = mean of feature channel 0, which is bright top-left only;
    # channel 1 (bright bottom-right) does not matter, so Grad-CAM must light the top-left

    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.feat = torch.nn.Identity()

        def forward(self, x):
            f = self.feat(x[:, :2])  # (B, 2, H, W)
            s = f[:, 0].mean(dim=(1, 2))
            return torch.stack([-s, s], 1)

    x = torch.zeros(1, 3, 16, 16)
    x[0, 0, :8, :8] = 1.0
    x[0, 1, 8:, 8:] = 1.0
    toy = Toy()
    cam = GradCAM(toy, toy.feat)
    heat = cam(x, torch.tensor([1]))[0]
    cam.close()
    assert heat[:6, :6].min() > 0.99 and heat[10:, 10:].max() < 1e-6


def test_evaluate_end_to_end_on_a_tiny_run(tiny_sim, tmp_path):  # noqa: F811
    from train.data.layout import read_dataset
    from train.frame.config import TrainConfig
    from train.frame.data import build_table
    from train.frame.evaluate import evaluate, setting_rows
    from train.frame.trainer import train

    cfg = TrainConfig(data=str(tiny_sim), out=str(tmp_path / "run"), model="cnn-sord",
                      epochs=1, batch=4, frames_per_epoch=8, device="cpu", cache_dir=None)
    train(cfg, progress=False)
    res = evaluate(tmp_path / "run", tiny_sim, split="all", batch=8, loc_frames=8,
                   cache_dir=None)
    assert res["n_frames"] == 24 and res["setting1"]["n"] == 24
    t = res["table"]
    assert t["S1"]["n"] == 24 and t["K=7"]["n"] <= t["K=1"]["n"] <= 24
    loc = res["localisation"]
    assert loc["sigma1_mean"] == pytest.approx(1.0)  # whole-frame CNN: identity θ
    assert 0 <= loc["gradcam"]["inside_sector"] <= 1
    # the Setting-2 masks agree with the hand-rolled rule on the dataset's labels
    ds = read_dataset(tiny_sim)
    table = build_table(ds, None, progress=False)
    rows = table.select(None)
    masks = setting_rows(ds, table, rows)
    vid = str(table.video_ids[rows[0]])
    sel = table.video_ids[rows] == vid
    labels = [r.score for r in ds.frames_of(vid)]
    np.testing.assert_array_equal(masks["K=1"][sel], near_change_mask(labels, 1))
