"""Supervisor: CONTROL routing from the UI, restart policy, and the pipeline wiring."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace

import zmq

from stream.config import CaptureConfig, LiveSettings, PleuraConfig, WorkerConfig, WorkerSettings
from stream.pipeline import Plan, ProcSpec, compose
from stream.supervisor import Supervisor
from stream.wire import Kind, Message, decode, encode

SLEEP = (sys.executable, "-c", "import time; time.sleep(60)")


def _sleeper(name: str, role: str, addr: str) -> ProcSpec:
    return ProcSpec(name, role, SLEEP, config=CaptureConfig(source="a.mp4", frames_addr=addr))


def _config(proc) -> dict:
    """The config a child was started with: the JSON file after its ``--config``."""
    args = list(proc.args)
    return json.loads(open(args[args.index("--config") + 1]).read())


def _live(sources, bundle="B", **live) -> PleuraConfig:
    return PleuraConfig(live=LiveSettings(sources=sources, **live),
                        worker=WorkerSettings(bundle=bundle))


def test_compose_wires_every_stage(tmp_path):
    cfg = _live(("a.mp4", "v4l2:///dev/video0"), record="R", headless=False)
    plan = compose(cfg, tmp_path)
    names = [p.name for p in plan.procs]
    assert names == ["capture-0", "capture-1", "worker", "worker-standby", "recorder", "ui"]
    procs = dict(zip(names, plan.procs, strict=True))
    assert [procs[f"capture-{i}"].config.source for i in (0, 1)] == list(cfg.live.sources)
    assert [procs[f"capture-{i}"].config.frames_addr for i in (0, 1)] == list(plan.frames)
    worker = procs["worker"].config
    assert worker.frames_addrs == plan.frames and worker.bundle == "B"
    assert worker.results_addr == plan.results and worker.control_addr == plan.worker_control
    assert procs["worker-standby"].config == replace(worker, standby=True, restarted=True)
    ui = procs["ui"].config
    assert ui.results_addr == plan.results and ui.control_addrs == (plan.ui_control,)
    assert all("--bundle" not in p.argv for p in plan.procs)  # settings never travel as argv
    addrs = [*plan.frames, plan.results, plan.worker_control, *plan.capture_controls,
             plan.ui_control, plan.status]
    assert len(set(addrs)) == len(addrs)
    assert {row[0] for row in plan.wiring()} == set(addrs)
    tcp = compose(_live(("a",), transport="tcp", headless=True), tmp_path)
    assert tcp.results.startswith("tcp://127.0.0.1:") and "ui" not in [p.name for p in tcp.procs]


def test_control_routing_and_restart(tmp_path):
    a = {k: f"ipc://{tmp_path}/{k}.sock" for k in ("f", "r", "w", "c", "u", "s")}
    plan = Plan(frames=(a["f"],), results=a["r"], worker_control=a["w"],
                capture_controls=(a["c"],), ui_control=a["u"], status=a["s"],
                procs=(_sleeper("capture-0", "capture", a["f"]),))
    sup = Supervisor(plan, headless=False)
    sup.worker_ready = True
    ctx = zmq.Context.instance()
    worker_ctl = ctx.socket(zmq.SUB)
    worker_ctl.setsockopt(zmq.SUBSCRIBE, b"")
    worker_ctl.bind(a["w"])
    fwd = ctx.socket(zmq.PUB)
    fwd.connect(a["w"])
    try:
        sup._watch(time.time())
        cap = sup.children["capture-0"]
        first = cap.proc
        assert first is not None and first.poll() is None
        # A bound SUB hands its subscription to a connecting PUB only once it processes
        # commands (libzmq #2267); the real processes poll their control socket continuously.
        worker_ctl.poll(300)
        # "reset" is forwarded to the worker
        sup._route_control(encode(Message(Kind.CONTROL, meta={"cmd": "reset"})), fwd)
        assert worker_ctl.poll(3000)
        assert decode(worker_ctl.recv()).meta == {"cmd": "reset"}
        # "source" restarts capture 0 on the new source, with the loop flag asked for
        msg = Message(Kind.CONTROL, meta={"cmd": "source", "uri": "b.mp4", "loop": True})
        sup._route_control(encode(msg), fwd)
        assert first.poll() is not None
        sup._watch(time.time())
        assert cap.proc is not None and cap.proc is not first
        started = _config(cap.proc)["capture"]
        assert started["source"] == "b.mp4" and started["loop"] is True
        # "record" starts and stops a recorder process on the pipeline's addresses
        out = tmp_path / "rec"
        sup._route_control(encode(Message(Kind.CONTROL, meta={"cmd": "record", "on": True,
                                                              "dir": str(out)})), fwd)
        sup._watch(time.time())
        rec = sup.children["recorder"].proc
        assert rec is not None and rec.poll() is None
        assert rec.args[rec.args.index("--out") + 1] == str(out) and a["f"] in rec.args
        sup._route_control(encode(Message(Kind.CONTROL, meta={"cmd": "record", "on": False})),
                           fwd)
        assert rec.poll() is not None
        # garbage on the control socket is dropped
        sup._route_control(b"nonsense", fwd)
        # a crashed capture is restarted with backoff
        cap.proc.kill()
        cap.proc.wait()
        sup._watch(time.time())
        assert cap.proc is None and cap.restarts == 1 and cap.next_start > time.time()
    finally:
        sup.shutdown(grace_s=1.0)
        worker_ctl.close(0)
        fwd.close(0)


def test_bundle_command_restarts_the_worker_on_an_allowed_bundle(tmp_path):
    """The page's bundle menu (issue #14): "bundle" restarts worker and standby on a shipped
    bundle; a path that is not offered, or does not load, leaves the running worker alone."""
    from engines.bundle import default_bundle_path, shipped_bundles

    other = next((p for p in shipped_bundles() if p.name != "default"), None)
    if other is None:
        import pytest

        pytest.skip("needs a second shipped bundle")
    a = {k: f"ipc://{tmp_path}/{k}.sock" for k in ("f", "r", "w", "c", "u", "s")}

    def worker(name: str, role: str) -> ProcSpec:
        return ProcSpec(name, role, SLEEP, config=WorkerConfig(
            frames_addrs=(a["f"],), results_addr=a["r"], bundle=str(default_bundle_path())))

    plan = Plan(frames=(a["f"],), results=a["r"], worker_control=a["w"],
                capture_controls=(a["c"],), ui_control=a["u"], status=a["s"],
                procs=(worker("worker", "worker"), worker("worker-standby", "standby")))
    sup = Supervisor(plan, headless=False)
    sup.worker_ready = True  # the standby starts once the worker is ready
    ctx = zmq.Context.instance()
    fwd = ctx.socket(zmq.PUB)
    try:
        sup._watch(time.time())
        first = {n: c.proc for n, c in sup.children.items()}
        for bad in ("/etc", str(tmp_path), 7):
            sup._route_control(encode(Message(Kind.CONTROL, meta={"cmd": "bundle",
                                                                  "path": bad})), fwd)
            assert all(c.proc is first[n] and c.proc.poll() is None
                       for n, c in sup.children.items())
        sup._route_control(encode(Message(Kind.CONTROL, meta={"cmd": "bundle",
                                                              "path": str(other)})), fwd)
        assert all(p.poll() is not None for p in first.values())  # stopped
        sup._watch(time.time())
        for c in sup.children.values():
            started = _config(c.proc)["worker"]
            assert c.proc is not first[c.spec.name]
            assert started["bundle"] == str(other.resolve())
            assert not started["restarted"]  # a chosen switch, not a crash
        # and back to the bundle the pipeline started with
        sup._route_control(encode(Message(Kind.CONTROL, meta={"cmd": "bundle", "path": str(
            default_bundle_path())})), fwd)
        sup._watch(time.time())
        started = _config(sup.children["worker"].proc)["worker"]
        assert started["bundle"] == str(default_bundle_path().resolve())
    finally:
        sup.shutdown(grace_s=1.0)
        fwd.close(0)
