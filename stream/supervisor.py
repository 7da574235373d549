"""The supervisor: runs a :class:`stream.pipeline.Plan` as OS processes and keeps it alive.

- starts every process of the plan, each with its config (:class:`stream.pipeline.ProcSpec`)
  written to a JSON file in a private temporary folder and passed as ``--config FILE``;
  children get ``PR_SET_PDEATHSIG`` so they die with the supervisor even after a ``kill -9``
  (no orphans);
- watches exits and heartbeats: a dead worker is restarted at once (within 2 s, its config
  saying ``restarted`` so its video scores are marked as restarted), a silent one after
  ``hang_s``; a crashed capture / UI / recorder is restarted with backoff;
- routes the UI's CONTROL messages: "reset"/"pause"/"resume"/"start"/"stop" are forwarded to
  worker and captures (what the worker does with them: :mod:`stream.worker`); "source" /
  "loop" restart capture ``stream_id`` (default 0; another value must be the integer id of a
  capture, else the message is refused with a log line) with the new source (``uri``) / loop
  flag; "record" (``on``: bool, optional ``dir``) starts / stops the recorder; "bundle"
  (``path``) restarts the worker and its standby on another bundle, which must be one of the
  shipped bundles (``engines/bundles/*``) or the one the pipeline started with and must load
  (else the message is refused with a log line; the running worker stays); control log
  lines are rate-limited and cut to 200 characters;
- collects run statistics when asked (:mod:`stream.stats`);
- on Ctrl-C / SIGTERM (or ``seconds``, or every file source ended in headless mode) stops all
  children: SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import zmq

from engines.bundle import BundleError, load_bundle, shipped_bundles
from stream.configfile import to_dict, write
from stream.messages import MAX_SOURCE_CHARS
from stream.pipeline import Plan, ProcSpec, recorder_spec
from stream.ratelog import RateLimitedLog
from stream.stats import RunStats
from stream.wire import Kind, WireError, decode, encode

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    spec: ProcSpec
    proc: subprocess.Popen | None = None
    started: float = 0.0
    last_beat: float = 0.0
    restarts: int = 0
    next_start: float = 0.0
    done: bool = False
    loaded: bool = False
    beating: bool = False


class Supervisor:
    """Runs a plan. ``stats`` collects results and resources when given."""

    def __init__(self, plan: Plan, stats: RunStats | None = None, hang_s: float = 15.0,
                 headless: bool = True) -> None:
        self.plan, self.stats, self.hang_s, self.headless = plan, stats, hang_s, headless
        self.children = {p.name: Child(p) for p in plan.procs}
        self.ctx: zmq.Context = zmq.Context.instance()
        self.stop_event = threading.Event()
        self.failed: list[str] = []
        self.worker_ready = False
        self.record_dir: str | None = None
        self.t_start = time.time()
        self.ready_timeout_s = 30.0
        self.control_log = RateLimitedLog(log)
        self._plan_bundles = {Path(p.config.bundle).resolve() for p in plan.procs
                              if p.role in ("worker", "standby") and p.config is not None
                              and p.config.bundle}
        self.config_dir = Path(tempfile.mkdtemp(prefix="pleura-config-"))  # mode 0700
        for addr, binder, connectors in plan.wiring():
            log.debug("%s: bound by %s; %s connect", addr, binder, connectors)

    # ------------------------------------------------------------------ processes
    def _start(self, c: Child) -> None:
        argv = list(c.spec.argv)
        cfg = c.spec.config
        if cfg is not None:  # the process's config travels as a file, never as argv
            if c.spec.role == "worker" and c.restarts:
                cfg = replace(cfg, restarted=True)
            path = write({cfg.SECTION: to_dict(cfg)}, self.config_dir / f"{c.spec.name}.json")
            argv += ["--config", str(path)]
        c.proc = subprocess.Popen(argv, preexec_fn=_die_with_parent)
        c.started = c.last_beat = time.time()
        c.beating = False
        log.info("started %s (pid %d)", c.spec.name, c.proc.pid)

    def _promote_standby(self, c: Child, why: str, now: float) -> bool:
        """Replace a dead worker by the loaded standby (SIGUSR1); True if there was one."""
        sb = next((s for s in self.children.values() if s.spec.role == "standby"), None)
        if sb is None or sb.proc is None or sb.proc.poll() is not None or not sb.loaded:
            return False
        sb.proc.send_signal(signal.SIGUSR1)
        c.proc, c.started, c.last_beat, c.beating = sb.proc, now, now, True
        c.restarts += 1
        sb.proc, sb.loaded, sb.next_start = None, False, now + 1.0
        log.warning("%s %s; standby worker (pid %d) took over", c.spec.name, why, c.proc.pid)
        if self.stats is not None:
            self.stats.events.append({"t": round(now - self.stats.t0, 3), "event": "restart",
                                      "process": c.spec.name, "why": why, "standby": True,
                                      "pid": c.proc.pid})
        return True

    def _restart(self, c: Child, why: str, now: float) -> None:
        if c.proc is not None and c.proc.poll() is None:
            c.proc.kill()
            c.proc.wait(2.0)
        if c.spec.role == "worker" and self._promote_standby(c, why, now):
            return
        c.restarts += 1
        crash_loop = now - c.started < 2.0  # died right after starting: back off
        delay = (0.0 if c.spec.role == "worker" and not crash_loop
                 else min(5.0, 0.5 * 2 ** min(c.restarts, 4)))
        c.next_start = now + delay
        c.proc = None
        log.warning("%s %s; restarting%s", c.spec.name, why,
                    f" in {delay:.1f} s" if delay else "")
        if self.stats is not None:
            self.stats.events.append({"t": round(now - self.stats.t0, 3), "event": "restart",
                                      "process": c.spec.name, "why": why})

    def _watch(self, now: float) -> None:
        for c in self.children.values():
            if c.done:
                continue
            if c.proc is None:
                # Sources start once the worker is ready, so no frame is lost to its start-up.
                waiting = (c.spec.role in ("capture", "recorder", "standby")
                           and not self.worker_ready
                           and now - self.t_start < self.ready_timeout_s)
                if now >= c.next_start and not waiting:
                    self._start(c)
                continue
            rc = c.proc.poll()
            if rc is None:
                # Hung = silent after having spoken (start-up, i.e. imports and model loading
                # on a busy CPU, may take much longer than a heartbeat period).
                if c.spec.role == "worker" and c.beating and now - c.last_beat > self.hang_s:
                    self._restart(c, f"sent no heartbeat for {self.hang_s:.0f} s", now)
                continue
            if c.spec.role == "capture" and rc == 0:
                c.done = True  # the source ended
                log.info("%s finished (source ended)", c.spec.name)
            elif c.spec.role in ("capture", "worker", "standby", "ui") and rc == 2:
                c.done = True  # a configuration error (missing file / device): already logged
                self.failed.append(c.spec.name)
                log.error("%s cannot run; see the message above", c.spec.name)
            elif c.spec.restart:
                self._restart(c, f"exited with code {rc}", now)
            else:
                c.done = True

    def pids(self) -> dict[str, int]:
        return {n: c.proc.pid for n, c in self.children.items()
                if c.proc is not None and c.proc.poll() is None}

    # ------------------------------------------------------------------ control routing
    def _route_control(self, raw: bytes, fwd: zmq.Socket) -> None:
        try:
            msg = decode(raw)
        except WireError as exc:
            self.control_log.warning("bad control message dropped: %s", exc)
            return
        if msg.kind != Kind.CONTROL:
            return
        cmd = msg.meta.get("cmd")
        self.control_log.info("control: %.200s", msg.meta)
        if cmd == "record":
            self._record(bool(msg.meta.get("on", True)), msg.meta.get("dir"))
            return
        if cmd == "bundle":
            self._switch_bundle(msg.meta.get("path"))
            return
        if cmd in ("source", "loop"):
            sid = msg.meta.get("stream_id", 0)
            cap = (self.children.get(f"capture-{sid}")
                   if isinstance(sid, int) and not isinstance(sid, bool) else None)
            if cap is None or cap.spec.config is None:
                self.control_log.warning("control %s refused: no capture with stream_id %.40r",
                                         cmd, sid)
                return
            uri = msg.meta.get("uri")
            if cmd == "source" and not (isinstance(uri, str) and 0 < len(uri) <= MAX_SOURCE_CHARS
                                        and not uri.startswith("-") and "\0" not in uri):
                self.control_log.warning("control source refused: uri must be a file path or "
                                         "URL of 1..%d characters, got %.60r", MAX_SOURCE_CHARS,
                                         uri)
                return
            change = {"source": uri} if cmd == "source" else {}
            loop = msg.meta.get("loop", msg.meta.get("on"))
            if isinstance(loop, bool):
                change["loop"] = loop
            cap.spec = replace(cap.spec, config=replace(cap.spec.config, **change))
            cap.done = False
            self._stop_child(cap)
        else:
            with contextlib.suppress(zmq.Again):
                fwd.send(encode(msg), zmq.NOBLOCK)

    @staticmethod
    def _stop_child(c: Child) -> None:
        """SIGTERM ``c`` (SIGKILL after 5 s: it may hold an address the next one binds); the
        watch loop starts it again at once with its (changed) config."""
        if c.proc is not None and c.proc.poll() is None:
            c.proc.terminate()
            try:
                c.proc.wait(5.0)
            except subprocess.TimeoutExpired:
                c.proc.kill()
                c.proc.wait(2.0)
        c.proc, c.next_start = None, 0.0

    def _workers(self) -> list[Child]:
        return [c for c in self.children.values() if c.spec.role in ("worker", "standby")]

    def allowed_bundles(self) -> set[Path]:
        """Bundles a "bundle" command may choose: the shipped ones and the plan's own."""
        return {p.resolve() for p in shipped_bundles()} | self._plan_bundles

    def _switch_bundle(self, path: object) -> None:
        """Restart the worker and its standby on the bundle at ``path`` (the page's menu)."""
        if not isinstance(path, str) or not 0 < len(path) <= MAX_SOURCE_CHARS:
            self.control_log.warning("control bundle refused: path must be a folder name of "
                                     "1..%d characters, got %.60r", MAX_SOURCE_CHARS, path)
            return
        target = Path(path).resolve()
        if target not in self.allowed_bundles():
            self.control_log.warning("control bundle refused: %.200s is not one of the "
                                     "shipped bundles or the one given to pleura live", path)
            return
        try:
            load_bundle(target)
        except BundleError as exc:
            self.control_log.warning("control bundle refused: %.300s", exc)
            return
        for c in self._workers():
            if c.spec.config is None:
                continue
            c.spec = replace(c.spec, config=replace(c.spec.config, bundle=str(target)))
            self._stop_child(c)
            c.loaded, c.beating, c.done = False, False, False
        ui = self.children.get("ui")
        if ui is not None and ui.spec.config is not None:  # a restarted page shows it too
            ui.spec = replace(ui.spec, config=replace(ui.spec.config, bundle=str(target)))
        log.info("bundle switched to %s; worker restarting", target)
        if self.stats is not None:
            self.stats.events.append({"t": round(time.time() - self.stats.t0, 3),
                                      "event": "bundle", "path": str(target)})

    def _record(self, on: bool, out: str | None = None) -> None:
        """Start / stop the recorder on request (the UI's record switch)."""
        rec = self.children.get("recorder")
        if on and (rec is None or rec.done or rec.proc is None):
            out = out if isinstance(out, str) and out else self.record_dir or str(
                Path("recordings") / time.strftime("%Y%m%d-%H%M%S"))
            spec = recorder_spec(out, self.plan.frames, self.plan.results, self.plan.status)
            self.children["recorder"] = Child(spec)
            log.info("recording to %s", out)
        elif not on and rec is not None and rec.proc is not None:
            rec.done = True
            rec.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                rec.proc.wait(3.0)
            log.info("recording stopped")

    # ------------------------------------------------------------------ main loop
    def run(self, seconds: float | None = None) -> int:
        status = self.ctx.socket(zmq.PULL)
        status.setsockopt(zmq.LINGER, 0)
        status.bind(self.plan.status)
        ui_ctl = self.ctx.socket(zmq.SUB)
        ui_ctl.setsockopt(zmq.SUBSCRIBE, b"")
        ui_ctl.setsockopt(zmq.LINGER, 0)
        ui_ctl.bind(self.plan.ui_control)
        fwd = self.ctx.socket(zmq.PUB)
        fwd.setsockopt(zmq.LINGER, 0)
        for a in (self.plan.worker_control, *self.plan.capture_controls):
            fwd.connect(a)
        results = None
        poller = zmq.Poller()
        poller.register(status, zmq.POLLIN)
        poller.register(ui_ctl, zmq.POLLIN)
        if self.stats is not None:
            results = self.ctx.socket(zmq.SUB)
            results.setsockopt(zmq.RCVHWM, 10000)
            results.setsockopt(zmq.SUBSCRIBE, b"")
            results.setsockopt(zmq.LINGER, 0)
            results.connect(self.plan.results)
            poller.register(results, zmq.POLLIN)
        self.t_start = time.time()
        t_end = None if seconds is None else time.time() + seconds
        ended_at = None
        next_sample = 0.0
        try:
            while not self.stop_event.is_set():
                now = time.time()
                if t_end is not None and now >= t_end:
                    log.info("run time reached (%.0f s); stopping", seconds)
                    break
                self._watch(now)
                if any(self.children[n].spec.role in ("worker", "ui") for n in self.failed):
                    log.error("a required process cannot run (see above); stopping")
                    break
                caps = [c for c in self.children.values() if c.spec.role == "capture"]
                if self.headless and caps and all(c.done for c in caps):
                    ended_at = ended_at or now
                    if now - ended_at > 1.0:  # let the last results arrive
                        log.info("all sources ended; stopping")
                        break
                for sock, _ in poller.poll(50):
                    self._drain(sock, status, ui_ctl, results, fwd)
                if self.stats is not None and now >= next_sample:
                    self.stats.sample_resources(self.pids())
                    next_sample = now + 1.0
        finally:
            self.shutdown()
            for s in (status, ui_ctl, fwd, results):
                if s is not None:
                    s.close(0)
        return 2 if self.failed else 0

    def _drain(self, sock, status, ui_ctl, results, fwd) -> None:
        for _ in range(1000):
            try:
                raw = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            t = time.time()
            if sock is ui_ctl:
                self._route_control(raw, fwd)
                continue
            try:
                msg = decode(raw)
            except WireError as exc:
                log.warning("bad message on the %s socket dropped: %s",
                            "status" if sock is status else "results", exc)
                continue
            if sock is status and msg.kind == Kind.HEARTBEAT:
                pid = msg.meta.get("pid")
                for c in self.children.values():
                    if c.proc is not None and c.proc.pid == pid:
                        c.last_beat, c.beating = t, True
                        if msg.meta.get("standby") and not c.loaded:
                            c.loaded = True
                            log.info("standby worker loaded (pid %d)", pid)
                        if c.spec.role == "worker" and msg.meta.get("ready"):
                            self.worker_ready = True
                        if c.spec.role == "worker" and msg.meta.get("ready") and self.stats:
                            self.stats.events.append({"t": round(t - self.stats.t0, 3),
                                                      "event": "ready", "process": c.spec.name,
                                                      "pid": pid})
                if self.stats is not None:
                    self.stats.on_heartbeat(msg.meta)
            elif sock is results and msg.kind == Kind.RESULT and self.stats is not None:
                self.stats.on_result(msg, t)

    def shutdown(self, grace_s: float = 3.0) -> None:
        """SIGTERM every child, SIGKILL what is left after ``grace_s``."""
        live = [c.proc for c in self.children.values()
                if c.proc is not None and c.proc.poll() is None]
        for p in live:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        deadline = time.time() + grace_s
        for p in live:
            try:
                p.wait(max(0.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                log.warning("pid %d did not stop; killing it", p.pid)
                p.kill()
                p.wait(2.0)
        shutil.rmtree(self.config_dir, ignore_errors=True)
