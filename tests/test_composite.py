"""Composites on real clips (issue #26 part 1): pleural-line detector, renderer, dataset layout.

Everything runs on tiny clips (a few frames, 128 px). Healthy "real" clips are stood in for by
the simulator's score-0 videos, whose pleura is known exactly; the shared real data (the CVAT
annotated device screen, a POCUS manifest clip) is used where present and skipped otherwise.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream.cli import main as pleura_main
from tests._shared_data import DATA, POCUS
from train.data.layout import read_dataset
from train.data.video import write_video
from train.synth.annotators import MIN_MARKER_PIXELS, frame_score
from train.synth.composite import CompositePlan, Marker, plan_composite, render_clip
from train.synth.composite_data import (
    MIN_CONTRAST,
    CompositeConfig,
    RealClip,
    composite_video,
    write_composites,
)
from train.synth.pleura_line import track_pleura
from train.synth.writer import SynthConfig, synth_video

SCREEN = DATA / "device-screen" / "cit_linear_image_93029618565613.mp4"
ANNOT = SCREEN.with_name("cit_linear_image_93029618565613.annotations.json")
needs_screen = pytest.mark.skipif(not ANNOT.is_file(), reason=f"{ANNOT} absent "
                                  "(set PLEURA_SHARED_DATA)")
needs_pocus = pytest.mark.skipif(not (POCUS / "MANIFEST.csv").is_file(),
                                 reason=f"{POCUS} absent (set PLEURA_SHARED_DATA)")


def healthy_clip(probe: str, seed: int = 0, frames: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """A score-0 simulated clip (frames, label maps): its score-0 band starts 3 rows above the
    pleura, so the pleura's true row is known in every column."""
    cfg = SynthConfig(frames=frames, size=128, seed=seed, transition_p=0.0)
    f, labels, _, _, _ = synth_video(cfg, 0, 0, 0, probe)
    return f, labels


def pleura_errors(track, labels: np.ndarray) -> np.ndarray:
    """|detected - true| pleura row (pixels) at every seen point of every frame."""
    errs = []
    for t, lab in enumerate(labels):
        xy, vis = track.image_curve(t)
        for (x, y), v in zip(xy, vis, strict=True):
            xi = int(round(x))
            if v and 0 <= xi < lab.shape[1] and (lab[:, xi] == 1).any():
                errs.append(abs(y - (np.argmax(lab[:, xi] == 1) + 3)))
    return np.asarray(errs)


@pytest.fixture(scope="module")
def convex():
    frames, labels = healthy_clip("convex", seed=1)
    return frames, labels, track_pleura(frames, "convex")


# --- the pleural-line detector --------------------------------------------------------------


@pytest.mark.parametrize("probe,seed", [("convex", 0), ("convex", 3), ("linear", 0),
                                        ("linear", 4)])
def test_detector_finds_the_simulated_pleura(probe, seed):
    frames, labels = healthy_clip(probe, seed)
    track = track_pleura(frames, probe)
    errs = pleura_errors(track, labels)
    assert len(errs) > 0.5 * len(frames) * frames.shape[2]  # seen on most of the width
    assert errs.mean() < 3.0, f"mean pleura error {errs.mean():.2f} px"
    assert track.contrast > MIN_CONTRAST


def test_tracker_follows_the_pleura_when_the_probe_moves(convex):
    frames, _, _ = convex
    moved = frames.copy()
    moved[4:] = 0
    moved[4:, 6:] = frames[4:, :-6]  # the probe presses in: everything 6 px deeper
    track = track_pleura(moved, "convex", sigma_t=0.5)
    y = np.array([np.median(track.image_curve(t)[0][track.visible[t], 1]) for t in range(8)])
    assert abs((y[6:].mean() - y[:2].mean()) - 6.0) < 2.0, y


def test_black_or_noise_clip_has_no_pleura():
    rng = np.random.default_rng(0)
    for frames in (np.zeros((6, 96, 96), np.uint8),
                   (rng.random((6, 96, 96)) * 80).astype(np.uint8)):
        assert track_pleura(frames).contrast < MIN_CONTRAST
    clip = RealClip(Path("x.mp4"), "x.mp4", None, 20.0, "own", "family:x")
    reason = composite_video(np.zeros((6, 96, 96), np.uint8),
                             CompositeConfig(on_real=("x",), frames=6), clip, 0)
    assert isinstance(reason, str) and "no pleural line" in reason


# --- the renderer ---------------------------------------------------------------------------


def _render(convex, level: int, seed: int):
    frames, _, track = convex
    plan = plan_composite(level, np.random.default_rng(seed), track.visible.mean(0) > 0.5)
    return frames, render_clip(frames, track, plan)


def test_rendering_is_deterministic_for_a_seed(convex):
    _, (a, la) = _render(convex, 2, 5)
    _, (b, lb) = _render(convex, 2, 5)
    _, (c, _) = _render(convex, 2, 6)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.array_equal(a, c)


def test_level_0_keeps_the_frames_and_labels_the_pleura_band(convex):
    frames, (out, labels) = _render(convex, 0, 0)
    assert np.array_equal(out, frames)
    assert set(np.unique(labels)) == {0, 1}
    assert all(frame_score(lab, 128 * 128) == 0 for lab in labels)


@pytest.mark.parametrize("level", [1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mask_is_the_rendered_region(convex, level, seed):
    frames, (out, labels) = _render(convex, level, seed)
    delta = np.abs(out.astype(int) - frames.astype(int))
    sick = labels == level + 1
    assert sick.any(axis=(1, 2)).all()
    assert set(np.unique(labels)) <= {0, 1, level + 1}
    near = np.stack([cv2.dilate(s.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
                     for s in sick])
    changed = delta > 6
    # Nothing changes outside the finding's mask (2 px for the nearest/linear resampling) ...
    assert (changed & ~near).sum() <= 0.002 * changed.size
    band = (labels == 1) & ~near  # ... nor in the healthy band (when the zone leaves one)
    assert not band.any() or (delta[band] == 0).mean() > 0.99
    # ... and what the mask covers is visibly drawn.
    assert delta[sick].mean() > 8, delta[sick].mean()


@pytest.mark.parametrize("level", [1, 2, 3])
def test_frame_scores_read_off_the_masks_reach_the_level(convex, level):
    frames, _, track = convex
    area = int(track.geometry.geom.sector.sum())
    hits = []
    for seed in range(3):
        _, (_, labels) = _render(convex, level, seed)
        hits += [frame_score(lab, area) == level for lab in labels]
    assert np.mean(hits) >= 0.8


def test_findings_move_with_the_pleura():
    frames, _ = healthy_clip("linear", seed=2)
    track = track_pleura(frames, "linear")
    T, L = track.rows.shape
    slide = np.arange(T, dtype=np.float32) * 2.0  # the lung slides 2 lines per frame ...
    rows = track.rows + np.arange(T, dtype=np.float32)[:, None]  # ... and 1 row deeper
    moving = dataclasses.replace(track, slide=slide, rows=rows)
    plan = CompositePlan(level=1, zone=(0.2, 0.8),
                         markers=(Marker("bline", 0.5, 0.015, amp=0.9, cover=0.95),))
    _, labels = render_clip(frames, moving, plan)
    half = frames.shape[1] // 2
    cols = [np.flatnonzero((lab[half:] == 2).any(axis=0)).mean() for lab in labels]
    tops = [np.argmax((lab == 2).any(axis=1)) for lab in labels]
    k = np.ptp(track.geometry.beam_x[0]) / (L - 1)  # image columns per scan line
    assert np.allclose(np.diff(cols), 2.0 * k, atol=1.0), cols
    assert np.allclose(np.diff(tops), 1.0, atol=1.0), tops


# --- clips in, dataset layout out -----------------------------------------------------------


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("real") / "site-a"
    src.mkdir()
    for i, probe in enumerate(("convex", "linear")):
        frames, _ = healthy_clip(probe, seed=10 + i, frames=8)
        write_video(src / f"clip{i}.mp4", frames, fps=15)
    return src


@pytest.fixture(scope="module")
def written(clip_folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("composite") / "D"
    rc = pleura_main(["synth", "--on-real", str(clip_folder), "--out", str(out), "--frames", "6",
                      "--variants", "4", "--size", "128", "--seed", "3", "--no-progress"])
    assert rc == 0
    return out


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_labels_land_in_the_layout_and_the_readers_load_them(written, clip_folder):
    ds = read_dataset(written)  # validates every CSV row and LabelMe file
    assert len(ds.videos) == 8 and len(ds.frames) == 48
    assert {fr.score for fr in ds.frames} == {0, 1, 2, 3}
    for fr in ds.frames:  # the frame score is the worst marker the mask holds enough of
        assert ds.has_mask(fr.video_id, fr.frame)
        m = ds.read_mask(fr.video_id, fr.frame)
        if fr.score > 0:
            assert (m == fr.score + 1).sum() >= MIN_MARKER_PIXELS
        assert (m > fr.score + 1).sum() < max(MIN_MARKER_PIXELS, 0.006 * m.size)
    videos = _rows(written / "videos.csv")
    assert {r["source"] for r in videos} == {"site-a"}
    assert {fr.hospital for fr in ds.frames} == {"site-a"}  # the source, for LOSO splits
    assert {r["source_clip"] for r in videos} == {"clip0.mp4", "clip1.mp4"}
    # variants of one recording share a patient id, so patient splits keep them together
    by_clip = {c: {r["patient_id"] for r in videos if r["source_clip"] == c}
               for c in ("clip0.mp4", "clip1.mp4")}
    assert all(len(p) == 1 for p in by_clip.values())
    assert sorted(int(r["level"]) for r in videos) == [0, 0, 1, 1, 2, 2, 3, 3]
    meta = json.loads((written / "synth.json").read_text())
    assert meta["kind"] == "composite" and meta["summary"]["frames"] == 48
    # the dataset says how it was made: the command rebuilt from synth.json
    from train.export import dataset_facts  # (imports torch)

    cmd = dataset_facts(written)["command"]
    assert f"--on-real {clip_folder}" in cmd and "--variants" not in cmd  # 4 is the default
    assert "--frames 6" in cmd and "--seed 3" in cmd and "--size 128" in cmd


def test_same_seed_same_dataset(clip_folder, written, tmp_path):
    again = tmp_path / "again"
    cfg = CompositeConfig(on_real=(str(clip_folder),), frames=6, variants=4, size=128, seed=3)
    write_composites(again, cfg, progress=False)
    assert (again / "frames.csv").read_text() == (written / "frames.csv").read_text()
    for f in sorted((written / "masks").glob("*/*.json")):
        assert (again / f.relative_to(written)).read_text() == f.read_text()


def test_bad_input_is_a_one_line_error(clip_folder, tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    cases = [([str(tmp_path / "missing.mp4")], "no such clip"),
             ([str(bad)], "not a readable video"),
             ([str(clip_folder), "--levels", "1,7"], "each must be one of"),
             ([str(clip_folder), "--patients", "3"], "apply to the simulator only"),
             ([str(clip_folder), "--sources", "elsewhere"], "no clip left")]
    for extra, text in cases:
        out = tmp_path / f"o{len(text)}"
        with pytest.raises(SystemExit) as exc:
            pleura_main(["synth", "--on-real", *extra, "--out", str(out), "--no-progress"])
        msg = str(exc.value)
        assert text in msg and "\n" not in msg, msg
        assert not (out / "frames.csv").exists()


# --- on the shared real data ----------------------------------------------------------------


def _centre_line(points: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Mid-line of CVAT's thin pleura quadrilateral (left edge = points 0-1, right = 2-3)."""
    p = np.asarray(points, float).reshape(-1, 2)
    return (p[0] + p[1]) / 2, (p[2] + p[3]) / 2


@needs_screen
def test_detector_on_the_annotated_device_screen():
    """Mean distance from the CVAT pleural-line polygon's mid-line, on every annotated frame
    of the first 61 (screen pixels). Measured 1.6 px; the polygon is ~20 px thick."""
    from engines.preprocess import to_grey
    from stream.roi import detect_roi
    from stream.sources import decode_file

    frames = np.stack([to_grey(f.image) for f in decode_file(SCREEN, max_frames=61)])
    roi = detect_roi(list(frames[:8]))
    crop = frames[:, roi.y:roi.y + roi.h, roi.x:roi.x + roi.w]
    track = track_pleura(crop, "linear")
    dists = []
    for s in json.loads(ANNOT.read_text())[0]["shapes"]:
        if s["label"] != "lungslidingpresent" or s["frame"] >= len(crop):
            continue
        left, right = _centre_line(s["points"])
        xy, vis = track.image_curve(s["frame"])
        xy = xy + [roi.x, roi.y]
        inside = (xy[:, 0] >= left[0]) & (xy[:, 0] <= right[0])
        assert inside.sum() > 0.8 * (right[0] - left[0]) * roi.w / crop.shape[2]
        y_ref = left[1] + (xy[inside, 0] - left[0]) * (right[1] - left[1]) / (right[0] - left[0])
        dists.append(np.abs(xy[inside, 1] - y_ref).mean())
    assert len(dists) >= 6
    assert np.mean(dists) < 4.0, dists


@needs_pocus
def test_manifest_clip_records_its_source_and_licence(tmp_path):
    """A one-row copy of the POCUS manifest: composites of a real healthy clip; a licence
    that forbids derivatives is refused before anything is written."""
    src = POCUS / "MANIFEST.csv"
    with src.open(newline="") as f:
        rows = list(csv.DictReader(f))
    row = next(r for r in rows if r["file"] == "Reg-NormalLungs.mp4")
    (tmp_path / row["file"]).symlink_to(POCUS / row["file"])

    def manifest(name: str, **change) -> Path:
        path = tmp_path / name
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            w.writeheader()
            w.writerow({**row, **change})
        return path

    out = tmp_path / "D"
    cfg = CompositeConfig(on_real=(str(manifest("m.csv")),), frames=5, variants=2, size=128)
    summary = write_composites(out, cfg, progress=False)
    assert summary["videos"] == 2 and summary["skipped"] == 0
    ds = read_dataset(out)
    videos = _rows(out / "videos.csv")
    assert {r["source"] for r in videos} == {"radiopaedia.org"}
    assert {r["licence"] for r in videos} == {row["license"]}
    assert {fr.probe for fr in ds.frames} == {"convex"}
    with pytest.raises(SystemExit, match="does not allow training"):
        pleura_main(["synth", "--on-real", str(manifest("nd.csv", license="CC BY-ND 4.0")),
                     "--out", str(tmp_path / "E"), "--no-progress"])
    assert not (tmp_path / "E").exists()
