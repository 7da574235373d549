"""The bedside exam: zone table, exam.json, `pleura exam` on zone-named clips, reports (#14).

Clips are cut from the shipped demo clips (simulated, 20 fps, a zone of each score 0..3 in
turn), a few frames each, so the default bundle gives different scores in different zones.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from engines.scorer import load_scorer
from stream import cli
from stream.exam.naming import parse_clip_name
from stream.exam.protocols import PROTOCOLS, max_score, zones
from stream.exam.store import EXAM_FILE, ClipRecord, Exam, ExamError
from stream.score import score_paths
from stream.sources import decode_file

DEMO = Path(__file__).resolve().parents[1] / "stream" / "demo"
N = 4  # frames per test clip


def write_mp4(path: Path, frames: list[np.ndarray], rate: int = 20) -> None:
    with av.open(str(path), mode="w") as c:
        s = c.add_stream("mpeg4", rate=rate)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p"
        for f in frames:
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode())


@pytest.fixture(scope="module")
def demo_frames() -> list[np.ndarray]:
    return [f.image for f in decode_file(DEMO / "demo-convex.mp4")]


def clip_frames(frames: list[np.ndarray], second: float) -> list[np.ndarray]:
    i = int(second * 20)
    return frames[i:i + N]


# --------------------------------------------------------------------------- protocols


def test_protocol_table():
    for p in PROTOCOLS:
        zs = zones(p)
        assert len(zs) == p and len({z.id for z in zs}) == p
        assert max_score(p) == 3 * p
        assert all(z.view in ("front", "back") and 0 <= z.x <= 1 and 0 <= z.y <= 1 for z in zs)
    # R1..R4 mean the same place in the 8-, 12- and 14-zone protocols
    names = {p: {z.id: z.name for z in zones(p)} for p in (8, 12, 14)}
    for zid in ("R1", "R2", "R3", "R4", "L1", "L4"):
        assert names[8][zid] == names[12][zid] == names[14][zid]
    assert names[14]["R7"] == "right posterior lower"
    with pytest.raises(ValueError, match="valid: 6, 8, 12, 14"):
        zones(10)


def test_naming_rule():
    c = parse_clip_name("P07_r3_2.mp4", 14)
    assert (c.patient, c.zone, c.take) == ("P07", "R3", "2")
    with pytest.raises(ValueError, match="naming rule"):
        parse_clip_name("P07-R3.mp4", 14)
    with pytest.raises(ValueError, match="zone R7 is not in the 12-zone protocol"):
        parse_clip_name("P07_R7.mp4", 12)


# --------------------------------------------------------------------------- exam.json


def test_exam_record_scores_overrides_and_reopen(tmp_path):
    exam = Exam.create(tmp_path / "e", "P01", protocol=6, date="2026-01-02")
    assert exam.total() == (0, 0, 6)
    exam.add_clip("R1", ClipRecord("a.mp4", ok=True, video_score=1))
    exam.add_clip("R1", ClipRecord("b.mp4", ok=True, video_score=2))  # worst clip counts
    exam.add_clip("L2", ClipRecord("c.mp4", ok=False, error="broken"))
    exam.add_clip("L3", ClipRecord("d.mp4", ok=True, video_score=0))
    assert exam.total() == (2, 2, 6)
    exam.set_override("L3", 3, "B-lines seen off-clip")
    again = Exam.open(tmp_path / "e")
    assert again.total() == (5, 2, 6)
    assert again.zones["L3"].model_score == 0 and again.zones["L3"].override.score == 3
    assert again.zones["L3"].override.note == "B-lines seen off-clip"
    assert "5 / 18 (2 of 6 zones scored)" in again.total_text()
    doc = json.loads((tmp_path / "e" / EXAM_FILE).read_text())
    assert doc["total"] == {"score": 5, "n_scored": 2, "n_zones": 6, "max": 18}
    assert not list((tmp_path / "e").glob(".*tmp"))  # atomic write left no temporary
    with pytest.raises(ExamError, match="already holds an exam"):
        Exam.create(tmp_path / "e", "P01", protocol=6)
    with pytest.raises(ExamError, match="0-3"):
        again.set_override("R1", 4)
    with pytest.raises(ExamError, match="not in the 6-zone protocol"):
        again.set_override("R5", 1)
    with pytest.raises(ExamError, match="pseudonym"):
        Exam.create(tmp_path / "f", "Jane Doe")


# --------------------------------------------------------------------------- pleura exam


@pytest.fixture(scope="module")
def exam_run(tmp_path_factory, demo_frames):
    folder = tmp_path_factory.mktemp("clips")
    plan = {"P01_R1.mp4": 0.5, "P01_R2.mp4": 4.5, "P01_L1.mp4": 8.5, "P01_L1_b.mp4": 12.0,
            "P02_R3.mp4": 11.5, "P02_L2.mp4": 1.0, "P02-L3.mp4": 2.0}  # last: bad name
    for name, t in plan.items():
        write_mp4(folder / name, clip_frames(demo_frames, t))
    (folder / "notes.txt").write_text("not a clip")
    out = folder / "out"
    rc = cli.main(["exam", str(folder), "--protocol", "6", "--out", str(out)])
    return folder, out, rc


def test_pleura_exam_totals_equal_sum_of_clip_scores(exam_run, capsys):
    folder, out, rc = exam_run
    assert rc == 1  # one clip skipped
    scorer = load_scorer(None)
    for patient, clips in (("P01", ["P01_R1", "P01_R2", "P01_L1", "P01_L1_b"]),
                           ("P02", ["P02_R3", "P02_L2"])):
        direct = score_paths([folder / f"{c}.mp4" for c in clips], scorer, echo=None)
        by_zone: dict[str, int] = {}
        for rec in direct["clips"]:
            zone = parse_clip_name(rec["path"], 6).zone
            by_zone[zone] = max(by_zone.get(zone, 0), rec["video"]["score"])
        report = json.loads((out / patient / f"{patient}-report.json").read_text())
        assert report["total"]["score"] == sum(by_zone.values())
        assert report["total"]["n_scored"] == len(by_zone)
        for zone, s in by_zone.items():
            assert report["zones"][zone]["score"] == s
        # per-clip numbers are pleura score's
        exam = Exam.open(out / patient)
        for rec in direct["clips"]:
            zone = parse_clip_name(rec["path"], 6).zone
            entry = next(c for c in exam.zones[zone].clips if Path(c.file).name == rec["name"])
            assert entry.video_score == rec["video"]["score"]
            np.testing.assert_allclose(entry.probs, rec["video"]["probs"], atol=1e-6)
        rows = (out / patient / f"{patient}-report.csv").read_text().splitlines()
        assert rows[-1].split(",")[8] == str(sum(by_zone.values()))


def test_pleura_exam_reports_bad_name_and_scores_the_rest(exam_run, capsys):
    folder, out, rc = exam_run
    rc2 = cli.main(["exam", str(folder), "--protocol", "6", "--out", str(out), "--no-pdf"])
    text = capsys.readouterr().out
    assert rc2 == 1
    assert "SKIPPED P02-L3.mp4" in text and "naming rule <patient>_<zone>" in text
    assert "notes.txt" not in text
    assert "P01: LUS" in text and "P02: LUS" in text


def test_pdf_holds_zone_scores_total_model_and_notice(exam_run):
    pypdf = pytest.importorskip("pypdf")
    _, out, _ = exam_run
    exam = Exam.open(out / "P01")
    text = "\n".join(p.extract_text() for p in pypdf.PdfReader(out / "P01" / "P01-report.pdf")
                     .pages)
    total, n, N = exam.total()
    assert f"Patient LUS score: {total} / 18" in text
    assert f"({n} of {N} zones scored)" in text
    for z, rec in exam.zone_info():
        score = "-" if rec.score is None else str(rec.score)
        line = next(ln for ln in text.splitlines() if ln.startswith(f"{z.id} {z.name} "))
        assert line[len(f"{z.id} {z.name} "):].split()[:2] == [score, score], line  # model, zone
    assert "not a medical device" in text
    assert "bundle default" in text
    assert "Key frames" in text


def test_rerun_keeps_override(exam_run, capsys):
    folder, out, _ = exam_run
    exam = Exam.open(out / "P02")
    before, _, _ = exam.total()
    old = exam.zones["R3"].model_score
    exam.set_override("R3", 3 if old != 3 else 0, "checked by hand")
    cli.main(["exam", str(folder), "--protocol", "6", "--out", str(out), "--no-pdf"])
    again = Exam.open(out / "P02")
    assert again.zones["R3"].override.note == "checked by hand"
    assert again.total()[0] == before - old + again.zones["R3"].override.score
    assert len(again.zones["R3"].clips) == 1  # re-scored, not duplicated


def test_findings_reach_the_exam_and_its_reports(tmp_path, demo_frames):
    """With a bundle that has a findings head, a zone keeps its clip's findings summary."""
    pypdf = pytest.importorskip("pypdf")
    from engines.testing import make_dummy_bundle

    bundle = make_dummy_bundle(tmp_path / "bundle", seg=False, findings=True)
    folder = tmp_path / "clips"
    folder.mkdir()
    write_mp4(folder / "P03_R1.mp4", clip_frames(demo_frames, 2.0))
    out = tmp_path / "out"
    assert cli.main(["exam", str(folder), "--protocol", "6", "--out", str(out),
                     "--bundle", str(bundle)]) == 0
    clip = Exam.open(out / "P03").zones["R1"].clips[0]
    assert isinstance(clip.findings, dict) and clip.findings
    assert all({"mean", "max", "fraction", "present"} <= set(v) for v in clip.findings.values())
    text = "\n".join(p.extract_text() for p in pypdf.PdfReader(out / "P03" / "P03-report.pdf")
                     .pages)
    assert "Findings:" in text
    assert "Findings:" in (out / "P03" / "P03-report.csv").read_text()
