"""Dataset layout readers: round trip, splits, video labels and every bad-data error."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from train.data.labelme import mask_to_shapes, rasterise_shapes, read_labelme, write_labelme
from train.data.layout import (
    DatasetError,
    VideoRecord,
    read_dataset,
    split_by_patient,
    video_label,
)
from train.data.video import read_video, write_video

H = W = 64
N = 5


def _frames(seed: int, n: int = N) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.integers(0, 255, (H, W)).astype(np.uint8), (0, 0), 3)
    return np.stack([np.roll(base, i, axis=1) for i in range(n)])


def _shapes(k: int) -> list[dict]:
    """Two polygons: a score-0 band and a score-(k % 4) triangle on top of it."""
    return [{"label": "0", "points": [[4, 10], [60, 10], [60, 20], [4, 20]],
             "shape_type": "polygon"},
            {"label": str(k % 4), "points": [[10 + k, 30], [40, 30], [25, 60]],
             "shape_type": "polygon"}]


def make_dataset(root: Path, patients: int = 4, videos: int = 2, pngs: bool = False) -> dict:
    """A hand-made dataset; returns the truth: scores, annotators, masks."""
    (root / "videos").mkdir(parents=True)
    truth: dict = {"scores": {}, "masks": {}, "ann": {}}
    vrows, frows = [], []
    for p in range(patients):
        for v in range(videos):
            vid = f"P{p}-V{v}"
            fr = _frames(p * 10 + v)
            if pngs and v == 1:
                (root / "videos" / vid).mkdir()
                for i, f in enumerate(fr):
                    cv2.imwrite(str(root / "videos" / vid / f"{i}.png"), f)
            else:
                write_video(root / "videos" / f"{vid}.mp4", fr, fps=10)
            ann = [(p + v + a) % 4 if a != 4 else None for a in range(5)]
            truth["ann"][vid] = tuple(ann)
            vrows.append([vid, f"pat{p}", "convex" if v % 2 == 0 else "linear",
                          *("" if a is None else a for a in ann)])
            (root / "masks" / vid).mkdir(parents=True)
            for i in range(N):
                s = (p + v + i) % 4
                frows.append([vid, i, s, f"hosp{p % 2}"])
                truth["scores"][vid, i] = s
                if i % 2 == 0:
                    write_labelme(root / "masks" / vid / f"{i}.json", _shapes(i + p), (H, W))
                    truth["masks"][vid, i] = rasterise_shapes(_shapes(i + p), (H, W))
    _write_csv(root / "videos.csv", ["video_id", "patient_id", "probe",
                                     *(f"annotator_{k}" for k in range(1, 6))], vrows)
    _write_csv(root / "frames.csv", ["video_id", "frame", "score", "hospital"], frows)
    return truth


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def test_round_trip_labels_masks_and_frames(tmp_path):
    truth = make_dataset(tmp_path, pngs=True)
    ds = read_dataset(tmp_path)
    assert len(ds.videos) == 8 and len(ds.frames) == 8 * N
    for fr in ds.frames:
        assert fr.score == truth["scores"][fr.video_id, fr.frame]
        assert fr.patient_id == f"pat{fr.video_id[1]}"
        assert fr.probe == ds.videos[fr.video_id].probe
        assert fr.hospital == f"hosp{int(fr.video_id[1]) % 2}"
        assert ds.has_mask(fr.video_id, fr.frame) == ((fr.video_id, fr.frame) in truth["masks"])
    for (vid, i), m in truth["masks"].items():
        got = ds.read_mask(vid, i)
        assert got.dtype == np.uint8 and got.shape == (H, W)
        np.testing.assert_array_equal(got, m)
        assert set(np.unique(got)) <= {0, 1, 2, 3, 4}
    for vid, rec in ds.videos.items():
        assert rec.annotators == truth["ann"][vid]
        frames = ds.read_frames(vid)
        assert frames.shape == (N, H, W) and frames.dtype == np.uint8
        expected = _frames(int(vid[1]) * 10 + int(vid[-1]))
        # mp4 is lossy, PNG is exact
        tol = 0 if rec.path.is_dir() else 25
        assert np.abs(frames.astype(int) - expected).mean() <= max(tol, 0.1) / 5
    assert ds.read_frames("P0-V0") is ds.read_frames("P0-V0")  # cached


def test_labelme_later_shapes_on_top_and_value_convention(tmp_path):
    shapes = _shapes(3)  # a "3" triangle over nothing, a "0" band
    write_labelme(tmp_path / "m.json", shapes, (H, W))
    m = read_labelme(tmp_path / "m.json")
    assert m[15, 30] == 1 and m[40, 25] == 4 and m[2, 2] == 0
    m2 = np.zeros((H, W), np.uint8)
    m2[10:30, 5:50] = 2
    m2[20:25, 20:30] = 4
    np.testing.assert_array_equal(rasterise_shapes(mask_to_shapes(m2), (H, W)), m2)


def test_split_by_patient_disjoint_complete_deterministic(tmp_path):
    make_dataset(tmp_path, patients=10, videos=1)
    ds = read_dataset(tmp_path, check_masks=False)
    a = split_by_patient(ds, seed=3)
    assert a == split_by_patient(ds, seed=3)
    assert a != split_by_patient(ds, seed=4)
    assert sorted(sum(a.values(), [])) == sorted(ds.videos)
    pats = {k: {ds.videos[v].patient_id for v in vs} for k, vs in a.items()}
    assert not (pats["train"] & pats["val"]) and not (pats["train"] & pats["test"])
    assert not (pats["val"] & pats["test"])
    assert [len(pats[k]) for k in ("train", "val", "test")] == [7, 2, 1]
    with pytest.raises(ValueError, match="fractions"):
        split_by_patient(ds, fractions=(1.0, -0.1, 0.1))


def test_video_label_modes():
    rec = VideoRecord("v", "p", "convex", (1, 2, 2, 1, None), Path("x"))
    assert video_label(rec) == 2  # tie 2-2: the higher score
    assert video_label(rec, "annotator_1") == 1
    assert video_label(rec, "annotator_5") is None
    assert video_label(VideoRecord("v", "p", "convex", (None,) * 5, Path("x"))) is None
    assert video_label(VideoRecord("v", "p", "convex", (3, 3, 0, 1, 3), Path("x"))) == 3
    with pytest.raises(ValueError, match="annotator_5"):
        video_label(rec, "annotator_9")


# --- bad data: every error names the file and the line ---------------------------------

def _edit(path: Path, line: int, new: str) -> None:
    lines = path.read_text().splitlines()
    lines[line - 1] = new
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("case", ["malformed", "score", "missing_video", "count", "quote",
                                  "unknown_video", "duplicate"])
def test_bad_csv_errors_name_file_and_line(tmp_path, case):
    make_dataset(tmp_path, patients=2, videos=1)
    frames_csv = tmp_path / "frames.csv"
    if case == "malformed":
        _edit(frames_csv, 4, "P0-V0,2,1")  # a field short
        where, what = "frames.csv:4", "malformed CSV"
    elif case == "quote":
        _edit(frames_csv, 4, 'P0-V0,"2,1,hosp0')  # unterminated quote swallows the rest
        where, what = "frames.csv:4", "unclosed quote"
    elif case == "score":
        _edit(frames_csv, 3, "P0-V0,1,4,hosp0")
        where, what = "frames.csv:3", "outside 0..3"
    elif case == "missing_video":
        (tmp_path / "videos" / "P1-V0.mp4").unlink()
        where, what = "videos.csv:3", "not found"
    elif case == "count":
        _edit(frames_csv, 6, "P0-V0,7,1,hosp0")  # the video has 5 frames
        where, what = "frames.csv:6", "frame count mismatch"
    elif case == "unknown_video":
        _edit(frames_csv, 2, "NOPE,0,1,hosp0")
        where, what = "frames.csv:2", "not in videos.csv"
    else:
        _edit(frames_csv, 3, "P0-V0,0,1,hosp0")
        where, what = "frames.csv:3", "already labelled on line 2"
    with pytest.raises(DatasetError, match=what) as err:
        read_dataset(tmp_path)
    assert where in str(err.value)


def test_bad_annotator_score_in_videos_csv(tmp_path):
    make_dataset(tmp_path, patients=2, videos=1)
    _edit(tmp_path / "videos.csv", 2, "P0-V0,pat0,convex,1,2,9,,")
    with pytest.raises(DatasetError, match=r"videos.csv:2: annotator_3 9 is outside 0..3"):
        read_dataset(tmp_path)


@pytest.mark.parametrize("case", ["outside", "label", "json"])
def test_bad_mask_errors_name_file_and_line(tmp_path, case):
    make_dataset(tmp_path, patients=1, videos=1)
    path = tmp_path / "masks" / "P0-V0" / "2.json"
    doc = json.loads(path.read_text())
    what = {"outside": r"point \(25, 90\) lies outside the 64x64 image",
            "label": "unknown label 'B-line'; valid labels are 0, 1, 2, 3",
            "json": "not a readable LabelMe JSON"}[case]
    if case == "outside":
        doc["shapes"][1]["points"][2] = [25, 90]  # H is 64
    elif case == "label":
        doc["shapes"][1]["label"] = "B-line"
    # indented, as LabelMe itself saves files
    path.write_text("{oops" if case == "json" else json.dumps(doc, indent=2))
    with pytest.raises(DatasetError, match=what) as err:
        read_dataset(tmp_path)
    assert "2.json" in str(err.value)
    if case != "json":  # the line where the offending (second) shape's label is
        lines = path.read_text().splitlines()
        expected = [i + 1 for i, t in enumerate(lines) if '"label"' in t][1]
        assert f"2.json:{expected}: shape 1:" in str(err.value)


def test_missing_files_and_bad_header(tmp_path):
    with pytest.raises(DatasetError, match="not a dataset folder"):
        read_dataset(tmp_path / "nope")
    make_dataset(tmp_path, patients=1, videos=1)
    _edit(tmp_path / "frames.csv", 1, "video_id,frame,grade")
    with pytest.raises(DatasetError, match=r"frames.csv:1: header lacks column\(s\) score"):
        read_dataset(tmp_path)
    (tmp_path / "videos.csv").unlink()
    with pytest.raises(DatasetError, match="videos.csv: missing"):
        read_dataset(tmp_path)


def test_read_video_png_folder_numeric_order(tmp_path):
    for i in (10, 2, 1):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((8, 8), i, np.uint8))
    np.testing.assert_array_equal(read_video(tmp_path)[:, 0, 0], [1, 2, 10])
