"""The one place that wires the pipeline: addresses, and which stage feeds which.

::

    capture-i --frames_i--> worker --results--> ui          (one capture per source)
         ^                    ^        \\-----> supervisor stats (headless / --stats-json)
         |                    |         \\----> recorder (--record, also reads frames_i)
         +-- capture_ctl_i    +-- worker_ctl <-- supervisor <-- ui_control (UI's CONTROL PUB)
    every process --heartbeats--> status (supervisor)

:func:`compose` turns a :class:`LiveConfig` into a :class:`Plan`: the addresses and the
command line of every process. The supervisor only executes a plan; capture, worker, UI and
recorder only get addresses on their command lines.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class LiveConfig:
    """Everything ``pleura live`` was asked for.

    Attributes:
        sources: one URI per source (file, folder, v4l2:///dev/videoN, stream URL).
        bundle: model bundle folder (already resolved).
        transport: "ipc" (local sockets in ``run_dir``) or "tcp" (loopback ports).
        headless: no UI process.
        record: folder for ``--record`` or None.
        source_args: capture flags passed through (loop, speed, roi, ...).
        worker_args: worker flags passed through (backend, threads, seg, ...).
        ui_args: UI flags passed through (host, port, auth, ...).
    """

    sources: tuple[str, ...]
    bundle: str
    transport: str = "ipc"
    headless: bool = False
    record: str | None = None
    source_args: tuple[str, ...] = ()
    worker_args: tuple[str, ...] = ()
    ui_args: tuple[str, ...] = ()
    verbose: bool = False


@dataclass(frozen=True)
class ProcSpec:
    """One child process: its role, command line, and whether it is restarted when it dies."""

    name: str
    role: str
    argv: tuple[str, ...]
    restart: bool = True


@dataclass(frozen=True)
class Plan:
    frames: tuple[str, ...]
    results: str
    worker_control: str
    capture_controls: tuple[str, ...]
    ui_control: str
    status: str
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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ui_available() -> bool:
    try:
        return importlib.util.find_spec("ui.cli") is not None
    except (ImportError, ValueError):
        return False


def pleura(*args: str, verbose: bool = False) -> tuple[str, ...]:
    """Command line of a ``pleura`` subcommand run with this interpreter."""
    return (sys.executable, "-m", "stream", *(("-v",) if verbose else ()), *args)


def compose(cfg: LiveConfig, run_dir: Path) -> Plan:
    """Wire the pipeline: which process binds what and who feeds whom."""
    addr = Addresses(cfg.transport, run_dir)
    frames = tuple(addr(f"frames-{i}") for i in range(len(cfg.sources)))
    capture_ctl = tuple(addr(f"capture-ctl-{i}") for i in range(len(cfg.sources)))
    results, worker_ctl = addr("results"), addr("worker-ctl")
    ui_ctl, status = addr("ui-ctl"), addr("status")
    v = cfg.verbose
    procs = [ProcSpec(f"capture-{i}", "capture",
                      pleura("capture", "--source", src, "--frames", frames[i],
                             "--stream-id", str(i), "--status", status,
                             "--control", capture_ctl[i], *cfg.source_args, verbose=v))
             for i, src in enumerate(cfg.sources)]
    worker = ["worker", "--results", results, "--control", worker_ctl, "--status", status,
              "--bundle", cfg.bundle, *cfg.worker_args]
    for f in frames:
        worker += ["--frames", f]
    procs.append(ProcSpec("worker", "worker", pleura(*worker, verbose=v)))
    # A hot spare: loaded, waiting for SIGUSR1; replaces a crashed worker at once.
    procs.append(ProcSpec("worker-standby", "standby",
                          pleura(*worker, "--standby", "--restarted", verbose=v)))
    if cfg.record:
        procs.append(recorder_spec(cfg.record, frames, results, status))
    if not cfg.headless:
        procs.append(ProcSpec("ui", "ui", pleura("ui", "--results", results, "--control", ui_ctl,
                                                 "--bundle", cfg.bundle, *cfg.ui_args,
                                                 verbose=v)))
    return Plan(frames, results, worker_ctl, capture_ctl, ui_ctl, status, tuple(procs))


def recorder_spec(out: str, frames: tuple[str, ...], results: str, status: str) -> ProcSpec:
    """The recorder process: reads every frames address and the results (``--record`` or the
    UI's record switch)."""
    rec = [sys.executable, "-m", "stream.recorder", "--out", out, "--results", results,
           "--status", status]
    for f in frames:
        rec += ["--frames", f]
    return ProcSpec("recorder", "recorder", tuple(rec))
