"""int8 quantisation helpers and scripts/gpu-check.sh in its CPU fast mode."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_f1_percent_known_values():
    from train.quantize import f1_percent

    y = np.array([0, 0, 1, 1, 2, 3])
    p = np.array([0, 1, 1, 1, 2, 2])
    r = f1_percent(y, p)
    assert r["f1_micro"] == pytest.approx(100 * 4 / 6)
    # per class F1: 0 -> 2/3, 1 -> 0.8, 2 -> 2/3, 3 -> 0
    assert r["f1_macro"] == pytest.approx(100 * (2 / 3 + 0.8 + 2 / 3 + 0) / 4)


def test_quantize_small_conv_frame_model(tmp_path):
    torch = pytest.importorskip("torch")
    from torch import nn

    from train.calib_frames import random_frames
    from train.export import FrameExport, export_onnx
    from train.quantize import predict, quantize_frame

    class ConvFrame(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, stride=4), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.cls, self.t = nn.Linear(8, 4), nn.Linear(8, 12)

        def forward(self, x):
            f = self.conv(x)
            t = self.t(f).view(-1, 2, 2, 3)
            return {"probs": self.cls(f).softmax(1), "theta1": t[:, 0], "theta2": t[:, 1]}

    torch.manual_seed(0)
    fp32 = export_onnx(FrameExport(ConvFrame().eval()), torch.rand(2, 3, 224, 224),
                       tmp_path / "f.onnx", "frames", ["probs", "theta1", "theta2"])
    x = random_frames(16, seed=0)
    q = quantize_frame(fp32, tmp_path / "q.onnx", x)
    import onnx

    ops = {n.op_type for n in onnx.load(str(q)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    p32, _ = predict(fp32, x, threads=1)
    p8, _ = predict(q, x, threads=1)
    np.testing.assert_allclose(p8.sum(1), 1, atol=1e-5)
    assert 0 < np.abs(p32 - p8).max() < 0.05  # quantised, and close on calibration data


def test_gpu_check_fast_mode_runs_on_cpu(tmp_path):
    out = tmp_path / "gc.json"
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-check.sh"), "--fast",
                           "--json", str(out)], capture_output=True, text=True, timeout=280,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "gpu-check: OK (fast mode)" in proc.stdout
    res = json.loads(out.read_text())
    paths = {r["path"] for r in res["rows"]}
    assert "onnxruntime-cpu" in paths
    if not res["environment"]["gpu_visible"]:
        notes = {r["path"]: r["note"] for r in res["rows"]}
        assert notes["tensorrt"] == "skipped: no GPU"
    checked = [r for r in res["rows"] if r["passed"] is not None]
    if "torch" in sys.modules or res["environment"].get("torch", "").startswith("2"):
        assert {r["model"] for r in checked} >= {"Reg-STN", "U-Net"}
    assert all(r["passed"] for r in checked)
