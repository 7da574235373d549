"""Run statistics for ``pleura live --headless --stats-json``: counts, latency percentiles,
CPU / memory over time, and the video-score timeline. Fed by the supervisor's results SUB.

Counters survive restarts: every capture process (a *capture session*) counts its own sent
frames from 0, and every worker its skipped frames, so "captured" is the sum over capture
sessions of each session's count (from its heartbeats, and from the ``capture_sent`` the worker
copies into each result, whichever is larger) and "skipped" the sum over worker processes.
Hence ``processed <= captured`` holds across any capture or worker restart.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import numpy as np
import psutil

from stream.wire import Message


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50 / p95 / p99 / mean / max of a list (None when empty), rounded to 0.01."""
    if not values:
        return {"p50": None, "p95": None, "p99": None, "mean": None, "max": None, "n": 0}
    a = np.asarray(values, dtype=np.float64)
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"p50": round(float(p50), 2), "p95": round(float(p95), 2),
            "p99": round(float(p99), 2), "mean": round(float(a.mean()), 2),
            "max": round(float(a.max()), 2), "n": int(a.size)}


class RunStats:
    """Accumulates what the supervisor sees during a run."""

    def __init__(self) -> None:
        self.t0 = time.time()
        self.results: dict[int, int] = defaultdict(int)
        self.latency: list[float] = []          # published - grabbed (ms)
        self.e2e: list[float] = []              # received here - grabbed (ms)
        self.stages: dict[str, list[float]] = defaultdict(list)
        self.timeline: dict[int, list[list[Any]]] = defaultdict(list)
        self.sessions: dict[int, dict[Any, int]] = defaultdict(dict)  # sid -> session -> sent
        self.skips: dict[int, dict[Any, int]] = defaultdict(dict)     # sid -> worker -> skipped
        self.dropped: dict[Any, dict[str, int]] = {}                  # worker pid -> counts
        self.engine: dict[Any, dict[str, Any]] = {}  # worker pid -> --backend ray state, counters
        self.resources: list[dict[str, float]] = []
        self.events: list[dict[str, Any]] = []
        self.sources: dict[int, str] = {}
        self.backend = self.bundle = None

    def on_result(self, msg: Message, received: float) -> None:
        m = msg.meta
        sid = msg.stream_id
        if m.get("resent"):  # the last result again, with a new source state
            return
        self.results[sid] += 1
        self.sources[sid] = str(m.get("source"))
        self.skips[sid][m.get("worker_pid")] = int(m.get("skipped", 0))
        sent = m.get("capture_sent")
        if isinstance(sent, int):  # this frame was its capture session's (sent + 1)-th
            self._count(sid, m.get("capture_session"), sent + 1)
        self.backend, self.bundle = m.get("backend"), m.get("bundle")
        grabbed = msg.at("grabbed")
        self.latency.append((msg.at("published") - grabbed) * 1000.0)
        self.e2e.append((received - grabbed) * 1000.0)
        for k, v in (m.get("timing_ms") or {}).items():
            self.stages[k].append(float(v))
        video = m.get("video") or {}
        self.timeline[sid].append([round(received - self.t0, 3), msg.seq, m.get("score"),
                                   video.get("score"), video.get("n_frames"),
                                   bool(video.get("restarted")), round(self.e2e[-1], 2)])

    def _count(self, sid: int, session: Any, sent: int) -> None:
        per = self.sessions[sid]
        per[session] = max(per.get(session, 0), sent)

    def on_heartbeat(self, meta: dict[str, Any]) -> None:
        if meta.get("role") == "capture" and "sent" in meta:
            session = meta.get("session", ("pid", meta.get("pid")))
            self._count(int(meta.get("stream_id", 0)), session, int(meta["sent"]))
        elif meta.get("role") == "worker" and isinstance(meta.get("dropped"), dict):
            self.dropped[meta.get("pid")] = dict(meta["dropped"])
            if isinstance(meta.get("engine"), dict):
                self.engine[meta.get("pid")] = dict(meta["engine"])

    @property
    def captured(self) -> dict[int, int]:
        """Frames sent per stream, summed over capture sessions."""
        return {sid: sum(per.values()) for sid, per in self.sessions.items()}

    @property
    def skipped(self) -> dict[int, int]:
        """Frames skipped per stream, summed over worker processes."""
        return {sid: sum(per.values()) for sid, per in self.skips.items()}

    def sample_resources(self, pids: dict[str, int]) -> None:
        """CPU % and RSS (MiB) of each process, plus the total."""
        row: dict[str, float] = {"t": round(time.time() - self.t0, 2)}
        total_rss = total_cpu = 0.0
        for name, pid in pids.items():
            try:
                p = _proc(pid)
                rss = p.memory_info().rss / 2**20
                cpu = p.cpu_percent(None)
            except psutil.Error:
                continue
            row[f"{name}_rss_mb"] = round(rss, 1)
            row[f"{name}_cpu"] = round(cpu, 1)
            total_rss += rss
            total_cpu += cpu
        row["total_rss_mb"], row["total_cpu"] = round(total_rss, 1), round(total_cpu, 1)
        self.resources.append(row)

    def summary(self) -> dict[str, Any]:
        dur = max(time.time() - self.t0, 1e-6)
        per_stream = {}
        captured, skipped = self.captured, self.skipped
        for sid in sorted(set(self.results) | set(captured)):
            cap, done = captured.get(sid, 0), self.results.get(sid, 0)
            per_stream[str(sid)] = {
                "source": self.sources.get(sid), "captured": cap, "processed": done,
                "capture_sessions": len(self.sessions.get(sid, {})),
                "skipped": skipped.get(sid, 0),
                "scored_pct": round(100.0 * done / cap, 2) if cap else None,
                "fps": round(done / dur, 2)}
        n_cap, processed = sum(captured.values()), sum(self.results.values())
        dropped: dict[str, int] = defaultdict(int)
        for counts in self.dropped.values():
            for k, v in counts.items():
                dropped[k] += int(v) if isinstance(v, int) else 0
        res = self.resources[1:]  # the first cpu_percent sample is always 0
        return {
            "duration_s": round(dur, 2), "backend": self.backend, "bundle": self.bundle,
            "frames": {"captured": n_cap, "processed": processed,
                       "skipped": sum(skipped.values()),
                       "not_scored": max(0, n_cap - processed),
                       "scored_pct": round(100.0 * processed / n_cap, 2) if n_cap else None},
            "worker_dropped": dict(dropped),
            "worker_engine": {str(pid): e for pid, e in self.engine.items()},  # --backend ray
            "fps": round(processed / dur, 2), "streams": per_stream,
            "latency_ms": {"worker_pipeline": percentiles(self.latency),
                           "end_to_end": percentiles(self.e2e)},
            "stages_ms": {k: percentiles(v) for k, v in sorted(self.stages.items())},
            "resources": {"cpu_total_pct": percentiles([r["total_cpu"] for r in res]),
                          "rss_total_mb": percentiles([r["total_rss_mb"] for r in res]),
                          "timeline": self.resources},
            "video_timeline": {str(k): v for k, v in self.timeline.items()},
            "timeline_columns": ["t_s", "seq", "frame_score", "video_score", "n_frames",
                                 "restarted", "e2e_ms"],
            "events": self.events,
        }


_PROCS: dict[int, psutil.Process] = {}


def _proc(pid: int) -> psutil.Process:
    if pid not in _PROCS:
        _PROCS[pid] = psutil.Process(pid)
    return _PROCS[pid]
