"""The real-clip manifest reader (shared/data/pocus/MANIFEST.csv)."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from tests._shared_data import POCUS, needs_pocus
from train.data.layout import DatasetError
from train.data.pocus import read_pocus_manifest


@needs_pocus
def test_reads_the_real_manifest():
    clips = read_pocus_manifest(POCUS / "MANIFEST.csv")
    assert len(clips) == 124
    # the distribution the data README documents
    assert Counter(c.severity for c in clips if c.severity is not None) == \
        {0: 48, 1: 9, 2: 12, 3: 6}
    assert all(c.path.is_file() and c.frames > 0 and c.fps > 0 for c in clips)
    assert {c.probe for c in clips} == {"convex", "linear"}
    assert any(c.commercial_use for c in clips) and not all(c.commercial_use for c in clips)
    nc = [c for c in clips if not c.commercial_use]
    assert all("NC" in c.license for c in nc)
    assert all(c.source for c in clips)


def _copy_manifest(tmp_path: Path) -> Path:
    dst = tmp_path / "MANIFEST.csv"
    shutil.copy(POCUS / "MANIFEST.csv", dst)
    return dst


def _replace_line(path: Path, line: int, old: str, new: str) -> None:
    lines = path.read_text().splitlines()
    assert old in lines[line - 1]
    lines[line - 1] = lines[line - 1].replace(old, new, 1)
    path.write_text("\n".join(lines) + "\n")


@needs_pocus
@pytest.mark.parametrize("edit,what", [
    ((",convex,COVID-19,2,", ",convex,COVID-19,7,"), "severity 7 is outside 0..3"),
    ((",convex,COVID-19,2,", ",convex,COVID-19,x,"), "severity 'x' is not 0..3"),
    ((",convex,", ",sector,"), "probe 'sector' is not convex or linear"),
    ((",10.0,", ",ten,"), "fps 'ten' is not a number"),
    ((",convex,", ",convex,extra,"), "malformed CSV row"),
])
def test_bad_rows_name_file_and_line(tmp_path, edit, what):
    path = _copy_manifest(tmp_path)
    _replace_line(path, 2, *edit)
    with pytest.raises(DatasetError, match=what) as err:
        read_pocus_manifest(path, check_files=False)
    assert f"{path}:2:" in str(err.value)


@needs_pocus
def test_missing_clip_and_missing_column(tmp_path):
    path = _copy_manifest(tmp_path)
    with pytest.raises(DatasetError, match=r"MANIFEST.csv:2: clip .* not found"):
        read_pocus_manifest(path)  # the clips are not next to this copy
    assert len(read_pocus_manifest(path, check_files=False)) == 124
    _replace_line(path, 1, "severity", "grade")
    with pytest.raises(DatasetError, match=r"MANIFEST.csv:1: header lacks column\(s\) severity"):
        read_pocus_manifest(path, check_files=False)
