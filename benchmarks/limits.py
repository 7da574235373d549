"""Physical limits: MACs per frame, this CPU's measured peak, and a paper estimate for a GPU.

A model cannot run faster than (its operations) / (the machine's peak operations per second):
the benchmark reports measured throughput next to that bound, so "how far from the hardware"
is a number. The MACs are those of the graph the runtime executes (:mod:`benchmarks.macs`);
the peak is measured by :file:`benchmarks/fma_peak.c` (the nominal clock formula of
``/proc/cpuinfo`` is the base clock, below what the cores really run at: issue #19 found ONNX
Runtime "above" a ceiling derived from it).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

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


def onnx_macs(path: str | Path, outputs: list[str] | None = None) -> dict[str, Any] | None:
    """MACs of one batch-1 inference of an ONNX model (:func:`benchmarks.macs.count`): the
    executed count ``gmac`` and the ``gmac_used`` count of batch rows that reach ``outputs``
    (default: all graph outputs, as the runtime fetches them). None without ``onnx``."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        return None
    from benchmarks.macs import count

    return count(path, outputs)


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


FMA_SOURCE = Path(__file__).with_name("fma_peak.c")


def measured_peak(seconds: float = 0.6, threads: int | None = None,
                  workdir: str | Path | None = None) -> dict[str, Any]:
    """This CPU's measured peak: :file:`benchmarks/fma_peak.c`, compiled now and run with one
    thread per core: fp32 FMA (and 512-bit FMA with AVX-512), the two AVX2 int8 sequences (and
    VNNI ``vpdpbusd`` where the CPU has it); each peak is the fastest of its modes.

    Args:
        seconds: per measurement (best of 0.1 s windows, all threads started together).
        threads: default: all cores.
        workdir: where to build the binary (default: a temporary folder).

    Returns:
        {"measured": True, "fp32_gflops", "int8_gops" (2 ops per u8*s8 MAC), "fp32_gflops_1core",
        "runs", "compiler", "command"} or {"measured": False, "reason"} (no C compiler, no
        AVX2/FMA, or the program failed): callers then fall back to the nominal formula.
    """
    import shutil
    import subprocess
    import tempfile

    cc = next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    if cc is None:
        return {"measured": False, "reason": "no C compiler (cc, gcc or clang) on PATH"}
    simd = cpu_info()["simd"]
    if not {"avx2", "fma"} <= set(simd):
        return {"measured": False, "reason": f"fma_peak.c needs AVX2 + FMA; this CPU has {simd}"}
    n = threads or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        exe = Path(tmp) / "fma_peak"
        build = [cc, "-O2", "-mavx2", "-mfma", "-pthread", str(FMA_SOURCE), "-o", str(exe)]
        proc = subprocess.run(build, capture_output=True, text=True)
        if proc.returncode != 0:
            return {"measured": False, "reason": f"{' '.join(build)} failed: "
                                                  f"{proc.stderr[-500:]}"}
        modes = ["fp32", "int8", "int8s16"]
        if {"avx512f", "avx512_vnni"} <= set(simd):
            modes += ["fp32z", "vnni", "vnniz"]
        runs = {}
        for mode, t in [(m, n) for m in modes] + [("fp32", 1)]:
            out = subprocess.run([str(exe), mode, str(t), str(seconds)], capture_output=True,
                                 text=True, timeout=60 + 10 * seconds)
            if out.returncode != 0:
                return {"measured": False, "reason": f"fma_peak {mode} failed: {out.stderr}"}
            runs[f"{mode}_t{t}"] = json.loads(out.stdout)
    def fastest(kind_modes: list[str]) -> tuple[float, str]:
        return max((runs[f"{m}_t{n}"]["gops"], m) for m in kind_modes)

    best = {"fp32": fastest([m for m in modes if m.startswith("fp32")]),
            "int8": fastest([m for m in modes if not m.startswith("fp32")])}
    return {"measured": True, "threads": n, "fp32_gflops": best["fp32"][0],
            "fp32_mode": best["fp32"][1], "int8_gops": best["int8"][0],
            "int8_mode": best["int8"][1],
            "fp32_gflops_1core": runs["fp32_t1"]["gops"], "runs": runs, "compiler": cc,
            "command": " ".join(build[:-2]) + f" -o fma_peak; fma_peak {{{'|'.join(modes)}}} "
                                              f"{n} {seconds}"}


def min_ms_per_frame(m: dict[str, Any], peak: dict[str, Any], used: bool = False) -> float:
    """The least time one frame can take at this CPU's peak: int8 MACs at the int8 rate, the
    rest at the fp32 rate (2 operations per MAC). ``used``: only the rows that reach an output."""
    total = m["gmac_used" if used else "gmac"]
    int8 = m["gmac_int8_used" if used else "gmac_int8"]
    return 1e3 * (2 * int8 / peak["int8_gops"] + 2 * (total - int8) / peak["fp32_gflops"])


def utilisation(fps: float | None, m: dict[str, Any] | None, peak: dict[str, Any]) -> dict:
    """How close ``fps`` frames/s of a model with MAC counts ``m`` comes to the machine's limit.

    Returns:
        {"ceiling_fps" (at peak, executed MACs), "pct_of_limit" (fps / ceiling, ≤ 100 when the
        peak is right), "pct_of_limit_used_macs" (the same for the rows that reach an output:
        the useful share)}; empty when anything is missing.
    """
    if not fps or not m or not m.get("gmac") or not peak.get("fp32_gflops"):
        return {}
    t = min_ms_per_frame(m, peak)
    tu = min_ms_per_frame(m, peak, used=True)
    return {"ceiling_fps": round(1e3 / t, 1), "pct_of_limit": round(100 * fps * t / 1e3, 1),
            "pct_of_limit_used_macs": round(100 * fps * tu / 1e3, 1)}


def cpu_limit(m: dict[str, Any] | None, peak: dict[str, Any]) -> dict[str, Any]:
    """This CPU's peak (measured, or the nominal formula when it could not be measured) and the
    frames/s bound it puts on a model with MAC counts ``m`` (:func:`onnx_macs`)."""
    info = cpu_info()
    lanes = 16 if "avx512f" in info["simd"] else 8
    ghz = (info["mhz"] or 2000.0) / 1000.0
    nominal = cpu_peak_gflops(info["cores"], ghz, lanes)
    out = {**info, "nominal_fp32_gflops": round(nominal, 1),
           "nominal_formula": f"{info['cores']} cores x 2 FMA x {lanes} lanes x 2 FLOP x "
                              f"{ghz:.3f} GHz (/proc/cpuinfo clock: base, not turbo)",
           "peak": peak}
    if not peak.get("measured"):
        peak = {**peak, "fp32_gflops": nominal, "int8_gops": 2 * nominal}
        out["peak_used"] = "nominal (not measured: " + str(peak.get("reason")) + ")"
    else:
        out["peak_used"] = "measured (benchmarks/fma_peak.c)"
    out["fp32_gflops"], out["int8_gops"] = peak["fp32_gflops"], peak["int8_gops"]
    if m and m.get("gmac"):
        out["frame_gflop"] = round(2 * m["gmac"], 3)
        out["max_fps_at_peak"] = round(1e3 / min_ms_per_frame(m, peak), 1)
        out["max_fps_at_peak_used_macs"] = round(1e3 / min_ms_per_frame(m, peak, True), 1)
    return out


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
