"""``pleura bench --backend ray``: Ray Serve vs the local engine, in the same run (issue #17).

For S streams (``--streams``, largest value; default 4) and the bundle's frame model, each
phase runs for ``--seconds`` and reports frames/s and per-call latency (p50/p99, ms):

- ``local``: one worker's engine on this machine (ONNX Runtime, ``--threads``), the S streams'
  frames scored as one batch per call (what :class:`stream.workercore.Worker` does).
- ``ray_rN_1worker``: the same, but the engine is :class:`engines.backends.ray.RayEngine` on a
  ``pleura serve`` application of N replicas (1 thread each) — one worker, remote models.
- ``ray_rN_Sworkers``: S callers (threads, one RayEngine each) with one stream each, batch 1 —
  S single-probe workers whose frames ``serve.batch`` merges on the replicas.

Each row is measured twice: ``unpaced`` (closed loop: the next call as soon as the answer
comes: highest throughput) and ``paced`` (every stream at 30 fps: the latency a probe sees).
Inputs are real frames of the default clip, preprocessed once (preprocessing happens in the
worker in both topologies, so it is not part of the comparison).

Ray: a private local instance with ``os.cpu_count()`` CPUs, started and stopped here, unless
``--serve-address`` names a running cluster (then the application is deployed there and
deleted after). Numbers from a loaded machine are not capacities: the result records the load.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.stats import summarise

log = logging.getLogger("pleura.bench")

FPS = 30.0
APP = "pleura-bench"


def _loop(call: Callable[[np.ndarray], Any], x: np.ndarray, seconds: float,
          period_s: float | None, stop_at: float) -> list[float]:
    """Call ``call(x)`` until ``stop_at`` (closed loop, or one call per ``period_s``);
    returns per-call latencies in ms."""
    ms: list[float] = []
    t_next = time.perf_counter()
    while time.perf_counter() < stop_at:
        t = time.perf_counter()
        call(x)
        ms.append((time.perf_counter() - t) * 1000.0)
        if period_s:
            t_next += period_s
            time.sleep(max(0.0, t_next - time.perf_counter()))
    return ms


def measure(calls: list[Callable[[np.ndarray], Any]], x: np.ndarray, seconds: float,
            paced: bool) -> dict[str, Any]:
    """Run one phase: each of ``calls`` on its own thread sends batches ``x`` (B frames).

    Returns:
        ``{"callers", "batch", "fps", "latency_ms": summarise(...)}``; fps counts frames.
    """
    period = 1.0 / FPS if paced else None
    calls[0](x)  # warm-up (sessions, connections)
    results: list[list[float]] = [[] for _ in calls]
    stop_at = time.perf_counter() + seconds
    t0 = time.perf_counter()
    threads = [threading.Thread(target=lambda i=i: results[i].extend(
        _loop(calls[i], x, seconds, period, stop_at))) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = [v for r in results for v in r]
    return {"callers": len(calls), "batch": int(len(x)), "paced_fps_per_stream":
            FPS if paced else None, "fps": round(len(ms) * len(x) / wall, 1),
            "latency_ms": summarise(ms)}


def _inputs(bundle, clip: Path, n: int) -> np.ndarray:
    from benchmarks.clips import read_frames
    from engines.preprocess import preprocess_batch

    frames = read_frames(clip, max(n, 1))
    x, _ = preprocess_batch((frames * n)[:n], bundle.frame_spec)
    return x


def _start_ray(address: str | None) -> tuple[Any, str, bool]:
    """Join ``address`` or start a private instance (or use the one this process has);
    returns (ray, GCS address, whether this call started or joined it)."""
    import ray

    if ray.is_initialized():
        return ray, ray.get_runtime_context().gcs_address, False
    quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(num_cpus=os.cpu_count() or 2, include_dashboard=False, **quiet)
    return ray, ray.get_runtime_context().gcs_address, True


def serve_bench(bundle_path: Path, clip: Path, seconds: float = 10.0, streams: int = 4,
                replicas: tuple[int, ...] = (1, 2), threads: int = 1,
                address: str | None = None) -> dict[str, Any]:
    """The comparison of the module doc; returns the JSON-able result."""
    from engines import create_engine, load_bundle
    from engines.serve import ServeConfig, deploy

    bundle = load_bundle(bundle_path)
    xs = _inputs(bundle, clip, streams)
    load0 = [round(v, 2) for v in os.getloadavg()]
    rows: dict[str, Any] = {}
    local = create_engine(bundle, "onnxruntime", threads=threads)
    for mode in ("unpaced", "paced"):
        log.info("serve bench: local, %s", mode)
        rows[f"local/{mode}"] = measure([local.frame], xs, seconds, mode == "paced")
    local.close()
    ray, gcs, joined = _start_ray(address)
    from ray import serve

    try:
        for n in replicas:
            deploy(ServeConfig(bundle=str(bundle.path), replicas=n, threads=threads,
                               app_name=APP))
            engs = [create_engine(bundle, "ray", address=gcs, app_name=APP, fallback=False)
                    for _ in range(streams)]
            for mode in ("unpaced", "paced"):
                log.info("serve bench: %d replica(s), %s", n, mode)
                for key, calls, x in ((f"ray_r{n}_1worker/{mode}", engs[:1], xs),
                                      (f"ray_r{n}_{streams}workers/{mode}", engs, xs[:1])):
                    for e in engs:
                        e.stats.merged_max = 0
                    rows[key] = measure([e.frame for e in calls], x, seconds, mode == "paced")
                    # most frames serve.batch put in one engine run (callers' frames merged)
                    rows[key]["merged_max"] = max(e.stats.merged_max for e in calls)
            for e in engs:
                e.close()
    finally:
        serve.delete(APP)
        if joined and not address:  # our private instance: stop Serve and Ray
            serve.shutdown()
        if joined:
            ray.shutdown()
    return {"schema": "pleura-bench-serve/1", "bundle": bundle.name, "streams": streams,
            "threads_per_engine": threads, "replicas": list(replicas), "seconds": seconds,
            "ray": ray.__version__, "cluster": address or f"private ({os.cpu_count()} CPUs)",
            "rows": rows, "loadavg_start": load0,
            "loadavg_end": [round(v, 2) for v in os.getloadavg()],
            "what": __doc__.split("\n\n")[1].strip()}


def format_table(result: dict[str, Any]) -> str:
    """One line per row: frames/s, latency p50/p99, most frames in one replica engine run."""
    lines = [f"Ray Serve vs local engine, {result['bundle']}, {result['streams']} streams, "
             f"{result['threads_per_engine']} thread(s) per engine, ray {result['ray']}, "
             f"load {result['loadavg_start']} -> {result['loadavg_end']}",
             f"{'row':34s} {'frames/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s} {'merged':>7s}"]
    for name, r in result["rows"].items():
        lat = r["latency_ms"]
        lines.append(f"{name:34s} {r['fps']:9.1f} {lat['p50']:8.2f} {lat['p99']:8.2f} "
                     f"{r.get('merged_max', '-'):>7}")
    return "\n".join(lines)


def run_cli(args: Any, bundle_path: Path, tmp: Path) -> dict[str, Any]:
    """``pleura bench --backend ray`` (flags: --seconds, --streams, --threads, --source,
    --serve-address)."""
    from benchmarks.clips import default_clip

    clip = args.source or default_clip(tmp)
    streams = max(args.streams) if args.streams else 4
    seconds = args.seconds or (2.0 if args.fast else 10.0)
    result = serve_bench(bundle_path, clip, seconds, streams, threads=args.threads or 1,
                         address=getattr(args, "serve_address", None))
    result["command"] = "pleura " + " ".join(sys.argv[1:])
    return result


def main(args: Any) -> int:
    """The whole ``pleura bench --backend ray`` command: bundle (``--bundle`` / ``--dummy``),
    the comparison, the table on stdout, ``--json OUT``."""
    import json
    import tempfile

    from benchmarks.devbundle import resolve_bundle as _resolve_bundle
    from engines.serve import import_ray

    try:
        import_ray()
    except ImportError as exc:
        print(f"pleura bench: {exc}", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="pleura-bench-serve-") as tmp:
        result = run_cli(args, _resolve_bundle(args, Path(tmp)), Path(tmp))
    print(format_table(result))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json_out}")
    return 0
