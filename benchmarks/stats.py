"""Latency statistics and a CPU / peak-memory monitor for one benchmark phase."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import psutil


def summarise(ms: Sequence[float]) -> dict[str, float | int]:
    """Summary of per-item latencies in milliseconds.

    Args:
        ms: (N,) latencies in ms.

    Returns:
        {"n", "mean", "p50", "p90", "p99", "max"} (NaN-free: empty input gives n = 0 and
        zeros, so a phase that produced nothing is visible, not a crash).
    """
    a = np.asarray(ms, dtype=np.float64)
    if a.size == 0:
        return {"n": 0, "mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"n": int(a.size), "mean": round(float(a.mean()), 3), "p50": round(float(p50), 3),
            "p90": round(float(p90), 3), "p99": round(float(p99), 3),
            "max": round(float(a.max()), 3)}


class ResourceMonitor:
    """CPU use and peak resident memory of this process (and its children) during a phase.

    CPU is ``Δ(user + system time) / Δwall`` in percent of one core (200 % = both cores of a
    2-core machine busy). Peak RSS is sampled every ``interval_s`` (psutil), so it is a lower
    bound on the true peak between samples.

    Usage::

        with ResourceMonitor() as mon:
            work()
        mon.result  # {"cpu_percent": .., "peak_rss_mb": .., "wall_s": ..}
    """

    def __init__(self, pid: int | None = None, children: bool = True,
                 interval_s: float = 0.05) -> None:
        self.proc = psutil.Process(pid)
        self.children = children
        self.interval_s = interval_s
        self.result: dict[str, Any] = {}
        self._stop = threading.Event()
        self._peak = 0
        self._thread: threading.Thread | None = None

    def _procs(self) -> list[psutil.Process]:
        procs = [self.proc]
        if self.children:
            with contextlib.suppress(psutil.Error):
                procs += self.proc.children(recursive=True)
        return procs

    def _cpu_s(self) -> float:
        total = 0.0
        for p in self._procs():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                continue
        return total

    def _sample(self) -> None:
        rss = 0
        for p in self._procs():
            try:
                rss += p.memory_info().rss
            except psutil.Error:
                continue
        self._peak = max(self._peak, rss)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> ResourceMonitor:
        self._t0, self._c0 = time.perf_counter(), self._cpu_s()
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="bench-monitor", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        cpu = self._cpu_s()  # before stopping: children may exit right after
        self._sample()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        wall = max(time.perf_counter() - self._t0, 1e-9)
        self.result = {"cpu_percent": round(100.0 * (cpu - self._c0) / wall, 1),
                       "peak_rss_mb": round(self._peak / 2**20, 1), "wall_s": round(wall, 2)}
