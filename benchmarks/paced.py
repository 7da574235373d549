"""End-to-end latency under real-time pacing, for 1..N concurrent streams.

Two ways, and the result says which one ran:

- ``live-runtime``: ``pleura live --headless --stats-json`` (real capture and worker processes,
  ZeroMQ between them), when the streaming runtime is installed: :func:`live_runtime`.
- ``in-process``: :func:`paced_streams`, the same stages in one process. One thread per stream
  plays its file at the file's own frame rate through the runtime's :class:`FileSource`
  (looping) into a latest-wins slot; the scoring loop takes the newest frame of every stream
  that has one, preprocesses, runs them as one batch and timestamps the result. Latency is
  result time minus the moment the source released the frame; a frame overwritten before the
  loop took it is *skipped*, as in the worker.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.stats import ResourceMonitor, summarise
from engines.base import Engine
from engines.preprocess import PreprocessSpec, preprocess_batch


class _Slot:
    """Latest-wins mailbox of one stream: (image, release time) and counters."""

    def __init__(self) -> None:
        self.item: tuple[Any, float] | None = None
        self.captured = 0
        self.skipped = 0
        self.processed = 0
        self.latencies: list[float] = []


def _play(path: Path, slot: _Slot, cond: threading.Condition, stop: threading.Event) -> None:
    from stream.sources import DecodedFrame, SourceOptions, open_source

    src = open_source(str(path), SourceOptions(loop=True))
    try:
        for ev in src.events():
            if stop.is_set():
                return
            if not isinstance(ev, DecodedFrame):
                continue
            with cond:
                if slot.item is not None:
                    slot.skipped += 1
                slot.item = (ev.image, time.perf_counter())
                slot.captured += 1
                cond.notify()
    finally:
        src.close()


def paced_streams(engine: Engine, spec: PreprocessSpec, paths: Sequence[Path],
                  seconds: float, warmup_s: float = 1.0) -> dict[str, Any]:
    """Play ``paths`` concurrently in real time and score every newest frame.

    Args:
        engine: the engine under test.
        spec: the frame model's input spec.
        paths: one clip per stream (the same file may repeat).
        seconds: measured duration (after ``warmup_s``).

    Returns:
        {"mode": "in-process", "streams", "seconds", "source_fps", "processed_fps" (all
        streams), "per_stream_fps" (min, max), "served_fraction" (processed / captured),
        "skipped", "latency_ms" (summary over all frames), "batch_mean", CPU, peak RSS}.
    """
    slots = [_Slot() for _ in paths]
    cond, stop = threading.Condition(), threading.Event()
    threads = [threading.Thread(target=_play, args=(p, s, cond, stop), daemon=True,
                                name=f"bench-src-{i}")
               for i, (p, s) in enumerate(zip(paths, slots, strict=True))]
    for t in threads:
        t.start()
    batches = 0
    measuring = False
    t_start = time.perf_counter()
    t_measure = t_start + warmup_s
    with ResourceMonitor(children=False) as mon:
        while True:
            now = time.perf_counter()
            if not measuring and now >= t_measure:
                measuring = True
                with cond:
                    for s in slots:  # counters start now (a waiting frame counts as captured)
                        s.captured = int(s.item is not None)
                        s.skipped = s.processed = 0
                        s.latencies.clear()
                    batches = 0
            if now >= t_measure + seconds:
                break
            with cond:
                cond.wait_for(lambda: any(s.item is not None for s in slots), timeout=0.2)
                taken = [(s, s.item) for s in slots if s.item is not None]
                for s, _ in taken:
                    s.item = None
            if not taken:
                continue
            x, _ = preprocess_batch([item[0] for _, item in taken], spec)
            engine.frame(x)
            done = time.perf_counter()
            batches += 1
            for s, (_, t_rel) in taken:
                s.processed += 1
                s.latencies.append(1000.0 * (done - t_rel))
    stop.set()
    for t in threads:
        t.join(timeout=2.0)
    captured = sum(s.captured for s in slots)
    processed = sum(s.processed for s in slots)
    per = [s.processed / seconds for s in slots]
    return {"mode": "in-process", "streams": len(paths), "seconds": seconds,
            "captured": captured, "processed": processed, "skipped": sum(s.skipped
                                                                         for s in slots),
            "source_fps": round(captured / seconds, 2),
            "processed_fps": round(processed / seconds, 2),
            "per_stream_fps": [round(min(per), 2), round(max(per), 2)],
            "served_fraction": round(processed / captured, 3) if captured else 0.0,
            "batch_mean": round(processed / batches, 2) if batches else 0.0,
            "latency_ms": summarise([v for s in slots for v in s.latencies]),
            **{k: mon.result[k] for k in ("cpu_percent", "peak_rss_mb")}}


def live_runtime_available() -> bool:
    """True when ``pleura live`` is registered (the streaming runtime has landed)."""
    from stream.cli import COMMANDS

    return "live" in COMMANDS


def live_runtime(bundle: Path, clips: Sequence[Path], seconds: float, out_dir: Path,
                 backend: str = "auto", threads: int | None = None,
                 startup_s: float = 15.0) -> dict[str, Any]:
    """Run ``pleura live --headless`` (real capture and worker processes over ZeroMQ) on
    ``clips`` (one source each, looped) and normalise its ``--stats-json``.

    The run lasts ``seconds + startup_s`` (its statistics include start-up, so its latency
    percentiles are slightly pessimistic). Latency is the supervisor's end-to-end figure:
    result received minus frame grabbed.

    Raises:
        RuntimeError: the command failed or scored no frame (stderr tail in the message).
    """
    stats_path = out_dir / "live-stats.json"
    cmd = [sys.executable, "-m", "stream", "live", "--headless", "--loop",
           "--seconds", str(seconds + startup_s), "--stats-json", str(stats_path),
           "--bundle", str(bundle), "--backend", backend]
    for c in clips:
        cmd += ["--source", str(c)]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + startup_s + 120)
    if proc.returncode != 0 or not stats_path.is_file():
        raise RuntimeError(f"{' '.join(cmd[2:])} failed (exit {proc.returncode}): "
                           f"{proc.stderr[-1500:]}")
    st = json.loads(stats_path.read_text())
    f = st["frames"]
    if not f.get("processed"):
        raise RuntimeError(f"pleura live scored no frame in {seconds + startup_s:.0f} s")
    dur = float(st["duration_s"])
    per = [v["processed"] / dur for v in st["streams"].values()] or [0.0]
    lat = st["latency_ms"]["end_to_end"]
    res = st["resources"]
    return {"mode": "live-runtime", "command": "pleura " + " ".join(cmd[3:]),
            "streams": len(clips), "seconds": dur, "captured": f["captured"],
            "processed": f["processed"], "skipped": f["skipped"],
            "source_fps": round(f["captured"] / dur, 2),
            "processed_fps": round(f["processed"] / dur, 2),
            "per_stream_fps": [round(min(per), 2), round(max(per), 2)],
            "served_fraction": round(f["processed"] / f["captured"], 3) if f["captured"]
            else 0.0,
            "latency_ms": {k: lat.get(k) for k in ("n", "mean", "p50", "p95", "p99", "max")},
            "worker_pipeline_ms": st["latency_ms"]["worker_pipeline"],
            "stages_ms": {k: v.get("p50") for k, v in st.get("stages_ms", {}).items()},
            "cpu_percent": (res.get("cpu_total_pct") or {}).get("mean"),
            "peak_rss_mb": (res.get("rss_total_mb") or {}).get("max"),
            "backend": st.get("backend")}
