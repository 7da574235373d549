"""Capture process alone: paced frames on a PUB socket, pause / resume over CONTROL."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq

from stream.wire import Kind, Message, decode, encode

DEMO = Path(__file__).resolve().parents[1] / "stream" / "demo" / "demo-linear.mp4"


def _frames(sub: zmq.Socket, seconds: float, states: list[str] | None = None) -> list[Message]:
    """FRAME messages received for ``seconds``; source states said meanwhile go to ``states``."""
    out, t_end = [], time.time() + seconds
    while time.time() < t_end:
        if sub.poll(50):
            m = decode(sub.recv())
            if m.kind == Kind.FRAME:
                out.append(m)
            elif m.kind == Kind.HEARTBEAT and states is not None:
                states.append(m.meta.get("state"))
    return out


@pytest.mark.skipif(not DEMO.exists(), reason="stream/demo clips not present")
def test_capture_paces_pauses_and_resumes(tmp_path):
    clip = DEMO  # simulated, 20 fps
    frames_addr, ctl_addr = f"ipc://{tmp_path}/f.sock", f"ipc://{tmp_path}/c.sock"
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(frames_addr)
    ctl = ctx.socket(zmq.PUB)
    ctl.connect(ctl_addr)
    cap = subprocess.Popen([sys.executable, "-m", "stream", "capture", "--source", str(clip),
                            "--frames", frames_addr, "--control", ctl_addr, "--loop"])
    try:
        deadline = time.time() + 60
        while not sub.poll(100):  # wait for the process to start playing
            assert time.time() < deadline and cap.poll() is None
        playing = _frames(sub, 1.5)
        assert len(playing) >= 10
        fps = (len(playing) - 1) / (playing[-1].at("grabbed") - playing[0].at("grabbed"))
        assert 10 <= fps <= 40  # paced near the clip's own rate, not as fast as possible
        seqs = [m.seq for m in playing]
        assert seqs == sorted(seqs) and playing[0].array.ndim == 2  # grey, in order
        ctl.send(encode(Message(Kind.CONTROL, meta={"cmd": "pause"})))
        states: list[str] = []
        in_flight = _frames(sub, 0.5, states)
        assert _frames(sub, 1.0, states) == []  # paused: nothing sent
        assert "paused" in states  # and the worker (so the page) is told (issue #14)
        last = (playing + in_flight)[-1].meta["index"]
        ctl.send(encode(Message(Kind.CONTROL, meta={"cmd": "resume"})))
        resumed = _frames(sub, 1.0)
        assert len(resumed) >= 5, "no frames (or one) after resume"
        assert resumed[0].meta["state"] == "playing"
        # a file resumes where it was held; had it kept playing, 1.5 s = 30 frames had passed
        assert 1 <= resumed[0].meta["index"] - last <= 3
        ctl.send(encode(Message(Kind.CONTROL, meta={"cmd": "stop"})))
        states = []
        _frames(sub, 0.5, states)
        assert _frames(sub, 2.5, states) == [] and "stopped" in states
        assert states.count("stopped") >= 2  # said again while stopped (CONFLATE, late joiners)
    finally:
        cap.send_signal(signal.SIGTERM)
        cap.wait(10)
        sub.close(0)
        ctl.close(0)
    assert cap.returncode == 0
