"""Typed messages (stream.messages): validation of each definition, the RESULT's arrays, the
worker's RESULTs matching the definition, and receivers that refuse other wire versions."""

from __future__ import annotations

import dataclasses
import logging
import struct
import time

import numpy as np
import pytest
import zmq

from stream.messages import (
    COMMANDS,
    MAX_SOURCE_CHARS,
    Control,
    FrameMeta,
    MetaError,
    ProcessBeat,
    Result,
    SourceState,
    encode_result,
)
from stream.wire import MAGIC, VERSION, Kind, Message, decode, encode

V1 = struct.Struct("<4sBBBBHHQ8d4II")  # the version 1 header (one array, mask as base64 PNG)


def _v1_result() -> bytes:
    body = b'{"seq":1,"stream_id":0,"mask":{"png_b64":"iVBO"}}'
    return V1.pack(MAGIC, 1, 2, 1, 2, 0, 0, 1, *([0.0] * 8), 4, 4, 0, 0, len(body)) + body \
        + bytes(16)


def test_every_definition_is_frozen_and_versioned():
    for obj in (FrameMeta(), SourceState(), ProcessBeat("worker", 1), Control("reset"),
                Result(seq=0, stream_id=0)):
        assert obj.version == VERSION
        with pytest.raises(dataclasses.FrozenInstanceError):
            obj.version = 3  # type: ignore[misc]
    with pytest.raises(MetaError, match="version 1 is not supported"):
        Result(seq=0, stream_id=0, version=1)


def test_frame_meta_round_trip_and_checks():
    fm = FrameMeta(source="a.mp4", index=3, pts_s=0.1, epoch=0, session=1.5, sent=2,
                   full_hw=(480, 640), roi=(1, 2, 30, 40))
    assert FrameMeta.parse(fm.to_json()) == fm
    assert FrameMeta.parse({"pts_s": float("nan")}).pts_s is None
    for bad, match in [({"source": "x" * (MAX_SOURCE_CHARS + 1)}, "too long"),
                       ({"index": "3"}, "integer"), ({"index": True}, "integer"),
                       ({"full_hw": [1, 2, 3]}, "full_hw"), ({"roi": [0, 0, 1, -1]}, "roi"),
                       ({"session": [1]}, "session"), ({"pts_s": "0"}, "number")]:
        with pytest.raises(MetaError, match=match):
            FrameMeta.parse(bad)


def test_source_state_process_beat_and_control():
    ss = SourceState("reconnecting", "rtsp://x", "refused" * 500, session=2.0)
    back = SourceState.parse(ss.to_json())
    assert back.state == "reconnecting" and len(back.detail) == 1024  # cut on the wire
    beat = ProcessBeat("capture", 12, 5.0, {"sent": 3, "state": "playing"})
    assert ProcessBeat.parse(beat.to_json()) == beat
    with pytest.raises(MetaError, match="role and pid"):
        ProcessBeat.parse({"role": "x"})
    with pytest.raises(MetaError, match="counters"):
        ProcessBeat("x", 1, counters={"pid": 2})
    c = Control("reset", stream_id=4)
    assert c.to_json() == {"cmd": "reset", "stream_id": 4} and Control.parse(c.to_json()) == c
    assert Control.parse({"cmd": "source", "uri": "a.mp4"}).params == {"uri": "a.mp4"}
    assert decode(encode(Control("loop", params={"on": True}).message())).meta == {
        "cmd": "loop", "on": True}
    assert "reset" in COMMANDS
    for bad in ({"cmd": 3}, {"cmd": "format"}, {}):
        with pytest.raises(MetaError, match="cmd|command"):
            Control.parse(bad)


def _result(**over) -> Result:
    f = dict(seq=5, stream_id=1, source="a.mp4", frame_hw=[90, 120], display_hw=[6, 8],
             probs=[0.1, 0.2, 0.3, 0.4], score=3, boxes=[[[0, 0], [4, 0], [4, 4], [0, 4]]] * 2,
             video={"probs": [0.25] * 4, "score": 3, "n_frames": 5, "restarted": False},
             findings={"b_lines": 0.8}, mask_seq=4, timing_ms={"frame_model": 3.5},
             latency_ms=9.0, capture_session=1.5)
    f.update(over)
    return Result(**f)


@pytest.mark.parametrize("field,value,match", [
    ("seq", -1, "seq"), ("stream_id", 70000, "stream_id"), ("score", 17, "score"),
    ("probs", ["a"], "probs"), ("boxes", [[[0, 0]]], "boxes"), ("status_only", 1, "status_only"),
    ("video", {"n_frames": "5"}, "n_frames"), ("video", [1], "video"),
    ("findings", {"b_lines": "high"}, "findings"), ("timing_ms", {"seg": None}, "timing_ms"),
    ("source", "s" * (MAX_SOURCE_CHARS + 1), "source"), ("display_hw", [1], "display_hw"),
    ("capture_session", [1], "session"), ("backend", 3, "backend"),
])
def test_result_refuses_fields_of_the_wrong_type(field, value, match):
    with pytest.raises(MetaError, match=match):
        _result(**{field: value})
    with pytest.raises(MetaError, match=match):
        Result.parse({**_result().to_json(), field: value})


def test_result_message_carries_display_mask_and_uncertainty_as_arrays():
    rng = np.random.default_rng(0)
    disp = rng.integers(0, 255, (6, 8), dtype=np.uint8)
    labels = rng.integers(0, 5, (6, 8), dtype=np.uint8)
    unc = rng.integers(0, 255, (6, 8), dtype=np.uint8)
    res = _result()
    msg = decode(encode(res.message(disp, mask=labels, unc=unc)))
    assert Result.from_message(msg) == res and "mask" not in msg.meta
    np.testing.assert_array_equal(msg.array, disp)
    np.testing.assert_array_equal(msg.arrays["mask"], labels)
    np.testing.assert_array_equal(msg.arrays["unc"], unc)
    assert Result.parse({**res.to_json(), "from_a_newer_worker": 1}) == res  # ignored
    with pytest.raises(MetaError, match="shape"):
        res.message(disp, mask=labels[:3])
    with pytest.raises(MetaError, match="labels"):
        res.message(disp, mask=np.full((6, 8), 9, np.uint8))
    with pytest.raises(MetaError, match="display frame"):
        res.message(disp.astype(np.float32))
    bad = Message(Kind.RESULT, 1, 5, meta=res.to_json(), array=disp,
                  arrays={"heat": labels})
    with pytest.raises(MetaError, match="unknown RESULT array"):
        Result.from_message(decode(encode(bad)))
    with pytest.raises(MetaError, match="seq and stream_id"):
        Result.parse({"score": 1})


def test_encode_result_refuses_a_field_the_definition_lacks():
    msg = Message(Kind.RESULT, 1, 5, meta={**_result().to_json(), "brand_new": 1},
                  array=np.zeros((6, 8), np.uint8))
    with pytest.raises(MetaError, match=r"\['brand_new'\] are not defined: add them to "
                                         r"stream.messages.Result"):
        encode_result(msg)
    msg.meta.pop("brand_new")
    assert isinstance(encode_result(msg), bytearray)


@pytest.fixture(scope="module")
def seg_worker(tmp_path_factory):
    from engines.testing import make_dummy_bundle
    from stream.workercore import Worker, WorkerConfig

    bundle = make_dummy_bundle(tmp_path_factory.mktemp("mw") / "b", seg=True)
    w = Worker(WorkerConfig(frames_addrs=(), results_addr="", bundle=str(bundle),
                            backend="onnxruntime", threads=1, seg="inline"))
    yield w
    w.close()


def test_worker_results_match_the_definition_and_carry_mask_arrays(seg_worker):
    """Every key the worker sends is a Result field (and vice versa); masks are arrays."""
    w = seg_worker
    img = np.random.default_rng(3).integers(0, 255, (90, 120), dtype=np.uint8)
    m = Message(Kind.FRAME, 2, 0, array=img, meta=FrameMeta(source="t", session=1,
                                                            epoch=0).to_json())
    m.stamp("grabbed", time.time())
    m = decode(encode(m))
    (res, st), = w.process([(m, FrameMeta.parse(m.meta))])
    out = decode(w.finish(res, st))
    r = Result.from_message(out)
    assert set(out.meta) == {f.name for f in dataclasses.fields(Result)} - {"version"}
    assert r.score is not None and r.mask_seq == 0 and "seg" in r.timing_ms
    assert out.arrays["mask"].shape == out.array.shape == tuple(r.display_hw)
    assert out.arrays["mask"].dtype == np.uint8 and out.arrays["mask"].max() < 5
    w.on_source_state(2, SourceState("ended", "t"))
    (again,) = [decode(raw) for raw in w.state_updates()]
    assert again.meta["resent"] and again.meta["source_state"] == "ended"
    assert "mask" in again.arrays  # a re-send keeps its arrays
    w.on_source_state(9, SourceState("connecting", "rtsp://y"))
    (status,) = [decode(raw) for raw in w.state_updates()]
    assert Result.from_message(status).status_only and not status.arrays


def test_the_ui_refuses_an_old_wire_version_with_one_clear_line(caplog):
    """A version-1 worker's results: refused, counted, logged once; the subscriber lives."""
    from ui.result_feed import ResultStore, ResultSubscriber

    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    store = ResultStore()
    sub = ResultSubscriber(f"tcp://127.0.0.1:{port}", store, context=ctx, poll_ms=20)
    caplog.set_level(logging.INFO, logger="ui.result_feed")
    sub.start()
    try:
        assert sub.ready.wait(5)
        deadline = time.time() + 20
        while sub.old_version.count < 5 and time.time() < deadline:
            pub.send(_v1_result())
            time.sleep(0.02)
        assert sub.old_version.count >= 5 and sub.is_alive()
        lines = [r for r in caplog.records if "refused" in r.getMessage()]
        assert len(lines) == 1 and lines[0].levelno == logging.ERROR
        assert "wire version 1 message refused: this build speaks version 2" in \
            lines[0].getMessage()
        good = _result(stream_id=0).message(np.zeros((6, 8), np.uint8))
        while store.latest() is None and time.time() < deadline:  # then a v2 worker: shown
            pub.send(encode(good))
            time.sleep(0.02)
        assert store.latest() is not None and store.latest().seq == 5
    finally:
        sub.stop()
        pub.close(0)
        ctx.term()

