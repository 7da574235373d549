"""The report tab's output for a real clip and dummy bundles, with and without a findings head.

Scoring is the real ``pleura score`` path (PyAV decoding, ONNX Runtime); only Gradio is left
out (``make_report`` is called as the button calls it).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from engines.scorer import load_scorer
from engines.testing import DUMMY_FINDINGS, make_dummy_bundle
from stream.score import score_paths
from tests.test_score import _frames, _write_mp4
from ui.safety import UploadLimits

N = 10


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("report") / "sim.mp4"
    _write_mp4(path, _frames(N, 96, 128, 4))
    return path


def _report(clip: Path, bundle: Path, out: Path):
    from ui.report import make_report

    cfg = SimpleNamespace(bundle=str(bundle), backend="onnxruntime", limits=UploadLimits(),
                          report_dir=out)
    return make_report(str(clip), None, {}, cfg, out)


def test_report_shows_and_writes_the_clip_findings(clip, tmp_path):
    bundle = make_dummy_bundle(tmp_path / "bundle", seg=False, findings=True)
    status, summary, timeline, strip, files = _report(clip, bundle, tmp_path / "out")
    assert status.startswith("Scored") and "Findings over the clip:" in status
    # the same numbers as `pleura score`
    want = score_paths([clip], load_scorer(bundle, "onnxruntime", threads=1),
                       echo=None)["clips"][0]
    doc = json.loads(Path(files[0]).read_text())
    assert doc["video"]["findings"] == want["video"]["findings"]
    assert [f["findings"] for f in doc["frames"]] == [f["findings"] for f in want["frames"]]
    # the table: one row per finding in clinical words, present ones in bold
    assert "id='pleura-report-findings'" in summary
    for name, words in zip(DUMMY_FINDINGS, ("B-lines", "consolidation", "pleural effusion",
                                            "A-lines", "pleural irregularity"), strict=True):
        s = want["video"]["findings"][name]
        assert (f"<b>{words}</b>" in summary) is s["present"]
        assert f"{words}</b></td>" in summary or f"<td>{words}</td>" in summary
        assert f"{100 * s['mean']:.0f}%" in summary
    # the strip captions name the frame's findings; the CSV has a column per finding
    assert strip and all("; " in caption for _img, caption in strip)
    with open(files[1], newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == N and list(rows[0])[-5:] == list(DUMMY_FINDINGS)
    assert float(rows[3]["effusion"]) == pytest.approx(want["frames"][3]["findings"]["effusion"],
                                                       abs=1e-6)


def test_report_without_findings_head_is_unchanged(clip, tmp_path):
    bundle = make_dummy_bundle(tmp_path / "bundle", seg=False)
    status, summary, _timeline, strip, files = _report(clip, bundle, tmp_path / "out")
    assert "Findings" not in status and "pleura-report-findings" not in summary
    assert all(";" not in caption for _img, caption in strip)
    doc = json.loads(Path(files[0]).read_text())
    assert "findings" not in doc["video"] and "findings" not in doc["frames"][0]
    header = Path(files[1]).read_text().splitlines()[0]
    assert header == "frame,score,p0,p1,p2,p3,video_score,video_p0,video_p1,video_p2,video_p3"


def test_report_reads_well_captions_evidence_and_crops(clip, tmp_path):
    """Issue #14: short captions with the time in the clip, bars that agree with the video
    score (each score's share of the evidence), and no crop boxes for a bundle whose crops do
    not localise, with the reason."""
    import re

    from ui.report import STRIP_COLUMNS

    bundle = make_dummy_bundle(tmp_path / "bundle", seg=False)
    status, summary, timeline, strip, files = _report(clip, bundle, tmp_path / "out")
    for _img, caption in strip:
        assert re.fullmatch(r"\d+\.\d s: score [0-3], video [0-3]", caption), caption
        assert len(caption) <= 40  # fits under one of STRIP_COLUMNS thumbnails
    assert STRIP_COLUMNS <= 4
    doc = json.loads(Path(files[0]).read_text())
    ev = doc["video"]["evidence"]
    assert sum(ev) == pytest.approx(1.0) and max(range(4), key=ev.__getitem__) == \
        doc["video"]["score"]
    cells = re.findall(r"(\d): (\d+)%</td>", summary)
    assert [int(p) for _s, p in cells] == [round(100 * p) for p in ev]
    assert "outline:2px solid" in summary and "pleura-report-crops" not in summary
    boxed = strip[0][0]
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["models"]["frame"].update(localises=False, localisation_note="the crops stay put")
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    copy = tmp_path / "copy"  # another folder: the report caches the policy per bundle
    import shutil

    shutil.copytree(bundle, copy)
    _status, summary, _timeline, strip, _files = _report(clip, copy, tmp_path / "out2")
    assert "No crop boxes: the crops stay put." in summary
    red = lambda img: ((img[..., 0] > 200) & (img[..., 1] < 40) & (img[..., 2] < 40)).sum()  # noqa: E731
    assert red(strip[0][0]) == 0 < red(boxed)
