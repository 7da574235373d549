"""The "not scorable" gate (#29): a black screen, noise, a probe in the air or an eye scan gets no
lung score in `pleura score` or the exam; real lung clips pass (engines/scorable.py).

Before the gate every clip below got a video score (black: "0", as a healthy lung) and a lifted
probe scored its exam zone 0.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from engines.scorable import (
    NO_IMAGE,
    NOISE,
    NOT_LUNG,
    SCORABLE,
    ClipGate,
    GateThresholds,
    check_frame,
    speckle_correlation,
)
from engines.testing import make_dummy_bundle
from stream import cli
from stream.sources import decode_file
from tests._shared_data import DATA, POCUS, needs_pocus

DEMO = Path(__file__).resolve().parents[1] / "stream" / "demo"
DEVICES = DATA / "devices"
needs_devices = pytest.mark.skipif(not (DEVICES / "README.md").is_file(),
                                   reason=f"{DEVICES} absent (set PLEURA_SHARED_DATA)")
RNG = np.random.default_rng(7)
H, W = 240, 320


def black() -> np.ndarray:
    return np.zeros((H, W), np.uint8)


def grey() -> np.ndarray:
    return np.full((H, W), 128, np.uint8)


def noise() -> np.ndarray:
    return RNG.integers(0, 256, (H, W), dtype=np.uint8)


def probe_in_air() -> np.ndarray:
    """Ring-down bands of the lens at the top, a dark sector with faint electronic noise."""
    img = RNG.integers(0, 6, (H, W)).astype(np.float32)
    for k, level in enumerate((200, 140, 90)):
        img[4 + 7 * k: 7 + 7 * k, 20:W - 20] += level
    return np.clip(img, 0, 255).astype(np.uint8)


def write_mp4(path: Path, frames: list[np.ndarray]) -> Path:
    with av.open(str(path), mode="w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p"
        for f in frames:
            rgb = np.stack([f] * 3, -1) if f.ndim == 2 else f
            c.mux(s.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        c.mux(s.encode())
    return path


def gate_clip(path: Path, max_frames: int | None = None, every: int = 3):
    gate = ClipGate(every=every)
    for df in decode_file(path, max_frames=max_frames):
        gate.update(df.image)
    return gate.verdict()


# --------------------------------------------------------------------------- frames


@pytest.mark.parametrize(("make", "reason"), [(black, NO_IMAGE), (grey, NO_IMAGE),
                                              (probe_in_air, NO_IMAGE), (noise, NOISE)])
def test_frames_without_a_lung_image_are_refused_with_their_reason(make, reason):
    check = check_frame(make())
    assert check.reason == reason and not check.scorable
    if reason == NOISE:
        assert check.corr is not None and abs(check.corr) < 0.3


def test_frames_of_the_shipped_clips_pass_in_grey_and_rgb():
    for name in ("demo-convex.mp4", "demo-linear.mp4", "real-convex-covid.mov"):
        frames = [df.image for df in decode_file(DEMO / name, max_frames=40)][::8]
        checks = [check_frame(f) for f in frames] + [check_frame(frames[0][..., 0])]
        assert all(c.reason == SCORABLE for c in checks), (name, [c.reason for c in checks])
        assert min(c.corr for c in checks) > 0.6  # real images: correlated speckle


def test_speckle_correlation_separates_noise_from_structure():
    n = RNG.integers(0, 256, (200, 200), dtype=np.uint8)
    assert abs(speckle_correlation(n)) < 0.1
    smooth = np.repeat(np.repeat(RNG.integers(0, 256, (50, 50), dtype=np.uint8), 4, 0), 4, 1)
    assert speckle_correlation(smooth) > 0.5  # 4-px blobs: correlated at lags 1-2


def test_noise_encoded_in_a_video_is_still_noise(tmp_path):
    v = gate_clip(write_mp4(tmp_path / "noise.mp4", [noise() for _ in range(6)]), every=1)
    assert not v.scorable and v.reason == NOISE and v.counts[NOISE] == 6


def tissue() -> np.ndarray:
    """Correlated speckle (blurred noise) at a tissue grey level, as float for drawing."""
    t = cv2.GaussianBlur(RNG.normal(0, 1, (H, W)).astype(np.float32), (0, 0), 1.5)
    return np.clip(100 + 40 * t / t.std(), 0, 255)


def test_a_round_enclosed_anechoic_disc_is_an_eye_and_a_dark_band_is_not():
    eye = tissue()
    cv2.circle(eye, (W // 2, H // 2 - 20), 60, 3, -1)
    check = check_frame(eye.astype(np.uint8))
    assert check.reason == NOT_LUNG and check.globe.aspect > 0.9
    band = tissue()
    band[80:160, :] = 3  # dark fluid across the whole width (an effusion's shape): not a globe
    check = check_frame(band.astype(np.uint8))
    assert check.reason == SCORABLE and check.globe.aspect < 0.3
    assert check_frame(tissue().astype(np.uint8)).reason == SCORABLE


# --------------------------------------------------------------------------- clips


def test_clip_verdict_needs_half_the_frames():
    gate = ClipGate(every=1)
    good = [df.image for df in decode_file(DEMO / "demo-convex.mp4", max_frames=3)]
    for f in good:
        gate.update(f)
    for _ in range(3):
        gate.update(black())
    v = gate.verdict()
    assert v.scorable and v.share == 0.5 and v.reason is None and v.message() == ""
    gate.update(noise())
    v = gate.verdict()
    assert not v.scorable and v.reason == NO_IMAGE  # the most common refusal
    assert v.counts == {SCORABLE: 3, NO_IMAGE: 3, NOISE: 1, NOT_LUNG: 0}
    assert "probe off the skin" in v.message() and "3 of 7 checked frames" in v.message()
    strict = ClipGate(GateThresholds(min_share=0.9), every=1)
    for f in good:
        strict.update(f)
    strict.update(black())
    assert not strict.verdict().scorable and "90 % needed" in strict.verdict().message()
    assert not ClipGate().verdict().scorable and ClipGate().verdict().n_checked == 0


def test_the_gate_checks_every_third_frame_from_the_first():
    gate = ClipGate()  # the default of pleura score
    checks = [gate.update(black()) for _ in range(7)]
    assert [c is not None for c in checks] == [True, False, False, True, False, False, True]
    assert gate.n_seen == 7 and gate.verdict().n_checked == 3
    with pytest.raises(ValueError, match="every must be >= 1"):
        ClipGate(every=0)


@needs_pocus
@pytest.mark.parametrize("name", [
    "Reg_pat4Image_140238.mpeg",  # faint pleura, homogeneous haze: closest to a phantom
    "Pneu_northumbria_0409_set1_vid1.avi",  # effusion under the chest wall: closest to an eye
    "Reg-Atlas-lungcurtain.gif",  # starts on a black frame
])
def test_real_lung_clips_pass(name):
    v = gate_clip(POCUS / name, max_frames=40)
    assert v.scorable, (name, v)
    assert v.share >= 0.9


@pytest.mark.skipif(not (DATA / "device-screen").is_dir(), reason=f"{DATA} absent")
def test_a_whole_scanner_screen_with_a_small_lung_image_passes():
    v = gate_clip(DATA / "device-screen" / "cit_linear_image_93029618565613.mp4", max_frames=30)
    assert v.scorable and v.share >= 0.9


@needs_devices
@pytest.mark.parametrize("name", ["clarius-ocular-image.png", "clarius-ocular-short.mp4"])
def test_an_eye_scan_is_not_a_lung_view(name):
    v = gate_clip(DEVICES / name)
    assert not v.scorable and v.reason == NOT_LUNG
    assert "not a lung view" in v.message()


# --------------------------------------------------------------------------- pleura score


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    root = tmp_path_factory.mktemp("gate")
    bundle = make_dummy_bundle(root / "bundle", seg=False, findings=True)
    clips = root / "clips"
    clips.mkdir()
    write_mp4(clips / "a-black.mp4", [black() for _ in range(5)])
    write_mp4(clips / "b-noise.mp4", [noise() for _ in range(5)])
    lung = [df.image for df in decode_file(DEMO / "demo-convex.mp4", max_frames=6)]
    write_mp4(clips / "c-lung.mp4", lung)
    out, table = root / "s.json", root / "s.csv"
    rc = cli.main(["score", str(clips), "--bundle", str(bundle), "--backend", "onnxruntime",
                   "--threads", "1", "--json", str(out), "--csv", str(table)])
    return rc, json.loads(out.read_text()), list(csv.DictReader(table.open()))


def test_pleura_score_gives_no_video_score_to_a_clip_that_is_not_scorable(scored, capsys):
    rc, doc, _rows = scored
    assert rc == 1  # like a failed clip: not every clip got a score
    black_, noise_, lung = doc["clips"]
    for c, reason in ((black_, NO_IMAGE), (noise_, NOISE)):
        assert c["scorable"] is False and c["scorable_reason"] == reason
        assert c["scorable_share"] == 0.0 and c["scorable_counts"][reason] == 2  # frames 0, 3
        assert c["ok"] is False and c["error"].startswith("not scorable: ")
        assert c["video"]["score"] is None and c["video"]["probs"] is None
        assert c["video"]["findings"] is None
        assert c["n_frames"] == 5 and len(c["frames"]) == 5  # the model's outputs, kept
    assert "probe off the skin" in black_["error"]
    assert lung["scorable"] is True and lung["scorable_reason"] is None and lung["ok"]
    assert lung["scorable_share"] == 1.0 and isinstance(lung["video"]["score"], int)
    s = doc["summary"]
    assert s["n_not_scorable"] == 2 and s["n_failed"] == 2 and s["n_clips"] == 3


def test_pleura_score_text_and_csv_say_not_scorable(scored, tmp_path, capsys):
    _rc, _doc, rows = scored
    assert [r["scorable"] for r in rows] == ["0", "0", "1"]
    assert [r["scorable_reason"] for r in rows] == [NO_IMAGE, NOISE, ""]
    assert rows[0]["video_score"] == "" and rows[0]["p0"] == "" and rows[0]["max_frame_score"] == ""
    assert rows[2]["video_score"] in {"0", "1", "2", "3"}
    clip = write_mp4(tmp_path / "black.mp4", [black() for _ in range(3)])
    bundle = make_dummy_bundle(tmp_path / "b", seg=False)
    assert cli.main(["score", str(clip), "--bundle", str(bundle), "--threads", "1"]) == 1
    out = capsys.readouterr().out
    assert "black.mp4: NOT SCORABLE, no video score (not scorable: no lung image" in out
    assert "1 not scorable: no video score" in out


# --------------------------------------------------------------------------- exam


def test_a_lifted_probe_does_not_score_the_exam_zone(tmp_path):
    from engines.scorer import load_scorer
    from stream.exam.scoring import score_into_exam
    from stream.exam.store import Exam

    scorer = load_scorer(make_dummy_bundle(tmp_path / "b", seg=False), backend="onnxruntime",
                         threads=1)
    exam = Exam.create(tmp_path / "exam", "P01", protocol=6, date="2026-01-02")
    lifted = write_mp4(tmp_path / "P01_R1.mp4", [probe_in_air() for _ in range(4)])
    lung = write_mp4(tmp_path / "P01_R2.mp4", [df.image for df in
                                               decode_file(DEMO / "demo-convex.mp4",
                                                           max_frames=4)])
    try:
        entry, doc = score_into_exam(exam, "R1", lifted, scorer, batch=4)
        good, _ = score_into_exam(exam, "R2", lung, scorer, batch=4)
    finally:
        scorer.close()
    assert doc["clips"][0]["scorable"] is False
    assert entry.ok is False and entry.video_score is None and entry.probs is None
    assert entry.error.startswith("not scorable: no lung image — probe off the skin?")
    assert entry.key_frame is None and entry.findings is None
    assert good.ok and good.video_score is not None
    score, n_scored, n_zones = Exam.open(tmp_path / "exam").total()
    assert n_scored == 1 and score == good.video_score and n_zones == 6
