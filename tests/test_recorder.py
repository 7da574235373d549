"""Recorder: lossless frames + JSONL results, and a kill -9 loses at most the last second."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import zmq

from stream.messages import Result
from stream.recorder import Recorder
from stream.sources import decode_file
from stream.wire import Kind, Message, encode


def _frame(seq: int, rng) -> Message:
    m = Message(Kind.FRAME, 0, seq, meta={"source": "x", "index": seq, "pts_s": seq / 30},
                array=rng.integers(0, 255, (40, 50), dtype=np.uint8))
    m.stamp("grabbed", time.time())
    return m


def _result(seq: int, **fields) -> Message:
    """A RESULT as the worker sends it (typed, with its (h, w) display frame)."""
    return Result(seq=seq, stream_id=0, **fields).message(np.zeros((6, 8), np.uint8))


def test_recorder_is_lossless_and_rescorable(tmp_path):
    rng = np.random.default_rng(0)
    rec = Recorder(tmp_path)
    frames = [_frame(i, rng) for i in range(5)]
    for m in frames:
        rec.frame(m)
        rec.result(_result(m.seq, score=1))
    rec.close()
    lines = (tmp_path / "frames-0.jsonl").read_text().splitlines()
    assert [json.loads(x)["seq"] for x in lines] == [0, 1, 2, 3, 4]
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 5
    # the recorded stream folder is an image folder the decoder (and `pleura score`) reads
    back = list(decode_file(tmp_path / "frames-0"))
    assert len(back) == 5
    for m, f in zip(frames, back, strict=True):
        np.testing.assert_array_equal(f.image[..., 0], m.array)


def test_kill_9_loses_at_most_the_last_second(tmp_path):
    frames_addr, results_addr = f"ipc://{tmp_path}/f.sock", f"ipc://{tmp_path}/r.sock"
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.bind(frames_addr)
    res = ctx.socket(zmq.PUB)
    res.bind(results_addr)
    out = tmp_path / "rec"
    proc = subprocess.Popen([sys.executable, "-m", "stream.recorder", "--out", str(out),
                             "--frames", frames_addr, "--results", results_addr])
    rng = np.random.default_rng(1)
    try:
        deadline = time.time() + 60
        while not (out / "frames-0.jsonl").exists():  # wait until it is subscribed and writing
            pub.send(encode(_frame(0, rng)))
            time.sleep(0.1)
            assert time.time() < deadline and proc.poll() is None
        sent_before = []
        for seq in range(1, 61):  # 2 s at 30 fps
            pub.send(encode(_frame(seq, rng)))
            res.send(encode(_result(seq)))
            sent_before.append((seq, time.time()))
            time.sleep(1 / 30)
        t_kill = time.time()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        pub.close(0)
        res.close(0)
    lines = [json.loads(x) for x in (out / "frames-0.jsonl").read_text().splitlines()
             if x.endswith("}")]
    seqs = {x["seq"] for x in lines}
    # everything sent more than ~1 s before the kill is on disk
    old = [s for s, t in sent_before if t < t_kill - 1.2]
    assert old and set(old) <= seqs
    for x in lines:  # every indexed frame file is complete (written under a temp name first)
        assert (out / x["file"]).stat().st_size > 0
    results = (out / "results.jsonl").read_text().splitlines()
    assert {json.loads(x)["seq"] for x in results if x.endswith("}")} >= set(old)


def test_recorder_writes_each_mask_once_as_lossless_png(tmp_path):
    import cv2
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 5, (6, 8), dtype=np.uint8)
    unc = rng.integers(0, 255, (6, 8), dtype=np.uint8)
    rec = Recorder(tmp_path)
    for seq in (3, 4):  # the lane's mask of frame 3 rides on results 3 and 4
        rec.result(Result(seq=seq, stream_id=0, mask_seq=3).message(
            np.zeros((6, 8), np.uint8), mask=labels, unc=unc))
    rec.close()
    lines = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [x["mask_file"] for x in lines] == ["masks-0/000000003.png"] * 2
    back = cv2.imread(str(tmp_path / lines[0]["mask_file"]), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(back, labels)
    back = cv2.imread(str(tmp_path / lines[0]["unc_file"]), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(back, unc)
