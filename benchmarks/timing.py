"""Timed pieces of the serving path: preprocessing, model inference, the unpaced pipeline.

Everything here runs the runtime's own code: :mod:`engines.preprocess` for inputs, an
:class:`engines.base.Engine` for inference, :func:`stream.sources.decode_file` for decoding,
and the one scoring core (:mod:`engines.scorer`: prepare → infer → locate → running score) for
the unpaced pipeline, exactly as the worker and ``pleura score`` run it.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.stats import ResourceMonitor, summarise
from engines import scorer as core
from engines.base import Engine
from engines.preprocess import PreprocessSpec, preprocess_frame


def time_calls(fn: Callable[[], object], seconds: float, min_iters: int = 3,
               max_iters: int = 100_000, warmup: int = 1) -> list[float]:
    """Call ``fn`` repeatedly for about ``seconds`` (at least ``min_iters`` times).

    Returns:
        (N,) wall time of each call in ms (warm-up calls excluded).
    """
    for _ in range(warmup):
        fn()
    out: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(out) < max_iters and (len(out) < min_iters or time.perf_counter() < deadline):
        t = time.perf_counter()
        fn()
        out.append(1000.0 * (time.perf_counter() - t))
    return out


def preprocess_stats(frames: Sequence[np.ndarray], spec: PreprocessSpec,
                     seconds: float) -> dict[str, Any]:
    """Per-frame preprocessing time (grey + letterbox + normalise) for ``spec``.

    Args:
        frames: decoded (H, W, 3) uint8 RGB frames, cycled.
        spec: the model's input spec (from the bundle).
    """
    it = itertools.cycle(frames)
    ms = time_calls(lambda: preprocess_frame(next(it), spec), seconds, min_iters=10)
    h, w = frames[0].shape[:2]
    return {"source_hw": [h, w], "input": [spec.channels, spec.height, spec.width],
            "ms": summarise(ms)}


def inference_stats(fn: Callable[[np.ndarray], object], shape: tuple[int, int, int],
                    batches: Sequence[int], seconds: float,
                    seed: int = 0) -> list[dict[str, Any]]:
    """Model latency per batch size on random inputs (speed does not depend on the pixels).

    Args:
        fn: runs one batch, e.g. ``engine.frame``.
        shape: (C, H, W) of one input.
        batches: batch sizes to time.
        seconds: time budget per batch size.

    Returns:
        One row per batch: {"batch", "ms" (per call: p50, p99, ...), "ms_per_frame" (p50 /
        batch), "fps" (frames per second at the p50)}.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for b in batches:
        x = rng.random((b, *shape), dtype=np.float32)
        ms = summarise(time_calls(lambda x=x: fn(x), seconds, min_iters=2))
        per = ms["p50"] / b
        rows.append({"batch": b, "ms": ms, "ms_per_frame": round(per, 3),
                     "fps": round(1000.0 / per, 2) if per > 0 else 0.0})
    return rows


def _looped_frames(paths: Sequence[Path]):
    """Round-robin over decoders of ``paths``, each restarting at its end: yields (i, frame)."""
    from stream.sources import decode_file

    decoders = [iter(decode_file(p)) for p in paths]
    while True:
        for i, p in enumerate(paths):
            try:
                f = next(decoders[i])
            except StopIteration:
                decoders[i] = iter(decode_file(p))
                f = next(decoders[i])
            yield i, f.image


def pipeline_throughput(engine: Engine, spec: PreprocessSpec, paths: Sequence[Path],
                        batch: int, seconds: float) -> dict[str, Any]:
    """Unpaced frame scoring: decode -> the scoring core in batches, one thread.

    Stage 1 (:func:`engines.scorer.prepare_batch`), then stages 2-4
    (:func:`engines.scorer.score_batch`: ``engine.frame``, crop boxes in source pixels, one
    running uninorm per stream). This is the highest sustainable rate of the runtime's frame
    scoring on this machine (what ``pleura score`` does on files). With several paths, frames
    are taken round-robin from each, as a worker batching concurrent streams does.

    Returns:
        {"batch", "streams", "frames", "seconds", "fps", "ms_per_frame", "stage_ms": {decode,
        preprocess, infer (stages 2-4)} per frame, "cpu_percent", "peak_rss_mb"}.
    """
    scorer = core.Scorer(engine, spec, np.asarray(core.DEFAULT_E), "bench",
                         str(getattr(engine, "backend", "")))
    running = [scorer.running() for _ in paths]
    frames_it = _looped_frames(paths)
    warm = [next(frames_it) for _ in range(batch)]
    engine.frame(core.prepare_batch([f for _, f in warm], spec)[0])  # warm-up
    n, t_dec, t_pre, t_inf = 0, 0.0, 0.0, 0.0
    with ResourceMonitor(children=False) as mon:
        t0 = time.perf_counter()
        deadline = t0 + seconds
        while time.perf_counter() < deadline or n == 0:
            a = time.perf_counter()
            got = [next(frames_it) for _ in range(batch)]
            b = time.perf_counter()
            x, lbs = core.prepare_batch([f for _, f in got], spec)
            c = time.perf_counter()
            core.score_batch(scorer, x, lbs, [running[i] for i, _ in got])
            d = time.perf_counter()
            t_dec, t_pre, t_inf = t_dec + b - a, t_pre + c - b, t_inf + d - c
            n += batch
        dt = time.perf_counter() - t0
    k = 1000.0 / n
    return {"batch": batch, "streams": len(paths), "frames": n, "seconds": round(dt, 2),
            "fps": round(n / dt, 2), "ms_per_frame": round(1000.0 * dt / n, 3),
            "stage_ms": {"decode": round(t_dec * k, 3), "preprocess": round(t_pre * k, 3),
                         "infer": round(t_inf * k, 3)},
            **{k2: mon.result[k2] for k2 in ("cpu_percent", "peak_rss_mb")}}
