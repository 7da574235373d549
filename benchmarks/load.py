"""How busy the machine is: is this benchmark measuring the code or the other jobs?

Issue #19: a "11.8×" headline was measured at load average 8–12 and mostly measured how badly
eager PyTorch degrades when its threads fight other jobs for the cores. So every ``pleura
bench`` phase records the machine's load before, during and after it, and the run is refused
(or, with ``--allow-busy``, loudly marked) when the figures are contended.

Two readings, both from the kernel:

- ``os.getloadavg()`` (1/5/15-min run-queue averages): familiar, but it lags (a job that ended
  a minute ago still shows) and it counts this benchmark's own previous phases;
- **the CPU busy fraction of other processes**: ``/proc/stat`` busy jiffies of all cores minus
  the CPU time of this process tree (psutil), over the same interval, as a fraction of the whole
  machine (1.0 = every core busy with other work). Instant and blind to our own work: this is
  the one the verdict uses, together with the load average against the core count.

Background-load processes started by ``--background-load N`` (:class:`BackgroundLoad`) are
*not* counted as ours: they are the contention we mean to measure under.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

PROC_STAT = Path("/proc/stat")


@dataclass(frozen=True)
class Thresholds:
    """When the figures count as contended.

    Attributes:
        others_busy: max CPU busy fraction of other processes, of the whole machine (0.10 =
            a tenth of all cores; a quiet machine reads 0.00–0.03 from daemons).
        loadavg1: max 1-minute load average (default: the number of cores — more runnable
            tasks than cores means somebody waits; our own earlier phases count too, so it is
            not set lower).
    """

    others_busy: float = 0.10
    loadavg1: float = float(os.cpu_count() or 1)


def read_cpu_jiffies(path: Path = PROC_STAT) -> tuple[int, int]:
    """(busy, total) jiffies summed over all cores from the first line of ``/proc/stat``.

    busy = user + nice + system + irq + softirq + steal; total adds idle + iowait. Guest time
    is already inside user/nice (the kernel counts it twice), so it is left out.

    Raises:
        OSError: no ``/proc/stat`` (not Linux): callers treat the reading as unavailable.
    """
    fields = path.read_text().splitlines()[0].split()
    assert fields[0] == "cpu", f"unexpected first line of {path}: {fields[:3]}"
    v = [int(x) for x in fields[1:9]] + [0] * max(0, 8 - len(fields[1:9]))
    user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait


def _runnable() -> int | None:
    """Tasks runnable right now (``procs_running`` of /proc/stat), minus the reader itself."""
    with contextlib.suppress(OSError, ValueError):
        for line in PROC_STAT.read_text().splitlines():
            if line.startswith("procs_running"):
                return max(0, int(line.split()[1]) - 1)
    return None


class OwnCpu:
    """CPU seconds used by this process and its descendants, minus excluded pids.

    Includes children that already exited and were reaped (``children_user/system`` of the
    process that waited for them), so short-lived helper processes are not counted as
    "others" once reaped.
    """

    def __init__(self, exclude: Callable[[], Sequence[int]] = tuple) -> None:
        self.proc = psutil.Process()
        self.exclude = exclude

    def seconds(self) -> float:
        skip = set(self.exclude())
        t = self.proc.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        with contextlib.suppress(psutil.Error):
            for c in self.proc.children(recursive=True):
                if c.pid in skip:
                    continue
                with contextlib.suppress(psutil.Error):
                    ct = c.cpu_times()
                    total += ct.user + ct.system
        return total


def snapshot() -> dict[str, Any]:
    """Load average (1/5/15 min) and runnable tasks right now."""
    return {"t": round(time.time(), 2), "loadavg": [round(v, 2) for v in os.getloadavg()],
            "runnable_others": _runnable()}


class LoadMonitor:
    """Samples the others' CPU busy fraction every ``interval_s`` during a phase.

    Usage::

        with LoadMonitor(own) as mon:
            work()
        mon.result  # {"before", "after", "others_busy": {"mean", "max", "n"}, ...}

    ``others_busy`` is the fraction of the whole machine (all cores) busy with processes that
    are not this benchmark's tree; ``mean`` is over the whole phase (total jiffies, not a mean
    of samples), ``max`` the busiest sample interval.
    """

    def __init__(self, own: OwnCpu | None = None, interval_s: float = 0.5,
                 ncpu: int | None = None) -> None:
        self.own = own or OwnCpu()
        self.interval_s = interval_s
        self.ncpu = ncpu or os.cpu_count() or 1
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.result: dict[str, Any] = {}
        self._samples: list[float] = []
        self._runnable: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.available = PROC_STAT.is_file()

    def _read(self) -> tuple[int, int, float]:
        busy, total = read_cpu_jiffies()
        return busy, total, self.own.seconds()

    def _others(self, a: tuple[int, int, float], b: tuple[int, int, float]) -> float | None:
        d_total = b[1] - a[1]
        if d_total <= 0:
            return None
        ours_jiffies = (b[2] - a[2]) * self.hz
        return max(0.0, min(1.0, ((b[0] - a[0]) - ours_jiffies) / d_total))

    def _loop(self) -> None:
        prev = self._read()
        while not self._stop.wait(self.interval_s):
            cur = self._read()
            v = self._others(prev, cur)
            if v is not None:
                self._samples.append(v)
            r = _runnable()
            if r is not None:
                self._runnable.append(r)
            prev = cur

    def __enter__(self) -> LoadMonitor:
        self._before = snapshot()
        self._t0 = time.perf_counter()
        if self.available:
            self._first = self._read()
            self._thread = threading.Thread(target=self._loop, name="bench-load", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        mean = None
        if self.available:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            mean = self._others(self._first, self._read())
        s = self._samples
        self.result = {
            "before": self._before, "after": snapshot(),
            "seconds": round(time.perf_counter() - self._t0, 2),
            "others_busy": {"mean": None if mean is None else round(mean, 3),
                            "max": round(max(s), 3) if s else None, "n": len(s)},
            "runnable_others_mean": (round(sum(self._runnable) / len(self._runnable), 2)
                                     if self._runnable else None),
            "ncpu": self.ncpu}


def probe(seconds: float = 3.0, own: OwnCpu | None = None) -> dict[str, Any]:
    """Measure the load for ``seconds`` while this process idles (the pre-flight check)."""
    with LoadMonitor(own, interval_s=min(0.5, seconds / 2)) as mon:
        time.sleep(seconds)
    return mon.result


def verdict(reading: dict[str, Any], th: Thresholds, loadavg: bool = True) -> list[str]:
    """Why a load reading is contended ([] = quiet). Each reason names number and threshold.

    Args:
        reading: a :class:`LoadMonitor` result.
        loadavg: also apply the load-average threshold. Only for the pre-flight probe: during
            a phase the run queue holds our own threads (ONNX Runtime's pool, the live
            processes), so there only the others' busy fraction is a fair test.
    """
    why = []
    busy = (reading.get("others_busy") or {}).get("mean")
    if busy is not None and busy > th.others_busy:
        why.append(f"other processes kept {100 * busy:.0f} % of the machine's CPU busy "
                   f"(threshold {100 * th.others_busy:.0f} %)")
    la = max((reading.get(k) or {}).get("loadavg", [0.0])[0] for k in ("before", "after"))
    if loadavg and la > th.loadavg1:
        why.append(f"1-minute load average {la:.2f} (threshold {th.loadavg1:.2f})")
    return why


class PhaseLoads:
    """The load record of one benchmark run: a pre-flight probe, then one entry per phase.

    Args:
        thresholds: when a phase counts as contended.
        background: pids of ``--background-load`` processes (not ours) and their count;
            with background load on purpose, phases are recorded but never called contended
            by surprise (the run's ``contention`` says "intentional").
    """

    def __init__(self, thresholds: Thresholds, background: BackgroundLoad | None = None,
                 interval_s: float = 0.5) -> None:
        self.th = thresholds
        self.bg = background
        self.own = OwnCpu(exclude=lambda: self.bg.pids if self.bg else ())
        self.interval_s = interval_s
        self.phases: dict[str, dict[str, Any]] = {}
        self.preflight: dict[str, Any] | None = None

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Record the load around the body (before / during / after) under ``name``."""
        with LoadMonitor(self.own, self.interval_s) as mon:
            yield
        self.phases[name] = mon.result

    MIN_JUDGED_S = 1.0
    """Phases shorter than this are recorded but not judged: over a fraction of a second the
    kernel's 10-ms accounting and one daemon's wake-up swing the share by several percent."""

    def contended_phases(self) -> dict[str, list[str]]:
        return {k: why for k, v in self.phases.items()
                if (v.get("seconds") or 0.0) >= self.MIN_JUDGED_S
                and (why := verdict(v, self.th, loadavg=False))}

    def record(self) -> dict[str, Any]:
        """The JSON ``load`` block: thresholds, pre-flight, phases, and the verdict."""
        bad = self.contended_phases()
        pre = verdict(self.preflight, self.th) if self.preflight else []
        n = self.bg.n if self.bg else 0
        return {"thresholds": asdict(self.th), "preflight": self.preflight,
                "preflight_contended": pre, "phases": self.phases,
                "contended_phases": bad, "background_load": self.bg.describe() if self.bg
                else {"processes": 0},
                "contention": ("contended" if pre else "intentional" if n
                               else "contended" if bad else "quiet")}


class BackgroundLoad:
    """``N`` busy-loop processes (``while True: pass``), a fixed and reproducible contention.

    Each is a plain Python interpreter spinning at nice 0, so it competes for a core exactly
    like another job would (on a 2-core machine, N = 2 takes half of each core from us).
    Stopped (SIGTERM, then SIGKILL) by pid on exit.
    """

    CODE = "while True: pass"

    def __init__(self, n: int) -> None:
        if n < 0:
            raise ValueError(f"--background-load needs a count >= 0, got {n}")
        self.n = n
        self._procs: list[subprocess.Popen] = []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def describe(self) -> dict[str, Any]:
        return {"processes": self.n, "command": f"{Path(sys.executable).name} -c "
                                                f"'{self.CODE}'", "nice": 0,
                "what": f"{self.n} busy-loop process(es) competing for "
                        f"{os.cpu_count()} core(s) during every phase"}

    def __enter__(self) -> BackgroundLoad:
        for _ in range(self.n):
            self._procs.append(subprocess.Popen([sys.executable, "-c", self.CODE],
                                                stdin=subprocess.DEVNULL))
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self._procs:
            p.terminate()
        for p in self._procs:
            try:
                p.wait(3)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(3)
        self._procs.clear()


def refusal_message(reasons: Sequence[str], when: str) -> str:
    """The error printed when the run is refused: the numbers, the thresholds, the override."""
    return (f"pleura bench: the machine is busy {when}, so the figures would measure the "
            f"contention, not the code:\n  - " + "\n  - ".join(reasons) +
            "\nWait until the other jobs finish (check with `uptime` / `top`), or pass "
            "--allow-busy to measure anyway (the report and the JSON are then marked "
            "CONTENDED). To measure under load on purpose, start from a quiet machine with "
            "--background-load N (a fixed, recorded load). Thresholds: --max-others-busy "
            "FRACTION, --max-load LOADAVG; --wait-quiet SECONDS waits for a quiet machine.")


def wait_until_quiet(th: Thresholds, wait_s: float, probe_s: float = 3.0,
                     log: Callable[[str], None] | None = None) -> tuple[dict[str, Any], list[str]]:
    """Probe the load until it is quiet or ``wait_s`` has passed (the pre-flight check).

    The load average lags by about a minute (it still counts a job, or our own previous run,
    that just ended), so a short wait often turns a refusal into a quiet start.

    Returns:
        (the last probe reading, [] when quiet else the reasons it is contended).
    """
    t_end = time.monotonic() + max(0.0, wait_s)
    while True:
        reading = probe(probe_s)
        why = verdict(reading, th)
        if not why or time.monotonic() >= t_end:
            return reading, why
        if log:
            log(f"machine busy ({'; '.join(why)}); waiting up to "
                f"{t_end - time.monotonic():.0f} s more for it to quieten")
