"""`pleura bench` and scripts/gpu-bench.sh, run for real in their fast modes.

The bench runs on the tiny test bundle of engines.testing (its model numbers mean nothing, the
tool's plumbing is what is tested): real PyAV decoding of a real clip, real ONNX Runtime, real
threads pacing real-time streams, and the real PyTorch Reg-STN baseline in its own process.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HAS_TORCH = importlib.util.find_spec("torch") is not None
sys.path.insert(0, str(ROOT))  # benchmarks/ is a source-checkout folder, not an installed package


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def bench_json(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "b.json"
    cmd = [sys.executable, "-m", "stream", "bench", "--fast", "--dummy", "--streams", "1,2",
           "--resolutions", "256,480p", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "frame scoring, unpaced" in proc.stdout  # the printed table
    return json.loads(out.read_text())


def test_bench_measures_every_phase(bench_json):
    r = bench_json
    assert r["schema"] == "pleura-bench/1"
    assert r["decode"]["fps"] > 0 and r["decode"]["frames"] > 0
    pre = r["preprocess"]["frame"]["ms"]
    assert 0 < pre["p50"] <= pre["p99"]
    rows = r["inference"]["frame_fp32"]
    assert [row["batch"] for row in rows] == [1, 4]
    for row in rows:
        assert 0 < row["ms"]["p50"] <= row["ms"]["p99"]
        assert math.isclose(row["ms_per_frame"], row["ms"]["p50"] / row["batch"], rel_tol=1e-2,
                            abs_tol=2e-3)
    assert r["inference"]["seg_ensemble"][0]["ms"]["p50"] > 0  # the dummy bundle has a member
    for name, fps in r["throughput"]["median_fps"].items():
        assert fps > 0, name
    paced = r["paced"]
    assert paced["mode"] == "in-process"  # --fast never starts the live processes
    assert paced["processed"] > 0 and 0 < paced["served_fraction"] <= 1.0
    assert paced["latency_ms"]["p50"] > 0
    assert r["limits"]["cpu"]["peak_gflops_fp32"] > 0


def test_bench_scaling_rows(bench_json):
    streams = bench_json["scaling"]["streams"]
    assert [row["streams"] for row in streams] == [1, 2]
    for row in streams:
        assert row["paced"]["streams"] == row["streams"]
        assert row["unpaced"]["streams"] == row["streams"] and row["unpaced"]["fps"] > 0
        assert row["paced"]["latency_ms"]["n"] == row["paced"]["processed"]
    res = bench_json["scaling"]["resolutions"]
    assert [row["name"] for row in res] == ["256", "480p"]
    assert res[1]["megapixels"] > res[0]["megapixels"]
    for row in res:
        assert row["decode"]["fps"] > 0 and row["pipeline"]["fps"] > 0
    assert "ms/MP" in bench_json["scaling"]["resolutions_growth"]["text"]
    assert "per extra stream" in bench_json["scaling"]["streams_growth"]["text"]


def test_bench_baseline_and_ratios(bench_json):
    r = bench_json
    base = r["baseline"]
    if not HAS_TORCH:
        assert base["available"] is False and "torch" in base["skipped_reason"]
        assert r["ratios"] == {}
        return
    assert base["available"], base["skipped_reason"]
    assert "VideoCapture" in base["what"]
    # the baseline model is the paper's Reg-STN: its MACs, counted by hooks, are ~2.32 G
    assert base["info"]["gmac_per_frame"] == pytest.approx(2.3177, abs=0.01)
    # the dummy bundle is not the baseline's model: the parity check must say so
    assert base["parity"]["max_abs_diff_probs"] > 1e-4 and not base["parity"]["same_weights"]
    med = r["throughput"]["median_fps"]
    assert med["baseline"] > 0
    assert r["max_sustainable_fps"]["fps"] == max(v for k, v in med.items() if k != "baseline")
    assert set(r["ratios"]) == set(med) - {"baseline"}
    for name, ratio in r["ratios"].items():
        assert ratio == pytest.approx(med[name] / med["baseline"], rel=1e-2), name
    b1 = r["inference"]["baseline_torch"][0]["ms_per_frame"]
    assert r["ratios_model_only"]["frame_fp32_b1"] == pytest.approx(
        b1 / r["inference"]["frame_fp32"][0]["ms_per_frame"], rel=1e-2)
    target = r["targets"]["cpu_3x_baseline"]
    assert target["best_ratio"] == max(r["ratios"].values())
    assert target["met"] == (target["best_ratio"] >= 3.0)


def test_flop_counts_and_limits(tmp_path):
    from benchmarks.limits import cpu_peak_gflops, onnx_macs, regstn_macs, trunk_macs
    from benchmarks.report import linear_fit, ratios

    assert trunk_macs(224) == pytest.approx(1.55e9, rel=0.01)  # PAPER.md: STN trunk at 224²
    assert regstn_macs(2) == pytest.approx(2.32e9, rel=0.01)
    assert cpu_peak_gflops(2, 2.5) == 2 * 2 * 8 * 2 * 2.5
    assert ratios({"a": 6.0, "b": None}, 2.0) == {"a": 3.0}
    assert ratios({"a": 6.0}, None) == {}
    fit = linear_fit([1, 2, 4], [3, 5, 9])
    assert fit["slope"] == pytest.approx(2.0) and fit["intercept"] == pytest.approx(1.0)
    onnx = pytest.importorskip("onnx")
    import numpy as np

    h = onnx.helper
    w = onnx.numpy_helper.from_array(np.zeros((8, 3, 3, 3), np.float32), "w")
    g = h.make_graph([h.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "g",
                     [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["b", 3, 16, 16])],
                     [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], [w])
    path = tmp_path / "conv.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), str(path))
    assert onnx_macs(path)["gmac"] == pytest.approx(8 * 16 * 16 * 3 * 9 / 1e9, abs=1e-4)


@pytest.mark.skipif(not HAS_TORCH, reason="scripts/gpu-bench.sh needs torch")
def test_gpu_bench_script_cpu_fast_mode(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-bench.sh"), str(out),
                           "--cpu-fast"], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["device"] == "cpu" and r["fast"] is True
    assert r["gmac"]["reg-stn"] == pytest.approx(2.3177, abs=0.01)  # counted by hooks
    assert r["gmac"]["unet"] > 0
    rows = r["torch"]["fp32_eager"]
    assert rows["reg-stn"]["b1"]["p50"] > 0 and rows["unet"]["b1"]["p50"] > 0
    s = r["summary"]["fp32_eager"]["b1"]
    assert s["frame_plus_seg_ms"] == pytest.approx(s["frame_ms"] + s["seg_ensemble_ms"],
                                                   abs=2e-3)
