"""``pleura bench``: how fast the runtime scores frames on this machine, next to a naive baseline.

One run measures, with the runtime's own code (PyAV decoding, :mod:`engines.preprocess`,
:func:`engines.create_engine`): decode fps; preprocessing; each model's latency (p50/p99) at
several batch sizes; end-to-end latency under real-time pacing; the highest unpaced
throughput; CPU and peak memory; scaling with concurrent streams and source resolution; and,
**in the same run, interleaved round by round**, the naive baseline of
:mod:`benchmarks.baseline` (the same Reg-STN in PyTorch eager with an OpenCV read loop, in its
own process). Ratios are candidate frames/s divided by baseline frames/s, medians over rounds.

The measuring helpers live in ``benchmarks/`` (a source-checkout tool, not the runtime); this
module never imports torch (the baseline runs in a spawned child).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("pleura.bench")

FAST = {"seconds": 1.0, "rounds": 1, "streams": (1, 2), "resolutions": ("256", "480p"),
        "batches": (1, 4)}
"""``--fast``: tiny phases, for the test suite (numbers are not meant to be quoted)."""


@dataclass(frozen=True)
class BenchConfig:
    """What to measure and for how long (``seconds`` sets every phase's duration)."""

    seconds: float = 20.0
    rounds: int = 3
    streams: tuple[int, ...] = (1, 2, 4, 8)
    resolutions: tuple[str, ...] = ("256", "480p", "720p", "1080p")
    batches: tuple[int, ...] = (1, 4, 8)
    baseline: bool = True
    threads: int | None = None
    backend: str = "auto"
    fast: bool = False
    paced: str = "auto"
    phase: dict[str, float] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.paced not in ("auto", "live", "in-process"):
            raise ValueError(f"--paced must be auto, live or in-process, got {self.paced!r}")
        if self.seconds <= 0 or self.rounds < 1:
            raise ValueError("--seconds must be > 0 and --rounds >= 1")
        if not self.streams or min(self.streams) < 1 or not self.batches or min(self.batches) < 1:
            raise ValueError("--streams and --batch need positive integers, e.g. 1,2,4")
        s = self.seconds
        self.phase.update(micro=max(0.3, s / 8), throughput=max(0.5, s / 2), paced=s,
                          streams_paced=max(1.0, s / 2), streams_unpaced=max(0.5, s / 4),
                          decode=max(0.3, s / 8), res_pipeline=max(0.5, s / 4))


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") \
            from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", type=Path, help="bundle folder (default: the shipped bundle)")
    p.add_argument("--dummy", action="store_true",
                   help="use a tiny test bundle (engines.testing): exercises the tool, its "
                        "numbers mean nothing")
    p.add_argument("--backend", default="auto", help="auto | onnxruntime | tensorrt")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: all)")
    p.add_argument("--source", type=Path, help="video clip (default: a real 30-fps POCUS clip)")
    p.add_argument("--seconds", type=float, help="duration of the main phases (default 20)")
    p.add_argument("--rounds", type=int, help="interleaved baseline/candidate rounds (3)")
    p.add_argument("--streams", type=_ints, help="concurrent streams to test, e.g. 1,2,4,8")
    p.add_argument("--resolutions", help="source sizes, comma-separated, from "
                                         "256,480p,720p,1080p")
    p.add_argument("--batch", type=_ints, help="batch sizes for inference, e.g. 1,4,8")
    p.add_argument("--json", type=Path, dest="json_out", help="write the full result here")
    p.add_argument("--fast", action="store_true", help="tiny durations (tests)")
    p.add_argument("--paced", default="auto", choices=("auto", "live", "in-process"),
                   help="real-time runs through `pleura live --headless` processes (live), "
                        "an in-process loop, or auto: live when installed, in-process with --fast")
    p.add_argument("--untrained", action="store_true",
                   help="export an untrained Reg-STN (+ U-Net, int8) to a temporary bundle "
                        "and measure that (needs torch; speed does not depend on weights)")
    p.add_argument("--no-baseline", action="store_true", help="skip the PyTorch baseline")
    p.add_argument("--baseline-run", type=Path,
                   help="trained frame run for the baseline (default: runs/frame-regstn if "
                        "present, else an untrained Reg-STN: speed does not depend on weights)")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    base = FAST if args.fast else {}
    res = tuple(args.resolutions.split(",")) if args.resolutions else \
        base.get("resolutions", BenchConfig.resolutions)
    from benchmarks.clips import RESOLUTIONS

    bad = [r for r in res if r not in RESOLUTIONS]
    if bad:
        raise SystemExit(f"pleura bench: unknown resolution(s) {bad}; valid: "
                         f"{', '.join(RESOLUTIONS)}")
    return BenchConfig(
        seconds=args.seconds or base.get("seconds", 20.0),
        rounds=args.rounds or base.get("rounds", 3),
        streams=args.streams or base.get("streams", BenchConfig.streams),
        resolutions=res, batches=args.batch or base.get("batches", BenchConfig.batches),
        baseline=not args.no_baseline, threads=args.threads, backend=args.backend,
        fast=args.fast, paced=args.paced)


def _ensure_benchmarks() -> None:
    """Make ``benchmarks/`` (next to ``stream/`` in a checkout) importable."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "benchmarks" / "__init__.py").is_file():
        raise SystemExit("pleura bench: runs from a source checkout; benchmarks/ is missing "
                         f"next to {root / 'stream'}")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))


def _resolve_bundle(args: argparse.Namespace, tmp: Path) -> Path:
    import engines

    if args.dummy:
        from engines.testing import make_dummy_bundle

        return make_dummy_bundle(tmp / "dummy-bundle")
    if args.untrained:  # in a child process: this one never imports torch
        import subprocess

        out = tmp / "untrained-bundle"
        log.info("exporting an untrained Reg-STN bundle (torch, child process)")
        root = str(Path(__file__).resolve().parents[1])
        proc = subprocess.run([sys.executable, "-m", "benchmarks.devbundle", str(out)], cwd=root,
                              capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": root})
        if proc.returncode != 0:
            raise SystemExit(f"pleura bench: --untrained export failed: {proc.stderr[-1500:]}")
        return out
    path = args.bundle or engines.default_bundle_path()
    if not (path / "manifest.json").is_file():
        raise SystemExit(f"pleura bench: no bundle at {path}; pass --bundle DIR (make one with "
                         f"`pleura export RUN --out DIR`) or --dummy to exercise the tool")
    return path


def _engines(bundle, cfg: BenchConfig) -> dict[str, Any]:
    """The runtime's default engine and the fp32 / int8 frame models to compare."""
    from engines import create_engine

    out = {"default": create_engine(bundle, cfg.backend, threads=cfg.threads)}
    if cfg.backend not in ("auto", "onnxruntime"):
        return {**out, "fp32": out["default"]}
    wanted = {"fp32": bundle.frame_file, "int8": bundle.frame_int8_file}
    for key, file in wanted.items():
        if file is None:
            continue
        if getattr(out["default"], "frame_file", None) == file:
            out[key] = out["default"]  # one session per model file (memory, fair timing)
        else:
            out[key] = create_engine(bundle, cfg.backend, threads=cfg.threads, frame_model=key)
    return out


def _baseline_run_dir(args: argparse.Namespace) -> Path | None:
    if args.baseline_run:
        return args.baseline_run
    if args.untrained or args.dummy:  # the untrained baseline is seeded like --untrained's model
        return None
    default = Path(__file__).resolve().parents[1] / "runs" / "frame-regstn"
    return default if (default / "config.json").is_file() else None


def _parity(base, engine, spec, frames) -> dict[str, Any]:
    """Max |p_torch - p_onnx| on two real frames. ≤ 1e-4 proves baseline and candidate are the
    same model (same weights: ``--untrained`` seeds both alike, or the baseline loads the run
    the bundle was exported from); otherwise only the architecture is shared, which is all
    speed depends on."""
    import numpy as np

    from engines.preprocess import preprocess_batch

    x, _ = preprocess_batch(frames[:2], spec)
    diff = float(np.abs(base.probs(x) - engine.frame(x).probs).max())
    return {"max_abs_diff_probs": round(diff, 8), "same_weights": diff <= 1e-4}


def _throughput(cfg: BenchConfig, eng: dict[str, Any], spec, clip: Path, base) -> dict:
    """Interleaved rounds of unpaced frame scoring: baseline and every candidate per round."""
    from benchmarks.timing import pipeline_throughput

    bmax = max(cfg.batches)
    cands: dict[str, Any] = {"ort_fp32_b1": (eng["fp32"], 1)}
    if "int8" in eng:
        cands["ort_int8_b1"] = (eng["int8"], 1)
    if bmax > 1:
        cands[f"ort_fp32_b{bmax}"] = (eng["fp32"], bmax)
        if "int8" in eng:
            cands[f"ort_int8_b{bmax}"] = (eng["int8"], bmax)
    names = (["baseline"] if base else []) + list(cands)
    t = cfg.phase["throughput"]
    rounds = []
    for r in range(cfg.rounds):
        row = {}
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate the order
            log.info("throughput round %d/%d: %s", r + 1, cfg.rounds, name)
            if name == "baseline":
                row[name] = base.pipeline(clip, t)
            else:
                e, b = cands[name]
                row[name] = pipeline_throughput(e, spec, [clip], b, t)
        rounds.append(row)
    med = {n: round(statistics.median(rd[n]["fps"] for rd in rounds), 2) for n in names}
    return {"rounds": rounds, "median_fps": med, "seconds_per_candidate": t}


def _inference(cfg: BenchConfig, eng: dict[str, Any], bundle, base) -> dict[str, Any]:
    from benchmarks.timing import inference_stats

    fs = bundle.frame_spec
    shape = (fs.channels, fs.height, fs.width)
    out: dict[str, Any] = {}
    for key in ("fp32", "int8"):
        if key in eng:
            out[f"frame_{key}"] = inference_stats(eng[key].frame, shape, cfg.batches,
                                                  cfg.phase["micro"])
    d = eng["default"]
    if d.has_segmentation():
        ss = bundle.seg_spec
        sshape = (ss.channels, ss.height, ss.width)
        out["seg_ensemble"] = inference_stats(d.segment, sshape, cfg.batches,
                                              cfg.phase["micro"])
    if base is not None:
        out["baseline_torch"] = [base.model_only(cfg.phase["micro"] * 2,
                                                  min_iters=1 if cfg.fast else 3)]
    return out


def _scaling(cfg: BenchConfig, engine, spec, src_frames, clip: Path, tmp: Path) -> dict:
    from benchmarks import clips
    from benchmarks.paced import paced_streams
    from benchmarks.report import resolution_growth, stream_growth
    from benchmarks.timing import pipeline_throughput, preprocess_stats

    streams = []
    for n in cfg.streams:
        log.info("scaling: %d stream(s)", n)
        streams.append({"streams": n,
                        "paced": paced_streams(engine, spec, [clip] * n,
                                               cfg.phase["streams_paced"]),
                        "unpaced": pipeline_throughput(engine, spec, [clip] * n, n,
                                                       cfg.phase["streams_unpaced"])})
    res = []
    for name in cfg.resolutions:
        hw = clips.RESOLUTIONS[name]
        log.info("scaling: %s source frames", name)
        path = clips.resized_clip(src_frames[:30], hw, tmp / f"res-{name}.mp4")
        frames = clips.read_frames(path, 30)
        res.append({"name": name, "hw": list(hw), "megapixels": round(hw[0] * hw[1] / 1e6, 3),
                    "decode": clips.decode_fps(path, cfg.phase["decode"]),
                    "preprocess_ms_p50": preprocess_stats(frames, spec,
                                                          cfg.phase["micro"])["ms"]["p50"],
                    "pipeline": pipeline_throughput(engine, spec, [path], 1,
                                                    cfg.phase["res_pipeline"])})
    return {"streams": streams, "resolutions": res, "streams_growth": stream_growth(streams),
            "resolutions_growth": resolution_growth(res) if res else {"text": "-"}}


def _paced(cfg: BenchConfig, engine, spec, bundle_path: Path, clips: list[Path], seconds: float,
           tmp: Path) -> dict[str, Any]:
    """Real-time paced streams: the live runtime's processes if asked/available, else the
    in-process loop (the result's ``mode`` says which)."""
    from benchmarks.paced import live_runtime, live_runtime_available, paced_streams

    want_live = cfg.paced == "live" or (cfg.paced == "auto" and not cfg.fast)
    if want_live and live_runtime_available():
        try:
            return live_runtime(bundle_path, clips, seconds, tmp, cfg.backend, cfg.threads)
        except Exception as exc:  # noqa: BLE001 - fall back, and say so in the result
            log.warning("pleura live --headless failed (%s); using the in-process loop", exc)
            out = paced_streams(engine, spec, clips, seconds)
            return {**out, "live_runtime_error": str(exc)[-500:]}
    return paced_streams(engine, spec, clips, seconds)


def measure(args: argparse.Namespace, cfg: BenchConfig, tmp: Path) -> dict[str, Any]:
    """Run every phase; returns the JSON-able result."""
    from benchmarks import clips, limits
    from benchmarks.baseline import BaselineProcess, torch_missing_reason
    from benchmarks.report import ratios
    from benchmarks.timing import preprocess_stats
    from engines import load_bundle

    load0 = [round(v, 2) for v in os.getloadavg()]
    bundle = load_bundle(_resolve_bundle(args, tmp))
    eng = _engines(bundle, cfg)
    spec = bundle.frame_spec
    clip = args.source or clips.default_clip(tmp)
    src_frames = clips.read_frames(clip, 60)
    counted = limits.onnx_macs(bundle.frame_file)
    frame_gmac = counted["gmac"] if counted else round(limits.regstn_macs(1) / 1e9, 4)
    result: dict[str, Any] = {
        "schema": "pleura-bench/1", "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                 time.gmtime()),
        "command": "pleura " + " ".join(sys.argv[1:]) if sys.argv else "",
        "settings": {**{k: v for k, v in cfg.__dict__.items() if k != "phase"},
                     "phase_seconds": cfg.phase},
        "bundle": {"path": str(bundle.path), "name": bundle.name, "frame_gmac": frame_gmac,
                   "frame_gmac_counted_in_onnx": counted, "int8": bundle.frame_int8_file
                   is not None, "seg_members": [m.name for m in bundle.seg_members],
                   "dummy": bool(args.dummy)},
        "backend": getattr(eng["default"], "describe", lambda: eng["default"].backend)(),
        "source": clips.clip_info(clip),
    }
    result["decode"] = clips.decode_fps(clip, cfg.phase["decode"])
    result["preprocess"] = {"frame": preprocess_stats(src_frames, spec, cfg.phase["micro"])}
    if bundle.seg_spec is not None:
        result["preprocess"]["seg"] = preprocess_stats(src_frames, bundle.seg_spec,
                                                       cfg.phase["micro"])
    reason = None if cfg.baseline else "--no-baseline"
    reason = reason or torch_missing_reason()
    base_info: dict[str, Any] = {"available": False, "skipped_reason": reason}
    base = None
    try:
        if reason is None:
            base = BaselineProcess(_baseline_run_dir(args)).__enter__()
            base_info = {"available": True, "skipped_reason": None, "info": base.info,
                         "what": "PyTorch eager, one process, cv2.VideoCapture read loop, "
                                 "batch 1, torch.no_grad() forward per frame"}
    except RuntimeError as exc:
        base_info["skipped_reason"] = str(exc)
    if reason:
        log.warning("baseline skipped: %s", base_info["skipped_reason"])
    try:
        if base is not None:
            base_info["parity"] = _parity(base, eng["fp32"], spec, src_frames)
        result["inference"] = _inference(cfg, eng, bundle, base)
        result["throughput"] = _throughput(cfg, eng, spec, clip, base)
    finally:
        if base is not None:
            base.close()
    med = result["throughput"]["median_fps"]
    if base is not None:
        rounds = [rd["baseline"] for rd in result["throughput"]["rounds"]]
        base_info["pipeline"] = rounds[len(rounds) // 2]
        base_info["median_fps"] = med["baseline"]
    result["baseline"] = base_info
    result["ratios"] = ratios({k: v for k, v in med.items() if k != "baseline"},
                              med.get("baseline"))
    if base is not None:
        b1 = result["inference"]["baseline_torch"][0]["ms_per_frame"]
        result["ratios_model_only"] = {
            f"{k}_b{row['batch']}": round(b1 / row["ms_per_frame"], 3)
            for k, rows in result["inference"].items() if k.startswith("frame_")
            for row in rows if row["ms_per_frame"]}
    log.info("real-time paced run")
    result["paced"] = _paced(cfg, eng["default"], spec, bundle.path, [clip], cfg.phase["paced"],
                             tmp)
    result["scaling"] = _scaling(cfg, eng["default"], spec, src_frames, clip, tmp)
    cpu = limits.cpu_limit(frame_gmac, sgemm_seconds=0.5 if cfg.fast else 2.0)
    seg_counts = [limits.onnx_macs(m.file) or {} for m in bundle.seg_members]
    result["limits"] = {"cpu": cpu, "gpu_estimate": limits.gpu_estimate(
        frame_gmac, (counted or {}).get("layers", 30),
        sum(c.get("gmac", 0.0) for c in seg_counts) or None,
        sum(c.get("layers", 0) for c in seg_counts))}
    result["limits"]["gpu_estimate"]["models"] = (
        "this bundle: frame model + seg members " + (", ".join(m.name for m in bundle.seg_members)
                                                     or "(none)"))
    runtime = {k: v for k, v in med.items() if k != "baseline"}
    top = max(runtime, key=runtime.__getitem__)
    result["max_sustainable_fps"] = {"candidate": top, "fps": runtime[top],
                                     "what": "unpaced decode + preprocess + frame model, "
                                             "one process, median of rounds"}
    best = max(result["ratios"].items(), key=lambda kv: kv[1], default=(None, None))
    result["targets"] = {"cpu_3x_baseline": {"target": 3.0, "best": best[0],
                                             "best_ratio": best[1],
                                             "met": bool(best[1] and best[1] >= 3.0)}}
    result["machine"] = {"cpu": limits.cpu_info(), "loadavg_start": load0,
                         "loadavg_end": [round(v, 2) for v in os.getloadavg()],
                         "python": sys.version.split()[0]}
    for e in {id(v): v for v in eng.values()}.values():
        e.close()
    return result


def run(args: argparse.Namespace) -> int:
    _ensure_benchmarks()
    cfg = config_from_args(args)
    from benchmarks.report import format_table

    with tempfile.TemporaryDirectory(prefix="pleura-bench-") as tmp:
        result = measure(args, cfg, Path(tmp))
    print(format_table(result))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json_out}")
    return 0
