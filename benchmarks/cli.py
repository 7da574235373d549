"""``pleura bench``: how fast the runtime scores frames on this machine, against PyTorch.

One run measures, with the runtime's own code (PyAV decoding, :mod:`engines.preprocess`,
:func:`engines.create_engine`): decode fps; preprocessing; each model's latency (p50/p99) at
several batch sizes; the unpaced frame-scoring throughput; the segmentation lane; end-to-end
latency under real-time pacing (``pleura live`` processes); scaling with streams and source
resolution; and the machine's limit (MACs of the executed graphs, a measured peak).

Every speed is set against **two PyTorch baselines of the bundle's own network with the
bundle's own weights, measured in the same run, interleaved round by round**
(:mod:`benchmarks.baseline`, rebuilt by :mod:`benchmarks.rebuild`): the *naive* one a
researcher would write (eager, batch 1, ``no_grad``) and the *tuned* one a PyTorch expert would
write (``inference_mode``, channels-last, batch 8, ``torch.compile`` where it works). Ratios
are candidate frames/s over each baseline's, medians over rounds, and exist only for a
baseline that is checked to be the bundle's model (outputs = ONNX Runtime fp32 within 1e-4,
MACs within 1 %: :mod:`benchmarks.same_model`); a bundle whose network cannot be rebuilt in
PyTorch gets no ratio, and the output says why.

The machine's load is recorded before, during and after every phase
(:mod:`benchmarks.load`): a run that starts on a busy machine is refused, one that became
busy is marked CONTENDED and exits non-zero, unless ``--allow-busy``;
``--background-load N`` measures under a fixed, documented contention on purpose.

The measuring helpers live in ``benchmarks/`` (a source-checkout tool, not the runtime); this
module never imports torch (the baselines run in spawned children).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
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

SKIPPABLE = ("inference", "seg", "paced", "paced-baselines", "scaling")
"""Phases ``--skip`` can leave out (decode, preprocessing, throughput and limits always run)."""


@dataclass(frozen=True)
class BenchConfig:
    """What to measure, for how long (``seconds`` sets every phase), and under which load."""

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
    tuned_batch: int = 8
    compile: bool = True
    skip: tuple[str, ...] = ()
    allow_busy: bool = False
    background_load: int = 0
    max_others_busy: float = 0.10
    max_load: float | None = None
    wait_quiet: float = 60.0
    peak_seconds: float = 0.6
    phase: dict[str, float] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.paced not in ("auto", "live", "in-process"):
            raise ValueError(f"--paced must be auto, live or in-process, got {self.paced!r}")
        if self.seconds <= 0 or self.rounds < 1:
            raise ValueError("--seconds must be > 0 and --rounds >= 1")
        if not self.streams or min(self.streams) < 1 or not self.batches or min(self.batches) < 1:
            raise ValueError("--streams and --batch need positive integers, e.g. 1,2,4")
        if self.tuned_batch < 1 or self.background_load < 0:
            raise ValueError("--tuned-batch must be >= 1 and --background-load >= 0")
        bad = [s for s in self.skip if s not in SKIPPABLE]
        if bad:
            raise ValueError(f"--skip: unknown phase(s) {bad}; choose from {', '.join(SKIPPABLE)}")
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
    p.add_argument("--backend", default="auto", help="auto | onnxruntime | tensorrt | ray (Ray "
                   "Serve vs the local engine, 1 and 2 replicas: benchmarks/serve_bench.py)")
    p.add_argument("--serve-address", help="--backend ray: a running Ray cluster (default: a "
                   "private local one)")
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
    p.add_argument("--no-baseline", action="store_true", help="skip the PyTorch baselines")
    p.add_argument("--baseline-run", type=Path,
                   help="trained frame run (pleura train frame --out) for the baselines instead "
                        "of the bundle's own weights; parity with the bundle is still checked")
    p.add_argument("--baseline-model",
                   help="train.frame.models registry name of the bundle's frame network, for a "
                        "bundle whose manifest names none (training.frame_model); its weights "
                        "are read from frame.onnx and parity is checked")
    p.add_argument("--tuned-batch", type=int, default=8,
                   help="batch of the tuned PyTorch baseline (default 8)")
    p.add_argument("--no-compile", action="store_true",
                   help="tuned baseline without torch.compile (recorded as the reason)")
    p.add_argument("--skip", default="", help=f"phases to leave out: {','.join(SKIPPABLE)}")
    _add_load_arguments(p)


def _add_load_arguments(p: argparse.ArgumentParser) -> None:
    """The load guard and the contended mode (:mod:`benchmarks.load`)."""
    p.add_argument("--allow-busy", action="store_true",
                   help="measure even when the machine is busy; figures marked CONTENDED")
    p.add_argument("--background-load", type=int, default=0, metavar="N",
                   help="start N busy-loop processes for the whole run: a fixed, documented "
                        "contention, to see how each candidate degrades (recorded)")
    p.add_argument("--max-others-busy", type=float, default=0.10, metavar="FRACTION",
                   help="refuse when other processes keep more than this fraction of the "
                        "machine's CPU busy (default 0.10)")
    p.add_argument("--max-load", type=float, metavar="LOADAVG",
                   help="refuse when the 1-minute load average exceeds this before the run "
                        "(default: the number of cores)")
    p.add_argument("--wait-quiet", type=float, metavar="SECONDS",
                   help="wait up to this long for a busy machine to quieten before refusing "
                        "(default 60; 0 with --fast)")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    base = FAST if args.fast else {}
    res = tuple(args.resolutions.split(",")) if args.resolutions else \
        base.get("resolutions", BenchConfig.resolutions)
    from benchmarks.clips import RESOLUTIONS

    bad = [r for r in res if r not in RESOLUTIONS]
    if bad:
        raise SystemExit(f"pleura bench: unknown resolution(s) {bad}; valid: "
                         f"{', '.join(RESOLUTIONS)}")
    try:
        return BenchConfig(
            seconds=args.seconds or base.get("seconds", 20.0),
            rounds=args.rounds or base.get("rounds", 3),
            streams=args.streams or base.get("streams", BenchConfig.streams),
            resolutions=res, batches=args.batch or base.get("batches", BenchConfig.batches),
            baseline=not args.no_baseline, threads=args.threads, backend=args.backend,
            fast=args.fast, paced=args.paced, tuned_batch=args.tuned_batch,
            compile=not args.no_compile,
            skip=tuple(s for s in args.skip.split(",") if s.strip()),
            allow_busy=args.allow_busy, background_load=args.background_load,
            max_others_busy=args.max_others_busy, max_load=args.max_load,
            wait_quiet=args.wait_quiet if args.wait_quiet is not None else
            (0.0 if args.fast else 60.0), peak_seconds=0.1 if args.fast else 0.6)
    except ValueError as exc:
        raise SystemExit(f"pleura bench: {exc}") from None


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
    """--baseline-run, or None: the baselines rebuild the bundle's own network and weights."""
    return args.baseline_run


def _header(args, cfg: BenchConfig, bundle, eng, clip: Path) -> dict[str, Any]:
    from benchmarks import clips, limits

    return {
        "schema": "pleura-bench/2",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "pleura " + " ".join(sys.argv[1:]) if sys.argv else "",
        "settings": {**{k: v for k, v in cfg.__dict__.items() if k != "phase"},
                     "phase_seconds": cfg.phase},
        "bundle": {"path": str(bundle.path), "name": bundle.name,
                   "int8": bundle.frame_int8_file is not None,
                   "seg_members": [m.name for m in bundle.seg_members],
                   "dummy": bool(args.dummy)},
        "backend": getattr(eng["default"], "describe", lambda: eng["default"].backend)(),
        "source": clips.clip_info(clip),
        "machine": {"cpu": limits.cpu_info(), "python": sys.version.split()[0],
                    "ncpu": os.cpu_count()},
    }


def _frame_lanes(args, cfg: BenchConfig, eng, bundle, clip: Path, src_frames, loads,
                 result: dict[str, Any], m32: dict[str, Any] | None) -> None:
    """Baselines (the bundle's own network, checked: parity and MACs), models alone, unpaced
    throughput and the paced baselines (frame model). ``m32``: MACs of the fp32 frame graph."""
    from benchmarks import lanes
    from benchmarks.baseline import BaselineSpec, torch_missing_reason
    from benchmarks.lanes import both_ratios, frame_throughput, paced_baselines, start_baselines

    tb = cfg.tuned_batch
    paced_base = "paced-baselines" not in cfg.skip and "paced" not in cfg.skip
    skip_reason = None if cfg.baseline else "--no-baseline"
    skip_reason = skip_reason or torch_missing_reason()
    fs = bundle.frame_spec
    batches = [tb, 1] if paced_base and tb != 1 else [tb]
    run_dir = _baseline_run_dir(args)
    spec = BaselineSpec("frame", str(bundle.path), (fs.channels, fs.height, fs.width),
                        run_dir=str(run_dir) if run_dir else None,
                        model_name=args.baseline_model,
                        target_macs=m32["macs"] if m32 else None)
    with start_baselines(spec, batches, cfg.compile, skip_reason, loads) as (base, info):
        x, what = lanes.parity_frames(src_frames, fs)
        gates = lanes.check_baselines(base, info, bundle.frame_file, x, what,
                                      m32["macs"] if m32 else None)
        if "inference" not in cfg.skip:
            result["inference"] = lanes.inference(cfg, eng, bundle, base, loads)
        result["throughput"] = frame_throughput(
            cfg.rounds, cfg.phase["throughput"], lanes.ort_candidates(eng, cfg), base, tb,
            bundle.frame_spec, clip, loads)
        if paced_base:
            result["paced_baselines"] = paced_baselines(base, clip, cfg.phase["paced"], loads)
    result["baselines"] = info
    naive = "torch_naive_b1" if base["naive"] is not None else None
    tuned = f"torch_tuned_b{tb}" if base["tuned"] is not None else None
    med = result["throughput"]["median_fps"]
    result["ratios"] = both_ratios(med, naive, tuned, gates)
    if "inference" in result:
        result["ratios_model_only"] = both_ratios(lanes.model_only_fps(result["inference"]),
                                                  naive, tuned, gates)


def _targets(result: dict[str, Any], cfg: BenchConfig) -> dict[str, Any]:
    """≥ 3× targets vs each baseline: the best ORT candidate and ORT int8 at the largest batch;
    ``met`` is None, with the reason, when there is no ratio (no baseline, or a baseline that
    is not the bundle's model)."""
    out = {}
    key = f"ort_int8_b{max(cfg.batches)}"
    for which in ("naive", "tuned"):
        r = {k: v for k, v in result["ratios"][f"vs_{which}"].items() if k.startswith("ort_")}
        best = max(r.items(), key=lambda kv: kv[1], default=(None, None))
        b = (result.get("baselines") or {}).get(which) or {}
        gate = b.get("same_model") or {}
        why = None if best[1] is not None else (
            "; ".join(gate.get("reasons") or []) or b.get("skipped_reason") or "no baseline")
        out[f"cpu_3x_{which}"] = {"target": 3.0, "best": best[0], "best_ratio": best[1],
                                  "met": None if best[1] is None else best[1] >= 3.0,
                                  key: r.get(key), "no_ratio_reason": why}
    return out


def measure(args: argparse.Namespace, cfg: BenchConfig, tmp: Path, loads,
            peak: dict[str, Any]) -> dict[str, Any]:
    """Run every phase; returns the JSON-able result.

    Args:
        loads: the run's :class:`benchmarks.load.PhaseLoads` (every phase is recorded in it).
        peak: :func:`benchmarks.limits.measured_peak`, taken before any background load.
    """
    from benchmarks import clips, lanes
    from benchmarks.devbundle import resolve_bundle
    from benchmarks.lanes import limits_block
    from benchmarks.timing import preprocess_stats
    from engines import load_bundle

    bundle = load_bundle(resolve_bundle(args, tmp))
    eng = _engines(bundle, cfg)
    spec = bundle.frame_spec
    clip = args.source or clips.default_clip(tmp)
    src_frames = clips.read_frames(clip, 60)
    result = _header(args, cfg, bundle, eng, clip)
    with loads.phase("decode"):
        result["decode"] = clips.decode_fps(clip, cfg.phase["decode"])
    with loads.phase("preprocess"):
        result["preprocess"] = {"frame": preprocess_stats(src_frames, spec, cfg.phase["micro"])}
        if bundle.seg_spec is not None:
            result["preprocess"]["seg"] = preprocess_stats(src_frames, bundle.seg_spec,
                                                           cfg.phase["micro"])
    m32 = lanes.limits.onnx_macs(bundle.frame_file)
    _frame_lanes(args, cfg, eng, bundle, clip, src_frames, loads, result, m32)
    if "seg" not in cfg.skip and eng["default"].has_segmentation():
        result["seg"] = _seg(args, cfg, eng["default"], bundle, loads, src_frames)
    if "paced" not in cfg.skip:
        log.info("real-time paced run")
        with loads.phase("paced/live"):
            result["paced"] = lanes.paced(cfg, eng["default"], spec, bundle.path, [clip],
                                     cfg.phase["paced"], tmp)
    if "scaling" not in cfg.skip:
        with loads.phase("scaling"):
            result["scaling"] = lanes.scaling(cfg, eng["default"], spec, src_frames, clip, tmp)
    result["limits"] = limits_block(bundle, peak, lanes.model_only_fps(result.get("inference", {})),
                                    result["throughput"]["median_fps"],
                                    (result.get("seg") or {}).get("fps", {}), m32)
    result["limits"]["gpu_estimate"] = _gpu_estimate(bundle, result["limits"]["macs"])
    _summary(result, cfg)
    for e in {id(v): v for v in eng.values()}.values():
        e.close()
    return result


def _seg(args, cfg: BenchConfig, engine, bundle, loads, src_frames) -> dict[str, Any]:
    """The segmentation lane; its baselines rebuild the member's network with its weights."""
    import numpy as np

    from benchmarks import lanes
    from benchmarks.baseline import BaselineSpec, torch_missing_reason
    from benchmarks.lanes import seg_lane, start_baselines
    from engines.preprocess import preprocess_batch

    seg = bundle.manifest["models"]["seg"][0]
    arch = seg.get("arch") or seg["name"]
    ss = bundle.seg_spec
    member = bundle.seg_members[0]
    skip = None if cfg.baseline else "--no-baseline"
    skip = skip or torch_missing_reason()
    if len(bundle.seg_members) > 1 and not skip:
        skip = "the PyTorch seg baselines cover one-member bundles only"
    macs = None if skip else lanes.limits.onnx_macs(member.file)
    spec = BaselineSpec("seg", str(bundle.path), (ss.channels, ss.height, ss.width),
                        onnx=str(member.file), arch=arch,
                        target_macs=macs["macs"] if macs else None)
    with start_baselines(spec, [cfg.tuned_batch], cfg.compile, skip, loads) as (base, info):
        idx = np.linspace(0, len(src_frames) - 1, min(4, len(src_frames))).round().astype(int)
        x, _ = preprocess_batch([src_frames[i] for i in idx], ss)
        gates = lanes.check_baselines(base, info, member.file, x, f"{len(idx)} frames of the "
                                      "source clip (preprocessed)", macs["macs"] if macs
                                      else None)
        out = seg_lane(engine, bundle, base, cfg.batches, cfg.tuned_batch, cfg.phase["micro"],
                       1 if cfg.fast else 3, loads, gates)
    out["baselines"] = info
    return out


def _gpu_estimate(bundle, macs: dict[str, Any]) -> dict[str, Any]:
    from benchmarks import limits

    m32 = macs["frame_fp32"] or {}
    seg = macs["seg_ensemble"] or {}
    est = limits.gpu_estimate(m32.get("gmac", 0.0), m32.get("layers", 30), seg.get("gmac"),
                              sum((m or {}).get("layers", 0) for m in macs["seg_members"]))
    est["models"] = ("this bundle: frame model + seg members "
                     + (", ".join(m.name for m in bundle.seg_members) or "(none)"))
    return est


def _summary(result: dict[str, Any], cfg: BenchConfig) -> None:
    med = result["throughput"]["median_fps"]
    runtime = {k: v for k, v in med.items() if k.startswith("ort_")}
    top = max(runtime, key=runtime.__getitem__)
    result["max_sustainable_fps"] = {"candidate": top, "fps": runtime[top],
                                     "what": "unpaced decode + preprocess + frame model, "
                                             "one process, median of rounds"}
    result["targets"] = _targets(result, cfg)


def _preflight(cfg: BenchConfig):
    """(Thresholds, pre-flight reading, reasons it is contended)."""
    from benchmarks.load import Thresholds, wait_until_quiet

    th = Thresholds(others_busy=cfg.max_others_busy,
                    loadavg1=cfg.max_load if cfg.max_load is not None
                    else float(os.cpu_count() or 1))
    reading, why = wait_until_quiet(th, cfg.wait_quiet, probe_s=1.0 if cfg.fast else 3.0,
                                    log=log.warning)
    return th, reading, why


def run(args: argparse.Namespace) -> int:
    if args.backend == "ray":  # issue #17: its own comparison (the [serve] extra)
        from benchmarks.serve_bench import main

        return main(args)
    cfg = config_from_args(args)
    from benchmarks.load import BackgroundLoad, PhaseLoads, refusal_message
    from benchmarks.report import format_table

    th, reading, why = _preflight(cfg)
    if why and not cfg.allow_busy:
        print(refusal_message(why, "before the run"), file=sys.stderr)
        return 2
    from benchmarks.limits import measured_peak

    bg = BackgroundLoad(cfg.background_load)
    loads = PhaseLoads(th, bg)
    loads.preflight = reading
    with loads.phase("peak"):  # a machine property: measured before any background load
        peak = measured_peak(cfg.peak_seconds)
    with bg, tempfile.TemporaryDirectory(prefix="pleura-bench-") as tmp:
        result = measure(args, cfg, Path(tmp), loads, peak)
        result["load"] = loads.record()
    result["contention"] = result["load"]["contention"]
    result["contended"] = result["contention"] != "quiet"
    print(format_table(result))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json_out}")
    bad = result["load"]["contended_phases"]
    if bad and not cfg.allow_busy and not cfg.background_load:
        print(refusal_message([f"{k}: {'; '.join(v)}" for k, v in bad.items()],
                              "during the run (figures written, marked CONTENDED)"),
              file=sys.stderr)
        return 3
    return 0
