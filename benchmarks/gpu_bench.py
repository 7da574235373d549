"""The GPU benchmark behind ``scripts/gpu-bench.sh`` (torch, onnx, onnxruntime; TensorRT if
importable; nothing installed at run time).

Measures, on the chosen device, with the project's own models (``train.frame.models`` Reg-STN
and the ``train.seg.models`` ensemble members; weights of a trained run when given, otherwise
fresh ones — speed does not depend on them):

- GMAC per frame of every model, counted with forward hooks;
- the naive baseline (fp32 eager, batch 1, per-frame ``no_grad`` forward) and optimised torch
  (fp16 autocast + channels_last + ``inference_mode``) latency p50/p99 of the frame model and
  of each segmentation member, at batch 1 and at the stream batch (8: one frame of each of 8
  streams);
- frame + seg-ensemble ms per frame, and how many 30-fps streams that sustains;
- ONNX Runtime CUDA / TensorRT through ``engines`` on a bundle, when those are present.

Every phase is time-boxed (``--seconds``) and the whole run is kept under ``--budget`` seconds
(default 420 s, for the < 8 min limit), writing the JSON after every phase so a kill still
leaves results. ``--device cpu --fast`` is the tested CPU mode (tiny, unet only).

    python -m benchmarks.gpu_bench --out gpu.json [--device cuda] [--bundle DIR] [--fast]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("pleura.gpu_bench")

SEG_ARCHS = ("unet", "unetpp", "deeplabv3p")
STREAMS = 8
STREAM_FPS = 30.0


def _summ(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"n": int(a.size), "p50": round(float(np.percentile(a, 50)), 3),
            "p99": round(float(np.percentile(a, 99)), 3), "mean": round(float(a.mean()), 3)}


def time_fn(fn, seconds: float, sync, min_iters: int = 3, warmup: int = 2) -> dict[str, float]:
    """p50/p99 ms of ``fn()`` (device-synchronised) over ~``seconds``."""
    for _ in range(warmup):
        fn()
    sync()
    ms: list[float] = []
    t0 = time.perf_counter()
    while len(ms) < min_iters or (time.perf_counter() - t0 < seconds and len(ms) < 2000):
        a = time.perf_counter()
        fn()
        sync()
        ms.append(1000.0 * (time.perf_counter() - a))
    return _summ(ms)


def count_layers(model, torch) -> int:
    """Conv2d + Linear modules (the layers a GPU launches at least one kernel for)."""
    return sum(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in model.modules())


def count_gmac(model, x, torch) -> float:
    """GMAC of one forward per input item (Conv2d / Linear hooks)."""
    total = [0]

    def conv(m, _i, out):
        total[0] += out.numel() * m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups

    def lin(m, _i, out):
        total[0] += out.numel() * m.in_features

    hooks = [m.register_forward_hook(conv if isinstance(m, torch.nn.Conv2d) else lin)
             for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return round(total[0] / x.shape[0] / 1e9, 4)


def _models(torch, args):
    from train.frame.models.registry import build_model
    from train.seg.models import build_model as build_seg

    torch.manual_seed(0)
    if args.frame_run:
        from train.frame.run import load_run

        frame = load_run(args.frame_run)[0]
    else:
        frame = build_model("reg-stn")
    segs = {a: build_seg(a) for a in args.seg}
    return frame.eval(), {k: v.eval() for k, v in segs.items()}


def _out_tensor(y):
    return y["probs"] if isinstance(y, dict) else y


def bench_torch(torch, args, res: dict[str, Any], save) -> None:
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    frame, segs = _models(torch, args)
    fx = {b: torch.rand(b, 3, 224, 224) for b in args.batches}
    sx = {b: torch.rand(b, 1, 200, 260) * 2 - 1 for b in args.batches}
    res["gmac"] = {"reg-stn": count_gmac(frame, fx[1], torch),
                   **{k: count_gmac(m, sx[1], torch) for k, m in segs.items()}}
    res["layers"] = {"reg-stn": count_layers(frame, torch),
                     **{k: count_layers(m, torch) for k, m in segs.items()}}
    res["estimate"] = _estimate(res, list(segs))
    save()
    if args.estimate_only:
        return
    frame, segs = frame.to(dev), {k: m.to(dev) for k, m in segs.items()}
    variants = {"fp32_eager": (torch.float32, False)}
    if dev.type == "cuda":
        variants["fp16_channels_last"] = (torch.float16, True)
    rows: dict[str, Any] = {}
    for vname, (dtype, cl) in variants.items():
        for name, model in [("reg-stn", frame), *segs.items()]:
            if time.perf_counter() > args.deadline:
                res["truncated"] = "budget reached"
                return
            m = model.to(memory_format=torch.channels_last) if cl else model
            for b in args.batches:
                x = (fx if name == "reg-stn" else sx)[b].to(dev)
                if cl:
                    x = x.to(memory_format=torch.channels_last)

                def fn(m=m, x=x, dtype=dtype):
                    with torch.inference_mode(), torch.autocast(dev.type, dtype=dtype,
                                                                enabled=dtype != torch.float32):
                        return _out_tensor(m(x))
                t = time_fn(fn, args.seconds, sync, min_iters=args.min_iters,
                            warmup=0 if args.fast else 2)
                rows.setdefault(vname, {}).setdefault(name, {})[f"b{b}"] = {
                    **t, "ms_per_frame": round(t["p50"] / b, 3)}
                log.info("%s %s b%d: p50 %.2f ms", vname, name, b, t["p50"])
                save()
    res["torch"] = rows
    res["summary"] = summarise(rows, list(segs), args.batches)


def _estimate(res: dict[str, Any], segs: list[str]) -> dict[str, Any]:
    """The paper estimate of benchmarks.limits for the counted models (to compare with the
    measurement on a GPU; the only GPU figure where there is none)."""
    from benchmarks.limits import gpu_estimate

    g, n = res["gmac"], res["layers"]
    return gpu_estimate(g["reg-stn"], n["reg-stn"], round(sum(g[s] for s in segs), 4) or None,
                        sum(n[s] for s in segs), batch=STREAMS)


def summarise(rows: dict[str, Any], segs: list[str], batches: list[int]) -> dict[str, Any]:
    """frame + seg ensemble ms per frame (sum of the members' p50), at batch 1 and at the
    largest batch, and the 30-fps streams that rate sustains: floor(1000 / (30 * ms))."""
    out = {}
    bmax = max(batches)
    for vname, models in rows.items():
        entry = {}
        for b in sorted({1, bmax}):
            key = f"b{b}"
            if key not in models.get("reg-stn", {}):
                continue
            frame = models["reg-stn"][key]["ms_per_frame"]
            seg = sum(models[s][key]["ms_per_frame"] for s in segs if key in models.get(s, {}))
            total = frame + seg
            entry[key] = {"frame_ms": round(frame, 3), "seg_ensemble_ms": round(seg, 3),
                          "frame_plus_seg_ms": round(total, 3),
                          "streams_at_30fps": int(1000.0 / (STREAM_FPS * total)) if total else 0}
        out[vname] = entry
    return out


def bench_engines(args, res: dict[str, Any], save) -> None:
    """ONNX Runtime (CUDA provider when present) and TensorRT (when importable) on a bundle."""
    import importlib.util

    import engines
    from engines.preprocess import FRAME_SPEC

    bundle = args.bundle or engines.default_bundle_path()
    if not (Path(bundle) / "manifest.json").is_file():
        res["engines"] = {"skipped": f"no bundle at {bundle}"}
        return
    out: dict[str, Any] = {"bundle": str(bundle)}
    x1 = np.random.default_rng(0).random((1, 3, FRAME_SPEC.height, FRAME_SPEC.width),
                                         dtype=np.float32)
    xb = np.repeat(x1, STREAMS, axis=0)
    tries = [("onnxruntime", {"device": args.device if args.device != "cuda" else "auto"})]
    if importlib.util.find_spec("tensorrt") is not None and args.device == "cuda":
        tries.append(("tensorrt", {"fp16": True}))
    for backend, opts in tries:
        if time.perf_counter() > args.deadline:
            break
        try:
            eng = engines.create_engine(bundle, backend, **opts)
            row = {"engine": getattr(eng, "describe", lambda e=eng: e.backend)(),
                   "frame_b1": time_fn(lambda e=eng: e.frame(x1), args.seconds, lambda: None,
                                       args.min_iters),
                   f"frame_b{STREAMS}": time_fn(lambda e=eng: e.frame(xb), args.seconds,
                                                lambda: None, args.min_iters)}
            eng.close()
        except Exception as exc:  # noqa: BLE001 - record and go on: one backend must not end it
            row = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        out[backend] = row
        save()
    res["engines"] = out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="JSON result")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--fast", action="store_true", help="tiny phases, unet only (CPU test mode)")
    p.add_argument("--seconds", type=float, default=None, help="per measurement (default 2)")
    p.add_argument("--budget", type=float, default=420.0, help="whole-run time box, seconds")
    p.add_argument("--bundle", type=Path, default=None, help="bundle for the engines phase")
    p.add_argument("--estimate-only", action="store_true",
                   help="count GMACs and layers of every model and write the paper estimate "
                        "for an H100 (runs on a CPU; no timing)")
    p.add_argument("--frame-run", type=Path, default=None, help="trained frame run (optional)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import torch

    t0 = time.perf_counter()
    args.deadline = t0 + args.budget
    args.seconds = args.seconds or (0.05 if args.fast else 2.0)
    args.min_iters = 1 if args.fast else 10
    args.batches = [1] if args.fast else [1, STREAMS]
    args.seg = ["unet"] if args.fast and not args.estimate_only else list(SEG_ARCHS)
    if args.estimate_only:
        args.device = "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_bench: no CUDA device visible to torch; run with --device cpu "
                         "--fast to test the script on a CPU")
    res: dict[str, Any] = {
        "schema": "pleura-gpu-bench/1", "device": args.device, "fast": args.fast,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
        "torch": torch.__version__, "cuda": torch.version.cuda, "host": platform.node(),
        "batches": args.batches, "seg_members": args.seg, "seconds_per_phase": args.seconds,
        "weights": str(args.frame_run) if args.frame_run else "untrained (speed only)"}
    try:
        import onnxruntime as ort

        res["onnxruntime"] = {"version": ort.__version__,
                              "providers": ort.get_available_providers()}
    except ImportError:
        res["onnxruntime"] = None

    def save() -> None:
        res["elapsed_s"] = round(time.perf_counter() - t0, 1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2) + "\n")

    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
    bench_torch(torch, args, res, save)
    if not args.estimate_only:
        bench_engines(args, res, save)
    save()
    print(json.dumps(res.get("summary", res.get("estimate")), indent=1))
    print(f"wrote {args.out} in {res['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
