"""The worker's pure postprocessing: display frame, STN boxes, masks, timings."""

from __future__ import annotations

import numpy as np
import pytest

from engines.base import FrameOutput
from engines.postprocess import mask_in_source
from engines.preprocess import FRAME_SPEC, SEG_SPEC, letterbox
from engines.scorer import locate
from stream.result_fields import display_boxes, display_frame, mask_arrays, timing_ms


def crop_boxes_display(theta1, theta2, lb, in_hw, scale):
    """Both crops in display pixels through the core (locate) and the display scaling."""
    out = FrameOutput(np.full((1, 4), 0.25, np.float32), np.asarray(theta1)[None],
                      np.asarray(theta2)[None])
    boxes, _whole = locate(out, [lb], in_hw)
    return display_boxes(boxes[0], scale)


def test_display_frame_limits_long_side():
    small = np.zeros((300, 200), np.uint8)
    out, s = display_frame(small, 640)
    assert out is small and s == 1.0
    big = np.zeros((720, 1280), np.uint8)
    out, s = display_frame(big, 640)
    assert out.shape == (360, 640) and s == pytest.approx(0.5)


@pytest.mark.parametrize("hw", [(720, 1280), (300, 200), (538, 538)])
def test_identity_theta_box_is_the_whole_source_frame(hw):
    """theta = identity samples the whole model input; mapped back through the letterbox it is
    the source frame (plus the letterbox padding, which lies outside it symmetrically)."""
    _, lb = letterbox(np.zeros(hw, np.uint8), (FRAME_SPEC.height, FRAME_SPEC.width))
    eye = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    _, scale = display_frame(np.zeros(hw, np.uint8), 640)
    boxes = crop_boxes_display(eye, eye, lb, (224, 224), scale)
    b = np.array(boxes[0])
    assert b.shape == (4, 2) and boxes[0] == boxes[1]
    # the padded model input maps to [-pad, src + pad]; centre is the source centre
    centre = b.mean(axis=0)
    np.testing.assert_allclose(centre, [hw[1] * scale / 2, hw[0] * scale / 2], atol=0.6)
    h_extent = b[:, 1].max() - b[:, 1].min()
    w_extent = b[:, 0].max() - b[:, 0].min()
    assert max(h_extent, w_extent) == pytest.approx(max(hw) * scale, abs=1.0)
    # half-size crop centred: half the extent
    half = np.array([[0.5, 0, 0], [0, 0.5, 0]])
    hb = np.array(crop_boxes_display(half, half, lb, (224, 224), scale)[0])
    assert hb[:, 0].max() - hb[:, 0].min() == pytest.approx(w_extent / 2, abs=0.6)


def test_mask_arrays_are_display_sized_label_and_uncertainty_maps():
    src = np.zeros((120, 90), np.uint8)
    _, lb = letterbox(src, (SEG_SPEC.height, SEG_SPEC.width))
    probs = np.zeros((5, SEG_SPEC.height, SEG_SPEC.width), np.float32)
    probs[0] = 0.5
    probs[3, :100] = 0.9  # top half of the model input: score 2 (label 3)
    std = np.full((SEG_SPEC.height, SEG_SPEC.width), 0.25, np.float32)
    out = mask_arrays(*mask_in_source(probs, std, lb), (60, 45))
    labels, unc = out["mask"], out["unc"]
    assert labels.shape == (60, 45) and unc.shape == (60, 45)
    assert labels.dtype == unc.dtype == np.uint8
    assert set(np.unique(labels)) == {0, 3}
    assert labels[:25].min() == 3 and labels[35:].max() == 0
    assert np.all(np.abs(unc.astype(int) - 128) <= 1)  # 0.25 / 0.5 * 255
    assert "unc" not in mask_arrays(*mask_in_source(probs, None, lb), (60, 45))


def test_timings():
    stamps = np.array([10.0, 10.001, 10.003, 10.004, 10.024, 10.025, 10.0251, 0.0])
    t = timing_ms(stamps)
    assert t["frame_model"] == pytest.approx(20.0) and t["transport"] == pytest.approx(2.0)
    assert "display" not in t  # not reached yet


# --------------------------------------------------------------------------- findings (issue #13)


def _frame_msg(sid: int, seq: int, img: np.ndarray, epoch: int = 0):
    """A FRAME as capture sends it, decoded and parsed as the worker loop does."""
    import time

    from stream.messages import FrameMeta
    from stream.wire import Kind, Message, decode, encode

    m = Message(Kind.FRAME, sid, seq, array=img,
                meta={"source": f"test-{sid}", "session": 1, "epoch": epoch, "index": seq})
    m.stamp("grabbed", time.time())
    m.stamp("sent", time.time())
    m = decode(encode(m))
    return m, FrameMeta.parse(m.meta)


@pytest.fixture(scope="module")
def findings_worker(tmp_path_factory):
    from engines.testing import make_dummy_bundle
    from stream.workercore import Worker, WorkerConfig

    bundle = make_dummy_bundle(tmp_path_factory.mktemp("fw") / "b", seg=False, findings=True)
    w = Worker(WorkerConfig(frames_addrs=(), results_addr="", bundle=str(bundle),
                            backend="onnxruntime", threads=1, seg="off"))
    yield w
    w.close()


def _scored(w, batch) -> list[dict]:
    """Process a batch and return the RESULT metas as a client decodes them."""
    from stream.wire import decode

    return [decode(w.finish(res, st)).meta for res, st in w.process(batch)]


def test_worker_result_has_frame_findings_and_running_clip_summary(findings_worker):
    from engines.preprocess import preprocess_frame
    from engines.testing import DUMMY_FINDINGS

    w = findings_worker
    rng = np.random.default_rng(1)
    imgs = [rng.integers(0, 255, (90, 120), dtype=np.uint8) for _ in range(6)]
    want = np.stack([w.engine.frame(preprocess_frame(im, w.spec)[0][None]).findings[0]
                     for im in imgs])  # (6, F), one frame at a time
    metas = []
    for seq, im in enumerate(imgs[:4]):
        metas += _scored(w, [_frame_msg(1, seq, im), _frame_msg(2, seq, imgs[5 - seq])])
    ours = [m for m in metas if m["stream_id"] == 1]
    for k, m in enumerate(ours):
        assert list(m["findings"]) == list(DUMMY_FINDINGS)
        np.testing.assert_allclose(list(m["findings"].values()), want[k], atol=1e-5)
        clip = m["video"]["findings"]
        assert m["video"]["n_frames"] == k + 1 and list(clip) == list(DUMMY_FINDINGS)
        for j, n in enumerate(DUMMY_FINDINGS):  # the running values over frames 0..k
            assert clip[n]["mean"] == pytest.approx(want[: k + 1, j].mean(), abs=1e-5)
            assert clip[n]["max"] == pytest.approx(want[: k + 1, j].max(), abs=1e-5)
            assert clip[n]["fraction"] == pytest.approx((want[: k + 1, j] >= 0.5).mean())
    # the other stream's summary is its own
    other = [m for m in metas if m["stream_id"] == 2][-1]
    np.testing.assert_allclose([v["mean"] for v in other["video"]["findings"].values()],
                               want[2:6][::-1].mean(axis=0), atol=1e-5)
    # a reset restarts the summary with the video score
    w.control({"cmd": "reset", "stream_id": 1})
    m = _scored(w, [_frame_msg(1, 4, imgs[4])])[0]
    assert m["video"]["n_frames"] == 1
    np.testing.assert_allclose([v["mean"] for v in m["video"]["findings"].values()], want[4],
                               atol=1e-5)
    # so does a new video on the stream (new loop pass: another epoch)
    m = _scored(w, [_frame_msg(1, 5, imgs[5], epoch=1)])[0]
    assert m["video"]["n_frames"] == 1
    np.testing.assert_allclose([v["max"] for v in m["video"]["findings"].values()], want[5],
                               atol=1e-5)
    st = w.streams.peek(1)
    found = st.running.findings
    assert found is not None and found.n_frames == 1  # O(F) state, nothing grows


def test_worker_without_findings_head_sends_null_findings(tmp_path):
    from engines.testing import make_dummy_bundle
    from stream.workercore import Worker, WorkerConfig

    w = Worker(WorkerConfig(frames_addrs=(), results_addr="",
                            bundle=str(make_dummy_bundle(tmp_path / "b", seg=False)),
                            backend="onnxruntime", threads=1, seg="off"))
    try:
        img = np.random.default_rng(2).integers(0, 255, (60, 80), dtype=np.uint8)
        m = _scored(w, [_frame_msg(3, 0, img)])[0]
        assert m["findings"] is None and m["video"]["findings"] is None
        assert w.streams.peek(3).running.findings is None
    finally:
        w.close()


# ------------------------------------------------------------------ issue #14: what the page shows


def test_worker_video_evidence_agrees_with_the_video_score(findings_worker):
    """The page's video bars are ``video.evidence``: its largest share is the video score;
    ``frame_share`` is the fraction of frames per frame score."""
    w = findings_worker
    rng = np.random.default_rng(4)
    for seq in range(12):
        m = _scored(w, [_frame_msg(7, seq, rng.integers(0, 255, (60, 80), dtype=np.uint8))])[0]
        v = m["video"]
        assert len(v["evidence"]) == 4 and sum(v["evidence"]) == pytest.approx(1.0)
        assert int(np.argmax(v["evidence"])) == v["score"]
        assert sum(v["frame_share"]) == pytest.approx(1.0)
        assert len(v["log_aggregate"]) == 4 and v["n_frames"] == seq + 1
    st = w.streams.peek(7)
    assert sum(st.running.frame_counts) == 12
    w.control({"cmd": "reset", "stream_id": 7})
    assert st.running.frame_counts == [0, 0, 0, 0]


def test_crops_meta_and_identity():
    from engines.postprocess import is_identity
    from stream.result_fields import WHOLE_FRAME_NOTE, crops_meta

    eye = np.eye(2, 3)
    assert is_identity(eye, eye + 1e-5) and not is_identity(eye, 0.5 * eye)
    assert crops_meta(True, True, "") == {"whole_frame": True, "show": False,
                                          "note": WHOLE_FRAME_NOTE}
    assert crops_meta(False, True, "x") == {"whole_frame": False, "show": True, "note": ""}
    assert crops_meta(False, False, "moved 0.01") == {"whole_frame": False, "show": False,
                                                      "note": "moved 0.01"}


def test_worker_crops_whole_frame_model_and_non_localising_bundle(tmp_path):
    """A whole-frame model (θ = identity) sends no boxes and says so; a bundle marked
    ``models.frame.localises: false`` sends its boxes hidden by default, with its note."""
    import json

    from engines.testing import make_dummy_bundle
    from stream.result_fields import WHOLE_FRAME_NOTE
    from stream.workercore import Worker, WorkerConfig

    bundle = make_dummy_bundle(tmp_path / "b", seg=False)
    img = np.random.default_rng(5).integers(0, 255, (60, 80), dtype=np.uint8)
    cfg = WorkerConfig(frames_addrs=(), results_addr="", bundle=str(bundle),
                       backend="onnxruntime", threads=1, seg="off")
    w = Worker(cfg)
    try:
        m = _scored(w, [_frame_msg(1, 0, img)])[0]
        assert len(m["boxes"]) == 2 and m["crops"] == {"whole_frame": False, "show": True,
                                                       "note": ""}
        real = w.engine.frame

        def identity(x):  # what a whole-frame model (CNN + SORD) exports
            out = real(x)
            out.theta1[:] = np.eye(2, 3)
            out.theta2[:] = np.eye(2, 3)
            return out

        w.engine.frame = identity
        m = _scored(w, [_frame_msg(1, 1, img)])[0]
        assert m["boxes"] == [] and m["crops"]["whole_frame"] and not m["crops"]["show"]
        assert m["crops"]["note"] == WHOLE_FRAME_NOTE
    finally:
        w.close()
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["models"]["frame"].update(localises=False, localisation_note="crops do not move")
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    w = Worker(cfg)
    try:
        m = _scored(w, [_frame_msg(1, 0, img)])[0]
        assert len(m["boxes"]) == 2  # sent, so the page's switch can show them
        assert m["crops"] == {"whole_frame": False, "show": False, "note": "crops do not move"}
    finally:
        w.close()


def test_shipped_bundles_say_whether_their_crops_localise():
    """regstn-sim's crops were measured not to move (issue #18): its manifest says so, with
    the reason the page shows; a bundle without the mark localises (the default)."""
    import engines
    from engines.bundle import shipped_bundles

    names = {p.name: p for p in shipped_bundles()}
    assert "default" in names
    if "regstn-sim" in names:
        b = engines.load_bundle(names["regstn-sim"])
        assert b.crops_localise is False and len(b.localisation_note) > 20
    b = engines.load_bundle(names["default"])
    assert b.crops_localise is (b.manifest["models"]["frame"].get("localises") is not False)
