"""The CPU Reg-STN recipe: frozen classifier, θ-head learning rate, staged runs, crop figures."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests._frame_fixtures import one_torch_thread, tiny_sim  # noqa: F401 - fixtures
from train.data.layout import read_dataset
from train.frame import recipe as recipe_mod
from train.frame.config import TrainConfig
from train.frame.data import build_table
from train.frame.evaluate import crop_spread, evaluate, localisation, with_translation
from train.frame.localisation import holds_score, polygon_mask
from train.frame.models import build_model
from train.frame.recipe import Stage, run_recipe, stage_configs
from train.frame.run import load_run
from train.frame.trainer import param_groups, train

REPO = Path(__file__).resolve().parents[1]


def _cfg(data, out, **kw):
    base = dict(data=str(data), out=str(out), model="reg-stn-cpu", epochs=1, batch=4, lr=1e-3,
                frames_per_epoch=8, seed=0, device="cpu", cache_dir=None)
    base.update(kw)
    return TrainConfig(**base)


def test_reg_stn_cpu_pools_only_the_localisation_input():
    m = build_model("reg-stn-cpu").eval()
    assert m.loc.size == 112 and m.loc.fc[0].in_features == 128 * 3 * 3
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        out = m(x)
    assert out["probs"].shape == (2, 4) and out["theta1"].shape == (2, 2, 3)
    # the paper-exact model keeps the full-resolution localisation input
    assert build_model("reg-stn").loc.fc[0].in_features == 128 * 7 * 7


def test_evidence_head_starts_from_the_classifier_head_and_moves_with_the_content():
    """reg-stn-cpu's translations: soft-argmax of a class-activation map whose 1x1 convolutions
    are Φ_cnn's head (warm start), so crop 1 goes where the classifier sees a finding."""
    from train.frame.trainer import _evidence_from_head

    torch.manual_seed(0)
    src = build_model("cnn-sord").state_dict()
    w = _evidence_from_head(src, "evidence.mlp.0.weight")
    assert w.shape == (256, 128, 1, 1)
    torch.testing.assert_close(w[:, :, 0, 0], src["cnn.head.0.weight"])
    m = build_model("reg-stn-cpu").eval()
    fmap = torch.zeros(2, 128, 3, 3)
    with torch.no_grad():  # make one channel the evidence of score 3
        m.evidence.mlp[0].weight.zero_()
        m.evidence.mlp[0].bias.zero_()
        m.evidence.mlp[0].weight[0, 0] = 1.0
        m.evidence.mlp[3].weight.zero_()
        m.evidence.mlp[3].bias.zero_()
        m.evidence.mlp[3].weight[3, 0] = 20.0
        m.evidence.log_beta.fill_(3.0)
        fmap[0, 0, 0, 2] = 5.0  # top right
        fmap[1, 0, 2, 0] = 5.0  # bottom left
        u = m.evidence(fmap)
    assert u[0, 0] > 0.5 and u[0, 1] < -0.5 and u[1, 0] < -0.5 and u[1, 1] > 0.5


def test_param_groups_put_theta_heads_at_their_own_rate():
    m = build_model("reg-stn-cpu-fc")
    cfg = _cfg("d", "o", theta_lr_mult=10.0)
    groups = param_groups(m, cfg)
    heads = {id(p) for mod in (m.translation, m.scale, m.offdiag) for p in mod.parameters()}
    assert groups[1]["lr"] == pytest.approx(1e-2) and groups[0]["lr"] == pytest.approx(1e-3)
    assert {id(p) for p in groups[1]["params"]} == heads
    assert not heads & {id(p) for p in groups[0]["params"]}


def test_frozen_classifier_does_not_move_but_the_crops_do(tiny_sim, tmp_path):  # noqa: F811
    table = build_table(read_dataset(tiny_sim), None, progress=False)
    cfg = _cfg(tiny_sim, tmp_path / "run", freeze_cnn=True, theta_lr_mult=10.0)
    torch.manual_seed(cfg.seed)
    before = build_model(cfg.model).state_dict()
    train(cfg, table=table, progress=False)
    after, _ = load_run(tmp_path / "run", which="last")
    sd = after.state_dict()
    for k, v in before.items():
        if k.startswith("cnn."):  # weights and BatchNorm running statistics
            torch.testing.assert_close(sd[k], v, msg=f"{k} moved")
    assert not torch.equal(sd["evidence.mlp.3.weight"], before["evidence.mlp.3.weight"])
    assert not torch.equal(sd["loc.fc.0.weight"], before["loc.fc.0.weight"])


def test_freeze_needs_a_classifier():
    cfg = _cfg("d", "o", model="resnet18-sord", freeze_cnn=True)
    with pytest.raises(ValueError, match="freeze-cnn"):
        param_groups(build_model(cfg.model), cfg)


def test_stage_chain_links_warm_starts_and_ends_in_out():
    chain = stage_configs("cpu-stn", "data/sim-train", "runs/x", threads=2)
    names = [n for n, _ in chain]
    assert names == ["cnn112", "cnn224", "final"]
    c112, c224, final = (c for _, c in chain)
    assert c112.model == "cnn-sord" and c112.init_from is None
    assert c224.model == "cnn-sord-224" and c224.init_from == c112.out
    assert final.out == "runs/x" and final.model == "reg-stn-cpu"
    assert final.init_from == c224.out and final.init_loc_from == c112.out
    assert final.freeze_loc and not final.freeze_cnn and final.theta_lr_mult == 33.3
    assert all(c.select == "last" for _, c in chain)  # fixed schedules, final epochs kept
    assert all(c.threads == 2 for _, c in chain)
    with pytest.raises(KeyError, match="cpu-stn"):
        stage_configs("nope", "d", "o")


def test_recipe_v3_is_v2_with_score_0_set_apart_in_the_final_stage():
    v2 = stage_configs("cpu-stn", "data/d", "runs/x", seed=1)
    v3 = stage_configs("cpu-stn-v3", "data/d", "runs/x", seed=1)
    assert [c for _, c in v3[:2]] == [c for _, c in v2[:2]]  # same whole-frame stages
    assert not v2[2][1].zero_gap and v3[2][1].zero_gap
    assert dataclasses.replace(v3[2][1], zero_gap=False) == v2[2][1]


def test_tiny_recipe_trains_every_stage_and_resumes(tiny_sim, tmp_path, monkeypatch):  # noqa: F811
    tiny = {"batch": 4, "frames_per_epoch": 8, "epochs": 1}
    monkeypatch.setitem(recipe_mod.RECIPES, "tiny", (
        Stage("cnn", {**tiny, "model": "cnn-sord-224", "lr": 1e-3}),
        Stage("loc", {**tiny, "model": "reg-stn-cpu", "freeze_cnn": True,
                      "theta_lr_mult": 10.0, "init_loc_from": "@cnn"}),
        Stage("", {**tiny, "model": "reg-stn-cpu", "lr": 1e-4, "freeze_loc": True,
                   "init_loc_from": "@cnn"}),
    ))
    out = tmp_path / "recipe"
    times = run_recipe("tiny", str(tiny_sim), str(out), device="cpu", cache_dir=None)
    assert set(times) == {"cnn", "loc", "final"}
    model, cfg = load_run(out)
    assert cfg.model == "reg-stn-cpu" and cfg.init_from == str(out / "loc")
    # the frozen stage handed the stage-1 classifier on unchanged
    cnn_run, _ = load_run(out / "cnn")
    loc_run, _ = load_run(out / "loc")
    torch.testing.assert_close(loc_run.cnn.state_dict()["head.4.weight"],
                               cnn_run.cnn.state_dict()["head.4.weight"])
    # a frozen localiser keeps the class-activation map it was given
    torch.testing.assert_close(model.evidence.mlp[3].weight[:, :, 0, 0],
                               cnn_run.cnn.state_dict()["head.4.weight"])
    rec = json.loads((out / "recipe.json").read_text())
    assert set(rec["stages"]) == {"cnn", "loc", "final"}
    # the same command again: every stage is finished, nothing is retrained
    assert run_recipe("tiny", str(tiny_sim), str(out), device="cpu", cache_dir=None) == {}


def test_crop_spread_and_frozen_translation():
    th = np.zeros((4, 2, 3))
    th[:, 0, 0] = th[:, 1, 1] = 0.5
    th[:, 0, 2] = [-0.2, 0.2, -0.2, 0.2]
    th[:, 1, 2] = 0.1
    s = crop_spread(th, th)
    assert s["tx1_std"] == pytest.approx(0.2) and s["ty1_std"] == pytest.approx(0.0)
    assert s["t1_spread"] == pytest.approx(0.2) and s["sigma1_mean"] == pytest.approx(0.5)
    fixed = with_translation(th, (0.3, 0.3))
    assert np.all(fixed[:, :, 2] == 0.3) and np.all(fixed[:, 0, 0] == 0.5)


def test_localisation_scores_moving_crops_above_frozen_ones(tiny_sim):  # noqa: F811
    """A crop centred on each frame's lesion points at it; the same crop frozen at a far-away
    translation does not: the figure that says whether the crops learnt anything."""
    from train.frame.evaluate import _target_mask

    ds = read_dataset(tiny_sim)
    table = build_table(ds, None, progress=False)
    rows = table.select(None)
    th = np.zeros((len(rows), 2, 3))
    th[:, 0, 0] = th[:, 1, 1] = 0.25
    th[:, 0, 2], th[:, 1, 2] = -0.9, -0.9
    for i, r in enumerate(rows):  # centre crop 1 on the lesion mask's centroid
        m = _target_mask(ds, str(table.video_ids[r]), int(table.frames[r]))
        if m is not None and m.any():
            ys, xs = np.nonzero(m)
            th[i, 0, 2], th[i, 1, 2] = (xs.mean() + 0.5) / 112 - 1, (ys.mean() + 0.5) / 112 - 1
    res = localisation(None, ds, table, rows, th, th, max_frames=len(rows),
                       trans_init=(-0.9, -0.9, 0.0, 0.0))
    assert res["gradcam"] is None
    assert res["stn_crop1"]["pointing"] == 1.0
    assert res["stn_crop1_init"]["pointing"] < res["stn_crop1"]["pointing"]
    assert res["stn_crop1_mean"]["n_frames"] == len(rows)
    assert res["trans_init"][:2] == [-0.9, -0.9]
    # the whole frame holds every frame's score-setting finding; a corner box mostly does not
    eye = np.tile(np.array([[1.0, 0, 0], [0, 1.0, 0]]), (len(rows), 1, 1))
    whole = localisation(None, ds, table, rows, eye, eye, max_frames=len(rows),
                         trans_init=(-0.9, -0.9, 0.0, 0.0))
    n_sick = int((table.scores[rows] > 0).sum())
    assert whole["stn_crop1"]["n_with_score"] == n_sick > 0
    assert whole["stn_crop1"]["holds_score"] >= 0.95
    assert res["stn_crop1_init"]["holds_score"] < whole["stn_crop1"]["holds_score"]


def test_holds_score_asks_for_the_finding_that_sets_the_score():
    """A box over the score-2 marker holds a score-2 frame; a box over its score-1 markers
    only does not, although the pointing game would count both; score-0 frames are not
    counted."""
    label = np.zeros((224, 224), np.uint8)
    label[60:90, 20:60] = 3          # score 2 marker, left
    label[60:200, 140:200] = 2       # score 1 markers, right
    sector = np.ones((224, 224), bool)

    def box(x0, y0, x1, y1):
        return polygon_mask(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64),
                            label.shape)

    assert holds_score(box(0, 40, 112, 150), label, 1.0, sector, 2) == 1.0
    assert holds_score(box(112, 40, 224, 224), label, 1.0, sector, 2) == 0.0
    assert holds_score(box(112, 40, 224, 224), label, 1.0, sector, 1) == 1.0
    assert np.isnan(holds_score(box(0, 0, 224, 224), label, 1.0, sector, 0))
    # a sliver of the marker below the frame-score rule's size does not count
    assert holds_score(box(0, 60, 22, 62), label, 1.0, sector, 2) == 0.0


def test_eval_frame_bundle_reports_the_crop_figures(tiny_sim):  # noqa: F811
    """``pleura eval frame --bundle B`` (no run folder) measures σ, spread and pointing from the
    bundle's own θ outputs through ONNX Runtime."""
    pytest.importorskip("onnxruntime")
    res = evaluate(None, tiny_sim, split="all", batch=8, loc_frames=8, cache_dir=None,
                   bundle=REPO / "engines" / "bundles" / "regstn-sim")
    loc = res["localisation"]
    assert 0.3 < loc["sigma1_mean"] < 0.7 and "t1_spread" in loc
    assert loc["stn_crop1"]["n_frames"] == 8 and loc["gradcam"] is None


def test_eval_frame_checkpoint_last_uses_the_final_epoch(tiny_sim, tmp_path):  # noqa: F811
    """``pleura eval frame --checkpoint last`` scores with ``last.pt``, not the validation pick,
    and says which one it used."""
    out = tmp_path / "run"
    train(_cfg(tiny_sim, out, model="cnn-sord"), progress=False)
    ck = torch.load(out / "last.pt", weights_only=True)
    for k, v in ck["model"].items():  # a last epoch that differs from best.pt
        if k.endswith("head.4.bias"):
            v.copy_(torch.tensor([9.0, -9.0, -9.0, -9.0]))
    torch.save(ck, out / "last.pt")
    best = evaluate(out, tiny_sim, split="all", loc_frames=0, cache_dir=None)
    last = evaluate(out, tiny_sim, split="all", loc_frames=0, cache_dir=None, checkpoint="last")
    assert best["checkpoint"] == "best" and last["checkpoint"] == "last"
    assert last["setting1"]["confusion"] != best["setting1"]["confusion"]
    assert all(row[1:] == [0, 0, 0] for row in last["setting1"]["confusion"])


def test_select_last_keeps_the_final_epoch_and_val_the_best(tiny_sim, tmp_path):  # noqa: F811
    """``select="last"`` writes the final epoch to best.pt (fixed schedule); "val" (the paper)
    keeps the epoch with the best validation micro F1; a wrong value is refused."""
    for select in ("last", "val"):
        out = tmp_path / select
        train(_cfg(tiny_sim, out, model="cnn-sord", epochs=3, select=select), progress=False)
        kept = torch.load(out / "best.pt", weights_only=True)
        f1 = [float(line.split(",")[8]) for line in (out / "metrics.csv").read_text()
              .splitlines()[1:]]
        if select == "last":
            assert kept["epoch"] == 2
            torch.testing.assert_close(kept["model"], torch.load(
                out / "last.pt", weights_only=True)["model"])
        else:
            assert kept["epoch"] == f1.index(max(f1))
    with pytest.raises(ValueError, match="select"):
        _cfg(tiny_sim, tmp_path / "x", select="best")
