"""Physical limits: FLOPs per frame, this CPU's peak, and a paper estimate for a GPU.

A frame model cannot run faster than (its FLOPs) / (the machine's peak FLOP/s); the benchmark
reports measured throughput next to that bound, so "how far from the hardware" is a number.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

TRUNK_CHANNELS = (32, 64, 64, 64, 128, 128)
"""van Sloun & Demi's 6-block trunk (PAPER.md section 1)."""

H100_SPECS = {
    # NVIDIA H100 datasheet, dense (no sparsity), SXM5 / PCIe.
    "H100 SXM": {"fp32_tflops": 67.0, "tf32_tflops": 494.7, "fp16_tflops": 989.4},
    "H100 PCIe": {"fp32_tflops": 51.0, "tf32_tflops": 378.0, "fp16_tflops": 756.0},
}


def trunk_macs(size: int, in_channels: int = 3) -> int:
    """MACs of the 6-block trunk on a ``size`` x ``size`` input.

    Each block: two 3x3 convs, MACs = H·W·C_out·C_in·9 each, at the block's resolution;
    2x2 max-pool after blocks 1..5 halves H and W (Roy et al. 2020; PAPER.md section 1).
    """
    total, c_in, s = 0, in_channels, size
    for i, c in enumerate(TRUNK_CHANNELS):
        total += s * s * c * c_in * 9 + s * s * c * c * 9
        c_in = c
        if i < 5:
            s //= 2
    return total


def regstn_macs(crops: int = 2) -> int:
    """MACs per frame of CNN + Reg-STN: localisation trunk at 224² + 6272→32 FC, then the CNN
    (trunk at 112² + 128→256→4 head) on ``crops`` crops (2 as trained, 1 if only crop 1 is
    scored at inference). ≈ 2.32 G for 2 crops (PAPER.md section 1)."""
    loc = trunk_macs(224) + 6272 * 32 + 32 * (4 + 2 + 4)
    cnn = trunk_macs(112) + 128 * 256 + 256 * 4
    return loc + crops * cnn


COUNTED_OPS = ("Conv", "ConvInteger", "QLinearConv", "Gemm", "MatMul", "MatMulInteger")


def onnx_macs(path: str | Path) -> dict[str, Any] | None:
    """Count the MACs of one batch-1 inference of an ONNX model, from the real tensor shapes.

    Every Conv / Gemm / MatMul (and their int8 forms) has its input, weight and output exposed
    as graph outputs and the model is run once in ONNX Runtime on zeros, so the shapes are
    the ones it really computes (static shape inference stops at the STN's Reshape/GridSample).
    Conv MACs = numel(output) · C_in / groups · k_h · k_w; Gemm/MatMul = numel(output) · K
    (input batch 1, so a node that sees 2 crops per frame counts twice).

    Returns:
        {"gmac", "conv_nodes", "layers"}, or None when ``onnx`` is not installed.
    """
    try:
        import onnx
    except ImportError:
        return None
    import onnxruntime as ort

    model = onnx.load(str(path))
    g = model.graph
    inits = {t.name: tuple(t.dims) for t in g.initializer}
    nodes = [n for n in g.node if n.op_type in COUNTED_OPS]
    have = {o.name for o in g.output}
    for n in nodes:
        w = n.input[3] if n.op_type == "QLinearConv" else n.input[1]
        for name in (n.input[0], w, n.output[0]):
            if name not in inits and name not in have:
                g.output.append(onnx.helper.make_empty_tensor_value_info(name))
                have.add(name)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        feeds[i.name] = np.zeros(shape, np.uint8 if "uint8" in i.type else np.float32)
    names = [o.name for o in sess.get_outputs()]
    shapes = {k: v.shape for k, v in zip(names, sess.run(names, feeds), strict=True)}
    shapes.update(inits)
    total, convs = 0, 0
    for n in nodes:
        out = shapes[n.output[0]]
        if n.op_type in ("Conv", "ConvInteger", "QLinearConv"):
            w = shapes[n.input[3] if n.op_type == "QLinearConv" else n.input[1]]
            # all of out (batch included: Reg-STN runs its CNN on 2 crops per input frame)
            total += int(np.prod(out)) * int(np.prod(w[1:]))  # w: (C_out, C_in/g, kh, kw)
            convs += 1
        else:
            a = shapes[n.input[0]]
            trans_a = any(x.name == "transA" and x.i for x in n.attribute)
            total += int(np.prod(out)) * int(a[-2] if trans_a else a[-1])
    return {"gmac": round(total / 1e9, 4), "conv_nodes": convs, "layers": len(nodes)}


def cpu_info() -> dict[str, Any]:
    """Model name, cores, clock (MHz from /proc/cpuinfo) and SIMD flags of this CPU."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = re.search(r"model name\s*:\s*(.+)", text)
    mhz = [float(m) for m in re.findall(r"cpu MHz\s*:\s*([\d.]+)", text)]
    flags_m = re.search(r"flags\s*:\s*(.+)", text)
    flags = set(flags_m.group(1).split()) if flags_m else set()
    try:
        import psutil

        cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except ImportError:
        cores = os.cpu_count() or 1
    return {"model": name.group(1).strip() if name else "unknown", "cores": int(cores),
            "mhz": round(max(mhz), 1) if mhz else None,
            "simd": sorted(f for f in flags if f in {"avx2", "fma", "avx512f", "avx512_vnni",
                                                     "avx_vnni", "amx_tile", "amx_bf16"})}


def cpu_peak_gflops(cores: int, ghz: float, simd_lanes: int = 8, fma_units: int = 2) -> float:
    """Peak fp32 FLOP/s in G: cores × FMA units × lanes × 2 (an FMA is 2 FLOPs) × clock.

    AVX2 = 8 fp32 lanes, AVX-512 = 16; AMD Zen 2/3 and Intel server cores issue 2 FMAs/cycle.
    """
    return cores * fma_units * simd_lanes * 2 * ghz


def measured_sgemm_gflops(n: int = 1024, seconds: float = 1.0) -> float:
    """Attained fp32 GFLOP/s of numpy's BLAS on an n×n matmul: the best this machine does on
    the friendliest kernel (a practical ceiling; noisy when the machine is shared)."""
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    a @ a
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or reps < 2:
        a @ a
        reps += 1
    return round(2 * n**3 * reps / (time.perf_counter() - t0) / 1e9, 1)


def cpu_limit(frame_gmac: float, sgemm_seconds: float = 1.0) -> dict[str, Any]:
    """This CPU's peak and the frames/s bound it puts on a model of ``frame_gmac`` GMAC."""
    info = cpu_info()
    lanes = 16 if "avx512f" in info["simd"] else 8
    ghz = (info["mhz"] or 2000.0) / 1000.0
    peak = cpu_peak_gflops(info["cores"], ghz, lanes)
    sgemm = measured_sgemm_gflops(seconds=sgemm_seconds) if sgemm_seconds > 0 else None
    gflop = max(2 * frame_gmac, 1e-9)  # a test dummy counts ~0
    return {**info, "simd_lanes_fp32": lanes, "fma_units_assumed": 2,
            "peak_gflops_fp32": round(peak, 1), "sgemm_gflops_measured": sgemm,
            "frame_gflop": round(gflop, 3),
            "max_fps_at_peak": round(peak / gflop, 1),
            "max_fps_at_sgemm": round(sgemm / gflop, 1) if sgemm else None,
            "formula": f"{info['cores']} cores x 2 FMA x {lanes} lanes x 2 FLOP x {ghz:.3f} GHz"}


GPU_SCENARIOS = {
    # name: (peak key in H100_SPECS, fraction of that peak reached, per-layer floor in µs)
    "tensorrt_fp16": ("fp16_tflops", 0.25, 3.0),
    "torch_eager_tf32": ("tf32_tflops", 0.15, 10.0),
}
"""Assumptions of the paper estimate: small convnets at small batch reach a fraction of the
tensor-core peak, and each layer costs at least a kernel-launch / latency floor (a fused
TensorRT layer ~3 µs; eager PyTorch launches conv, BN and ReLU separately, ~10 µs a layer)."""


def gpu_estimate(frame_gmac: float, frame_layers: int, seg_gmac: float | None,
                 seg_layers: int, gpu: str = "H100 PCIe", batch: int = 8) -> dict[str, Any]:
    """An estimate on paper (NOT a measurement) of frame model + seg ensemble on an H100.

    Per model: t = max(2·GMAC / (efficiency · peak), layers · floor / batch) per frame; the
    frame + seg ensemble time is the sum; 30-fps streams sustained = floor(1000 / (30 · t)).

    Args:
        frame_gmac, frame_layers: the frame model's MACs (G) and conv/linear layer count.
        seg_gmac, seg_layers: the same summed over the ensemble members (None: no seg).
        batch: frames per call (one from each of ``batch`` streams) for the streams figure.
    """
    out: dict[str, Any] = {"estimate": True, "gpu": gpu, "frame_gmac": frame_gmac,
                           "seg_gmac": seg_gmac, "frame_layers": frame_layers,
                           "seg_layers": seg_layers, "datasheet": H100_SPECS[gpu],
                           "scenarios": {}}
    for name, (peak_key, eff, floor_us) in GPU_SCENARIOS.items():
        peak = H100_SPECS[gpu][peak_key] * 1e12 * eff

        def ms(gmac: float, layers: int, b: int, peak=peak, floor_us=floor_us) -> float:
            return max(2e9 * gmac / peak * 1e3, layers * floor_us / 1e3 / b)

        row = {"assumed": f"{eff:.0%} of {peak_key} peak, {floor_us} µs per layer"}
        for b in (1, batch):
            f = ms(frame_gmac, frame_layers, b)
            sg = ms(seg_gmac, seg_layers, b) if seg_gmac else 0.0
            row[f"b{b}"] = {"frame_ms": round(f, 3), "seg_ms": round(sg, 3),
                            "frame_plus_seg_ms": round(f + sg, 3),
                            "streams_30fps": int(1000.0 / (30.0 * (f + sg)))}
        out["scenarios"][name] = row
    return out
