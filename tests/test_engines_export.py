"""ONNX export: parity with PyTorch, loud failure, MC-dropout variant, bundle round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from torch import nn  # noqa: E402

import engines  # noqa: E402
from engines.postprocess import theta_corners, theta_corners_batch  # noqa: E402
from train.calib_frames import random_frames  # noqa: E402
from train.export import (  # noqa: E402
    ExportError,
    MCDropout,
    SegRun,
    export_bundle,
    mc_variant,
    run_kind,
    run_meta,
)


class TinyFrame(nn.Module):
    """The frame output contract (probs, theta1, theta2 in a dict) in a few parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.cls = nn.Linear(48, 4)
        self.theta = nn.Linear(48, 12)

    def forward(self, x):
        f = self.pool(x).flatten(1)
        t = torch.tanh(self.theta(f)).view(-1, 2, 2, 3)
        logits = self.cls(f)
        return {"logits": logits, "probs": logits.softmax(1), "theta1": t[:, 0],
                "theta2": t[:, 1]}


class Branchy(TinyFrame):
    """Traced on bright random frames, it keeps their branch for the darker simulated ones."""

    def forward(self, x):
        out = super().forward(x)
        if float(x.mean()) > 0.45:  # python control flow: the trace keeps one branch
            out["probs"] = out["probs"].flip(1)
        return out


class TinySeg(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.drop = nn.Dropout(0.5)
        self.c2 = nn.Conv2d(8, 5, 1)

    def forward(self, x):
        return self.c2(self.drop(torch.relu(self.c1(x))))


def assert_frame_parity(eng, model: torch.nn.Module, x: np.ndarray, atol: float = 1e-4):
    """The engine's probs, θ₁ and θ₂ equal the PyTorch model's on ``x``; returns the engine's."""
    out = eng.frame(x)
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(x))
    for name in ("probs", "theta1", "theta2"):
        np.testing.assert_allclose(getattr(out, name), ref[name].numpy(), atol=atol,
                                   err_msg=name)
    return out


def test_tiny_export_round_trip(tmp_path):
    torch.manual_seed(0)
    frame, seg = TinyFrame(), TinySeg()
    m = export_bundle(tmp_path / "b", frame, [SegRun("tiny", seg, "tinyseg")],
                      [0.1, 0.2, 0.3, 0.4], commands=["pleura train frame (test)"])
    assert set(m["files"]) == {"frame.onnx", "seg-tiny.onnx", "seg-tiny-mc.onnx",
                               "aggregator.json", "MODEL_CARD.md"}
    par = m["evaluation"]["export_parity_max_abs_diff"]
    assert max(par["frame.onnx"].values()) <= 1e-4 and par["seg-tiny.onnx"]["probs"] <= 1e-4
    card = (tmp_path / "b" / "MODEL_CARD.md").read_text()
    assert "not for diagnosis" in card and "pleura train frame (test)" in card
    eng = engines.create_engine(tmp_path / "b", backend="onnxruntime", threads=1)
    assert eng.bundle.uninorm_e == (0.1, 0.2, 0.3, 0.4)
    x = random_frames(3, seed=42)
    assert_frame_parity(eng, frame, x)
    xs = np.random.default_rng(0).uniform(-1, 1, (1, 1, 200, 260)).astype(np.float32)
    with torch.no_grad():
        ref_seg = seg.eval()(torch.from_numpy(xs)).softmax(1).numpy()
    np.testing.assert_allclose(eng.segment(xs).probs, ref_seg, atol=1e-4)
    mc = eng.segment(xs, mc_samples=8)
    assert mc.std is not None and mc.std.mean() > 0


def test_parity_failure_is_loud(tmp_path):
    torch.manual_seed(0)
    with pytest.raises(ExportError, match=r"frame.onnx: ONNX Runtime differs from PyTorch"):
        export_bundle(tmp_path / "b", Branchy())
    assert not (tmp_path / "b").exists()  # nothing half-written where the bundle goes


def test_mc_variant_replaces_dropout_and_samples():
    seg = TinySeg().eval()
    twin = mc_variant(seg)
    assert isinstance(twin.drop, MCDropout) and isinstance(seg.drop, nn.Dropout)
    x = torch.randn(1, 1, 20, 26)
    with torch.no_grad():
        assert not torch.equal(twin(x), twin(x))
        assert torch.equal(seg(x), seg(x))
    assert mc_variant(nn.Conv2d(1, 5, 1)) is None


def test_cli_export_of_run_folders(tmp_path):
    # the real Reg-STN graph (GridSample via a base-grid matmul) from a frame run folder, a
    # light U-Net seg run and a video run, through `pleura export`, parity at batch 2
    from stream.cli import main
    from train.frame.config import TrainConfig
    from train.frame.models.stn import RegSTN
    from train.seg.models import build_model

    torch.manual_seed(1)
    model = RegSTN()
    with torch.no_grad():  # non-zero heads so theta depends on the frame
        for head in (model.translation, model.scale, model.offdiag):
            head.weight.normal_(0, 0.05)
    frame_run = tmp_path / "frame-run"
    frame_run.mkdir()
    (frame_run / "config.json").write_text(TrainConfig(data="sim", out=str(frame_run)).to_json())
    torch.save({"model": model.state_dict()}, frame_run / "best.pt")
    seg_run = tmp_path / "seg-run"
    seg_run.mkdir()
    (seg_run / "config.json").write_text(json.dumps(
        {"kind": "seg", "model": {"arch": "unet", "dropout": 0.5, "norm": True},
         "command": "pleura train seg",
         "best": {"dice": 0.5}}))
    torch.save({"state_dict": build_model("unet").state_dict()}, seg_run / "best.pt")
    video_run = tmp_path / "video-run"
    video_run.mkdir()
    (video_run / "uninorm.json").write_text(json.dumps({"e": [0.4, 0.5, 0.6, 0.7]}))
    out = tmp_path / "bundle"
    rc = main(["export", str(frame_run), str(seg_run), str(video_run), "--out", str(out),
               "--command", "pleura synth --out data/sim-train", "--training-note",
               "licence=simulated"])
    assert rc == 0
    b = engines.load_bundle(out)
    par = b.manifest["evaluation"]["export_parity_max_abs_diff"]
    assert set(par["frame.onnx"]) == {"probs", "theta1", "theta2"}
    assert max(par["frame.onnx"].values()) <= 1e-4 and par["seg-unet.onnx"]["probs"] <= 1e-4
    assert [m.name for m in b.seg_members] == ["unet"] and b.seg_members[0].mc_file
    assert b.uninorm_e == (0.4, 0.5, 0.6, 0.7)
    cmds = b.manifest["commands"]
    assert cmds[0] == "pleura synth --out data/sim-train" and "pleura train seg" in cmds
    assert any(c.startswith(f"pleura train frame --data sim --out {frame_run}") for c in cmds)
    assert cmds[-1].startswith("pleura export")
    assert b.manifest["training"]["licence"] == "simulated"
    assert b.manifest["evaluation"]["seg_1"] == {"best": {"dice": 0.5}}
    eng = engines.create_engine(b, backend="onnxruntime")
    x = random_frames(2, seed=5)
    out_f = assert_frame_parity(eng, model, x)
    assert np.abs(out_f.theta1[0] - out_f.theta1[1]).max() > 0  # theta depends on the input


def test_run_kind_and_meta(tmp_path):
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "uninorm.json").write_text(json.dumps({"e": [0.1, 0.2, 0.3, 0.4]}))
    assert run_kind(tmp_path / "v") == "video"
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "config.json").write_text(json.dumps(
        {"kind": "seg", "command": ["pleura", "train", "seg"], "best": {"dice": 0.5}}))
    assert run_kind(tmp_path / "s") == "seg"
    meta = run_meta(tmp_path / "s")
    assert meta["command"] == "pleura train seg" and meta["metrics"] == {"best": {"dice": 0.5}}
    with pytest.raises(ExportError, match="cannot tell what run"):
        run_kind(tmp_path)


def test_theta_corners_match_torch_affine_grid():
    # affine_grid (align_corners=False) samples output pixel centres; the crop's outer corners
    # are where the grid would be at +-1, so corners of a grid with centres at +-(1 - 1/n)
    # must equal theta_corners applied to that shrunken square.
    import torch.nn.functional as F

    theta = torch.tensor([[[0.5, 0.1, 0.2], [-0.1, 0.6, -0.3]]])
    n = 112
    grid = F.affine_grid(theta, (1, 1, n, n), align_corners=False)[0]  # (n, n, 2)
    h, w = 224, 224
    corners_px = (grid[[0, 0, -1, -1], [0, -1, -1, 0]].numpy() + 1) * np.array([w, h]) / 2
    shrink = 1 - 1 / n
    th = theta[0].numpy().copy()
    scaled = th.copy()
    scaled[:, :2] *= shrink
    np.testing.assert_allclose(theta_corners(scaled, (h, w)), corners_px, atol=1e-4)
    ident = theta_corners(np.array([[1, 0, 0], [0, 1, 0]]), (h, w))
    np.testing.assert_allclose(ident, [[0, 0], [w, 0], [w, h], [0, h]])
    batch = theta_corners_batch(np.stack([th, th * 0.5]), (h, w))
    np.testing.assert_allclose(batch[0], theta_corners(th, (h, w)))
