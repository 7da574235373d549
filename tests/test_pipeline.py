"""Integration: real capture / worker / supervisor processes over loopback ZeroMQ (ipc://).

Uses a simulated clip written here with PyAV and the engines' dummy bundle (tiny, real ONNX
models with the real input/output contract), so it runs without shared data or a trained model.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import psutil
import pytest
import zmq

from engines.findings import RunningFindings
from engines.scorer import load_scorer
from engines.testing import DUMMY_FINDINGS, make_dummy_bundle
from engines.uninorm import RunningUninorm
from stream.score import score_frames
from stream.sources import decode_file
from stream.wire import STAGES, Kind, Message, decode, encode

FPS = 30


def write_sim_clip(path: Path, n: int = 90, hw: tuple[int, int] = (180, 240)) -> Path:
    """A simulated B-mode-like clip: speckle, a moving bright line, a pulsing dark region."""
    rng = np.random.default_rng(0)
    h, w = hw
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"crf": "18", "preset": "ultrafast"}
        for i in range(n):
            img = rng.integers(0, 90, (h, w), dtype=np.uint8)
            y = 30 + int(20 * np.sin(i / 8))
            img[y:y + 6] = 230
            img[100:100 + (i % 40), 60:180] //= 4
            frame = av.VideoFrame.from_ndarray(np.repeat(img[..., None], 3, 2), format="rgb24")
            for p in s.encode(frame):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipe")
    return {"dir": d, "clip": write_sim_clip(d / "sim.mp4"),
            "bundle": make_dummy_bundle(d / "bundle", findings=True)}


def pleura(*args: str) -> list[str]:
    return [sys.executable, "-m", "stream", *args]


def _wait_beat(sock: zmq.Socket, role: str, timeout: float = 60.0) -> dict:
    t_end = time.time() + timeout
    while time.time() < t_end:
        if sock.poll(200):
            m = decode(sock.recv())
            if m.kind == Kind.HEARTBEAT and m.meta.get("role") == role:
                return m.meta
    raise AssertionError(f"no heartbeat from {role} in {timeout} s")


def _stop(*procs: subprocess.Popen) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


def _worker_sockets(tmp_path: Path, rcvhwm: int | None = None):
    """IPC addresses for a worker under test, its bound status PULL and a results SUB."""
    a = {k: f"ipc://{tmp_path}/{k}.sock" for k in ("frames", "results", "status", "ctl")}
    ctx = zmq.Context.instance()
    status = ctx.socket(zmq.PULL)
    status.bind(a["status"])
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    if rcvhwm is not None:
        sub.setsockopt(zmq.RCVHWM, rcvhwm)
    sub.connect(a["results"])
    return a, ctx, status, sub


def test_live_results_equal_offline_scoring(env, tmp_path):
    a, _, status, sub = _worker_sockets(tmp_path, rcvhwm=10000)
    worker = subprocess.Popen(pleura("worker", "--frames", a["frames"], "--results",
                                     a["results"], "--status", a["status"], "--control", a["ctl"],
                                     "--bundle", str(env["bundle"]), "--backend", "onnxruntime",
                                     "--seg", "lane", "--seg-hz", "5"))
    capture = None
    try:
        _wait_beat(status, "worker")
        time.sleep(0.3)
        capture = subprocess.Popen(pleura("capture", "--source", str(env["clip"]), "--frames",
                                          a["frames"], "--status", a["status"], "--roi", "off"))
        results: list[tuple[Message, float]] = []
        t_end = time.time() + 60
        while time.time() < t_end:
            if sub.poll(500):
                m = decode(sub.recv())
                results.append((m, time.time()))
            elif capture.poll() is not None and results:
                break
        assert capture.returncode == 0
    finally:
        _stop(*(p for p in (capture, worker) if p is not None))
        status.close(0)
        sub.close(0)
    res = [m for m, _ in results if m.kind == Kind.RESULT]
    # The clip ended: the worker re-sent its last result with source_state "ended".
    assert res[-1].meta["source_state"] == "ended" and res[-1].meta["resent"]
    res = [m for m in res if not m.meta.get("resent")]
    assert {m.meta["source_state"] for m in res} == {"playing"}
    assert len(res) >= 30, f"only {len(res)} of 90 frames processed"

    offline = score_frames(decode_file(env["clip"]),
                           load_scorer(env["bundle"], backend="onnxruntime"), batch=1)
    by_index = {r["index"]: r for r in offline["frames"]}
    agg = RunningUninorm(load_scorer(env["bundle"], backend="onnxruntime").e)
    found = RunningFindings(DUMMY_FINDINGS)
    seqs = [m.seq for m in res]
    assert seqs == sorted(set(seqs)), "results out of order or duplicated"
    for m in res:
        meta = m.meta
        assert meta["index"] == m.seq  # one pass, capture numbers every frame it decodes
        assert meta["pts_s"] == pytest.approx(m.seq / FPS, abs=1e-3)
        ref = by_index[meta["index"]]
        np.testing.assert_allclose(meta["probs"], ref["probs"], atol=1e-5)
        assert meta["score"] == ref["score"]
        np.testing.assert_allclose(meta["boxes"], ref["boxes"], atol=0.02)
        video = agg.update(np.asarray(meta["probs"]))
        assert meta["video"]["n_frames"] == agg.n_frames
        np.testing.assert_allclose(meta["video"]["probs"], agg.probs, atol=1e-5)
        assert meta["video"]["score"] == int(np.argmax(video))
        # findings: the frame's equal offline scoring's; the clip's are the running summary
        assert list(meta["findings"]) == list(ref["findings"]) == list(DUMMY_FINDINGS)
        np.testing.assert_allclose(list(meta["findings"].values()),
                                   list(ref["findings"].values()), atol=1e-5)
        found.update(np.array(list(meta["findings"].values())))
        np.testing.assert_allclose([v["mean"] for v in meta["video"]["findings"].values()],
                                   found.mean, atol=1e-5)
        s = m.stamps
        assert np.all(s[:7] > 0) and np.all(np.diff(s[:7]) >= 0), dict(zip(STAGES, s, strict=True))
        assert meta["latency_ms"] == pytest.approx((s[6] - s[0]) * 1000, abs=0.01)
        assert m.array.shape == tuple(meta["frame_hw"]) == (180, 240)
    # skipped = the gaps in the sequence numbers, as the worker counted them
    gaps = sum(b - a - 1 for a, b in zip(seqs, seqs[1:], strict=False))
    assert res[-1].meta["skipped"] == gaps
    # the segmentation lane delivered masks for some frames, never a future frame's
    masked = [m for m in res if "mask" in m.arrays]
    assert masked and all(m.meta["mask_seq"] <= m.seq for m in masked)
    for m in masked:  # label maps as raw arrays beside the display frame, in one message
        assert m.arrays["mask"].shape == m.array.shape and m.arrays["mask"].max() <= 4
        assert "mask" not in m.meta


def _children(pid: int) -> dict[str, list[psutil.Process]]:
    """Live children of the supervisor by role: capture, worker (a promoted standby keeps its
    config file, ``worker-standby.json``), standby."""
    out: dict[str, list[psutil.Process]] = {"capture": [], "worker": [], "standby": []}
    for c in psutil.Process(pid).children(recursive=True):
        try:
            cmd = " ".join(c.cmdline())
        except psutil.Error:
            continue
        if " capture " in cmd:
            out["capture"].append(c)
        elif " worker " in cmd:
            out["standby" if "worker-standby" in cmd else "worker"].append(c)
    return out


def test_worker_killed_is_back_within_2s_and_capture_never_stops(env, tmp_path):
    stats_path = tmp_path / "stats.json"
    sup = subprocess.Popen(pleura("live", "--headless", "--source", str(env["clip"]), "--loop",
                                  "--bundle", str(env["bundle"]), "--seconds", "40",
                                  "--stats-json", str(stats_path)),
                           stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    loaded = threading.Event()

    def read():
        for line in sup.stderr:
            lines.append(line)
            if "standby worker loaded" in line:
                loaded.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert loaded.wait(60), "".join(lines[-20:])
        time.sleep(1.0)
        kids = _children(sup.pid)
        (capture,), (worker,) = kids["capture"], kids["worker"]
        worker.kill()
        time.sleep(3.0)
        kids = _children(sup.pid)
        assert [c.pid for c in kids["capture"]] == [capture.pid]  # capture never restarted
        assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
        everyone = kids["capture"] + kids["worker"] + kids["standby"]
        assert len(kids["standby"]) == 2  # the promoted spare + a new spare
        sup.send_signal(signal.SIGINT)  # Ctrl-C
        assert sup.wait(20) == 0
    finally:
        if sup.poll() is None:
            sup.kill()
    for p in everyone:  # no orphans
        assert not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    stats = json.loads(stats_path.read_text())
    restart = next(e for e in stats["events"] if e["event"] == "restart")
    assert restart["process"] == "worker"
    ready = [e for e in stats["events"] if e["event"] == "ready" and e["t"] >= restart["t"]]
    assert ready and ready[0]["t"] - restart["t"] <= 2.0
    assert not any(e["process"].startswith("capture") for e in stats["events"]
                   if e["event"] == "restart")
    tl = stats["video_timeline"]["0"]  # [t, seq, frame score, video score, n, restarted]
    before = [r for r in tl if r[0] < restart["t"]]
    after = [r for r in tl if r[0] > restart["t"]]
    assert before and after
    assert after[0][0] - restart["t"] <= 2.0  # results flow again within 2 s
    assert after[0][1] > before[-1][1]  # same capture, its sequence kept counting
    assert after[0][5] is True and not any(r[5] for r in before)  # marked restarted
    assert "Traceback" not in "".join(lines)


def test_garbage_and_bad_frames_are_dropped_and_reset_works(env, tmp_path):
    a, ctx, status, sub = _worker_sockets(tmp_path)
    pub = ctx.socket(zmq.PUB)
    pub.bind(a["frames"])
    ctl = ctx.socket(zmq.PUB)
    ctl.connect(a["ctl"])
    worker = subprocess.Popen(pleura("worker", "--frames", a["frames"], "--results",
                                     a["results"], "--status", a["status"], "--control", a["ctl"],
                                     "--bundle", str(env["bundle"]), "--seg", "off"),
                              stderr=subprocess.PIPE, text=True)
    try:
        _wait_beat(status, "worker")
        time.sleep(0.5)
        img = np.random.default_rng(0).integers(0, 255, (120, 160), dtype=np.uint8)

        def frame(seq: int, array=img) -> bytes:
            m = Message(Kind.FRAME, 0, seq, meta={"source": "t", "session": 1, "epoch": 0},
                        array=array)
            m.stamp("grabbed", time.time())
            m.stamp("sent", time.time())
            return encode(m)

        def result(timeout=10.0) -> Message:
            assert sub.poll(int(timeout * 1000)), "no result"
            return decode(sub.recv())

        sent = [b"garbage", os.urandom(300), b"PLRA" + bytes(200),
                frame(0, np.zeros((5, 5), np.float32))]
        for raw in sent:
            pub.send(raw)
            time.sleep(0.2)
        assert not sub.poll(300), "a bad message produced a result"
        pub.send(frame(1))
        r1 = result()
        assert r1.seq == 1 and r1.meta["video"]["n_frames"] == 1
        pub.send(frame(2))
        assert result().meta["video"]["n_frames"] == 2
        ctl.send(encode(Message(Kind.CONTROL, meta={"cmd": "reset"})))
        time.sleep(0.3)
        pub.send(frame(3))
        r3 = result()
        assert r3.meta["video"]["n_frames"] == 1  # the video score restarted
        assert worker.poll() is None
    finally:
        _stop(worker)
        for s in (status, pub, sub, ctl):
            s.close(0)
    err = worker.stderr.read()
    assert "garbage message dropped" in err and "bad frame dropped" in err
    assert "Traceback" not in err


def test_two_sources_one_worker_both_served(env, tmp_path):
    stats_path = tmp_path / "stats.json"
    out = subprocess.run(pleura("live", "--headless", "--source", str(env["clip"]), "--source",
                                str(env["clip"]), "--bundle", str(env["bundle"]), "--seg", "off",
                                "--seconds", "60", "--stats-json", str(stats_path)),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    stats = json.loads(stats_path.read_text())
    s0, s1 = stats["streams"]["0"], stats["streams"]["1"]
    assert 80 <= s0["captured"] <= 90 and 80 <= s1["captured"] <= 90  # both played through
    assert s0["processed"] >= 30 and s1["processed"] >= 30
    assert 0.5 <= s0["processed"] / s1["processed"] <= 2.0  # served fairly
    assert stats["frames"]["processed"] == s0["processed"] + s1["processed"]
    assert "Traceback" not in out.stderr
