"""Real-scan training (issue #13): licences, grouping, folds, the model, export, model card."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests._shared_data import POCUS, needs_pocus
from train.data.pocus import PocusClip, read_pocus_manifest
from train.real.clips import (
    LicenceError,
    bundle_licence,
    check_trainable,
    clip_groups,
    family_key,
    grouped_folds,
    licence_family,
    trainable,
)
from train.real.fit import (
    BalancedSampler,
    RealConfig,
    TrainClip,
    augment,
    load_weights,
    predict,
    save_weights,
    train_model,
)
from train.real.model import FINDING_NAMES, RealFrameNet, standardise


def _clip(name, licence="CC BY 4.0", severity=0, url="", commercial=True):
    return PocusClip(path=Path(name), filename=name, severity=severity, class_label="",
                     probe="convex", fps=25.0, frames=10, width=64, height=64,
                     commercial_use=commercial, license=licence, source="x", source_url=url)


# --------------------------------------------------------------------------- licences

@pytest.mark.parametrize("licence,family", [
    ("CC BY 4.0", "CC BY"), ("CC BY 2.0", "CC BY"), ("CC BY-NC 4.0", "CC BY-NC"),
    ("CC BY-NC-SA 3.0", "CC BY-NC-SA"), ("CC BY-ND 4.0", None), ("CC BY-NC-ND 4.0", None),
    ("", None), ("unknown", None), ("All rights reserved", None)])
def test_licence_family(licence, family):
    assert licence_family(licence) == family


@pytest.mark.parametrize("licence", ["CC BY-ND 4.0", "CC BY-NC-ND 4.0", "", "unknown"])
def test_nd_or_unknown_licence_is_refused_naming_the_clip(licence):
    bad = _clip("Cov_someclip.mp4", licence)
    with pytest.raises(LicenceError, match="Cov_someclip.mp4"):
        check_trainable(bad)
    with pytest.raises(LicenceError, match="does not allow training"):
        trainable([_clip("ok.mp4"), bad])  # never silently dropped


def test_commercial_only_and_bundle_licence():
    clips = [_clip("a.mp4"), _clip("b.mp4", "CC BY-NC 4.0", commercial=False),
             _clip("c.mp4", "CC BY-NC-SA 4.0", commercial=False)]
    assert [c.filename for c in trainable(clips, commercial_only=True)] == ["a.mp4"]
    assert bundle_licence(clips) == "CC BY-NC-SA 4.0"
    assert bundle_licence(clips[:2]) == "CC BY-NC 4.0"
    assert bundle_licence(clips[:1]) == "CC BY 4.0"


# --------------------------------------------------------------------------- groups and folds

@pytest.mark.parametrize("a,b", [
    ("Cov_convex_volpecelli_sonographic_v1.mov", "Cov_convex_volpecelli_sonographic_v4.mov"),
    ("Reg_pat1Image_132943.mpeg", "Reg_pat1Image_133410.mpeg"),
    ("Reg_Image_181206_crop.mp4", "Reg_Image_181739_trimmed_crop.mp4"),
    ("Reg_Avi_lung-sliding.MP4", "Reg_Avi_lung-sliding-3.MP4"),
    ("Vir_liftl_H1N1_case2_clip1.mp4", "Vir_liftl_H1N1_case2_clip2.mp4"),
])
def test_recording_families(a, b):
    assert family_key(a) == family_key(b)


def test_different_patients_are_different_families():
    assert family_key("Reg_pat1Image_132943.mpeg") != family_key("Reg_pat2Image_133824.mpeg")


def test_same_source_page_is_one_group():
    clips = [_clip("x1.mp4", url="http://www.thepocusatlas.com/covid19 (Day1)"),
             _clip("y2.gif", url="http://www.thepocusatlas.com/covid19 (Day4)"),
             _clip("z.mp4", url="https://other.org/page#frag")]
    g = clip_groups(clips)
    assert g["x1.mp4"] == g["y2.gif"] != g["z.mp4"]


@needs_pocus
def test_no_group_in_two_folds_on_the_pocus_manifest():
    clips = read_pocus_manifest(POCUS / "MANIFEST.csv")
    folds = grouped_folds(clips, k=5)
    fold_of_group: dict[str, set[int]] = {}
    for c in clips:
        fold_of_group.setdefault(folds.group_of[c.filename], set()).add(folds.fold_of[c.filename])
    assert all(len(f) == 1 for f in fold_of_group.values())
    # the families the issue names stay together, and every fold has healthy and sick clips
    assert len({folds.fold_of[f"Cov_convex_volpecelli_sonographic_v{i}.mov"]
                for i in range(1, 6)}) == 1
    for k in range(5):
        sev = [c.severity for c in clips
               if folds.fold_of[c.filename] == k and c.severity is not None]
        assert 0 in sev and any(s >= 1 for s in sev), (k, sev)
    assert all(len(folds.test(k)) > 0 for k in range(5))


@needs_pocus
def test_every_pocus_clip_is_trainable():
    clips = read_pocus_manifest(POCUS / "MANIFEST.csv")
    assert len(trainable(clips)) == len(clips)
    assert bundle_licence(clips) == "CC BY-NC-SA 4.0"
    assert {c.license for c in trainable(clips, commercial_only=True)} <= {"CC BY 4.0",
                                                                          "CC BY 2.0"}


# --------------------------------------------------------------------------- model and training

def test_model_shapes_and_intensity_invariance():
    torch.manual_seed(0)
    m = RealFrameNet().eval()
    x = torch.rand(3, 3, 224, 224)
    out = m(x)
    assert out["probs"].shape == (3, 4) and out["findings"].shape == (3, len(FINDING_NAMES))
    assert torch.allclose(out["probs"].sum(1), torch.ones(3), atol=1e-6)
    assert out["theta1"].shape == (3, 2, 3)
    # per-frame standardisation: a global gain and offset change nothing
    brighter = m(0.6 * x + 0.2)
    assert torch.allclose(out["probs"], brighter["probs"], atol=1e-4)
    s = standardise(x)
    assert torch.allclose(s.mean(dim=(1, 2, 3)), torch.zeros(3), atol=1e-5)
    no_head = RealFrameNet(n_findings=0, norm="none").eval()(x)
    assert no_head["findings"] is None


def test_augment_keeps_shape_and_range():
    rng = np.random.default_rng(0)
    img = (np.random.default_rng(1).random((224, 224)) * 255).astype(np.uint8)
    for kind in ("strong", "geometric", "none"):
        y = augment(img, rng, kind)
        assert y.shape == (224, 224) and y.dtype == np.float32
        assert y.min() >= 0.0 and y.max() <= 1.0


def _toy_clips(n_frames=6):
    rng = np.random.default_rng(0)
    clips = []
    for s in range(4):
        for j in range(2):
            img = np.zeros((n_frames, 224, 224), np.uint8)
            img[:, 40:180, 30:190] = rng.integers(10, 60, (n_frames, 140, 160))
            img[:, 60 + 25 * s:70 + 25 * s, 30:190] = 220  # a bright band whose depth is the score
            flags = np.array([s >= 1, s >= 2, 0, s == 0, s >= 1], np.float32)
            clips.append(TrainClip(f"c{s}{j}", img, s, flags))
    clips.append(TrainClip("u", clips[0].images, -1, np.full(5, np.nan, np.float32)))
    return clips


def test_sampler_is_balanced_over_scores():
    clips = _toy_clips()
    clips += [TrainClip(f"extra{i}", clips[0].images, 0, clips[0].flags) for i in range(20)]
    s = BalancedSampler(clips, np.random.default_rng(0), p_unlabelled=0.0)
    counts = np.bincount([clips[s.draw()[0]].score for _ in range(4000)], minlength=4)
    assert counts.min() > 800, counts  # ~1000 each although score 0 has 22 of 30 clips


def test_training_lowers_the_loss_and_weights_round_trip(tmp_path):
    clips = _toy_clips()
    cfg = RealConfig(steps=12, batch=8, lr=3e-3, augment="none", seed=0)
    model, summary = train_model(clips, cfg, tmp_path / "run", log_every=4)
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["sord"] < log[0]["sord"], log
    assert summary["steps"] == 12
    twin = RealFrameNet(width=cfg.width)
    load_weights(twin, tmp_path / "run" / "frame-weights.npz")
    p1, f1 = predict(model, clips[0].images)
    p2, f2 = predict(twin, clips[0].images)
    np.testing.assert_allclose(p1, p2, atol=1e-6)
    np.testing.assert_allclose(f1, f2, atol=1e-6)
    with pytest.raises(ValueError, match="do not fit"):
        load_weights(RealFrameNet(width=1.0), tmp_path / "run" / "frame-weights.npz")


def test_weights_file_holds_no_pickle(tmp_path):
    path = save_weights(RealFrameNet(), tmp_path / "w.npz")
    with np.load(path, allow_pickle=False) as z:  # would raise on object arrays
        assert all(z[k].dtype != object for k in z.files)


# --------------------------------------------------------------------------- export and card

def _real_run(tmp_path, clips_meta):
    run = tmp_path / "final"
    cfg = RealConfig(steps=2, batch=4, augment="none")
    train_model(_toy_clips(2), cfg, run)
    (run / "real_run.json").write_text(json.dumps({
        "kind": "real-frame", "config": json.loads((run / "config.json").read_text()),
        "uninorm_e": [0.4, 0.5, 0.5, 0.6], "uninorm_head": "log", "n_clips": len(clips_meta),
        "n_labelled": len(clips_meta), "licence": "CC BY-NC-SA 4.0", "research_only": True,
        "clips": clips_meta, "train": {}}))
    return run


def test_export_parity_with_findings_and_model_card_lists_every_clip(tmp_path):
    from engines import create_engine
    from engines.bundle import load_bundle
    from stream.cli import main

    clips_meta = [{"file": "a.mp4", "license": "CC BY 4.0", "score": 0, "source": "s1"},
                  {"file": "b(1).gif", "license": "CC BY-NC-SA 4.0", "score": 3, "source": "s2"}]
    run = _real_run(tmp_path, clips_meta)
    out = tmp_path / "bundle"
    assert main(["export", str(run), "--out", str(out)]) == 0
    b = load_bundle(out)
    assert b.finding_names == FINDING_NAMES
    manifest = json.loads((out / "manifest.json").read_text())
    parity = manifest["evaluation"]["export_parity_max_abs_diff"]["frame.onnx"]
    assert set(parity) == {"probs", "theta1", "theta2", "findings"}
    assert max(parity.values()) < 1e-4
    # the engine returns the findings, equal to PyTorch's
    model = RealFrameNet()
    load_weights(model, run / "frame-weights.npz")
    x = np.random.default_rng(0).random((2, 3, 224, 224)).astype(np.float32)
    got = create_engine(b, "onnxruntime").frame(x)
    want = model.eval()(torch.from_numpy(x))
    np.testing.assert_allclose(got.findings, want["findings"].detach().numpy(), atol=1e-4)
    card = (out / "MODEL_CARD.md").read_text()
    assert "non-commercial research use only" in card and "CC BY-NC-SA 4.0" in card
    for c in clips_meta:
        assert f"| {c['file']} | {c['score']} | {c['license']} |" in card


def test_label_csv_for_own_clips(tmp_path):
    from train.data.layout import DatasetError
    from train.real.labels import read_label_csv

    (tmp_path / "a.mp4").write_bytes(b"x")
    (tmp_path / "b.mp4").write_bytes(b"x")
    lab = tmp_path / "labels.csv"
    with lab.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "score", "group", "b_lines"])
        w.writerows([["a.mp4", "2", "P1", "1"], ["b.mp4", "", "P1", ""]])
    with pytest.raises(DatasetError, match="--own-data"):
        read_label_csv(tmp_path, lab)
    clips = read_label_csv(tmp_path, lab, own_data=True)
    assert [c.severity for c in clips] == [2, None]
    assert clips[0].findings == {"b_lines": 1}
    g = clip_groups(clips)
    assert g["a.mp4"] == g["b.mp4"]  # the explicit group joins them
    assert trainable(clips) == clips


@needs_pocus
def test_grouped_cv_end_to_end_on_real_clips_and_reevaluation(tmp_path):
    """The whole CV path on 10 short real clips with a 2-step model: folds, raw predictions,
    prior correction, uninorm fitted on training clips, report, re-evaluation from disk."""
    from train.real.cv import cross_validate, format_report, reevaluate

    clips = [c for c in read_pocus_manifest(POCUS / "MANIFEST.csv")
             if c.filename.endswith(".gif")][:10]
    cfg = RealConfig(steps=2, batch=4, max_frames=4, augment="none")
    rep = cross_validate(clips, cfg, tmp_path / "cv", k=5, cache_dir=None)
    assert set(rep["methods"]) == {"max_argmax", "argmax_mean", "uninorms"}
    m = rep["methods"]["uninorms"]
    assert m["pooled"]["n"] == sum(c.severity is not None for c in clips)
    assert "weighted_f1" in format_report(rep)
    assert json.loads((tmp_path / "cv" / "cv.json").read_text())["k"] == 5
    # a fold's training clips never include its test clips
    for k in range(5):
        saved = np.load(tmp_path / "cv" / f"fold{k}" / "predictions.npz")
        assert len(saved.files) >= len(clips)
    again = reevaluate(tmp_path / "cv", clips, prior_adjust=True, cache_dir=None)
    assert again["methods"]["uninorms"]["pooled"]["confusion"] == m["pooled"]["confusion"]


def test_real_table_script(tmp_path):
    import subprocess
    import sys

    rep = {"methods": {"uninorms": {k: {"mean": 0.5, "sd": 0.1} for k in (
        "weighted_f1", "accuracy", "qwk", "within_one", "auroc_0_vs_1plus",
        "specificity_healthy")}}}
    (tmp_path / "cv.json").write_text(json.dumps(rep))
    out = subprocess.run([sys.executable, "scripts/real_table.py", f"row A={tmp_path}/cv.json"],
                         capture_output=True, text=True, check=True).stdout
    assert "| row A | 0.500 ± 0.100 |" in out and out.count("\n") == 3
