"""The lanes of ``pleura bench`` that compare the runtime with the PyTorch baselines.

- :func:`start_baselines`: the naive and the tuned PyTorch child of the bundle's own network
  (frame model or seg member, the bundle's weights), the tuned one compiled up front (compile
  time recorded, excluded from throughput); :func:`check_baselines`: parity with ONNX Runtime
  fp32 and MACs, the gate of every ratio (:mod:`benchmarks.same_model`);
- :func:`frame_throughput`: unpaced frame scoring (decode + preprocess + model), every
  candidate interleaved round by round, the order rotated, each under its own load record;
- :func:`seg_lane`: the segmentation ensemble alone, ONNX Runtime vs naive / tuned PyTorch;
- :func:`paced_baselines`: one real-time stream scored by each PyTorch baseline (to set next
  to ``pleura live``'s end-to-end figures);
- :func:`limits_block`: MACs of the executed graphs, the measured peak, % of the limit;
- and the runtime-only phases: :func:`inference` (each model alone), :func:`paced` (one live
  stream through ``pleura live``), :func:`scaling` (streams, source resolution).
"""

from __future__ import annotations

import contextlib
import logging
import statistics
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks import limits
from benchmarks.baseline import (
    NAIVE_WHAT,
    TUNED_WHAT,
    BaselineProcess,
    BaselineSpec,
    CannotRebuildError,
)
from benchmarks.load import PhaseLoads
from benchmarks.same_model import gated_ratios, parity_record, verdict
from benchmarks.timing import inference_stats, pipeline_throughput

if TYPE_CHECKING:
    from benchmarks.cli import BenchConfig

log = logging.getLogger("pleura.bench")


@contextlib.contextmanager
def start_baselines(spec: BaselineSpec, tuned_batches: Sequence[int], use_compile: bool,
                    skip_reason: str | None,
                    loads: PhaseLoads) -> Iterator[tuple[dict, dict[str, Any]]]:
    """Start the naive and tuned children of one network (``spec``: the bundle's frame model
    or a seg member, rebuilt with the bundle's weights); yields ({"naive", "tuned"}: process
    or None, {"naive", "tuned"}: JSON info incl. why one is missing). Closes both on exit.
    When the naive child cannot rebuild the network, the tuned one is not tried (same
    reason)."""
    procs: dict[str, BaselineProcess | None] = {"naive": None, "tuned": None}
    info: dict[str, Any] = {}
    try:
        for name in ("naive", "tuned"):
            info[name] = {"available": False, "skipped_reason": skip_reason}
            if skip_reason:
                continue
            try:
                p = BaselineProcess(spec, tuned=name == "tuned").__enter__()
            except CannotRebuildError as exc:
                skip_reason = str(exc)
                info[name]["skipped_reason"] = skip_reason
                log.warning("%s baselines: %s", spec.kind, exc)
                continue
            except RuntimeError as exc:
                info[name]["skipped_reason"] = str(exc)
                log.warning("%s %s baseline skipped: %s", spec.kind, name, exc)
                continue
            procs[name] = p
            info[name] = {"available": True, "skipped_reason": None, "info": p.info}
            if name == "tuned":
                with loads.phase(f"{spec.kind}_compile"):
                    c = p.prepare(list(tuned_batches), use_compile)
                info[name]["compile"] = c
                compiled = ("torch.compile (Inductor, static shapes; compile time excluded)"
                            if c.get("compiled") else f"eager ({c.get('reason')})")
                info[name]["what"] = TUNED_WHAT.format(batch=max(tuned_batches),
                                                       compiled=compiled)
            else:
                info[name]["what"] = NAIVE_WHAT
        yield procs, info
    finally:
        for p in procs.values():
            if p is not None:
                p.close()


def check_baselines(base: Mapping[str, BaselineProcess | None], info: dict[str, Any],
                    onnx_file: Path, x, what: str,
                    bundle_macs: int | None) -> dict[str, dict[str, Any]]:
    """Parity (every output vs ONNX Runtime fp32 of ``onnx_file`` on ``x``) and MACs of each
    running baseline, recorded in ``info[name]["parity"]`` / ``["same_model"]``; returns the
    verdicts ({"naive", "tuned"}: :func:`benchmarks.same_model.verdict`) that gate the ratios.
    """
    ref = _ort_fp32(onnx_file) if any(p is not None for p in base.values()) else None
    gates = {}
    for name in ("naive", "tuned"):
        if base.get(name) is not None and ref is not None:
            info[name]["parity"] = parity_record(base[name], ref[0], ref[1], x, what)
        gates[name] = verdict(info.get(name), bundle_macs)
        info.setdefault(name, {})["same_model"] = gates[name]
        p = base.get(name)
        if p is not None and not gates[name]["same_model"]:
            # not the bundle's model: not timed at all, so no table sets it beside the runtime
            why = "; ".join(gates[name]["reasons"])
            log.warning("the %s baseline is not the bundle's model, not timed: %s", name, why)
            p.close()
            base[name] = None  # type: ignore[index]
            info[name].update(available=False, skipped_reason=f"not the bundle's model: {why}")
    return gates


def _ort_fp32(onnx_file: Path):
    """(run(x) -> every output, output names) of a plain fp32 ONNX Runtime session."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    feed = sess.get_inputs()[0].name
    return (lambda x: sess.run(names, {feed: x})), names


def _rotate(names: list[str], r: int) -> list[str]:
    return names[r % len(names):] + names[:r % len(names)]


def frame_throughput(rounds: int, seconds: float, candidates: Mapping[str, tuple[Any, int]],
                     base: Mapping[str, BaselineProcess | None], tuned_batch: int, spec,
                     clip: Path, loads: PhaseLoads) -> dict[str, Any]:
    """Interleaved rounds of unpaced frame scoring: every baseline and ORT candidate per round.

    Args:
        candidates: {"ort_fp32_b1": (engine, batch), ...}.
        base: {"naive": process or None, "tuned": process or None}.

    Returns:
        {"rounds": [{name: pipeline result}], "median_fps": {name: fps},
        "seconds_per_candidate"}; baselines are named ``torch_naive_b1`` and
        ``torch_tuned_b{tuned_batch}``.
    """
    runners: dict[str, Callable[[], dict]] = {}
    if base.get("naive") is not None:
        runners["torch_naive_b1"] = lambda: base["naive"].pipeline(clip, seconds, 1)
    if base.get("tuned") is not None:
        runners[f"torch_tuned_b{tuned_batch}"] = lambda: base["tuned"].pipeline(
            clip, seconds, tuned_batch)
    for name, (eng, b) in candidates.items():
        runners[name] = (lambda e=eng, b=b: pipeline_throughput(e, spec, [clip], b, seconds))
    names = list(runners)
    out = []
    for r in range(rounds):
        row = {}
        for name in _rotate(names, r):
            log.info("throughput round %d/%d: %s", r + 1, rounds, name)
            with loads.phase(f"throughput/r{r + 1}/{name}"):
                row[name] = runners[name]()
        out.append(row)
    med = {n: round(statistics.median(rd[n]["fps"] for rd in out), 2) for n in names}
    return {"rounds": out, "median_fps": med, "seconds_per_candidate": seconds}


def both_ratios(values: Mapping[str, float], naive: str | None, tuned: str | None,
                gates: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """{"vs_naive": {...}, "vs_tuned": {...}}: every value over each baseline's value, only
    where that baseline's gate (:func:`benchmarks.same_model.verdict`) says it is the
    bundle's model; {} for the other."""
    return {"vs_naive": gated_ratios(values, naive, gates.get("naive")),
            "vs_tuned": gated_ratios(values, tuned, gates.get("tuned"))}


def seg_lane(eng, bundle, base: Mapping[str, BaselineProcess | None], batches: Sequence[int],
             tuned_batch: int, seconds: float, min_iters: int, loads: PhaseLoads,
             gates: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The segmentation ensemble alone on random inputs: ORT at each batch, naive PyTorch at
    batch 1, tuned PyTorch at ``tuned_batch``; ratios per frame vs each baseline that
    ``gates`` passes (same member, same weights, same MACs)."""
    ss = bundle.seg_spec
    shape = (ss.channels, ss.height, ss.width)
    with loads.phase("seg/ort"):
        rows = inference_stats(eng.segment, shape, batches, seconds)
    out: dict[str, Any] = {"ort_ensemble": rows,
                           "members": [m.name for m in bundle.seg_members]}
    fps = {f"ort_b{r['batch']}": r["fps"] for r in rows}
    for name, b in (("naive", 1), ("tuned", tuned_batch)):
        if base.get(name) is not None:
            with loads.phase(f"seg/torch_{name}"):
                row = base[name].model_only(seconds, min_iters=min_iters, batch=b)
            out[f"torch_{name}_b{b}"] = row
            fps[f"torch_{name}_b{b}"] = row["fps"]
    out["fps"] = fps
    out["ratios"] = both_ratios(fps, "torch_naive_b1" if base.get("naive") else None,
                                f"torch_tuned_b{tuned_batch}" if base.get("tuned") else None,
                                gates)
    return out


def paced_baselines(base: Mapping[str, BaselineProcess | None], clip: Path, seconds: float,
                    loads: PhaseLoads) -> dict[str, Any]:
    """One real-time stream through each PyTorch baseline (batch 1, newest frame wins)."""
    out = {}
    for name, p in base.items():
        if p is not None:
            log.info("real-time paced: PyTorch %s", name)
            with loads.phase(f"paced/torch_{name}"):
                out[f"torch_{name}"] = p.paced(clip, seconds)
    return out


def limits_block(bundle, peak: dict[str, Any], model_only: Mapping[str, float],
                 pipeline: Mapping[str, float], seg_fps: Mapping[str, float],
                 m32: dict[str, Any] | None = None) -> dict[str, Any]:
    """MACs per executed graph, the machine's limit, and % of it for every candidate.

    Args:
        peak: :func:`benchmarks.limits.measured_peak`.
        model_only / pipeline: {candidate: frames/s}; names containing "int8" ran the int8
            graph, every other one (ORT fp32, PyTorch) the fp32 graph's work.
        seg_fps: {candidate: frames/s} of the segmentation ensemble.
        m32: the fp32 frame graph's count when already made (else counted here).
    """
    m32 = m32 if m32 is not None else limits.onnx_macs(bundle.frame_file)
    m8 = limits.onnx_macs(bundle.frame_int8_file) if bundle.frame_int8_file else None
    seg = [limits.onnx_macs(m.file) for m in bundle.seg_members]
    cpu = limits.cpu_limit(m32, peak)
    p = {"fp32_gflops": cpu["fp32_gflops"], "int8_gops": cpu["int8_gops"]}

    def util(rows: Mapping[str, float], macs_of: Callable[[str], dict | None]) -> dict:
        return {k: limits.utilisation(v, macs_of(k), p) for k, v in rows.items()}

    def frame_macs(name: str) -> dict | None:
        return m8 if "int8" in name and m8 else m32

    seg_sum = _sum_macs([s for s in seg if s])
    return {"cpu": cpu, "macs": {"frame_fp32": m32, "frame_int8": m8, "seg_members": seg,
                                 "seg_ensemble": seg_sum},
            "utilisation": {"frame_model_only": util(model_only, frame_macs),
                            "frame_pipeline": util(pipeline, frame_macs),
                            "seg_model_only": util(seg_fps, lambda _k: seg_sum)},
            "note": "pct_of_limit: frames/s x (least time per frame at the measured peak, "
                    "executed MACs: int8 MACs at the int8 rate, the rest at the fp32 rate); "
                    "pct_of_limit_used_macs counts only the batch rows that reach an output "
                    "(Reg-STN's crop-2 classification is computed and discarded)"}


def _sum_macs(ms: Sequence[dict]) -> dict[str, Any] | None:
    if not ms:
        return None
    keys = ("gmac", "gmac_used", "gmac_int8", "gmac_int8_used")
    return {k: round(sum(m[k] for m in ms), 4) for k in keys}


def parity_frames(frames, spec, n: int = 8, n_random: int = 2, seed: int = 0):
    """(batch, what): ``n`` source frames spread over the clip, preprocessed with the bundle's
    spec, plus ``n_random`` uniform [0, 1] inputs (crops and statistics off the usual path)."""
    import numpy as np

    from engines.preprocess import preprocess_batch

    idx = np.linspace(0, len(frames) - 1, min(n, len(frames))).round().astype(int)
    x, _ = preprocess_batch([frames[i] for i in idx], spec)
    rnd = np.random.default_rng(seed).random((n_random, *x.shape[1:]), dtype=np.float32)
    return (np.concatenate([x, rnd]).astype(np.float32),
            f"{len(idx)} frames of the source clip (preprocessed) + {n_random} uniform random")


def ort_candidates(eng: dict[str, Any], cfg: BenchConfig) -> dict[str, tuple[Any, int]]:
    bmax = max(cfg.batches)
    cands: dict[str, tuple[Any, int]] = {"ort_fp32_b1": (eng["fp32"], 1)}
    if "int8" in eng:
        cands["ort_int8_b1"] = (eng["int8"], 1)
    if bmax > 1:
        cands[f"ort_fp32_b{bmax}"] = (eng["fp32"], bmax)
        if "int8" in eng:
            cands[f"ort_int8_b{bmax}"] = (eng["int8"], bmax)
    return cands


def inference(cfg: BenchConfig, eng: dict[str, Any], bundle, base: dict, loads) -> dict:
    """Each frame model alone (random inputs) at every batch size, and both baselines."""
    from benchmarks.timing import inference_stats

    fs = bundle.frame_spec
    shape = (fs.channels, fs.height, fs.width)
    out: dict[str, Any] = {}
    for key in ("fp32", "int8"):
        if key in eng:
            with loads.phase(f"inference/frame_{key}"):
                out[f"frame_{key}"] = inference_stats(eng[key].frame, shape, cfg.batches,
                                                      cfg.phase["micro"])
    n = 1 if cfg.fast else 3
    for name, b in (("naive", 1), ("tuned", cfg.tuned_batch)):
        if base.get(name) is not None:
            with loads.phase(f"inference/torch_{name}"):
                out[f"torch_{name}"] = [base[name].model_only(cfg.phase["micro"] * 2, n, b)]
    return out


def model_only_fps(rows_by_model: dict[str, Any]) -> dict[str, float]:
    """{candidate: frames/s} of the models alone, named like the throughput candidates."""
    fps = {}
    for key, rows in rows_by_model.items():
        prefix = "ort_" + key.removeprefix("frame_") if key.startswith("frame_") else key
        for row in rows:
            fps[f"{prefix}_b{row['batch']}"] = row["fps"]
    return fps


def scaling(cfg: BenchConfig, engine, spec, src_frames, clip: Path, tmp: Path) -> dict:
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


def paced(cfg: BenchConfig, engine, spec, bundle_path: Path, clips: list[Path], seconds: float,
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
