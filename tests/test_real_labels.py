"""``pleura train real --clips --labels`` checks its label CSV before any work (#29 item 8):
files named inside the clips folder, one row per clip, whole rows; every problem on its own
line, exit 2, no run folder made; decoded frames cached in the user cache, not ./runs."""

from __future__ import annotations

import csv
import os

import pytest

from stream import cli
from train.data.layout import DatasetError
from train.real.frames import default_cache_dir
from train.real.labels import read_label_csv


def _labels(path, rows, header=("file", "score")):
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture()
def clips(tmp_path):
    d = tmp_path / "clips"
    d.mkdir()
    for n in ("a.mp4", "b.mp4"):
        (d / n).write_bytes(b"not decoded here")
    (d / "notes.txt").write_text("x")
    (tmp_path / "outside.mp4").write_bytes(b"x")
    (d / "link.mp4").symlink_to(tmp_path / "outside.mp4")
    return d


def test_every_bad_row_is_reported_and_nothing_starts(tmp_path, clips, capsys):
    lab = _labels(tmp_path / "labels.csv", [
        ["a.mp4", "2"],
        ["../../../../etc/passwd", "1"],
        ["/etc/hostname", "0"],
        ["", "1"],
        ["b.mp4"],               # short row
        ["a.mp4", "3"],          # a second, different score for a.mp4
        ["notes.txt", "0"],
        ["link.mp4", "0"],       # a link the folder holds: followed, not a problem
        ["b.mp4", "1", "extra"],
        ["missing.mp4", "1"],
    ])
    out = tmp_path / "run"
    rc = cli.main(["train", "real", "--clips", str(clips), "--labels", str(lab), "--own-data",
                   "--cv", "2", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists()
    for line, what in [(3, "not absolute or with '..'"), (4, "not absolute or with '..'"),
                       (5, "empty file cell"), (6, "short row"), (7, "already given on line 2"),
                       (8, "is not a clip (.txt)"), (10, "more than the header"),
                       (11, "not found")]:
        assert f"labels.csv:{line}: " in err and what in err, (line, what)
    assert "8 problem(s); nothing was started" in err and "labels.csv:9:" not in err
    assert "Traceback" not in err


def test_header_without_file_values(tmp_path, clips):
    lab = tmp_path / "l.csv"
    lab.write_text("score,file\n2\n")  # a TypeError before #29
    with pytest.raises(DatasetError, match="short row"):
        read_label_csv(clips, lab, own_data=True)


def test_good_rows_read_with_their_source(tmp_path, clips):
    lab = _labels(tmp_path / "l.csv", [["a.mp4", "2", "siteA"], ["b.mp4", "", ""]],
                  header=("file", "score", "source"))
    got = read_label_csv(clips, lab, own_data=True)
    assert [(c.filename, c.severity, c.source) for c in got] == [
        ("a.mp4", 2, "siteA"), ("b.mp4", None, "own")]


def test_decoded_frames_are_cached_in_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("PLEURA_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == str(tmp_path / "c" / "real-frames")
    monkeypatch.delenv("PLEURA_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache_dir() == str(tmp_path / "x" / "pleura" / "real-frames")
    assert not default_cache_dir().startswith(os.getcwd())
