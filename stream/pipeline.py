"""The one place that wires the pipeline: addresses, and which stage feeds which.

::

    capture-i --frames_i--> worker --results--> ui          (one capture per source)
         ^                    ^        \\-----> supervisor stats (headless / --stats-json)
         |                    |         \\----> recorder (--record, also reads frames_i)
         +-- capture_ctl_i    +-- worker_ctl <-- supervisor <-- ui_control (UI's CONTROL PUB)
    every process --heartbeats--> status (supervisor)

:func:`compose` turns a :class:`stream.config.PleuraConfig` into a :class:`Plan`: the
addresses (:class:`stream.config.Topology`: who binds, who connects, who fans out) and every
process's own config (:class:`stream.config.CaptureConfig`, ``WorkerConfig``, ``UiConfig``).
The supervisor only executes a plan: it hands each process its config as a JSON file
(``--config FILE``).
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from stream.config import (
    CaptureConfig,
    PleuraConfig,
    Topology,
    UiConfig,
    WorkerConfig,
    extend,
)
from stream.sockets import free_port


@dataclass(frozen=True)
class ProcSpec:
    """One child process: its role, command line, config and whether it is restarted when it
    dies.

    ``config`` (a :mod:`stream.config` process config, or None for a process that takes only
    its command line) is written to a JSON file at every start and passed as ``--config FILE``
    after ``argv``: settings never travel as rebuilt argv.
    """

    name: str
    role: str
    argv: tuple[str, ...]
    restart: bool = True
    config: CaptureConfig | WorkerConfig | UiConfig | None = None


@dataclass(frozen=True)
class Plan(Topology):
    """The addresses of a pipeline (every one set) and the processes that use them."""

    procs: tuple[ProcSpec, ...] = field(default_factory=tuple)


class Addresses:
    """Hands out distinct addresses: ipc:// files in ``run_dir`` or free loopback tcp ports."""

    def __init__(self, transport: str, run_dir: Path) -> None:
        if transport not in ("ipc", "tcp"):
            raise ValueError(f"transport must be 'ipc' or 'tcp', got {transport!r}")
        self.transport, self.run_dir = transport, run_dir

    def __call__(self, name: str) -> str:
        if self.transport == "ipc":
            return f"ipc://{self.run_dir / name}.sock"
        return f"tcp://127.0.0.1:{free_port()}"


def ui_available() -> bool:
    try:
        return importlib.util.find_spec("ui.cli") is not None
    except (ImportError, ValueError):
        return False


def pleura(*args: str, verbose: bool = False) -> tuple[str, ...]:
    """Command line of a ``pleura`` subcommand run with this interpreter."""
    return (sys.executable, "-m", "stream", *(("-v",) if verbose else ()), *args)


def compose(cfg: PleuraConfig, run_dir: Path, verbose: bool = False) -> Plan:
    """Wire the pipeline: which process binds what, who feeds whom, and each one's config.

    Args:
        cfg: the whole config; ``cfg.live.sources`` and ``cfg.worker.bundle`` already resolved
            (:func:`stream.cli_live.run`). Addresses set in ``cfg.topology`` are used as given.
        run_dir: folder of the ipc:// sockets.
        verbose: children log at debug level.

    Raises:
        ValueError: a topology whose per-source lists do not match the sources.
    """
    top, n = cfg.topology, len(cfg.live.sources)
    for name in ("frames", "capture_controls"):
        if getattr(top, name) and len(getattr(top, name)) != n:
            raise ValueError(f"[topology] {name} has {len(getattr(top, name))} addresses for "
                             f"{n} sources; give one per source or none")
    addr = Addresses(cfg.live.transport, run_dir)
    frames = top.frames or tuple(addr(f"frames-{i}") for i in range(n))
    capture_ctl = top.capture_controls or tuple(addr(f"capture-ctl-{i}") for i in range(n))
    results, worker_ctl = top.results or addr("results"), top.worker_control or addr("worker-ctl")
    ui_ctl, status = top.ui_control or addr("ui-ctl"), top.status or addr("status")
    procs = [ProcSpec(f"capture-{i}", "capture", pleura("capture", verbose=verbose),
                      config=extend(CaptureConfig, cfg.capture, source=src,
                                    frames_addr=frames[i], stream_id=i, status_addr=status,
                                    control_addr=capture_ctl[i]))
             for i, src in enumerate(cfg.live.sources)]
    worker = extend(WorkerConfig, cfg.worker, frames_addrs=frames, results_addr=results,
                    control_addr=worker_ctl, status_addr=status)
    procs.append(ProcSpec("worker", "worker", pleura("worker", verbose=verbose), config=worker))
    # A hot spare: loaded, waiting for SIGUSR1; replaces a crashed worker at once.
    procs.append(ProcSpec("worker-standby", "standby", pleura("worker", verbose=verbose),
                          config=replace(worker, standby=True, restarted=True)))
    if cfg.live.record:
        procs.append(recorder_spec(cfg.live.record, frames, results, status))
    if not cfg.live.headless:
        ui = extend(UiConfig, cfg.ui, results_addr=results, control_addrs=(ui_ctl,),
                    bundle=cfg.worker.bundle, backend=cfg.worker.backend)
        procs.append(ProcSpec("ui", "ui", pleura("ui", verbose=verbose), config=ui))
    return Plan(frames=frames, capture_controls=capture_ctl, results=results,
                worker_control=worker_ctl, ui_control=ui_ctl, status=status, procs=tuple(procs))


def recorder_spec(out: str, frames: tuple[str, ...], results: str, status: str) -> ProcSpec:
    """The recorder process: reads every frames address and the results (``--record`` or the
    UI's record switch)."""
    rec = [sys.executable, "-m", "stream.recorder", "--out", out, "--results", results,
           "--status", status]
    for f in frames:
        rec += ["--frames", f]
    return ProcSpec("recorder", "recorder", tuple(rec))
