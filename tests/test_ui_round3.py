"""Issue #29, "the bedside page and the CLI", items 2, 3, 4, 6, 10, 11 and 12.

Each test fails on the code before the fix: bundles that say whether they are for real scans
(2), the mask note kept beside a mask the bundle marks as not meaningful (3), a missing source
reaching the page as "Source error" (4), the "uncertain" state (6), the video score of a looped
file and the clip the source panel names (10), the docs against the code (11), and
``pleura exam``'s protocol inference and right-to-left naming (12). One real-browser test
(skipped without Chromium) checks what only the page's script shows.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from engines import load_bundle
from engines.bundle import shipped_bundles, write_manifest
from engines.testing import make_dummy_bundle
from stream.messages import FrameMeta, Result, SourceState
from stream.wire import Kind, Message, decode, encode
from tests._browser import BROWSER_MARKS

REPO = Path(__file__).resolve().parents[1]
BUNDLES = REPO / "engines" / "bundles"
SIM_ONLY = ("regstn-cpu", "regstn-sim", "cnn-sord")


# --------------------------------------------------------------------------- item 2


def test_shipped_bundles_say_whether_they_are_for_real_scans():
    from engines.bundle import real_scans_of

    names = {p.name for p in shipped_bundles()}
    assert {"default", *SIM_ONLY} <= names
    for name in names:
        m = json.loads((BUNDLES / name / "manifest.json").read_text())
        assert isinstance(m.get("for_real_scans"), bool), name  # stated, not only inferred
        real, note = real_scans_of(m)
        if name == "default":
            assert real is True and "real" in note
        elif name in SIM_ONLY:
            assert real is False and "simulator only — fails on real scans" in note, note
            # their masks are as unfit for real scans: hidden by default, with the reason
            shown, why = load_bundle(BUNDLES / name).masks_shown
            assert not shown and "simulated" in why


def test_old_manifests_get_a_sensible_default():
    from engines.bundle import real_scans_of

    real = {"training": {"frame_model": "real-frame (pleura train real): whole-frame CNN"}}
    weights = {"files": {"frame.onnx": {}, "frame-weights.npz": {}}}
    sim = {"training": {"frame_data": {"path": "data/sim-train", "simulator_version": 1},
                        "video_data": {"path": "data/sim-val", "simulator_version": 1}}}
    mixed = {"training": {"frame_data": {"path": "hospital/", "summary": {}},
                          "video_data": {"simulator_version": 1}}}
    assert real_scans_of(real)[0] is True and real_scans_of(weights)[0] is True
    assert real_scans_of(sim) == (False, "simulator only — fails on real scans")
    assert real_scans_of(mixed)[0] is None and "not stated" in real_scans_of(mixed)[1]
    assert real_scans_of({**sim, "for_real_scans": True})[0] is True  # stated wins
    assert real_scans_of({"for_real_scans": False, "real_scans_note": "sim only: F1 7 %"}) == (
        False, "sim only: F1 7 %")


def test_export_writes_the_field(tmp_path):
    """``pleura export``'s manifest writer: a ``pleura train real`` run is for real scans, a
    run on simulated data only is not, and an explicit value wins."""
    (tmp_path / "frame.onnx").write_bytes(b"x")
    m = write_manifest(tmp_path, training={"frame_model": "real-frame (pleura train real): …",
                                           "real_clips": "124 clips (75 with a severity)"})
    assert m["for_real_scans"] is True
    assert json.loads((tmp_path / "manifest.json").read_text())["for_real_scans"] is True
    m = write_manifest(tmp_path, training={"frame_data": {"simulator_version": 1}})
    assert m["for_real_scans"] is False
    m = write_manifest(tmp_path, training={"data": "mine"})
    assert "for_real_scans" not in m
    assert write_manifest(tmp_path, for_real_scans=True)["for_real_scans"] is True


def test_bundle_menu_and_page_say_simulator_only():
    from ui.bundles import bundle_options, bundle_scans

    labels = list(bundle_options(None))
    for name in SIM_ONLY:
        label = next(k for k in labels if k.startswith(name))
        assert "simulator only — fails on real scans" in label, label
    assert "for real scans" in next(k for k in labels if k.startswith("default"))
    scans = bundle_scans(None)
    assert scans["regstn-cpu"]["real"] is False and scans["default"]["real"] is True
    meta = _headers_meta(_live_result(bundle="regstn-cpu"), scans)
    assert meta["bundle_scans"]["real"] is False
    assert "fails on real scans" in meta["bundle_scans"]["note"]
    assert _headers_meta(_live_result(bundle="not-offered"), scans)["bundle_scans"] is None


def test_report_tab_says_simulator_only(tmp_path):
    from ui.report import ClipReport, _real_scans, summary_html
    from ui.scoring import FrameRow

    row = FrameRow(index=0, probs=(0.1, 0.1, 0.7, 0.1), video_probs=(0.1, 0.1, 0.7, 0.1),
                   video_score=2, boxes=None)
    sim = _real_scans(str(BUNDLES / "regstn-cpu"))
    assert sim[0] is False
    page = summary_html(ClipReport("a.mp4", (row,), row.video_probs, "onnxruntime",
                                   "regstn-cpu", 1.0, real_scans=sim))
    assert "pleura-report-sim-warning" in page and "fails on real scans" in page
    ok = summary_html(ClipReport("a.mp4", (row,), row.video_probs, "onnxruntime", "default",
                                 1.0, real_scans=_real_scans(None)))
    assert "pleura-report-sim-warning" not in ok


def _live_result(**meta):
    from ui.result_feed import LiveResult

    base = {"seq": 1, "stream_id": 0, "score": 0, "probs": [0.97, 0.01, 0.01, 0.01],
            "bundle": "default", "video": {"score": 0, "n_frames": 1,
                                           "evidence": [0.97, 0.01, 0.01, 0.01]}}
    return LiveResult(1, 1, 0, {**base, **meta}, np.zeros((8, 8), np.uint8),
                      np.zeros(8, np.float64))


def _headers_meta(r, scans=None) -> dict:
    from ui.live_routes import result_headers

    return json.loads(result_headers(r, "", scans)["X-Pleura-Meta"])


# --------------------------------------------------------------------------- item 4


def test_a_missing_source_is_sent_as_a_source_error(tmp_path):
    """Capture tells the worker why it cannot open the source before it exits; before, it
    exited with a log line only and the page said "Connecting" for ever."""
    from stream.capture import run_capture
    from stream.config import CaptureConfig
    from stream.sources import SourceError

    addr = f"ipc://{tmp_path}/frames.sock"
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(addr)
    try:
        with pytest.raises(SourceError, match="no such file"):
            run_capture(CaptureConfig(source=str(tmp_path / "gone.mp4"), frames_addr=addr))
        assert sub.poll(1000), "no source state reached the worker's socket"
        msg = decode(sub.recv())
    finally:
        sub.close(0)
    assert msg.kind == Kind.HEARTBEAT
    ss = SourceState.parse(msg.meta)
    assert ss.state == "error" and "gone.mp4: no such file" in ss.detail


def test_worker_repeats_a_quiet_streams_state_for_a_page_that_joins_late(tmp_path):
    """The capture is gone, so nobody repeats the error: the worker re-sends a stream's last
    result when it published nothing for RESEND_IDLE_S, and the page shows Source error."""
    from stream.workercore import RESEND_IDLE_S
    from ui.livestate import page_state

    w = _worker(tmp_path)
    try:
        w.on_source_state(0, SourceState(state="error", source="/x/gone.mp4",
                                         detail="/x/gone.mp4: no such file or folder"))
        first = w.state_updates()
        assert len(first) == 1 and w.state_updates() == []
        w.mark_idle(time.monotonic() + RESEND_IDLE_S / 2)
        assert w.state_updates() == []  # not quiet long enough
        w.mark_idle(time.monotonic() + RESEND_IDLE_S + 0.1)
        again = w.state_updates()
        assert len(again) == 1
        meta = decode(again[0]).meta
        state = page_state(meta, None)
        assert state["label"] == "Source error" and "no such file" in state["detail"]
    finally:
        w.close()


# --------------------------------------------------------------------------- item 6


def test_close_calls_and_contradicting_findings_are_uncertain():
    from ui.certainty import result_certainty

    clear = result_certainty({"score": 0, "probs": [0.9, 0.05, 0.03, 0.02],
                              "video": {"score": 0, "evidence": [0.8, 0.1, 0.05, 0.05]}})
    assert clear["frame"] == {"uncertain": False, "reasons": []}
    assert clear["video"]["uncertain"] is False
    # the examples: frame 36/32/30 beside consolidation 77 %, video 37/26/31/6
    close = result_certainty({
        "score": 0, "probs": [0.36, 0.32, 0.30, 0.02],
        "findings": {"consolidations": 0.77, "a_lines": 0.9},
        "video": {"score": 0, "evidence": [0.37, 0.26, 0.31, 0.06]}})
    frame, video = close["frame"], close["video"]
    assert frame["uncertain"] and video["uncertain"]
    assert any("close call: 0 at 36 %, 1 at 32 %" in r for r in frame["reasons"])
    assert any("consolidation 77 %" in r and "at least 2" in r for r in frame["reasons"])
    assert "close call: 0 at 37 %, 2 at 31 %" in video["reasons"][0]
    # a confident 0 with consolidation present is still contradicted; with A-lines it is not
    contra = result_certainty({"score": 0, "probs": [0.97, 0.01, 0.01, 0.01],
                               "findings": {"consolidations": 0.6}})["frame"]
    assert contra["uncertain"] and "findings suggest at least 2" in contra["reasons"][0]
    assert not result_certainty({"score": 0, "probs": [0.97, 0.01, 0.01, 0.01],
                                 "findings": {"a_lines": 0.99}})["frame"]["uncertain"]
    # the clip's mean findings judge the video score
    vid = result_certainty({"video": {"score": 1, "evidence": [0.05, 0.85, 0.05, 0.05],
                                      "findings": {"consolidations": {"mean": 0.7}}}})
    assert vid["video"]["uncertain"] and vid["frame"] is None  # a status result has no score


def test_thresholds_are_stated_with_their_source():
    import ui.certainty as c

    assert 0.25 < c.FRAME_MIN_TOP < 1 and 0 < c.FRAME_MIN_MARGIN < 1
    assert 0.25 < c.VIDEO_MIN_TOP < 1 and 0 < c.VIDEO_MIN_MARGIN < 1
    assert "scripts/certainty_thresholds.py" in c.__doc__
    assert (REPO / "scripts" / "certainty_thresholds.py").is_file()


def test_certainty_travels_with_every_frame():
    meta = _headers_meta(_live_result(score=0, probs=[0.36, 0.32, 0.30, 0.02]))
    assert meta["certainty"]["frame"]["uncertain"] is True
    assert meta["certainty"]["video"]["uncertain"] is False


# --------------------------------------------------------------------------- item 10


def _worker(tmp_path):
    from stream.worker import Worker, WorkerConfig

    bundle = make_dummy_bundle(tmp_path / "b", seg=False)
    return Worker(WorkerConfig(frames_addrs=(), results_addr="", bundle=str(bundle),
                               backend="onnxruntime", threads=1, seg="off"))


def _frames(w, source: str, epoch: int, indices, session: float = 1.0) -> list[dict]:
    img = np.random.default_rng(epoch).integers(0, 255, (32, 32), dtype=np.uint8)
    out = []
    for i in indices:
        fm = FrameMeta(source=source, index=i, pts_s=i / 20, epoch=epoch, session=session)
        m = Message(Kind.FRAME, 0, epoch * 1000 + i, meta=fm.to_json(), array=img)
        m.stamp("grabbed", time.time())
        for res, st in w.process([(m, FrameMeta.parse(m.meta))]):
            w.finish(res, st)
            out.append(res.meta)
    return out


def test_a_looped_file_keeps_its_whole_clip_video_score(tmp_path):
    w = _worker(tmp_path)
    try:
        first = _frames(w, "/clips/a.mp4", 0, range(6))
        assert [m["video"]["n_frames"] for m in first] == [1, 2, 3, 4, 5, 6]
        assert not first[-1]["video"].get("complete")
        again = _frames(w, "/clips/a.mp4", 1, range(3))  # the next loop pass
        for m in again:  # before: n_frames 1, 2, 3 (the score restarted on every loop)
            assert m["video"]["complete"] is True and m["video"]["n_frames"] == 6
            assert m["video"]["score"] == first[-1]["video"]["score"]
        assert [m["video"]["pass_frames"] for m in again] == [1, 2, 3]
        w.reset()
        assert _frames(w, "/clips/a.mp4", 1, [3])[0]["video"]["n_frames"] == 1  # shown again
        # a live stream that reconnects (a new epoch) is not a whole clip
        _frames(w, "rtsp://cam/x", 0, range(4), session=2.0)
        assert "complete" not in _frames(w, "rtsp://cam/x", 1, [0], session=2.0)[0]["video"]
    finally:
        w.close()


def test_timeline_restarts_on_a_new_loop_pass():
    from ui.result_feed import ResultStore

    store = ResultStore()

    def put(seq: int, index: int, n: int) -> None:
        meta = Result(seq=seq, stream_id=0, source="/clips/a.mp4", index=index,
                      pts_s=index / 20, score=0, probs=[1.0, 0.0, 0.0, 0.0],
                      video={"score": 0, "n_frames": n, "complete": n == 5}).to_json()
        store.update(decode(encode(Message(Kind.RESULT, 0, seq, meta=meta,
                                           array=np.zeros((4, 4), np.uint8)))))

    for i in range(5):
        put(i, i, i + 1)
    assert len(store.timeline()[0]) == 5
    for i in range(2):  # pass 2: the whole-clip count stays 5, the index starts again
        put(10 + i, i, 5)
    assert store.timeline_times() == [0.0, 0.05]


def test_source_panel_names_the_clip_that_plays(tmp_path):
    from ui.app import demo_clips
    from ui.controls import default_clip, menu_for, use_status

    clips = demo_clips(None)
    real, sim = clips["real-convex-covid.mov"], clips["demo-convex.mp4"]
    # before: the menu said demo-convex.mp4 (the first file) whatever played
    assert default_clip(clips) == "real-convex-covid.mov"  # what `pleura live` plays
    assert menu_for(str(real), clips) == "real-convex-covid.mov"
    assert menu_for(str(sim), clips) == "demo-convex.mp4"
    other = tmp_path / "demo-convex.mp4"  # same name, another file: not the demo clip
    assert menu_for(str(other), clips) is None
    assert use_status("Sent: source demo-convex.mp4.", str(sim), str(real)) == (
        "Sent: source demo-convex.mp4, replacing real-convex-covid.mov.")


# --------------------------------------------------------------------------- item 11


def test_clinician_doc_agrees_with_the_default_bundle():
    doc = (REPO / "docs" / "clinician.md").read_text()
    manifest = json.loads((BUNDLES / "default" / "manifest.json").read_text())
    assert manifest["for_real_scans"] is True
    assert "trained mostly on simulated" not in doc and "trained on *simulated*" not in doc
    assert "trained on real" in doc
    # the demo clip is a copy of a training clip: the doc and the page say so
    readme = (REPO / "stream" / "demo" / "README.md").read_text()
    original = next(f["file"] for f in manifest["card"]["training_clips"]
                    if f"`{f['file']}`" in readme)
    assert original.startswith("Cov_convex_volpecelli")
    after = doc.split("real-convex-covid.mov", 1)[1][:300]
    assert "trained on" in after or "training" in after, after
    from ui.controls import DEMO_INFO

    assert "real-convex-covid.mov" in DEMO_INFO and "trained on" in DEMO_INFO


# --------------------------------------------------------------------------- item 12


def test_clip_names_are_read_from_the_right():
    from stream.exam.naming import infer_protocol, parse_clip_name

    c = parse_clip_name("patient_62_R1.mp4")  # before: refused (a patient may not hold '_')
    assert (c.patient, c.zone, c.take) == ("patient_62", "R1", "")
    c = parse_clip_name("patient_62_l3_b.mp4", 6)
    assert (c.patient, c.zone, c.take) == ("patient_62", "L3", "b")
    assert parse_clip_name("P07_r3_2.mp4", 14).zone == "R3"
    with pytest.raises(ValueError, match="both R1 and R2 look like a zone"):
        parse_clip_name("P07_R1_R2.mp4")
    with pytest.raises(ValueError, match="zone R9 is in no protocol"):
        parse_clip_name("P07_R9.mp4")
    with pytest.raises(ValueError, match="naming rule"):
        parse_clip_name("P07-R3.mp4")
    p, why = infer_protocol(["R1", "R2", "R3", "L1", "L2", "L3"])
    assert p == 6 and "R3 = right lateral" in why and "--protocol" in why
    assert infer_protocol(["R1", "L7"])[0] == 14


def test_pleura_exam_infers_the_protocol_and_says_so(tmp_path, capsys):
    import av

    from stream import cli
    from stream.sources import decode_file

    bundle = make_dummy_bundle(tmp_path / "b", seg=False)
    folder = tmp_path / "clips"
    folder.mkdir()
    frames = [f.image for _, f in zip(range(3), decode_file(REPO / "stream" / "demo" /
                                                         "demo-convex.mp4"), strict=False)]
    for zone in ("R1", "R2", "R3", "L1", "L2", "L3"):  # a simulated lung: scorable
        with av.open(str(folder / f"P07_{zone}.mp4"), mode="w") as c:
            s = c.add_stream("mpeg4", rate=20)
            s.height, s.width = frames[0].shape[:2]
            s.pix_fmt = "yuv420p"
            for f in frames:
                c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
            c.mux(s.encode())
    out = tmp_path / "out"
    rc = cli.main(["exam", str(folder), "--out", str(out), "--no-pdf", "--bundle", str(bundle)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "P07: protocol 6 zones, inferred from the zone names" in text
    assert "pass --protocol N to choose" in text
    assert "(6 of 6 zones scored)" in text  # before: "(6 of 14 zones scored)"
    report = json.loads((out / "P07" / "P07-report.json").read_text())
    assert report["total"]["n_zones"] == 6
    # an explicit protocol is used as given, without the inference line
    rc = cli.main(["exam", str(folder), "--protocol", "6", "--out", str(out), "--no-pdf",
                   "--bundle", str(bundle)])
    assert rc == 0 and "inferred" not in capsys.readouterr().out


# --------------------------------------------------------------------------- the page (browser)


def _status(seq: int, **kw) -> Result:
    return Result(seq=seq, stream_id=0, source="/clips/sim.mp4", bundle="regstn-cpu", **kw)


def _in_browser(test):
    for mark in BROWSER_MARKS:
        test = mark(test)
    return test


@_in_browser
def test_page_shows_uncertain_sim_warning_mask_note_and_whole_clip(tmp_path):
    """What only the page's script shows: the "uncertain" tags, the simulator-only banner, the
    mask note and legend when a not-meaningful mask is switched on, no uncertainty switch
    without a map, "whole clip" for a completed pass, no timeline alt text."""
    pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By

    from benchmarks.browser import chromium, wait_for
    from stream.sockets import free_port
    from ui.app import PageConfig, Server

    port = free_port()
    addr = f"tcp://127.0.0.1:{free_port()}"
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.bind(addr)
    server = Server(PageConfig(results_addr=addr, port=port, report_dir=tmp_path / "r"))
    note = "segmentation mask hidden by default: trained on simulated data only"
    frame = np.tile(np.arange(160, dtype=np.uint8), (120, 1))
    mask = np.zeros_like(frame)
    mask[20:60, 20:80] = 4
    meta = dict(score=0, probs=[0.36, 0.32, 0.30, 0.02], index=3, pts_s=0.15,
                findings={"consolidations": 0.77},
                mask_display={"show": False, "note": note},
                crops={"whole_frame": True, "show": False, "note": "whole-frame model"},
                video={"score": 2, "n_frames": 40, "complete": True, "pass_frames": 3,
                       "evidence": [0.1, 0.1, 0.7, 0.1], "probs": [0.25] * 4})
    try:
        with chromium() as d:
            server.start()
            d.get(server.url)
            tl = wait_for(lambda: d.find_element(By.ID, "pleura-timeline"), 20, "the page")
            assert not tl.is_displayed()  # no result yet: no broken image with its alt text
            seq = 0

            def publish() -> None:
                nonlocal seq
                seq += 1
                msg = _status(seq, **meta).message(frame, mask=mask)
                msg.stamp("grabbed", time.time())
                pub.send(encode(msg))

            def shown(el_id: str) -> str:
                publish()
                el = d.find_element(By.ID, el_id)
                return el.text if el.is_displayed() else ""

            assert "uncertain" in wait_for(lambda: shown("pleura-frame-unc"), 20, "the tag")
            why = d.find_element(By.ID, "pleura-frame-why").text
            assert "close call" in why and "consolidation 77 %" in why, why
            assert not d.find_element(By.ID, "pleura-video-unc").is_displayed()
            assert d.find_element(By.ID, "pleura-video-kind").text == "whole clip"
            banner = d.find_element(By.ID, "pleura-bundle-warning")
            assert banner.is_displayed() and "fails on real scans" in banner.text
            assert not d.find_element(By.ID, "pleura-unc-label").is_displayed()
            assert "--mc-samples" in d.find_element(By.ID, "pleura-unc-legend").text
            # the mask the bundle marks as not meaningful, switched on: the note stays
            box = d.find_element(By.ID, "pleura-mask")
            assert not box.is_selected()
            box.click()
            flag = wait_for(lambda: shown("pleura-mask-flag"), 10, "the flag on the image")
            assert "not meaningful" in flag
            assert "not meaningful here" in d.find_element(By.ID, "pleura-mask-why").text
            legend = d.find_element(By.ID, "pleura-mask-legend").text
            assert "not meaningful" in legend and legend != (
                "each region in the colour of the score it shows")
            assert "Now playing: sim.mp4" in d.find_element(By.ID, "pleura-now-playing").text
    finally:
        server.close()
        pub.close(0)
