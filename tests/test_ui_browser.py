"""End to end in a real headless Chromium: `pleura live` on a clip, the page, the report.

Starts the real pipeline (supervisor, capture, worker, UI processes over loopback tcp) on the
demo clip (or a generated one), opens the page with selenium, waits for a score, checks that
the live image moves, that the video score and timeline are shown, that the page reads as
issue #14 asks (plain source state through pause / stop, a greyed "not live" image, legend,
bars that agree with the video score, timings folded away, the crop switch, the bundle menu
switching the worker), uploads the clip on the report tab and checks the report.
Screenshots, the browser-measured display fps / latency and the pipeline log go to
``artifacts/ui/``. Skips when chromium, chromedriver or selenium are missing.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from benchmarks.browser import (
    LivePipeline,
    chromium,
    demo_or_clip,
    first_score,
    pick_bundle,
    wait_for,
)
from tests._browser import BROWSER_MARKS

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts" / "ui"

pytestmark = BROWSER_MARKS
pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402 - after the skip


@pytest.fixture(scope="module")
def live_page():
    tmp = Path(tempfile.mkdtemp(prefix="pleura-ui-test-"))
    clip = demo_or_clip(tmp)
    bundle = pick_bundle(tmp)
    live = LivePipeline(clip, bundle, tmp / "live.log")
    try:
        live.wait_ready(75)
        yield live.url, clip, bundle
    finally:
        live.stop()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp / "live.log", ARTIFACTS / "live.log")
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    with chromium() as driver:
        yield driver


def _canvas_pixels(driver) -> np.ndarray:
    import cv2

    png = driver.find_element(By.ID, "pleura-canvas").screenshot_as_png
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)


@contextlib.contextmanager
def _screenshot_on_failure(driver, name: str):
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            driver.save_screenshot(str(ARTIFACTS / name))
        raise


def test_live_page_in_chromium(live_page, browser):
    url, _clip, bundle = live_page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with _screenshot_on_failure(browser, "live-failure.png"):
        _check_live(browser, url)
        _check_findings(browser, bundle)
        _check_mask_default(browser, bundle)
        _check_bundle_switch(browser)


def _check_findings(d, bundle: str) -> None:
    """The findings panel: one row per finding in clinical words with percentages when the
    bundle has a findings head (PLEURA_UI_TEST_BUNDLE=...), hidden when it has none."""
    import engines
    from engines.findings import finding_label

    names = engines.load_bundle(bundle).finding_names
    panel = d.find_element(By.ID, "pleura-findings")
    if not names:
        assert not panel.is_displayed(), "findings shown for a bundle without a findings head"
        return
    wait_for(panel.is_displayed, 10, "the findings panel")
    rows = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in d.find_elements(By.CSS_SELECTOR, "#pleura-findings-rows tr")]
    assert [r[0] for r in rows] == [finding_label(n) for n in names], rows
    assert all(r[2].endswith("%") and r[3].endswith("%") for r in rows), rows


def _check_mask_default(d, bundle: str) -> None:
    """A bundle whose masks are not meaningful on its images (manifest ``seg_display``) starts
    with the mask switch off and says why; others start with it on."""
    import engines

    shown, note = engines.load_bundle(bundle).masks_shown
    box = d.find_element(By.ID, "pleura-mask")
    wait_for(lambda: box.is_selected() == shown, 10, "the mask switch's bundle default")
    if not shown:
        why = wait_for(lambda: d.find_element(By.ID, "pleura-mask-why").text, 10, "the note")
        assert why == note, why


def _check_live(d, url: str) -> None:
    d.get(url)
    assert "not for diagnosis" in wait_for(
        lambda: d.find_element(By.ID, "pleura-disclaimer").text, 30, "the disclaimer")

    assert int(first_score(d)) in range(4)
    time.sleep(1.0)  # let the display settle (and the fps window fill)
    a = _canvas_pixels(d)
    d.save_screenshot(str(ARTIFACTS / "live-1.png"))
    seq_a = d.find_element(By.ID, "pleura-canvas").get_attribute("data-seq")
    time.sleep(1.0)
    b = _canvas_pixels(d)
    d.save_screenshot(str(ARTIFACTS / "live-2.png"))
    seq_b = d.find_element(By.ID, "pleura-canvas").get_attribute("data-seq")
    assert a.shape == b.shape and a.std() > 5, "the live image is blank"
    assert seq_a != seq_b, "no new result was drawn within a second"
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 0.5, "the live image did not change"

    video = d.find_element(By.ID, "pleura-video-score").text.strip()
    assert video.isdigit() and int(video) in range(4)
    assert int(d.find_element(By.ID, "pleura-video-n").text) >= 1
    _check_readable(d)
    wait_for(lambda: d.execute_script(
        "const i = document.getElementById('pleura-timeline');"
        "return i && i.complete && i.naturalWidth > 0;"), 10, "the timeline plot")

    stats = d.execute_script("return window.pleuraStats.summary()")
    (ARTIFACTS / "live-stats.json").write_text(json.dumps(stats, indent=1))
    assert stats["drawn"] >= 5 and stats["errors"] == 0, stats
    _check_controls(d)


def _state(d) -> str:
    return d.find_element(By.ID, "pleura-state").text.strip()


def _not_live(d) -> bool:
    box = d.find_element(By.ID, "pleura-canvas-box")
    return "pl-notlive" in (box.get_attribute("class") or "")


def _check_readable(d) -> None:
    """Issue #14: the page a clinician reads."""
    wait_for(lambda: _state(d) == "Live", 10, "the state 'Live'")
    assert not _not_live(d) and not d.find_element(By.ID, "pleura-stale").is_displayed()
    legend = d.find_element(By.ID, "pleura-legend").text
    assert "normally aerated" in legend and "severe loss of aeration" in legend, legend
    assert "Mask" in legend
    # engineering timings are folded away, still there for whoever opens them
    timings = d.find_element(By.ID, "pleura-timings")
    assert timings.get_attribute("open") is None
    assert not d.find_element(By.ID, "pleura-backend").is_displayed()
    assert d.find_element(By.ID, "pleura-backend").get_attribute("textContent") not in ("",
                                                                                        "–")

    def agree():  # the outlined video bar is the video score shown above the bars
        video = d.find_element(By.ID, "pleura-video-score").text.strip()
        chosen = d.find_elements(By.CSS_SELECTOR, "#pleura-video-probs .pl-bar.pl-chosen")
        return len(chosen) == 1 and chosen[0].text.split()[0] == video

    wait_for(agree, 5, "the video bars to agree with the video score")
    assert "frames whose own score is" in d.find_element(By.ID, "pleura-frame-share").text
    # the crop switch follows the bundle: none for a whole-frame model, else its default
    crops = d.execute_script("return (window.pleuraStats.last.meta || {}).crops") or {}
    label = d.find_element(By.ID, "pleura-boxes-label")
    note = d.find_element(By.ID, "pleura-crop-note").text
    if crops.get("whole_frame"):
        assert not label.is_displayed() and "whole-frame" in note, note
    else:
        assert label.is_displayed()
        assert d.find_element(By.ID, "pleura-boxes").is_selected() == bool(crops.get("show"))
    assert not d.find_elements(By.XPATH, "//label[normalize-space()='record']")
    assert "Exam" in d.find_element(By.ID, "pleura-recording-note").text
    assert d.find_element(By.ID, "pleura-bundle-choice").is_displayed()
    # the timeline's axis is seconds of the video: 20 fps -> a twentieth of the frame count
    with urllib.request.urlopen(d.current_url + "pleura/state.json", timeout=5) as r:
        tl = json.loads(r.read())["timeline"]
    assert len(tl["t"]) == len(tl["frame"]) >= 2
    assert 0 < tl["t"][-1] - tl["t"][0] < len(tl["t"]) / 5


def _button(d, label: str):
    return d.find_element(By.XPATH, f"//button[normalize-space()='{label}']")


def _video_n(d) -> int:
    return int(d.find_element(By.ID, "pleura-video-n").text or 0)


def _check_controls(d) -> None:
    """Reset and pause/resume travel UI -> supervisor -> worker / capture and take effect."""
    status = lambda: d.find_element(By.ID, "pleura-control-status").text  # noqa: E731
    wait_for(lambda: _video_n(d) >= 30, 20, "30 frames in the running video score")
    _button(d, "Reset video score").click()
    wait_for(lambda: "Sent: reset the video score" in status(), 10, "the reset to be sent")
    wait_for(lambda: _video_n(d) < 25, 5, "the video score to restart")

    _button(d, "Pause").click()
    wait_for(lambda: "Sent: pause" in status(), 10, "the pause to be sent")
    # the page says so in large plain words and greys the frame out with its age
    wait_for(lambda: _state(d) == "Paused", 10, "the state 'Paused'")
    assert _not_live(d)
    wait_for(lambda: d.find_element(By.ID, "pleura-stale").text.startswith(
        "Not live · last frame"), 5, "the not-live note")
    time.sleep(1.0)  # results already in flight arrive
    seq = d.find_element(By.ID, "pleura-canvas").get_attribute("data-seq")
    time.sleep(1.0)
    assert d.find_element(By.ID, "pleura-canvas").get_attribute("data-seq") == seq, \
        "frames kept coming while paused"
    d.save_screenshot(str(ARTIFACTS / "live-paused.png"))
    _button(d, "Resume").click()
    wait_for(lambda: d.find_element(By.ID, "pleura-canvas").get_attribute("data-seq") != seq,
             10, "frames after resume")
    wait_for(lambda: _state(d) == "Live" and not _not_live(d), 10, "'Live' after resume")
    _button(d, "Stop").click()
    wait_for(lambda: _state(d) == "Stopped" and _not_live(d), 10, "the state 'Stopped'")
    _button(d, "Start").click()
    wait_for(lambda: _state(d) == "Live", 10, "'Live' after start")


def _check_bundle_switch(d) -> None:
    """The bundle menu restarts the worker on the chosen bundle (UI -> supervisor); the page
    shows results of the new bundle, and is not live while the worker loads it."""
    from ui.bundles import bundle_options

    def name_of(path: Path) -> str:  # engines.Bundle.name, without verifying every file
        return json.loads((path / "manifest.json").read_text()).get("name") or path.name

    current = d.find_element(By.ID, "pleura-bundle").text.strip()
    labels = [k for k, p in bundle_options(None).items() if name_of(p) != current]
    if not labels:
        pytest.skip("one bundle only: nothing to switch to")
    target = bundle_options(None)[labels[0]]
    d.find_element(By.CSS_SELECTOR, "#pleura-bundle-choice input").click()
    css = f"[role='option'][aria-label='{labels[0]}']"
    option = wait_for(lambda: [o for o in d.find_elements(By.CSS_SELECTOR, css)
                               if o.is_displayed()], 15, "the bundle in the menu")
    option[0].click()
    wait_for(lambda: "Sent: switch the model" in d.find_element(
        By.ID, "pleura-control-status").text, 10, "the bundle switch to be sent")
    name = name_of(target)
    wait_for(lambda: d.find_element(By.ID, "pleura-bundle").text.strip() == name, 120,
             f"results of bundle {name}")
    wait_for(lambda: _state(d) == "Live", 20, "'Live' on the new bundle")


def test_report_page_in_chromium(live_page, browser):
    url, clip, _bundle = live_page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with _screenshot_on_failure(browser, "report-failure.png"):
        _check_report(browser, url, clip)


def _check_report(d, url: str, clip: Path) -> None:
    if not d.current_url.startswith(url):
        d.get(url)
    tab = wait_for(lambda: next(b for b in d.find_elements(By.CSS_SELECTOR, "button[role=tab]")
                                if b.text.strip() == "Report"), 10, "the Report tab")
    tab.click()
    upload = wait_for(lambda: d.find_element(By.CSS_SELECTOR,
                                             "#pleura-report-upload input[type=file]"),
                      10, "the upload field")
    upload.send_keys(str(clip))

    def uploaded() -> bool:  # Gradio shows "name\n.ext\nsize" once the upload is done
        text = d.find_element(By.ID, "pleura-report-upload").text
        return clip.stem in text and "Uploading" not in text

    wait_for(uploaded, 30, "the uploaded file")
    d.find_element(By.ID, "pleura-report-go").click()
    vs = wait_for(lambda: d.find_element(By.ID, "pleura-report-video-score").text.strip(), 60,
                  "the report's video score")
    assert vs.isdigit() and int(vs) in range(4)
    assert "Scored" in d.find_element(By.ID, "pleura-report-status").text
    wait_for(lambda: len(d.find_elements(By.CSS_SELECTOR, "#pleura-report-strip img")) >= 4, 20,
             "the strip of frames")
    wait_for(lambda: d.find_elements(By.CSS_SELECTOR, "#pleura-report-timeline img"), 10,
             "the report timeline")
    links = wait_for(lambda: [a.get_attribute("href") or "" for a in
                              d.find_elements(By.CSS_SELECTOR, "#pleura-report-files a")], 10,
                     "the download links")
    assert any(h.endswith(".scores.json") for h in links), links
    assert any(h.endswith(".scores.csv") for h in links), links
    d.save_screenshot(str(ARTIFACTS / "report.png"))
