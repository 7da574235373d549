"""Issue #14, "a page a clinician can read": the live page's state words, legend, crops,
timeline axis, bundle menu and recording note, without a browser (tests/test_ui_browser.py
checks them in Chromium)."""

from __future__ import annotations

import json
import time

import cv2
import numpy as np
import pytest
import zmq
from fastapi import FastAPI
from fastapi.testclient import TestClient

from stream import wire
from tests.test_ui_result_feed import _result
from ui import overlay, timeline
from ui.bundles import BundleChoice, bundle_options
from ui.controls import recording_note, switch_bundle
from ui.live_routes import FrameRenderer, live_router
from ui.livepage import legend_html, live_html
from ui.livestate import page_state, stale_after
from ui.result_feed import ControlPublisher, ResultStore

# ------------------------------------------------------------------ plain source state


@pytest.mark.parametrize(("meta", "age", "key", "label", "live"), [
    (None, None, "connecting", "Connecting", False),
    ({"source_state": "playing", "fps": 20.0}, 0.1, "live", "Live", True),
    ({"source_state": "playing", "fps": 20.0}, 5.0, "stalled", "No new frames", False),
    ({"source_state": "paused"}, 0.1, "paused", "Paused", False),
    ({"source_state": "stopped"}, 30.0, "stopped", "Stopped", False),
    ({"source_state": "error", "source_detail": "device vanished"}, 3.0, "error",
     "Source error", False),
    ({"source_state": "truncated"}, 1.0, "error", "Source error", False),
    ({"source_state": "reconnecting", "status_only": True}, None, "reconnecting",
     "Reconnecting", False),
    ({"source_state": "connecting", "status_only": True}, None, "connecting", "Connecting",
     False),
    ({"source_state": "playing", "status_only": True}, None, "connecting", "Connecting", False),
    ({"source_state": "ended"}, 2.0, "ended", "Ended", False),
])
def test_page_state_words(meta, age, key, label, live):
    st = page_state(meta, age)
    assert (st["key"], st["label"], st["live"]) == (key, label, live)
    assert st["has_frame"] == (age is not None and not (meta or {}).get("status_only"))


def test_page_state_details_and_staleness():
    assert page_state({"source_state": "error", "source_detail": "no such device"},
                      4.0)["detail"] == "no such device"
    assert "paused" in page_state({"source_state": "paused"}, 1.0)["detail"]
    assert "no new frame for 6 s" in page_state({"source_state": "playing"}, 6.0)["detail"]
    assert stale_after(None) == 2.0 and stale_after(20.0) == 2.0 and stale_after(1.0) == 4.0
    assert stale_after(0.05) == 10.0
    assert page_state({"source_state": "playing", "fps": 1.0}, 3.0)["live"]  # slow worker


def _client(store: ResultStore) -> TestClient:
    app = FastAPI()
    app.include_router(live_router(store, FrameRenderer(), max_wait_s=0.5))
    return TestClient(app)


def _resent(m: wire.Message, state: str) -> wire.Message:
    m.meta.update(source_state=state, resent=True)
    return m


def test_endpoints_send_the_state_with_frames_and_empty_polls():
    """A paused source's re-sent result says Paused; an empty long-poll still carries the
    state, and a playing source whose frames stopped coming is no longer live."""
    store = ResultStore()
    client = _client(store)
    r = client.get("/pleura/frame.jpg?after=0&wait=0.05")
    assert r.status_code == 204 and json.loads(r.headers["x-pleura-state"])["key"] == "connecting"
    store.update(_result(1))
    r = client.get("/pleura/frame.jpg?after=0")
    st = json.loads(r.headers["x-pleura-state"])
    assert st["key"] == "live" and st["has_frame"] and st["age_s"] < 1.0
    store.update(_resent(_result(1), "paused"))
    r = client.get("/pleura/frame.jpg?after=1")
    assert json.loads(r.headers["x-pleura-state"])["label"] == "Paused"
    assert store.timeline()[0] == [1]  # a re-sent result is not a new timeline point
    store.update(_result(2))
    store.t_fresh = time.time() - 30.0  # no fresh frame for 30 s (a stuck worker)
    r = client.get("/pleura/frame.jpg?after=3&wait=0.05")
    st = json.loads(r.headers["x-pleura-state"])
    assert r.status_code == 204 and st["key"] == "stalled" and st["age_s"] >= 29
    assert client.get("/pleura/state.json").json()["state"]["key"] == "stalled"


# ------------------------------------------------------------------ legend and page


def test_legend_names_scores_in_clinical_words_masks_and_crops():
    html = legend_html()
    for words in ("normal: A-lines", "normally aerated", "mild loss of aeration",
                  "moderate loss of aeration", "white lung", "severe loss of aeration",
                  "Soldati", "Mask", "crop 1", "crop 2", "Uncertainty"):
        assert words in html, words
    for rgb in overlay.SCORE_RGB:
        assert f"rgb({rgb[0]},{rgb[1]},{rgb[2]})" in html
    page = live_html()
    assert "pleura-legend" in page and "<details id=\"pleura-timings\">" in page
    assert "<details id=\"pleura-timings\" open" not in page  # timings folded away
    assert page.index("pleura-state-bar") < page.index("pleura-canvas")  # state above image


# ------------------------------------------------------------------ crops: clipped, explained


def test_clip_polygon_and_outside_fraction():
    inside = [[10, 10], [30, 10], [30, 30], [10, 30]]
    assert overlay.outside_fraction(inside, 100, 80) == 0.0
    half = [[50, 10], [150, 10], [150, 30], [50, 30]]  # x from 50 to 150 in a 100-wide image
    assert overlay.outside_fraction(half, 101, 80) == pytest.approx(0.5, abs=0.01)
    assert overlay.outside_fraction([[200, 0], [300, 0], [300, 9], [200, 9]], 100, 80) == 1.0
    assert overlay.outside_fraction([[np.nan, 0]] * 4, 10, 10) is None
    clipped = overlay.clip_polygon(half, 101, 80)
    assert clipped[:, 0].max() == pytest.approx(100) and clipped[:, 0].min() == 50
    assert overlay.crop_notes([inside, half], 101, 80) == [
        "crop 2: 50% outside the image (drawn clipped)"]


def test_a_crop_running_off_the_image_is_drawn_closed_along_the_border():
    rgb = np.zeros((40, 60, 3), np.uint8)
    overlay.draw_quad(rgb, [[30, 5], [90, 5], [90, 35], [30, 35]], (0, 255, 0), 1)
    green = (rgb[..., 1] == 255) & (rgb[..., 0] == 0)
    assert green[5:36, 59].all()  # the right edge of the image closes the box
    assert green[5, 30:60].all() and green[35, 30:60].all() and green[5:36, 30].all()


def test_render_result_follows_the_bundles_crop_default():
    grey = np.full((40, 60), 60, np.uint8)
    res = {"boxes": [[[5, 5], [50, 5], [50, 30], [5, 30]]], "crops": {"show": False}}
    red = lambda img: ((img[..., 0] == 255) & (img[..., 1] == 0)).any()  # noqa: E731
    assert not red(overlay.render_result(grey, res, show_text=False))
    assert red(overlay.render_result(grey, res, show_text=False, show_boxes=True))
    assert red(overlay.render_result(grey, {"boxes": res["boxes"]}, show_text=False))
    r = FrameRenderer()
    store = ResultStore()
    m = _result(1)
    m.meta["crops"] = {"whole_frame": False, "show": False, "note": "no"}
    live = store.update(m)
    shown = cv2.imdecode(np.frombuffer(r.jpeg(live, False, False, False, True), np.uint8), 1)
    hidden = cv2.imdecode(np.frombuffer(r.jpeg(live, False, False, False), np.uint8), 1)
    assert np.abs(shown.astype(int) - hidden.astype(int)).sum() > 0


# ------------------------------------------------------------------ timeline in seconds


def test_timeline_axis_ticks_in_seconds():
    assert timeline.tick_step(8.7) == 2 and timeline.tick_step(0.5) == 0.1
    assert timeline.ticks(0.0, 8.7) == [0, 2, 4, 6, 8]
    assert timeline.ticks(3.2, 200) == [30, 60, 90, 120, 150, 180]
    assert timeline.tick_label(4.0, 2.0, "s") == "4 s"
    assert timeline.tick_label(150.0, 30.0, "s") == "2:30"
    assert timeline.tick_label(0.5, 0.1, "s") == "0.5 s"
    n = 175  # the "frames 0..175" at 20 fps is 8.7 s
    img = timeline.render_timeline([2] * n, [2.0] * n, width=600, height=150,
                                   times=[100.0 + i / 20 for i in range(n)])
    assert img.shape == (150, 600, 3)
    with pytest.raises(ValueError, match="one value per frame"):
        timeline.render_timeline([0, 1], [0.0, 1.0], times=[0.0])


def test_store_times_the_timeline_by_pts_or_grab_time():
    store = ResultStore()  # no pts (a live device): seconds since the first frame was grabbed
    for seq in range(3):
        m = _result(seq, source="v4l2:///dev/video0")
        m.stamps[wire.STAGE["grabbed"]] = 1000.0 + 0.04 * seq
        store.update(m)
    assert store.timeline_times() == pytest.approx([0.0, 0.04, 0.08])
    for seq in range(3):  # a file: its own time, also when the page joined late in the clip
        m = _result(seq)
        m.meta["pts_s"] = 4.3 + 0.05 * seq
        store.update(m)
    assert store.timeline_times() == pytest.approx([4.3, 4.35, 4.4])
    store = ResultStore()
    for seq in range(3):
        m = _result(seq)
        m.meta["pts_s"] = 0.05 * seq
        store.update(m)
    client = _client(store)
    assert client.get("/pleura/state.json").json()["timeline"]["t"] == pytest.approx(
        [0.0, 0.05, 0.1])
    assert client.get("/pleura/timeline.png?w=300&h=100").status_code == 200


# ------------------------------------------------------------------ bundle menu, recording


def test_bundle_menu_offers_shipped_and_given_bundles_and_sends_the_switch(tmp_path):
    from engines.bundle import shipped_bundles

    given = tmp_path / "mine"
    given.mkdir()
    opts = bundle_options(str(given))
    assert [p for p in opts.values()][:len(shipped_bundles())] == [
        p.resolve() for p in shipped_bundles()]
    assert given.resolve() in opts.values()
    choice = BundleChoice(str(given))
    assert choice.path == given.resolve() and opts[choice.label()] == given.resolve()
    seen = []
    choice.on_change(seen.append)
    addr = f"ipc://{tmp_path}/ctl.sock"
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.bind(addr)
    ctl = ControlPublisher(addr)
    try:
        target = next(k for k, v in opts.items() if v != given.resolve())
        got = None
        for _ in range(50):  # a PUB drops until the subscription arrived
            status = switch_bundle(ctl, choice, target)
            if sub.poll(100):
                got = wire.decode(sub.recv())
                break
        assert status.startswith("Sent: switch the model to") and got is not None
        assert got.meta == {"cmd": "bundle", "path": str(opts[target])}
        assert choice.path == opts[target] and seen[-1] == opts[target]
        assert switch_bundle(ctl, choice, "nope").startswith("Not changed: unknown bundle")
    finally:
        ctl.close()
        sub.close(0)


def test_recording_note_names_the_folder_and_no_record_switch(tmp_path):
    import inspect

    from ui import controls

    note = recording_note(tmp_path)
    assert str(tmp_path) in note and "MP4" in note and "Exam" in note
    assert "gr.Checkbox(False, label=\"record\")" not in inspect.getsource(controls)


def test_worker_states_reach_the_page_as_plain_words(tmp_path):
    """Through the real worker: a stream that never delivered a frame and is reconnecting
    says "Reconnecting" with no image; a device that fails after frames says "Source error"
    and its last frame is not live."""
    from engines.testing import make_dummy_bundle
    from stream.messages import SourceState
    from stream.workercore import Worker, WorkerConfig

    w = Worker(WorkerConfig(frames_addrs=(), results_addr="",
                            bundle=str(make_dummy_bundle(tmp_path / "b", seg=False)),
                            backend="onnxruntime", threads=1, seg="off"))
    store = ResultStore()
    client = _client(store)
    try:
        w.on_source_state(0, SourceState("reconnecting", "rtsp://scanner/live",
                                         "connection refused"))
        for raw in w.state_updates():
            store.update(wire.decode(raw))
        st = json.loads(client.get("/pleura/frame.jpg?after=0").headers["x-pleura-state"])
        assert (st["label"], st["detail"], st["has_frame"]) == ("Reconnecting",
                                                                "connection refused", False)
        from tests.test_worker_results import _frame_msg

        img = np.random.default_rng(0).integers(0, 255, (60, 80), dtype=np.uint8)
        for seq in range(3):
            res = w.process([_frame_msg(1, seq, img)])
            store.update(wire.decode(w.finish(*res[0])))
        assert json.loads(client.get("/pleura/frame.jpg?after=0").headers[
            "x-pleura-state"])["label"] == "Live"
        w.on_source_state(1, SourceState("error", None, "VIDIOC_DQBUF: No such device"))
        for raw in w.state_updates():
            store.update(wire.decode(raw))
        r = client.get(f"/pleura/frame.jpg?after={store.latest().n - 1}")
        st = json.loads(r.headers["x-pleura-state"])
        assert (st["label"], st["live"], st["has_frame"]) == ("Source error", False, True)
        assert "No such device" in st["detail"]
        assert json.loads(r.headers["x-pleura-meta"])["resent"] is True
    finally:
        w.close()
