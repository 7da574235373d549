"""The UI's sockets and live endpoints over real ZeroMQ sockets and a real HTTP app.

The RESULT messages here are made by the test (the worker is tested by the streaming tests and
end to end by tests/test_ui_browser.py); everything else is the real code path.
"""

from __future__ import annotations

import json
import threading
import time

import cv2
import numpy as np
import pytest
import zmq
from fastapi import FastAPI
from fastapi.testclient import TestClient

from stream import wire
from ui.controls import source_uri
from ui.live_routes import FrameRenderer, live_router
from ui.result_feed import ControlPublisher, ResultStore, ResultSubscriber, check_address
from ui.safety import SafetyError, UploadLimits


def _result(seq: int, score: int = 1, n_frames: int | None = None, source: str = "clip.mp4",
            shape=(48, 64)) -> wire.Message:
    probs = [0.1, 0.1, 0.1, 0.1]
    probs[score] = 0.7
    labels = np.zeros(shape, np.uint8)
    labels[35:46, 8:24] = score + 1  # clear of the boxes and the score text
    meta = {"seq": seq, "stream_id": 0, "source": source, "frame_hw": list(shape),
            "probs": probs, "score": score,
            "boxes": [[[5, 5], [30, 5], [30, 30], [5, 30]], [[30, 10], [60, 10], [60, 40],
                                                            [30, 40]]],
            "video": {"probs": probs, "score": score,
                      "n_frames": seq + 1 if n_frames is None else n_frames,
                      "restarted": False},
            "mask_seq": seq, "timing_ms": {"infer": 1.0},
            "latency_ms": 3.0, "skipped": 0, "fps": 30.0, "backend": "onnxruntime",
            "bundle": "dummy", "source_state": "playing"}
    m = wire.Message(kind=wire.Kind.RESULT, seq=seq, meta=meta,
                     array=np.full(shape, seq % 256, np.uint8), arrays={"mask": labels})
    m.stamp("grabbed", time.time() - 0.01)
    return m


def test_store_keeps_newest_and_bounded_timeline():
    store = ResultStore(timeline_len=5)
    for i in range(8):
        store.update(_result(i, score=i % 4))
    r = store.latest()
    assert r.seq == 7 and r.n == 8 and r.frame.shape == (48, 64)
    fs, vs, ex = store.timeline()
    assert fs == [3, 0, 1, 2, 3] and len(vs) == 5
    assert ex[-1] == pytest.approx(0.1 * 0 + 0.1 * 1 + 0.1 * 2 + 0.7 * 3)
    store.update(_result(8, n_frames=1))  # the running score restarted: a new timeline
    assert store.timeline()[0] == [1]
    store.update(_result(9, n_frames=2, source="other.mp4"))  # another source
    assert store.timeline()[0] == [1]
    # non-RESULT messages are ignored
    assert store.update(wire.Message(kind=wire.Kind.HEARTBEAT)) is None


def test_wait_newer_times_out_then_wakes():
    store = ResultStore()
    t = time.monotonic()
    assert store.wait_newer(0, 0.1) is None
    assert time.monotonic() - t >= 0.09
    threading.Timer(0.1, lambda: store.update(_result(3))).start()
    r = store.wait_newer(0, 2.0)
    assert r is not None and r.seq == 3
    assert store.wait_newer(r.n, 0.05) is None


def test_subscriber_over_zmq_drops_garbage_and_keeps_latest():
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    store = ResultStore()
    sub = ResultSubscriber(f"tcp://127.0.0.1:{port}", store, context=ctx, poll_ms=20)
    sub.start()
    try:
        deadline = time.time() + 10
        while store.received == 0 and time.time() < deadline:  # slow joiner
            pub.send(wire.encode(_result(0)))
            time.sleep(0.02)
        assert store.received > 0
        pub.send(b"garbage that is not a pleura message")
        time.sleep(0.1)
        for i in range(1, 50):
            pub.send(wire.encode(_result(i)))
        deadline = time.time() + 5
        while (store.latest().seq != 49 or sub.bad == 0) and time.time() < deadline:
            time.sleep(0.02)
        assert store.latest().seq == 49
        assert sub.bad >= 1 and sub.is_alive()
        assert store.latest().t_received >= store.latest().t_grabbed > 0
    finally:
        sub.stop()
        pub.close(0)
        ctx.term()


def test_control_publisher_sends_wire_control():
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    port = sub.bind_to_random_port("tcp://127.0.0.1")
    ctl = ControlPublisher(f"tcp://127.0.0.1:{port}", context=ctx)
    try:
        got = None
        deadline = time.time() + 10
        while got is None and time.time() < deadline:  # slow joiner: resend until heard
            assert ctl.send("reset")
            if sub.poll(50):
                got = wire.decode(sub.recv())
        assert got is not None and got.kind == wire.Kind.CONTROL
        assert got.meta == {"cmd": "reset"}
    finally:
        ctl.close()
        sub.close(0)
        ctx.term()
    assert ControlPublisher(None).send("reset") is False


def _client(store: ResultStore, auth=None) -> TestClient:
    app = FastAPI()
    app.include_router(live_router(store, FrameRenderer(), auth_check=auth, max_wait_s=0.5))
    return TestClient(app)


def test_live_endpoints_serve_newest_frame_with_metadata():
    store = ResultStore()
    client = _client(store)
    assert client.get("/pleura/frame.jpg?after=0&wait=0.05").status_code == 204
    store.update(_result(5, score=2))
    r = client.get("/pleura/frame.jpg?after=0&mask=1")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.content[:2] == b"\xff\xd8"
    assert r.headers["x-pleura-seq"] == "5" and r.headers["x-pleura-n"] == "1"
    meta = json.loads(r.headers["x-pleura-meta"])
    assert meta["score"] == 2 and meta["video"]["score"] == 2 and "mask" not in meta
    assert float(r.headers["x-pleura-t-received"]) >= float(r.headers["x-pleura-t-grabbed"])
    img = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (48, 64, 3)
    # nothing newer than n=1 yet: a short long-poll ends with 204
    assert client.get("/pleura/frame.jpg?after=1&wait=0.05").status_code == 204
    tl = client.get("/pleura/timeline.png?w=300&h=100")
    assert tl.status_code == 200
    assert cv2.imdecode(np.frombuffer(tl.content, np.uint8), cv2.IMREAD_COLOR).shape == (100, 300,
                                                                                         3)
    st = client.get("/pleura/state.json").json()
    assert st["latest"]["seq"] == 5 and st["timeline"]["frame"] == [2]


def test_live_meta_carries_labelled_findings_rows_only_with_a_findings_head():
    store = ResultStore()
    client = _client(store)
    store.update(_result(1))
    meta = json.loads(client.get("/pleura/frame.jpg?after=0").headers["x-pleura-meta"])
    assert meta["finding_rows"] == [] and "findings" not in meta  # the page hides the panel
    m = _result(2)
    m.meta["findings"] = {"b_lines": 0.9, "consolidations": 0.2}
    m.meta["video"]["findings"] = {
        "b_lines": {"mean": 0.6, "max": 0.9, "fraction": 0.5, "present": True},
        "consolidations": {"mean": 0.1, "max": 0.2, "fraction": 0.0, "present": False}}
    store.update(m)
    meta = json.loads(client.get("/pleura/frame.jpg?after=1").headers["x-pleura-meta"])
    assert meta["findings"] == m.meta["findings"]
    assert meta["video"]["findings"] == m.meta["video"]["findings"]
    assert meta["finding_rows"] == [
        {"name": "b_lines", "label": "B-lines", "frame": 0.9, "clip": 0.6, "present": True},
        {"name": "consolidations", "label": "consolidation", "frame": 0.2, "clip": 0.1,
         "present": False}]
    latest = client.get("/pleura/state.json").json()["latest"]["meta"]
    assert latest["findings"] == m.meta["findings"]


def test_live_endpoints_mask_toggle_changes_pixels():
    store = ResultStore()
    client = _client(store)
    store.update(_result(1, score=3))
    on = client.get("/pleura/frame.jpg?after=0&mask=1").content
    off = client.get("/pleura/frame.jpg?after=0&mask=0").content
    a = cv2.imdecode(np.frombuffer(on, np.uint8), cv2.IMREAD_COLOR).astype(int)
    b = cv2.imdecode(np.frombuffer(off, np.uint8), cv2.IMREAD_COLOR).astype(int)
    assert np.abs(a[37:44, 10:22] - b[37:44, 10:22]).mean() > 20  # the mask square
    assert np.abs(a[2:20, 40:60] - b[2:20, 40:60]).mean() < 8  # elsewhere the same


def test_live_endpoints_need_login_when_auth_is_on():
    store = ResultStore()
    store.update(_result(1))
    client = _client(store, auth=lambda request: request.cookies.get("ok") == "1")
    assert client.get("/pleura/state.json").status_code == 401
    assert client.get("/pleura/frame.jpg").status_code == 401
    client.cookies.set("ok", "1")
    assert client.get("/pleura/state.json").status_code == 200


def test_source_uri_validation(tmp_path):
    clips = {"demo.mp4": tmp_path / "demo.mp4"}
    lim = UploadLimits()
    assert source_uri("demo clip", "demo.mp4", None, None, None, clips, lim) == str(
        tmp_path / "demo.mp4")
    assert source_uri("capture device", None, None, "/dev/video2", None, clips,
                      lim) == "v4l2:///dev/video2"
    assert source_uri("stream URL", None, None, None, " rtsp://h/x ", clips, lim) == "rtsp://h/x"
    with pytest.raises(SafetyError, match="stream URL starts with"):
        source_uri("stream URL", None, None, None, "file:///etc/passwd", clips, lim)
    with pytest.raises(SafetyError, match="pick a demo clip"):
        source_uri("demo clip", "nope.mp4", None, None, None, clips, lim)
    with pytest.raises(SafetyError, match="no clip given"):
        source_uri("upload", None, None, None, None, clips, lim)


def test_addresses_are_checked_up_front():
    assert check_address("tcp://127.0.0.1:5556", "results") == "tcp://127.0.0.1:5556"
    assert check_address("ipc:///tmp/p.sock", "control") == "ipc:///tmp/p.sock"
    for bad in ("127.0.0.1:5556", "tcp://host", "http://x:1", ""):
        with pytest.raises(ValueError, match="use tcp://HOST:PORT"):
            check_address(bad, "results")
    with pytest.raises(ValueError, match="control address"):
        ControlPublisher(["tcp://127.0.0.1:1", "nonsense"])


def test_mjpeg_stream_sends_new_frames_only():
    store = ResultStore()
    client = _client(store)
    store.update(_result(10))  # display frame grey level = seq
    body = b""
    with client.stream("GET", "/pleura/live.mjpg?frames=2") as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("multipart/x-mixed-replace; boundary=frame")
        chunks = r.iter_bytes()
        while body.count(b"\xff\xd9") < 1:  # the first JPEG is complete ...
            body += next(chunks)
        store.update(_result(200))  # ... only then a newer result (no race with the start)
        for chunk in chunks:
            body += chunk
    parts = body.split(b"--frame\r\n")[1:]
    assert len(parts) == 2
    imgs = []
    for part in parts:
        head, body = part.split(b"\r\n\r\n", 1)
        assert b"Content-Type: image/jpeg" in head and body[:2] == b"\xff\xd8"
        imgs.append(cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_GRAYSCALE))
    # the first result, then the newer one (a region clear of boxes, mask and text)
    assert abs(float(imgs[0][43:48, 30:62].mean()) - 10) < 8
    assert abs(float(imgs[1][43:48, 30:62].mean()) - 200) < 8
