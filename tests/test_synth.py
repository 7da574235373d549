"""The simulator: the issue's "Done when" check, determinism, sector, labels, annotators."""

from __future__ import annotations

import csv
from pathlib import Path

import av
import numpy as np
import pytest

from stream.cli import main as pleura_main
from train.data.layout import read_dataset
from train.synth.annotators import (
    clinician_video_score,
    frame_score,
    noisy_annotations,
    pairwise_agreement,
)
from train.synth.writer import SynthConfig, synth_video, write_dataset


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def done_when(tmp_path_factory) -> Path:
    """The issue's check, through the real console entry point."""
    out = tmp_path_factory.mktemp("synth") / "D"
    rc = pleura_main(["synth", "--out", str(out), "--patients", "4", "--videos-per-patient", "3",
                      "--frames", "24", "--seed", "7", "--no-progress"])
    assert rc == 0
    return out


def test_done_when_counts(done_when):
    videos = sorted((done_when / "videos").glob("*.mp4"))
    assert len(videos) == 12
    for v in videos:
        with av.open(str(v)) as c:
            frames = [f.to_ndarray(format="gray") for f in c.decode(video=0)]
        assert len(frames) == 24 and frames[0].shape == (256, 256)
    frames_rows = _rows(done_when / "frames.csv")
    assert len(frames_rows) == 288
    assert {int(r["score"]) for r in frames_rows} == {0, 1, 2, 3}
    video_rows = _rows(done_when / "videos.csv")
    assert len(video_rows) == 12
    assert all(r[f"annotator_{k}"] in "0123" and r[f"annotator_{k}"]
               for r in video_rows for k in range(1, 6))
    assert len(list((done_when / "masks").glob("*/*.json"))) == 288


def test_done_when_reads_back_and_masks_agree_with_scores(done_when):
    ds = read_dataset(done_when)  # validates every CSV row and LabelMe file
    assert len(ds.frames) == 288
    for fr in ds.frames[::7]:
        m = ds.read_mask(fr.video_id, fr.frame)
        counts = np.bincount(m.ravel(), minlength=5)
        # the frame score is the worst marker drawn large enough (the mask defines the label)
        assert fr.score == 0 or counts[fr.score + 1] >= 40
        assert all(counts[s + 1] < 0.006 * m.size for s in range(fr.score + 1, 4))


def test_same_seed_same_data_other_seed_differs(tmp_path):
    cfg = SynthConfig(patients=2, videos_per_patient=2, frames=6, size=96, seed=3)
    a, b = tmp_path / "a", tmp_path / "b"
    write_dataset(a, cfg, progress=False)
    write_dataset(b, cfg, progress=False, workers=2)  # parallel: same files
    for name in ("frames.csv", "videos.csv"):
        assert (a / name).read_text() == (b / name).read_text()
    for f in (a / "masks").glob("*/*.json"):
        assert f.read_text() == (b / "masks" / f.parent.name / f.name).read_text()
    x = synth_video(cfg, 1, 1, 2, "convex")
    y = synth_video(cfg, 1, 1, 2, "convex")
    np.testing.assert_array_equal(x[0], y[0])  # pixels too, before encoding
    z = synth_video(SynthConfig(patients=2, videos_per_patient=2, frames=6, size=96, seed=4),
                    1, 1, 2, "convex")
    assert not np.array_equal(x[0], z[0])
    with pytest.raises(FileExistsError, match="already holds a dataset"):
        write_dataset(a, cfg, progress=False)


@pytest.mark.parametrize("probe", ["convex", "linear"])
def test_frames_and_masks_stay_inside_the_sector(probe):
    cfg = SynthConfig(frames=10, size=128, seed=11)
    for target in range(4):
        frames, labels, _, scores, geom = synth_video(cfg, 0, target, target, probe)
        outside = ~geom.sector
        assert outside.any() or probe == "linear"
        assert frames[:, outside].max(initial=0) == 0, "pixels outside the scan sector"
        assert labels[:, outside].max(initial=0) == 0, "mask outside the scan sector"
        assert labels.max() <= 4 and frames[:, geom.sector].mean() > 10
        assert ((scores >= 0) & (scores <= 3)).all()


def test_each_score_draws_its_markers_and_transitions_happen():
    cfg = SynthConfig(frames=16, size=128, seed=5, transition_p=1.0)
    changed = 0
    for target in range(4):
        for v in range(3):
            _, labels, _, scores, _ = synth_video(cfg, target, v, target, "convex")
            changed += len(set(scores.tolist())) > 1
            # the target zone is under the probe at the start or the end of the drift
            assert target in (scores[0], scores[-1]) or (labels == target + 1).any()
    assert changed >= 3, "score transitions inside videos"


def test_frame_score_threshold():
    m = np.zeros((100, 100), np.uint8)
    m[10:20, :] = 1
    m[50:52, 0:10] = 4  # a 20-pixel sliver of score 3: not enough
    assert frame_score(m, sector_area=10_000) == 0
    m[50:60, 0:10] = 4
    assert frame_score(m, sector_area=10_000) == 3
    assert frame_score(np.zeros_like(m), 10_000) == 0


def test_annotators_agree_about_two_thirds():
    rng = np.random.default_rng(0)
    biases = rng.uniform(0.25, 0.75, 5)
    truth = rng.integers(0, 4, 3000)
    ann = np.array([noisy_annotations(int(t), biases, rng) for t in truth])
    assert ann.min() >= 0 and ann.max() <= 3
    assert 0.58 <= pairwise_agreement(ann) <= 0.75
    assert np.mean(ann == truth[:, None]) == pytest.approx(0.8, abs=0.02)
    assert clinician_video_score(np.array([0] * 18 + [3] * 2)) == 0  # a blip is not the video
    assert clinician_video_score(np.array([0] * 14 + [3] * 6)) == 3  # a worst finding that stays


def test_bad_config_errors():
    with pytest.raises(ValueError, match="valid are convex, linear, mixed"):
        SynthConfig(probe="phased")
    with pytest.raises(ValueError, match="even"):
        SynthConfig(size=255)


def test_export_demo_sweeps_all_scores(tmp_path):
    import json

    from train.synth.demo import export_demo

    paths = export_demo(tmp_path, seed=1, size=96, fps=10, seconds=4.0)
    assert [p.name for p in paths] == ["demo-convex.mp4", "demo-linear.mp4"]
    for p in paths:
        with av.open(str(p)) as c:
            assert sum(1 for _ in c.decode(video=0)) == 40
        scores = json.loads(p.with_suffix(".json").read_text())["scores"]
        assert len(scores) == 40 and set(scores) == {0, 1, 2, 3}
        first = [scores.index(s) for s in range(4)]
        assert first == sorted(first), "the sweep visits 0, 1, 2, 3 in order"


SHIPPED = Path(__file__).resolve().parents[1] / "stream" / "demo"


@pytest.mark.parametrize("probe", ["convex", "linear"])
def test_shipped_demo_clips(probe):
    path = SHIPPED / f"demo-{probe}.mp4"
    assert path.is_file(), "make them with: pleura synth --export-demo stream/demo --seed 0"
    assert path.stat().st_size < 1.5e6
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        assert (stream.height, stream.width) == (256, 256)
        assert float(stream.average_rate) == pytest.approx(20.0)
        assert sum(1 for _ in c.decode(video=0)) == 300


def test_acquisition_option_changes_pixels_not_labels():
    base = SynthConfig(frames=4, size=96, seed=9)
    changed = 0
    for v in range(4):
        f0, l0, _, s0, geom = synth_video(base, 0, v, v, ("convex", "linear")[v % 2])
        cfg = SynthConfig(frames=4, size=96, seed=9, acquisition=True)
        f1, l1, _, s1, _ = synth_video(cfg, 0, v, v, ("convex", "linear")[v % 2])
        np.testing.assert_array_equal(l0, l1)
        np.testing.assert_array_equal(s0, s1)
        assert f1[:, ~geom.sector].max(initial=0) == 0
        changed += not np.array_equal(f0, f1)
    assert changed >= 2
