"""Static int8 quantisation of the frame model for the CPU (ONNX Runtime, QDQ, per channel).

Calibrated on simulated frames (a ``pleura synth`` dataset), checked on another: ms/frame of
fp32 vs int8 on this CPU and the F1 change (micro F1 = accuracy, as the paper's code computes
it, and macro F1). ``pleura export --int8`` makes the int8 model the CPU default only if micro
F1 drops by at most 1 point.

Only ``Conv`` is quantised: it is ~all of the 2.3 GMAC (Roy et al. 2020's trunks), while the
STN's grid MatMul and GridSample and the small linear heads stay fp32 so theta keeps its
precision. Activations are uint8 (asymmetric), weights int8 per channel with ``reduce_range``
(7-bit): on AVX2 without VNNI the u8 x s8 kernel (VPMADDUBSW) adds pairs of products into
int16, which full 8-bit weights can saturate; 7-bit weights cannot. Measured on a trained frame
CNN here, this kept 99.5 % of the fp32 predictions (S8S8 QDQ: 88.8 %) and was also faster.

    python -m train.quantize BUNDLE/frame.onnx --out /tmp/frame-int8.onnx \
        --calib data/sim-train --eval-data data/sim-test --json out.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from engines.preprocess import FRAME_SPEC, preprocess_batch
from train.calib_frames import sample_frames, simulated_frames
from train.metrics import confusion_matrix, f1_scores

log = logging.getLogger(__name__)

MAX_F1_DROP = 1.0
"""Percentage points of micro F1 the int8 model may lose and still be the CPU default."""


SCHEMES = ("u8s8-rr", "s8s8")
"""u8s8-rr: u8 activations, 7-bit int8 weights (the default); s8s8: int8 both, full range."""


def quantize_frame(fp32: Path, out: Path, calib_x: np.ndarray, batch: int = 8,
                   scheme: str = "u8s8-rr") -> Path:
    """ONNX Runtime static quantisation: QDQ, Conv only, u8 activations, per-channel 7-bit
    (reduce_range) int8 weights, MinMax calibration."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if scheme not in SCHEMES:
        raise ValueError(f"unknown int8 scheme {scheme!r}; valid: {', '.join(SCHEMES)}")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"frames": calib_x[i:i + batch]}
                            for i in range(0, len(calib_x), batch)])

        def get_next(self):
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, reduce_range=scheme == "u8s8-rr",
                        activation_type=QuantType.QUInt8 if scheme == "u8s8-rr"
                        else QuantType.QInt8,
                        weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"],
                        calibrate_method=CalibrationMethod.MinMax)
    return out


def _session(path: Path, threads: int | None):
    import onnxruntime as ort

    from engines.backends.onnxruntime import session_options

    return ort.InferenceSession(str(path), sess_options=session_options(threads),
                                providers=["CPUExecutionProvider"])


def predict(path: Path, x: np.ndarray, threads: int | None = None, batch: int = 16,
            ) -> tuple[np.ndarray, np.ndarray]:
    """Frame model on (N, 3, 224, 224) -> probs (N, 4), theta1 (N, 2, 3)."""
    s = _session(path, threads)
    outs = [s.run(["probs", "theta1"], {"frames": x[i:i + batch]})
            for i in range(0, len(x), batch)]
    return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])


def f1_percent(y: np.ndarray, pred: np.ndarray, n_classes: int = 4) -> dict[str, float]:
    """Micro F1 (= accuracy for single-label) and macro F1 over the classes present in ``y``, in %.

    The per-class F1 is :func:`train.metrics.f1_scores`'s; only the classes that occur in
    ``y`` enter the macro mean (an evaluation set without a class says nothing about it).
    """
    cm = confusion_matrix(y, pred, n_classes)
    f1 = f1_scores(cm)
    present = cm.sum(1) > 0
    return {"f1_micro": 100.0 * f1["micro_f1"],
            "f1_macro": 100.0 * float(np.mean(np.asarray(f1["per_class_f1"])[present]))}


def latency_ms(path: Path, threads: int | None, n: int = 20, warmup: int = 3,
               ) -> dict[str, float]:
    """Batch-1 frame latency (preprocessed input, model only).

    Returns:
        ``wall_ms``: median wall time; ``cpu_ms``: mean process CPU time per frame. On a
        loaded, shared machine the wall time includes waiting for a core; with one thread the
        CPU time is the work itself and compares fp32 with int8 fairly.
    """
    s = _session(path, threads)
    x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    for _ in range(warmup):
        s.run(None, {"frames": x})
    times = []
    c0 = time.process_time()
    for _ in range(n):
        t = time.perf_counter()
        s.run(None, {"frames": x})
        times.append((time.perf_counter() - t) * 1000.0)
    cpu = (time.process_time() - c0) * 1000.0 / n
    return {"wall_ms": round(statistics.median(times), 1), "cpu_ms": round(cpu, 1)}


def quantize_and_compare(fp32: Path, out: Path, calib: str | Path | None = None,
                         eval_data: str | Path | None = None, n_calib: int = 128,
                         n_eval: int = 600, threads: int | None = None,
                         scheme: str = "u8s8-rr") -> dict[str, Any]:
    """Quantise, then measure both models. The result goes into the bundle manifest.

    Returns:
        ``{"calibration", "evaluation", "fp32": {...}, "int8": {...}, "f1_drop_points",
        "int8_is_cpu_default", "rule", "cpu"}``.
    """
    if calib is not None and (Path(calib) / "frames.csv").is_file():
        cx, _ = sample_frames(calib, n_calib, seed=1)
        calib_desc = f"{len(cx)} frames spread over {calib}"
    else:
        cx, _ = preprocess_batch(simulated_frames(32, seed=7), FRAME_SPEC)
        calib_desc = f"{len(cx)} freshly simulated frames (no dataset at {calib})"
    t = time.perf_counter()
    quantize_frame(Path(fp32), Path(out), cx, scheme=scheme)
    res: dict[str, Any] = {"calibration": calib_desc, "scheme": scheme,
                           "rule": f"int8 is the CPU default only if micro F1 drops <= "
                                   f"{MAX_F1_DROP} point",
                           "quantize_s": round(time.perf_counter() - t, 1),
                           "cpu": cpu_summary(), "threads": threads or "all",
                           "load_average_1min": round(os.getloadavg()[0], 1)}
    for tag, path in (("fp32", Path(fp32)), ("int8", Path(out))):
        res[tag] = {"bytes": path.stat().st_size}
        for th in sorted({1, threads or os.cpu_count() or 1}):
            res[tag][f"b1_threads{th}"] = latency_ms(path, th)
    if eval_data is not None and (Path(eval_data) / "frames.csv").is_file():
        ex, y = sample_frames(eval_data, n_eval, seed=2)
        res["evaluation"] = f"{len(ex)} frames spread evenly over {eval_data}"
        p32, t32 = predict(Path(fp32), ex, threads)
        p8, t8 = predict(Path(out), ex, threads)
        res["fp32"].update(f1_percent(y, p32.argmax(1)))
        res["int8"].update(f1_percent(y, p8.argmax(1)))
        res["max_abs_diff_probs"] = float(np.abs(p32 - p8).max())
        res["max_abs_diff_theta1"] = float(np.abs(t32 - t8).max())
        res["agreement_pct"] = 100.0 * float((p32.argmax(1) == p8.argmax(1)).mean())
        drop = res["fp32"]["f1_micro"] - res["int8"]["f1_micro"]
        res["f1_drop_points"] = round(drop, 2)
        res["int8_is_cpu_default"] = bool(drop <= MAX_F1_DROP)
    else:
        res["evaluation"] = f"not evaluated (no dataset at {eval_data})"
        res["int8_is_cpu_default"] = False
    return res


def cpu_summary() -> str:
    """CPU model and the SIMD flags that matter for int8 (AVX2, AVX-512 VNNI, AMX)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines()
                 if ln.startswith("model name")), "unknown")
    flags = set(next((ln.split(":", 1)[1].split() for ln in info.splitlines()
                      if ln.startswith("flags")), []))
    simd = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return f"{name}; {' '.join(simd) or 'no AVX2'}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.quantize", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("onnx", type=Path, help="fp32 frame model (a bundle's frame.onnx)")
    ap.add_argument("--out", type=Path, required=True, help="int8 model to write")
    ap.add_argument("--calib", type=Path, default=Path("data/sim-train"))
    ap.add_argument("--eval-data", type=Path, default=Path("data/sim-test"))
    ap.add_argument("--n-eval", type=int, default=600)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--scheme", choices=SCHEMES, default="u8s8-rr")
    ap.add_argument("--json", type=Path, default=None, help="write the measurements here")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    res = quantize_and_compare(a.onnx, a.out, a.calib, a.eval_data, n_eval=a.n_eval,
                               threads=a.threads, scheme=a.scheme)
    text = json.dumps(res, indent=2)
    print(text)
    if a.json:
        a.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
