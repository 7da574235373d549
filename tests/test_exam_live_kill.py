"""Issue #14: killing `pleura live` with SIGKILL mid-recording leaves every finished zone clip
playable and the exam reopenable. Drives the page's Exam actions through its API (the same
handlers the buttons call) with gradio_client; no browser needed."""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

import pytest

from benchmarks.browser import LivePipeline, pick_bundle, wait_for
from stream.exam.clipwriter import stale_parts
from stream.exam.store import Exam
from stream.sources import decode_file

REPO = Path(__file__).resolve().parents[1]
gradio_client = pytest.importorskip("gradio_client")


def test_sigkill_of_pleura_live_mid_recording(tmp_path, monkeypatch):
    exams = tmp_path / "exams"
    monkeypatch.setenv("PLEURA_EXAM_DIR", str(exams))
    live = LivePipeline(REPO / "stream" / "demo" / "demo-convex.mp4",
                        pick_bundle(Path(tempfile.mkdtemp(dir=tmp_path))), tmp_path / "live.log")
    killed = False
    try:
        live.wait_ready(75)
        client = gradio_client.Client(live.url, verbose=False)
        client.predict("P09", "6", "2026-02-03", api_name="/exam_open")
        for zone in ("R1", "R2"):
            client.predict(zone, api_name="/exam_zone")
            status = client.predict(zone, 1.0, api_name="/exam_record")[0]
            assert f"Recorded {zone}" in status.replace("*", ""), status
        client.predict("R3", api_name="/exam_zone")
        client.submit("R3", 30.0, api_name="/exam_record")  # still recording when killed
        folder = exams / "P09-2026-02-03"
        part = folder / "clips" / ".R3-001.part.jsonl"
        # the encoder buffers its first frames, so the MP4 part appears after the JSONL one
        wait_for(lambda: part.exists() and part.read_text().count('"seq"') >= 5
                 and part.with_suffix(".mp4").exists(), 60, "R3 frames being recorded")
        os.killpg(live.proc.pid, signal.SIGKILL)  # the whole of pleura live, at once
        killed = True
        live.proc.wait(10)
    finally:
        if not killed:
            live.stop()
        else:
            live._log.close()
    assert live.proc.returncode == -signal.SIGKILL

    exam = Exam.open(folder)  # reopenable
    assert [len(exam.zones[z].clips) for z in ("R1", "R2", "R3")] == [1, 1, 0]
    assert exam.total()[1] == 2
    for zone in ("R1", "R2"):
        entry = exam.zones[zone].clips[0]
        clip = exam.resolve(entry.file)
        assert entry.ok and len(list(decode_file(clip))) == entry.n_frames > 0  # playable
    assert any(p.name == ".R3-001.part.mp4" for p in stale_parts(folder))
