"""Recording zone clips (issue #14): playable MP4 at the source's rate, JSONL beside it, and a
SIGKILL mid-recording leaves the finished clips playable and the exam reopenable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

from stream.exam.clipwriter import ClipWriter, stale_parts
from stream.exam.record import record_zone
from stream.exam.store import Exam
from stream.sources import decode_file

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "stream" / "demo" / "demo-linear.mp4"


def _frames(n: int, h: int, w: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def test_lossless_clip_is_bit_exact_and_keeps_the_rate(tmp_path):
    frames = _frames(5, 37, 50)  # odd height too
    w = ClipWriter(tmp_path / "a.mp4", 12.5, "lossless")
    for f in frames:
        w.write(f, result={"score": 2})
    path = w.finish()
    back = [f.image for f in decode_file(path)]
    assert len(back) == 5
    np.testing.assert_array_equal(np.stack(back), np.stack(frames))
    with av.open(str(path)) as c:
        assert float(c.streams.video[0].average_rate) == pytest.approx(12.5)
    lines = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert lines[0]["kind"] == "clip" and lines[0]["fps"] == 12.5
    assert [x["i"] for x in lines[1:]] == list(range(5)) and lines[1]["score"] == 2
    assert not stale_parts(tmp_path)


def test_h264_clip_pads_odd_sizes_and_plays(tmp_path):
    w = ClipWriter(tmp_path / "b.mp4", 20, "auto")
    for f in _frames(6, 37, 51):
        w.write(f)
    back = [f.image for f in decode_file(w.finish())]
    assert len(back) == 6 and back[0].shape == (38, 52, 3)


DRIVER = """
import sys
from stream.exam.record import record_zone
from stream.exam.store import Exam
from engines.scorer import load_scorer
exam = Exam.create(sys.argv[1], "P07", protocol=6)
scorer = load_scorer(None)
for zone in ("R1", "R2"):
    entry = record_zone(exam, zone, sys.argv[2], seconds=0.5, scorer=scorer, speed=4.0)
    print(zone, "done", entry.video_score, flush=True)
print("R3 recording", flush=True)
record_zone(exam, "R3", sys.argv[2], seconds=60, scorer=scorer, speed=0.5)
print("R3 finished (should have been killed)", flush=True)
"""


def test_sigkill_mid_recording_keeps_finished_clips_and_exam(tmp_path):
    folder = tmp_path / "exam"
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(folder), str(DEMO)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if line.startswith("R3 recording") or not line:
                break
        assert lines[-1].startswith("R3 recording"), lines
        part = folder / "clips" / ".R3-001.part.jsonl"
        while time.monotonic() < deadline:  # mid-recording: frames of R3 are being written
            if part.exists() and part.read_text().count('"i"') >= 5:
                break
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL

    exam = Exam.open(folder)  # reopenable
    assert [len(exam.zones[z].clips) for z in ("R1", "R2", "R3")] == [1, 1, 0]
    total, n, _ = exam.total()
    assert n == 2 and total == exam.zones["R1"].score + exam.zones["R2"].score
    for zone in ("R1", "R2"):
        clip = exam.resolve(exam.zones[zone].clips[0].file)
        recorded = (clip.with_suffix(".jsonl")).read_text().count('"i"')
        assert len(list(decode_file(clip))) == recorded == 10  # 0.5 s at 20 fps, playable
    assert {p.name for p in stale_parts(folder)} >= {".R3-001.part.mp4", ".R3-001.part.jsonl"}

    # continue the exam: the interrupted zone is recorded again
    clip = record_zone(exam, "R3", str(DEMO), seconds=0.25, speed=8.0)
    assert clip.name == "R3-002.mp4" and len(list(decode_file(clip))) == 5
