"""The Exam tab's server side (issue #14): recording a zone from the live result stream,
scores on the chest map, overrides, reopening and export, without a browser."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from stream import wire
from stream.exam.store import Exam, ExamError
from stream.sources import decode_file
from ui.exam import ExamDesk, chest_svg, total_html, zone_html
from ui.result_feed import ResultStore

DEMO = Path(__file__).resolve().parents[1] / "stream" / "demo" / "demo-linear.mp4"


def _feed(store: ResultStore, frames: list[np.ndarray], rate: float = 20.0) -> None:
    t0 = time.time()
    for i, f in enumerate(frames):
        probs = [0.1, 0.1, 0.1, 0.1]
        probs[i % 4] = 0.7
        meta = {"seq": i, "stream_id": 0, "source": "demo", "probs": probs, "score": i % 4,
                "video": {"probs": probs, "score": 1, "n_frames": i + 1}}
        msg = wire.Message(kind=wire.Kind.RESULT, seq=i, meta=meta, array=f)
        msg.stamp("grabbed", t0 + i / rate)
        store.update(msg)
        if i == 3:  # a status result (no score) in between is not a frame
            store.update(wire.Message(kind=wire.Kind.RESULT, seq=i, array=f,
                                      meta={"seq": i, "score": None, "resent": True}))
        time.sleep(max(0.0, t0 + (i + 1) / rate - time.time()))  # a real-time stream


def test_record_zone_from_live_results_then_override_reopen_export(tmp_path):
    frames = [f.image[..., 0].copy() for f in decode_file(DEMO, max_frames=30)]
    store = ResultStore()
    desk = ExamDesk(store, root=tmp_path / "exams", export_dir=tmp_path / "export")
    with pytest.raises(ExamError, match="open an exam first"):
        desk.record("R1", 1.0)
    exam = desk.open("P01", 6, "2026-01-02")
    assert exam.folder == tmp_path / "exams" / "P01-2026-01-02"
    feeder = threading.Timer(0.3, _feed, (store, frames))
    feeder.start()
    entry = desk.record("R1", 1.0)  # 1 s of a 20 fps stream, then auto-stop
    feeder.join()
    # the page sees results latest-wins: a frame may be missed when this process is busy
    assert entry.ok and 17 <= entry.n_frames <= 20 and entry.video_score in range(4)
    clip = exam.resolve(entry.file)
    assert len(list(decode_file(clip))) == entry.n_frames
    lines = [json.loads(x) for x in clip.with_suffix(".jsonl").read_text().splitlines()]
    assert lines[0]["fps"] == pytest.approx(20.0, rel=0.05)
    seqs = [x["seq"] for x in lines[1:]]  # the live results beside the frames
    assert len(seqs) == entry.n_frames and seqs == sorted(seqs) and seqs[-1] < 20
    assert all(x["score"] == x["seq"] % 4 for x in lines[1:])

    svg = chest_svg(exam, "R1")
    assert f'id="pleura-zone-R1" data-score="{entry.video_score}"' in svg
    assert 'id="pleura-zone-L3" data-score=""' in svg
    assert f'data-total="{entry.video_score}"' in total_html(exam)
    assert "1 of 6 zones scored" in total_html(exam)

    exam.set_override("L3", 2, "seen on a second sweep")
    assert "override: 2 (seen on a second sweep)" in zone_html(exam, "L3")
    other = ExamDesk(store, root=tmp_path / "exams")
    assert other.existing() == ["P01-2026-01-02"]
    again = other.reopen("P01-2026-01-02")  # reopen from the list
    with pytest.raises(ExamError, match="no exam"):
        other.reopen("../P01-2026-01-02")
    assert again.total() == (entry.video_score + 2, 2, 6)
    with pytest.raises(ExamError, match="holds a 6-zone exam"):
        ExamDesk(store, root=tmp_path / "exams").open("P01", 14, "2026-01-02")

    files = [Path(p) for p in desk.export()]
    assert {p.suffix for p in files} == {".pdf", ".json", ".csv"}
    assert all(p.parent.parent == tmp_path / "export" for p in files)
    assert Exam.open(exam.folder).total() == again.total()
