"""Issue #14's acceptance test in a real headless Chromium: a whole 6-zone exam on the page.

`pleura live` plays the demo clip; on the Exam tab the test opens an exam, and for each of the
six zones picks the zone on the chest map, records it from the live view (auto-stop), and
waits for the zone to take its score's colour; overrides one zone; reloads the page and
reopens the exam; exports the report and reads the PDF's text: the six zone scores and the
total. Screenshots of the exam page (and, where pdftoppm exists, of the PDF's first page) go to
``artifacts/ui/``; ``PLEURA_DOC_IMAGES=1`` also copies them to ``docs/img/``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from benchmarks.browser import LivePipeline, chromium, pick_bundle, wait_for
from tests._browser import BROWSER_MARKS

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts" / "ui"
ZONES = ("R1", "R2", "R3", "L1", "L2", "L3")

pytestmark = BROWSER_MARKS
pytest.importorskip("selenium.webdriver")
pypdf = pytest.importorskip("pypdf")
from selenium.webdriver.common.by import By  # noqa: E402 - after the skip


@pytest.fixture(scope="module")
def exam_page():
    tmp = Path(tempfile.mkdtemp(prefix="pleura-exam-test-"))
    old = os.environ.get("PLEURA_EXAM_DIR")
    os.environ["PLEURA_EXAM_DIR"] = str(tmp / "exams")  # the UI process inherits it
    live = LivePipeline(REPO / "stream" / "demo" / "demo-convex.mp4", pick_bundle(tmp),
                        tmp / "live.log")
    try:
        live.wait_ready(75)
        yield live.url, tmp / "exams"
    finally:
        live.stop()
        if old is None:
            os.environ.pop("PLEURA_EXAM_DIR", None)
        else:
            os.environ["PLEURA_EXAM_DIR"] = old
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp / "live.log", ARTIFACTS / "exam-live.log")
        shutil.rmtree(tmp, ignore_errors=True)


def _type(d, elem_id: str, text: str) -> None:
    box = d.find_element(By.CSS_SELECTOR, f"#{elem_id} textarea, #{elem_id} input")
    box.clear()
    box.send_keys(text)


def _choose(d, elem_id: str, label: str) -> None:
    for lab in d.find_elements(By.CSS_SELECTOR, f"#{elem_id} label"):
        if lab.text.strip() == label:
            lab.click()
            return
    raise AssertionError(f"no choice {label!r} in #{elem_id}")


def _zone_score(d, zone: str) -> str:
    return d.find_element(By.ID, f"pleura-zone-{zone}").get_attribute("data-score")


def _open_exam(d, url: str, from_list: bool = False) -> None:
    d.get(url)
    wait_for(lambda: d.find_elements(By.XPATH, "//button[@role='tab'][contains(., 'Exam')]"),
             30, "the Exam tab")
    d.find_element(By.XPATH, "//button[@role='tab'][contains(., 'Exam')]").click()
    wait_for(lambda: d.find_element(By.ID, "pleura-exam-open").is_displayed(), 10, "exam tab")
    if from_list:  # "or continue an exam": pick it in the list of earlier exams
        d.find_element(By.CSS_SELECTOR, "#pleura-exam-earlier input").click()
        css = "[role='option'][aria-label^='P01-']"
        option = wait_for(lambda: [o for o in d.find_elements(By.CSS_SELECTOR, css)
                                   if o.is_displayed()], 15, "the exam in the list")
        option[0].click()
    else:
        _type(d, "pleura-exam-patient", "P01")
        _choose(d, "pleura-exam-protocol", "6")
        d.find_element(By.ID, "pleura-exam-open").click()
    wait_for(lambda: "Exam P01" in d.find_element(By.ID, "pleura-exam-status").text, 30,
             "the exam to open")
    wait_for(lambda: d.find_elements(By.ID, "pleura-zone-L3"), 10, "the 6-zone chest map")


def _page_total(d) -> tuple[int, int]:
    el = d.find_element(By.ID, "pleura-exam-total")
    n = d.find_element(By.ID, "pleura-exam-n")
    return int(el.get_attribute("data-total")), int(n.get_attribute("data-n"))


def test_whole_six_zone_exam_in_chromium(exam_page):
    url, exams = exam_page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with chromium() as d:
        d.set_window_size(1400, 1100)
        try:
            _run_exam(d, url, exams)
        except BaseException:
            with contextlib.suppress(Exception):
                d.save_screenshot(str(ARTIFACTS / "exam-failure.png"))
                (ARTIFACTS / "exam-failure.html").write_text(d.page_source)
            raise


def _run_exam(d, url: str, exams: Path) -> None:
    _open_exam(d, url)
    _type(d, "pleura-exam-seconds", "1.5")
    for zone in ZONES:
        d.find_element(By.CSS_SELECTOR, f"#pleura-zone-{zone} circle").click()  # the map
        wait_for(lambda z=zone: d.find_element(By.ID, "pleura-exam-zone-info")
                 .get_attribute("data-zone") == z, 15, f"zone {zone} picked on the map")
        d.find_element(By.ID, "pleura-exam-record").click()
        wait_for(lambda z=zone: _zone_score(d, z) not in ("", None), 90,
                 f"zone {zone} recorded and scored")
    scores = {z: int(_zone_score(d, z)) for z in ZONES}
    assert _page_total(d) == (sum(scores.values()), 6)
    assert "6 of 6 zones scored" in d.find_element(By.ID, "pleura-exam-n").text

    # override one zone
    zone = "L3"
    new = (scores[zone] + 1) % 4
    d.find_element(By.CSS_SELECTOR, f"#pleura-zone-{zone} circle").click()
    wait_for(lambda: d.find_element(By.ID, "pleura-exam-zone-info")
             .get_attribute("data-zone") == zone, 15, "L3 picked")
    _choose(d, "pleura-exam-ov", str(new))
    _type(d, "pleura-exam-note", "pleural line irregular on review")
    d.find_element(By.ID, "pleura-exam-set-ov").click()
    wait_for(lambda: _zone_score(d, zone) == str(new), 20, "the override on the map")
    scores[zone] = new
    total = sum(scores.values())
    assert _page_total(d) == (total, 6)
    d.save_screenshot(str(ARTIFACTS / "exam-page.png"))

    # reopen after a reload, from the list of exams: the same exam, the override kept
    _open_exam(d, url, from_list=True)
    assert _page_total(d) == (total, 6)
    assert {z: int(_zone_score(d, z)) for z in ZONES} == scores

    # export and read the PDF
    d.find_element(By.ID, "pleura-exam-export").click()
    def listed() -> bool:
        text = d.find_element(By.ID, "pleura-exam-files").get_attribute("textContent")
        return "P01-report" in text and ".pdf" in text

    wait_for(listed, 60, "the report files on the page")
    pdf = next(exams.glob("P01-*/P01-report.pdf"))
    text = "\n".join(p.extract_text() for p in pypdf.PdfReader(pdf).pages)
    assert f"Patient LUS score: {total} / 18  (6 of 6 zones scored)" in text
    for z in ZONES:
        line = next(ln for ln in text.splitlines() if ln.startswith(f"{z} "))
        assert str(scores[z]) in line.split(), line
    assert "pleural line irregular on review" in text
    assert "not a medical device" in text
    _save_images(pdf)


def _save_images(pdf: Path) -> None:
    if shutil.which("pdftoppm"):
        subprocess.run(["pdftoppm", "-r", "70", "-png", "-f", "1", "-l", "1", "-singlefile",
                        str(pdf), str(ARTIFACTS / "exam-report-page1")], check=True, timeout=60)
    if os.environ.get("PLEURA_DOC_IMAGES"):
        docs = REPO / "docs" / "img"
        for name in ("exam-page.png", "exam-report-page1.png"):
            if (ARTIFACTS / name).exists():
                shutil.copy(ARTIFACTS / name, docs / name)
