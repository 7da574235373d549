#!/usr/bin/env bash
# GPU check for pleura's engines: one short run (< 5 min) that exercises whatever GPU path this
# machine has and prints parity (max abs diff vs ONNX Runtime CPU) and latency (median ms).
#
#   scripts/gpu-check.sh [--fast] [--bundle DIR] [--json OUT.json]
#
# Paths, each run when available (reported as "skipped: why" otherwise):
#   1. ONNX Runtime CPU on the bundle            (the reference)
#   2. TensorRT on the bundle                    (if `tensorrt` imports and a GPU is visible)
#   3. ONNX Runtime CUDA provider on the bundle  (if onnxruntime has it)
#   4. torch of the same architectures (Reg-STN, light U-Net) on cuda if available else cpu,
#      vs ONNX Runtime CPU on their fresh export (needs torch; weights random unless the
#      bundle's manifest names a frame run that exists here)
# Bundle: --bundle, else engines/bundles/default if it exists, else a dummy bundle.
# --fast (and automatically without a GPU): few iterations, batch 1-2, so it also runs on CPU.
# Exit status 0 if every parity check that ran passed its tolerance, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 290 "$PY" - "$@" <<'PYEOF'
import argparse, json, logging, os, statistics, sys, tempfile, time, traceback
from pathlib import Path

import numpy as np

ap = argparse.ArgumentParser(prog="gpu-check.sh")
ap.add_argument("--fast", action="store_true")
ap.add_argument("--bundle", type=Path)
ap.add_argument("--json", type=Path)
a = ap.parse_args()
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

import engines
from engines.backends import gpu_available, ort_cuda_available, tensorrt_available
from engines.testing import make_dummy_bundle

gpu = gpu_available()
fast = a.fast or not gpu
iters, batch = (1, 2) if fast else (50, 8)
TOL = {"fp32": 1e-3, "fp16": 3e-2}  # TF32/FP16 kernels on GPU vs exact fp32 on CPU
rows, ok = [], True
T0 = time.monotonic()


def timed(fn, n=None, warm=None):
    n = iters if n is None else n
    warm = (0 if fast else 2) if warm is None else warm
    for _ in range(warm):
        fn()
    t = []
    for _ in range(n):
        s = time.perf_counter(); fn(); t.append((time.perf_counter() - s) * 1e3)
    return statistics.median(t)


def row(path, model, diff=None, tol=None, ms1=None, msb=None, note=""):
    global ok
    passed = None if diff is None else bool(diff <= tol)
    if passed is False:
        ok = False
    rows.append(dict(path=path, model=model, max_abs_diff=diff, tol=tol, passed=passed,
                     ms_b1=ms1, ms_batch=msb, batch=batch, note=note))
    d = "-" if diff is None else f"{diff:.2e} ({'PASS' if passed else 'FAIL'} <= {tol:g})"
    m1 = "-" if ms1 is None else f"{ms1:.2f}"
    mb = "-" if msb is None else f"{msb / batch:.2f}"
    print(f"{path:<22} {model:<12} diff {d:<28} ms/frame b1 {m1:>8}  b{batch} {mb:>8}  {note}",
          flush=True)


env = {"gpu_visible": gpu, "tensorrt": tensorrt_available(), "fast": fast}
try:
    import onnxruntime as ort
    env["onnxruntime"] = ort.__version__
    env["ort_providers"] = ort.get_available_providers()
except Exception as e:  # noqa
    env["onnxruntime"] = f"missing: {e}"
try:
    import torch
    env["torch"] = torch.__version__
    env["torch_cuda"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        env["gpu_name"] = torch.cuda.get_device_name(0)
except Exception as e:  # noqa
    torch = None
    env["torch"] = f"missing: {e}"
print("environment:", json.dumps(env))

tmp = Path(tempfile.mkdtemp(prefix="pleura-gpucheck-"))
bdir = a.bundle or engines.default_bundle_path()
if not (bdir / "manifest.json").is_file():
    bdir = make_dummy_bundle(tmp / "dummy")
bundle = engines.load_bundle(bdir)
print(f"bundle: {bundle.path} ({bundle.name}); frame + {len(bundle.seg_members)} seg member(s)")

rng = np.random.default_rng(0)
xf = rng.random((batch, 3, 224, 224), dtype=np.float32)
xs = rng.uniform(-1, 1, (batch, 1, 200, 260)).astype(np.float32)
ref = engines.create_engine(bundle, backend="onnxruntime", device="cpu", frame_model="fp32")
rf = ref.frame(xf)
rs = ref.segment(xs) if ref.has_segmentation() else None
row("onnxruntime-cpu", "frame", ms1=timed(lambda: ref.frame(xf[:1])),
    msb=timed(lambda: ref.frame(xf)), note="reference")
if rs is not None:
    row("onnxruntime-cpu", "seg", ms1=timed(lambda: ref.segment(xs[:1])), note="reference")


def compare(name, eng, tol):
    o = eng.frame(xf)
    d = max(float(np.abs(o.probs - rf.probs).max()), float(np.abs(o.theta1 - rf.theta1).max()),
            float(np.abs(o.theta2 - rf.theta2).max()))
    row(name, "frame", d, tol, timed(lambda: eng.frame(xf[:1])), timed(lambda: eng.frame(xf)))
    if rs is not None:
        s = eng.segment(xs)
        row(name, "seg", float(np.abs(s.probs - rs.probs).max()), tol,
            timed(lambda: eng.segment(xs[:1])))
        mc = eng.segment(xs[:1], mc_samples=8)
        row(name, "seg MC x8", ms1=timed(lambda: eng.segment(xs[:1], mc_samples=8)),
            note=f"std mean {float(mc.std.mean()) if mc.std is not None else 'n/a'}")


if gpu and tensorrt_available():
    for fp16 in (True, False):  # the shipping precision first; fp32 if time is left
        if not fp16 and time.monotonic() - T0 > 150:
            row("tensorrt-fp32", "-", note="skipped: time budget (plan builds took > 150 s)")
            continue
        try:
            eng = engines.create_engine(bundle, backend="tensorrt", fp16=fp16,
                                        plan_dir=tmp / "plans")
            compare(f"tensorrt-{'fp16' if fp16 else 'fp32'}", eng,
                    TOL["fp16" if fp16 else "fp32"])
            eng.close()
        except Exception as e:  # noqa
            traceback.print_exc()
            row("tensorrt", "all", note=f"FAILED: {e}")
            ok = False
else:
    row("tensorrt", "-", note="skipped: " + ("tensorrt not installed" if gpu else "no GPU"))

if gpu and ort_cuda_available():
    try:
        compare("onnxruntime-cuda", engines.create_engine(bundle, backend="onnxruntime",
                                                          device="cuda", frame_model="fp32"),
                TOL["fp32"])
    except Exception as e:  # noqa
        traceback.print_exc()
        row("onnxruntime-cuda", "all", note=f"FAILED: {e}")
        ok = False
else:
    row("onnxruntime-cuda", "-", note="skipped: " + ("no CUDA provider in onnxruntime"
                                                     if gpu else "no GPU"))

if torch is not None:
    try:
        from train.export import FrameExport, SegExport, export_onnx
        from train.frame.models.stn import RegSTN
        from train.seg.models import build_model

        dev = "cuda" if torch.cuda.is_available() else "cpu"
        torch.manual_seed(0)
        frame_run = Path(str(bundle.manifest.get("training", {}).get("frame_run", "")))
        note = "random weights"
        fm = None
        if frame_run.name and (frame_run / "config.json").is_file():
            try:
                from train.frame.run import load_run
                fm, note = load_run(frame_run)[0], f"weights of {frame_run}"
            except Exception as e:  # noqa
                note = f"random weights ({e})"
        if fm is None:
            fm = RegSTN()
            with torch.no_grad():
                for h in (fm.translation, fm.scale, fm.offdiag):
                    h.weight.normal_(0, 0.05)
        models = [("Reg-STN", FrameExport(fm.eval()), xf, "frames", ["probs", "theta1", "theta2"]),
                  ("U-Net", SegExport(build_model("unet").eval()), xs, "image", ["probs"])]
        for name, mod, x, inp, outs in models:
            onnx_path = export_onnx(mod, torch.from_numpy(x), tmp / f"{name}.onnx", inp, outs)
            s = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
            want = s.run(None, {inp: x})
            mod = mod.to(dev)
            xt = torch.from_numpy(x).to(dev)
            for prec in (("fp32", "fp16") if dev == "cuda" else ("fp32",)):
                def fwd(xx=xt, prec=prec, mod=mod):
                    with torch.no_grad(), torch.autocast(dev, torch.float16,
                                                         enabled=prec == "fp16"):
                        out = mod(xx)
                    if dev == "cuda":
                        torch.cuda.synchronize()
                    return out if isinstance(out, tuple) else (out,)
                got = fwd()
                d = max(float(np.abs(g.float().cpu().numpy() - w).max())
                        for g, w in zip(got, want))
                row(f"torch-{dev}-{prec}", name, d, TOL[prec], timed(lambda: fwd(xt[:1])),
                    None if fast else timed(fwd),
                    note=note if name == "Reg-STN" else "random weights")
    except Exception as e:  # noqa
        traceback.print_exc()
        row("torch", "all", note=f"FAILED: {e}")
        ok = False
else:
    row("torch", "-", note="skipped: torch not installed")

if a.json:
    a.json.write_text(json.dumps({"environment": env, "bundle": str(bundle.path),
                                  "rows": rows, "ok": ok}, indent=2) + "\n")
print("gpu-check:", "OK" if ok else "FAILED", f"({'fast' if fast else 'full'} mode)")
sys.exit(0 if ok else 1)
PYEOF
