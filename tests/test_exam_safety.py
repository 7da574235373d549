"""Hardening round 3 (#29 items 1-3, 9): the exam record against stored markup, path escape
and lost writes.

- **Stored XSS**: dates are validated as dates wherever they enter (``pleura exam --date``, the
  page, a reopened ``exam.json``) and every value the Exam and Report tabs put in ``gr.HTML`` is
  escaped.
- **Path escape**: the page's open action validates the patient ID before any path is built and
  confines the exam folder to the exam root (absolute IDs, ``..``, symbolic links out).
- **Lost overrides**: several writers on one exam (two pages, ``pleura exam`` re-run while the
  page sets an override, several processes) merge under a file lock; nothing is dropped.

Real files, real processes (multiprocessing), the real ``pleura exam`` CLI and scorer.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os

import pytest

from stream import cli
from stream.exam import cli as exam_cli
from stream.exam.store import EXAM_FILE, ClipRecord, Exam, ExamError, check_date
from tests.test_exam import clip_frames, demo_frames, write_mp4  # noqa: F401 - fixture
from ui.exam import ExamDesk, total_html, zone_html
from ui.report import ClipReport, summary_html
from ui.scoring import FrameRow

XSS = "<img src=x onerror=document.title=1>"


# --------------------------------------------------------------------------- 1. stored XSS


def test_dates_are_validated_where_they_enter(tmp_path, capsys):
    assert check_date("2026-03-14") == "2026-03-14"
    for bad in (XSS, "2026-02-30", "20260314", "2026-W11-6", "", None, 20260314):
        with pytest.raises(ExamError, match="YYYY-MM-DD"):
            check_date(bad)
    with pytest.raises(ExamError, match="YYYY-MM-DD"):
        Exam.create(tmp_path / "e", "P01", 6, XSS)
    assert not (tmp_path / "e").exists()  # refused before the folder is made
    desk = ExamDesk(None, root=tmp_path / "exams")
    with pytest.raises(ExamError, match="YYYY-MM-DD"):
        desk.open("P01", 6, XSS)
    # pleura exam --date: exit 2 with one line, before any model is loaded or file written
    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "P01_R1.mp4").write_bytes(b"never decoded")
    rc = cli.main(["exam", str(clips), "--protocol", "6", "--out", str(tmp_path / "out"),
                   "--date", XSS])
    assert rc == 2
    assert "--date" in capsys.readouterr().out and not (tmp_path / "out").exists()


def test_reopened_exam_with_markup_in_its_date_is_refused(tmp_path):
    exam = Exam.create(tmp_path / "exams" / "P01-2026-01-02", "P01", 6, "2026-01-02")
    doc = json.loads((exam.folder / EXAM_FILE).read_text())
    doc["date"] = XSS  # an exam.json edited by hand or by an attacker
    (exam.folder / EXAM_FILE).write_text(json.dumps(doc))
    with pytest.raises(ExamError, match="exam date .* is not valid"):
        Exam.open(exam.folder)
    desk = ExamDesk(None, root=tmp_path / "exams")
    with pytest.raises(ExamError, match="exam date .* is not valid"):
        desk.reopen("P01-2026-01-02")


def test_every_value_in_the_exam_and_report_html_is_escaped(tmp_path):
    exam = Exam.create(tmp_path / "e", "P01", 6, "2026-01-02")
    exam.add_clip("R1", ClipRecord(f"clips/{XSS}.mp4", ok=True, video_score=2, n_frames=3))
    exam.set_override("R1", 3, f"note {XSS}")
    exam.date = XSS  # as if validation were bypassed: the HTML still carries no markup
    for page in (total_html(exam), zone_html(exam, "R1")):
        assert "<img" not in page and "&lt;img" in page
    row = FrameRow(0, (1.0, 0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0), 0)
    report = ClipReport(clip=f"{XSS}.mp4", rows=(row,), video_probs=(1.0, 0.0, 0.0, 0.0),
                        seconds=1.0, backend=XSS, bundle=XSS)
    summary = summary_html(report)
    assert "<img" not in summary and summary.count("&lt;img") == 3


# --------------------------------------------------------------------------- 2. path escape


@pytest.mark.parametrize("patient", ["/elsewhere/victim", "../../victim", "..", "a/b",
                                     "P01/../../victim"])
def test_page_cannot_open_an_exam_outside_the_exam_root(tmp_path, patient):
    root = tmp_path / "exams"
    victim = Exam.create(tmp_path / "elsewhere" / "victim-2026-01-02", "victim", 6, "2026-01-02")
    victim.set_override("R1", 1, "the victim's own")
    before = (victim.folder / EXAM_FILE).read_bytes()
    desk = ExamDesk(None, root=root)
    target = patient.replace("/elsewhere/", f"{tmp_path}/elsewhere/")
    with pytest.raises(ExamError, match="patient ID"):
        desk.open(target, 6, "2026-01-02")
    assert desk.exam is None
    assert (victim.folder / EXAM_FILE).read_bytes() == before
    assert not root.exists() or not any(root.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere"]


def test_exam_create_checks_the_patient_before_reopening(tmp_path):
    Exam.create(tmp_path / "victim", "victim", 6, "2026-01-02")
    with pytest.raises(ExamError, match="patient ID"):
        Exam.create(tmp_path / "victim", "../victim", 6, "2026-01-02", exist_ok=True)


def test_symbolic_link_out_of_the_exam_root_is_refused(tmp_path):
    root = tmp_path / "exams"
    root.mkdir()
    victim = Exam.create(tmp_path / "elsewhere" / "P01-2026-01-02", "P01", 6, "2026-01-02")
    (root / "P01-2026-01-02").symlink_to(victim.folder, target_is_directory=True)
    desk = ExamDesk(None, root=root)
    with pytest.raises(ExamError, match="outside"):
        desk.open("P01", 6, "2026-01-02")
    with pytest.raises(ExamError, match="outside"):
        desk.reopen("P01-2026-01-02")
    assert desk.exam is None


# --------------------------------------------------------------------------- 3. lost writes


def test_two_pages_on_one_exam_keep_both_overrides(tmp_path):
    root = tmp_path / "exams"
    a, b = ExamDesk(None, root=root), ExamDesk(None, root=root)
    ea = a.open("P01", 6, "2026-01-02")
    eb = b.open("P01", 6, "2026-01-02")
    ea.set_override("R1", 2, "page A")
    eb.set_override("L1", 3, "page B")  # B's in-memory record never saw A's override
    ea.add_clip("R2", ClipRecord("clips/R2-1.mp4", ok=True, video_score=1))
    on_disk = Exam.open(ea.folder)
    assert on_disk.zones["R1"].override.note == "page A"
    assert on_disk.zones["L1"].override.note == "page B"
    assert [c.file for c in on_disk.zones["R2"].clips] == ["clips/R2-1.mp4"]
    assert on_disk.total() == (6, 3, 6)
    # each page shows what is on disk, not its own stale copy
    assert a.current().total() == b.current().total() == (6, 3, 6)
    assert "page B" in zone_html(a.current(), "L1")
    # the same zone set twice: the later save wins, as at one desk
    ea.set_override("L1", 0, "page A corrects")
    assert b.current().zones["L1"].override.note == "page A corrects"
    eb.set_override("R1", None)  # a clear is a change like any other
    assert Exam.open(ea.folder).zones["R1"].override is None
    assert Exam.open(ea.folder).zones["L1"].override.score == 0


def test_pleura_exam_rerun_while_the_page_sets_an_override(tmp_path, demo_frames,  # noqa: F811
                                                            monkeypatch):
    """The CLI holds its record for the whole scoring run (seconds to minutes); an override
    the page sets meanwhile must survive the CLI's save (it was dropped before #29)."""
    clips = tmp_path / "clips"
    clips.mkdir()
    for name, t in {"P01_R1.mp4": 0.5, "P01_R2.mp4": 4.5}.items():
        write_mp4(clips / name, clip_frames(demo_frames, t))
    out = tmp_path / "out"
    assert cli.main(["exam", str(clips), "--protocol", "6", "--out", str(out)]) == 0
    real = exam_cli.score_into_exam
    calls = []

    def page_acts_meanwhile(exam, zone, *args, **kwargs):
        if not calls:  # the clinician overrides L2 on the page while the CLI scores
            page = Exam.open(out / "P01")
            page.set_override("L2", 3, "seen at the bedside")
        calls.append(zone)
        return real(exam, zone, *args, **kwargs)

    monkeypatch.setattr(exam_cli, "score_into_exam", page_acts_meanwhile)
    assert cli.main(["exam", str(clips), "--protocol", "6", "--out", str(out)]) == 0
    assert calls == ["R1", "R2"]
    after = Exam.open(out / "P01")
    assert after.zones["L2"].override is not None
    assert after.zones["L2"].override.note == "seen at the bedside"
    assert [len(after.zones[z].clips) for z in ("R1", "R2")] == [1, 1]  # re-scored, not doubled
    report = json.loads((out / "P01" / "P01-report.json").read_text())
    assert report["total"]["score"] == after.total()[0]


def _writer(folder: str, zone: str, n: int) -> None:
    exam = Exam.open(folder)
    for k in range(n):
        exam.set_override(zone, k % 4, f"{zone} take {k}")
        exam.add_clip(zone, ClipRecord(f"clips/{zone}-{k}.mp4", ok=True, video_score=k % 4))


def test_concurrent_writer_processes_lose_nothing(tmp_path):
    exam = Exam.create(tmp_path / "e", "P01", 6, "2026-01-02")
    n = 15
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(exam.folder), z, n))
             for z in ("R1", "R2", "R3", "L1")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    final = Exam.open(exam.folder)
    for z in ("R1", "R2", "R3", "L1"):
        assert final.zones[z].override.note == f"{z} take {n - 1}"
        assert [c.file for c in final.zones[z].clips] == [f"clips/{z}-{k}.mp4" for k in range(n)]


# --------------------------------------------------------------------------- 9. clear errors


@pytest.mark.parametrize("change, message", [
    ({"schema_version": "abc"}, "schema_version 'abc' is not an integer"),
    ({"zones": []}, "'zones' must be an object"),
    ({"zones": {"R1": []}}, "zone R1: expected an object"),
    ({"zones": {"R1": {"clips": [["a.mp4"]]}}}, "malformed"),
])
def test_malformed_exam_json_is_one_clear_error(tmp_path, change, message):
    exam = Exam.create(tmp_path / "e", "P01", 6, "2026-01-02")
    doc = json.loads((exam.folder / EXAM_FILE).read_text())
    doc.update(change)
    (exam.folder / EXAM_FILE).write_text(json.dumps(doc))
    with pytest.raises(ExamError, match=message):
        Exam.open(exam.folder)
    # and a writer never overwrites a record it cannot read
    with pytest.raises(ExamError):
        exam.set_override("R1", 1)
    assert json.loads((exam.folder / EXAM_FILE).read_text()) == doc


def test_stale_temporary_files_are_removed_on_the_next_save(tmp_path):
    exam = Exam.create(tmp_path / "e", "P01", 6, "2026-01-02")
    stale = exam.folder / f".{EXAM_FILE}.{os.getpid() + 99999}.tmp"
    stale.write_text("{ torn")  # a writer killed between write and rename
    exam.set_override("R1", 1)
    assert not stale.exists()
    assert Exam.open(exam.folder).zones["R1"].override.score == 1


def test_patient_ids_with_underscores_open_but_never_escape(tmp_path):
    """Real data sets name clips ``patient_62_R1.mp4``: '_' is allowed in a patient ID
    (the zone is parsed from the right); '/', '.' and '..' still are not."""
    desk = ExamDesk(None, root=tmp_path / "exams")
    exam = desk.open("patient_62", 6, "2026-01-02")
    assert exam.folder == (tmp_path / "exams" / "patient_62-2026-01-02").resolve()
    for bad in ("patient_62/../x", "..", "p.62", "_x"):
        with pytest.raises(ExamError, match="patient ID"):
            desk.open(bad, 6, "2026-01-02")
