"""Issue #15, worker / capture / bundle side: no single message, request or file stops pleura.

The process tests share one real worker process (module fixture; the engines' dummy bundle,
segmentation off) fed over ipc:// ZeroMQ sockets; each test uses its own stream ids. A capture
process on a dead rtsp:// address feeds the same worker on a second frames socket.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq

from engines import BundleError, create_engine, load_bundle
from engines.bundle import sha256_file
from engines.testing import make_dummy_bundle
from stream.stats import RunStats
from stream.wire import HEADER, MAX_JSON_BYTES, Kind, Message, decode, encode

IMG = np.random.default_rng(0).integers(0, 255, (120, 160), dtype=np.uint8)


def _pleura(*args: str) -> list[str]:
    return [sys.executable, "-m", "stream", *args]


def _frame(sid: int, seq: int, array=IMG, **meta) -> bytes:
    m = Message(Kind.FRAME, sid, seq, array=array,
                meta={"source": f"test-{sid}", "session": 1, "epoch": 0, "index": seq, **meta})
    m.stamp("grabbed", time.time())
    m.stamp("sent", time.time())
    return encode(m)


def _control(**meta) -> bytes:
    return encode(Message(Kind.CONTROL, meta=meta))


class Rig:
    """A worker process and the test's ends of its sockets."""

    def __init__(self, d: Path) -> None:
        self.d = d
        self.addr = {k: f"ipc://{d}/{k}.sock"
                     for k in ("frames", "frames_cap", "results", "status", "ctl")}
        ctx = zmq.Context.instance()
        self.status = ctx.socket(zmq.PULL)
        self.status.bind(self.addr["status"])
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.setsockopt(zmq.RCVHWM, 10000)
        self.sub.connect(self.addr["results"])
        self.pub = ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.SNDHWM, 10000)
        self.pub.bind(self.addr["frames"])
        self.ctl = ctx.socket(zmq.PUB)
        self.ctl.connect(self.addr["ctl"])
        self.bundle = make_dummy_bundle(d / "bundle", seg=False)
        self.log = d / "worker.log"
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen(_pleura(
                "worker", "--frames", self.addr["frames"], "--frames", self.addr["frames_cap"],
                "--results", self.addr["results"], "--status", self.addr["status"],
                "--control", self.addr["ctl"], "--bundle", str(self.bundle), "--seg", "off",
                "--max-streams", "8", "--stream-idle-s", "60"), stderr=err)
        self.beat = self.wait_beat(lambda m: m.get("role") == "worker" and m.get("ready"), 90)
        self.sync()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_beat(self, pred: Callable[[dict], bool], timeout: float = 10.0) -> dict:
        """The next heartbeat (any process) that satisfies ``pred``."""
        t_end = time.time() + timeout
        while time.time() < t_end:
            assert self.alive(), f"worker exited {self.proc.returncode}: {self.tail()}"
            if self.status.poll(100):
                meta = decode(self.status.recv()).meta
                if pred(meta):
                    return meta
        raise AssertionError(f"no matching heartbeat in {timeout} s")

    def worker_beat(self, pred: Callable[[dict], bool] = lambda m: True,
                    timeout: float = 10.0) -> dict:
        return self.wait_beat(lambda m: m.get("role") == "worker" and "dropped" in m
                              and pred(m), timeout)

    def result(self, pred: Callable[[Message], bool], timeout: float = 10.0) -> Message:
        """The next RESULT that satisfies ``pred``."""
        t_end = time.time() + timeout
        while time.time() < t_end:
            assert self.alive(), f"worker exited {self.proc.returncode}: {self.tail()}"
            if self.sub.poll(100):
                m = decode(self.sub.recv())
                if m.kind == Kind.RESULT and pred(m):
                    return m
        raise AssertionError(f"no matching result in {timeout} s")

    def dropped(self, kind: str) -> int:
        return int(self.worker_beat()["dropped"][kind])

    def send_dropped(self, raw: bytes, kind: str, n: int) -> int:
        """Send a message the worker must drop as ``kind``; wait until it is counted."""
        self.pub.send(raw)
        return int(self.worker_beat(lambda m: m["dropped"][kind] > n)["dropped"][kind])

    def score(self, sid: int, seq: int, **meta) -> Message:
        """Send one valid frame and wait for its result."""
        self.pub.send(_frame(sid, seq, **meta))
        return self.result(lambda m: m.stream_id == sid and m.seq == seq
                           and not m.meta.get("resent"))

    def sync(self) -> None:
        """Until a frame gets its result (the SUB sockets are connected both ways)."""
        t_end = time.time() + 30
        while time.time() < t_end:
            self.pub.send(_frame(0, 0))
            try:
                self.result(lambda m: m.stream_id == 0, timeout=0.5)
                return
            except AssertionError:
                continue
        raise AssertionError("the worker never answered a frame")

    def tail(self) -> str:
        return self.log.read_text()[-3000:]

    def close(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for s in (self.status, self.sub, self.pub, self.ctl):
            s.close(0)


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    r = Rig(tmp_path_factory.mktemp("hardening"))
    yield r
    r.close()


# --------------------------------------------------------------------------- item 3


def test_oversize_or_mistyped_meta_is_dropped_and_the_worker_lives(rig):
    n = rig.dropped("bad_meta")
    huge = "s" * (MAX_JSON_BYTES - 300)  # the FRAME fits the wire, its RESULT would not
    n = rig.send_dropped(_frame(1, 1, source=huge), "bad_meta", n)
    rig.score(1, 2)  # a good frame of the same stream is still scored
    state = "x" * (MAX_JSON_BYTES - 100)
    n = rig.send_dropped(encode(Message(Kind.HEARTBEAT, 1, 3, meta={"state": state})),
                         "bad_meta", n)
    for bad in ({"source": ["a"]}, {"index": "7"}, {"roi": [1, 2, 3]}, {"pts_s": "now"},
                {"full_hw": [0, 10]}, {"session": {"a": 1}}, {"state": 5}):
        n = rig.send_dropped(_frame(1, 4, **bad), "bad_meta", n)
    r = rig.score(1, 5)
    assert r.meta["source"] == "test-1" and r.meta["video"]["n_frames"] == 2
    assert rig.alive()
    assert "Traceback" not in rig.tail()
    assert "source too long" in rig.tail()


def test_an_old_wire_version_is_refused_counted_and_logged_once(rig):
    """A version-1 FRAME (an older capture): refused with one clear line, counted apart from
    garbage, and the worker keeps scoring."""
    v1 = struct.Struct("<4sBBBBHHQ8d4II")
    body = b'{"source":"old"}'
    old = v1.pack(b"PLRA", 1, 1, 1, 2, 1, 0, 9, *([0.0] * 8), 4, 4, 0, 0, len(body)) + body \
        + bytes(16)
    n, g = rig.dropped("old_version"), rig.dropped("garbage")
    for _ in range(5):
        n = rig.send_dropped(old, "old_version", n)
    assert rig.dropped("garbage") == g
    rig.score(1, 10)
    assert rig.alive()
    assert rig.tail().count("wire version 1 message refused: this build speaks version 2") == 1


def test_fuzzed_messages_never_stop_the_worker(rig):
    """Garbage, truncated, bit-flipped, mistyped and oversize messages on the frames and control
    sockets (fixed seed, bounded): the worker stays up and still scores a valid frame."""
    rng = np.random.default_rng(15)
    valid = _frame(2, 1)
    weird = [None, True, -1, 2**70, 1e308, float("nan"), "", "x" * 5000, [], [[[]]], {"a": []}]
    keys = ["source", "index", "pts_s", "epoch", "session", "state", "full_hw", "roi", "sent"]
    arrays = [np.zeros((0, 5), np.uint8), np.zeros((1, 9000), np.uint8),
              np.zeros((3, 3, 7), np.uint8), np.zeros((2, 2, 2, 2), np.uint8),
              np.zeros((8, 8), np.float32), np.zeros((1, 1), np.uint8),
              np.zeros((4, 4, 1), np.uint8)]
    msgs = []
    for i in range(240):
        kind = i % 6
        if kind == 0:
            raw = rng.bytes(int(rng.integers(0, 400)))
        elif kind == 1:
            raw = valid[:int(rng.integers(0, len(valid)))]
        elif kind == 2:
            b = bytearray(valid)
            for _ in range(3):
                b[int(rng.integers(0, HEADER.size + 80))] = int(rng.integers(0, 256))
            raw = bytes(b)
        elif kind == 3:
            meta = {str(k): weird[int(rng.integers(len(weird)))]
                    for k in rng.choice(keys, size=3, replace=False)}
            raw = encode(Message(Kind.FRAME, 2, i, meta=meta, array=IMG))
        elif kind == 4:
            raw = encode(Message(Kind.FRAME, 2, i, meta={"source": "f"},
                                 array=arrays[int(rng.integers(len(arrays)))]))
        else:
            k = (Kind.HEARTBEAT, Kind.RESULT, Kind.CONTROL)[int(rng.integers(3))]
            meta = {"state": weird[int(rng.integers(len(weird)))], "detail": "d" * 2000}
            raw = encode(Message(k, int(rng.integers(0, 1 << 16)), i, meta=meta))
        msgs.append(raw)
    t0 = time.time()
    for i, raw in enumerate(msgs):
        rig.pub.send(raw)
        if i % 3 == 0:
            rig.ctl.send(raw if i % 2 else _control(cmd=weird[i % len(weird)], stream_id=raw[:3]
                                                    .hex()))
        time.sleep(0.004)
    rig.pub.send(encode(Message(Kind.FRAME, 2, 999, meta={"source": "y" * (MAX_JSON_BYTES - 64)},
                                array=IMG)))
    assert time.time() - t0 < 20
    r = rig.score(2, 1000)
    assert r.meta["video"]["n_frames"] >= 1 and r.array.shape == IMG.shape
    beat = rig.worker_beat()
    assert sum(beat["dropped"].values()) > 0
    assert "Traceback" not in rig.tail()


# --------------------------------------------------------------------------- item 4


def test_worker_process_holds_at_most_max_streams(rig):
    n = rig.dropped("evicted")
    for sid in range(100, 140):
        rig.score(sid, 1)
    beat = rig.worker_beat(lambda m: m["dropped"]["evicted"] >= n + 32)
    assert beat["streams"] <= 8


def test_stream_states_are_bounded_lru_and_expire(tmp_path):
    from stream.worker import Worker, WorkerConfig

    bundle = make_dummy_bundle(tmp_path / "b", seg=False)
    w = Worker(WorkerConfig(frames_addrs=(), results_addr="", bundle=str(bundle),
                            backend="onnxruntime", threads=1, seg="off", max_streams=16,
                            stream_idle_s=5.0))
    now = [0.0]
    w.streams.clock = lambda: now[0]
    from stream.messages import FrameMeta

    def msg(sid: int, seq: int) -> tuple[Message, FrameMeta]:
        m = decode(_frame(sid, seq, array=IMG[:32, :32]))
        return m, FrameMeta.parse(m.meta)

    try:
        held = 0
        for start in range(0, 1000, 10):
            now[0] += 0.001
            batch = [msg(sid, 1) for sid in range(start, start + 10)] + [msg(5000, start)]
            for res, st in w.process(batch):
                w.finish(res, st)
            held = max(held, len(w.streams))
        assert held <= 16 and len(w.streams) == 16
        assert 5000 in w.streams  # seen with every batch: never the least recent
        assert w.streams.peek(5000).running.n_frames == 100
        assert w.dropped()["evicted"] == 1001 - 16
        now[0] += 4.0
        w.expire()
        assert len(w.streams) == 16  # not idle long enough yet
        now[0] += 1.5
        w.expire()
        assert len(w.streams) == 0 and w.dropped()["expired"] == 16
    finally:
        w.close()


# --------------------------------------------------------------------------- item 5


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket is closed


def test_capture_on_a_dead_live_source_reports_state_and_stops_on_sigterm(rig):
    url = f"rtsp://127.0.0.1:{_closed_port()}/live"
    cap = subprocess.Popen(_pleura("capture", "--source", url, "--frames",
                                   rig.addr["frames_cap"], "--stream-id", "7", "--status",
                                   rig.addr["status"]), stderr=subprocess.PIPE, text=True)
    try:
        beat = rig.wait_beat(lambda m: m.get("role") == "capture"
                             and m.get("state") == "reconnecting", 30)
        assert beat["sent"] == 0
        # the worker publishes the state of a source that never delivered a frame
        r = rig.result(lambda m: m.stream_id == 7 and m.meta.get("source_state")
                       == "reconnecting", 30)
        assert r.meta["status_only"] and r.meta["score"] is None and r.meta["source"] == url
        assert "Connection refused" in r.meta["source_detail"]
        t0 = time.monotonic()
        cap.send_signal(signal.SIGTERM)
        try:
            rc = cap.wait(10)
        except subprocess.TimeoutExpired:
            rc = None
        took = time.monotonic() - t0
        assert rc == 0 and took < 3.0, f"capture still running {took:.1f} s after SIGTERM"
    finally:
        if cap.poll() is None:
            cap.kill()
            cap.wait()
    err = cap.stderr.read()
    assert "connecting" in err and "playing" not in err  # no frame ever: never "playing"
    assert "Traceback" not in err


# --------------------------------------------------------------------------- item 6


def _rename_frame_model(bundle: Path, name: str, target: Path) -> None:
    m = json.loads((bundle / "manifest.json").read_text())
    m["files"][name] = {"sha256": sha256_file(target), "bytes": target.stat().st_size}
    m["models"]["frame"]["file"] = m["models"]["frame"]["cpu_default"] = name
    (bundle / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("how", ["parent", "absolute", "symlink"])
def test_bundle_names_outside_the_folder_are_refused(tmp_path, how):
    other = make_dummy_bundle(tmp_path / "cnn-sord", seg=False)
    b = make_dummy_bundle(tmp_path / "b", seg=False)
    if how == "parent":
        name, target = "../cnn-sord/frame.onnx", other / "frame.onnx"
    elif how == "absolute":
        name, target = "/etc/passwd", Path("/etc/passwd")
    else:
        name, target = "linked.onnx", other / "frame.onnx"
        os.symlink(target, b / name)
    _rename_frame_model(b, name, target)
    with pytest.raises(BundleError, match=re.escape(name)) as err:
        load_bundle(b)
    assert "outside" in str(err.value)


def test_unloadable_model_is_a_one_line_error_and_exit_2(tmp_path):
    b = make_dummy_bundle(tmp_path / "b", seg=False)
    (b / "frame.onnx").write_text("root:x:0:0:root:/root:/bin/bash\n")
    _rename_frame_model(b, "frame.onnx", b / "frame.onnx")  # hashes match: only ORT objects
    with pytest.raises(BundleError, match=r"ONNX Runtime cannot load frame\.onnx"):
        create_engine(b, backend="onnxruntime")
    clip = tmp_path / "clip"
    clip.mkdir()
    cv2.imwrite(str(clip / "0.png"), IMG)
    out = subprocess.run(_pleura("score", str(clip), "--bundle", str(b)), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr + out.stdout
    msg = [ln for ln in out.stdout.splitlines() if "ONNX Runtime cannot load frame.onnx" in ln]
    assert len(msg) == 1 and msg[0].startswith("pleura score: bundle ")


def test_unloadable_segmentation_member_is_a_bundle_error_naming_it(tmp_path):
    b = make_dummy_bundle(tmp_path / "b", seg=True)
    (b / "seg-dummy.onnx").write_bytes(b"\x00" * 64)
    m = json.loads((b / "manifest.json").read_text())
    m["files"]["seg-dummy.onnx"] = {"sha256": sha256_file(b / "seg-dummy.onnx"), "bytes": 64}
    (b / "manifest.json").write_text(json.dumps(m))
    eng = create_engine(b, backend="onnxruntime", threads=1)  # the frame model loads
    spec = eng.bundle.seg_spec
    with pytest.raises(BundleError, match=r"cannot load seg-dummy\.onnx"):
        eng.segment(np.zeros((1, spec.channels, spec.height, spec.width), np.float32))


# --------------------------------------------------------------------------- item 7


def test_run_stats_stay_consistent_across_capture_and_worker_restarts():
    s = RunStats()

    def result(seq: int, session: float, worker: int, skipped: int) -> Message:
        m = Message(Kind.RESULT, 0, seq, meta={"source": "a", "capture_session": session,
                                               "capture_sent": seq, "worker_pid": worker,
                                               "skipped": skipped})
        m.stamp("grabbed", time.time())
        m.stamp("published", time.time())
        return m

    for seq in range(500):  # capture session 1, worker 11
        s.on_result(result(seq, 1.0, 11, seq // 10), time.time())
    s.on_heartbeat({"role": "capture", "pid": 1, "session": 1.0, "stream_id": 0, "sent": 500})
    for seq in range(228):  # capture restarted (session 2), worker restarted (12)
        s.on_result(result(seq, 2.0, 12, seq // 20), time.time())
    s.on_heartbeat({"role": "capture", "pid": 2, "session": 2.0, "stream_id": 0, "sent": 273})
    s.on_heartbeat({"role": "worker", "pid": 12, "dropped": {"garbage": 3, "errors": 1}})
    f = s.summary()
    assert f["frames"]["processed"] == 728 and f["frames"]["captured"] == 773
    assert f["frames"]["scored_pct"] <= 100.0
    assert f["frames"]["skipped"] == 49 + 11
    assert f["streams"]["0"]["capture_sessions"] == 2
    assert f["worker_dropped"] == {"garbage": 3, "errors": 1}


def test_reset_one_stream_refuse_unknown_ids_and_rate_limit_the_log(rig):
    for seq in (1, 2):
        rig.score(20, seq)
        rig.score(21, seq)
    b0 = rig.worker_beat()
    refused, resets = b0["dropped"]["reset_refused"], b0["resets"]
    rig.ctl.send(_control(cmd="reset", stream_id="x"))
    rig.ctl.send(_control(cmd="reset", stream_id=999))
    rig.worker_beat(lambda m: m["dropped"]["reset_refused"] >= refused + 2)
    assert rig.score(20, 3).meta["video"]["n_frames"] == 3  # "x" reset nothing
    assert rig.score(21, 3).meta["video"]["n_frames"] == 3
    rig.ctl.send(_control(cmd="reset", stream_id=21))
    rig.worker_beat(lambda m: m["resets"] >= resets + 1)
    assert rig.score(20, 4).meta["video"]["n_frames"] == 4  # stream 20 untouched
    assert rig.score(21, 4).meta["video"]["n_frames"] == 1  # stream 21 restarted
    lines_before = rig.log.read_text().count("reset")
    for _ in range(300):
        rig.ctl.send(_control(cmd="reset", stream_id=21))
    rig.worker_beat(lambda m: m["resets"] >= resets + 301)
    assert rig.log.read_text().count("reset") - lines_before <= 10
    text = rig.log.read_text()
    assert "reset refused: stream_id must be an integer, got 'x'" in text
    assert "reset refused: unknown stream 999" in text
