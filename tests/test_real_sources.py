"""Leave-one-source-out evaluation of the real-scan model (issue #25 section 1): the source
rule, the LOSO folds, the source-lookup reference row, within-source AUROC, the source probe,
and the LOSO CV end to end on real clips."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from tests._frame_fixtures import tiny_sim  # noqa: F401 - fixture
from tests._shared_data import POCUS, needs_pocus
from train.data.pocus import PocusClip, read_pocus_manifest
from train.real.cv import video_metrics
from train.real.sources import (
    clip_source,
    clip_sources,
    leave_one_clip_out_lookup,
    source_folds,
    source_lookup,
    source_of_url,
    source_probe,
    within_source_auroc,
)


def _clip(name, url, severity=0, source="x"):
    return PocusClip(path=Path(name), filename=name, severity=severity, class_label="",
                     probe="convex", fps=25.0, frames=10, width=64, height=64,
                     commercial_use=True, license="CC BY 4.0", source=source, source_url=url)


@pytest.mark.parametrize("url, source", [
    ("http://www.thepocusatlas.com/covid19-1/m2ra6", "thepocusatlas.com"),
    ("https://theultrasoundjournal.springeropen.com/articles/10.1186/x",
     "theultrasoundjournal.springeropen.com"),
    ("https://link.springer.com/article/10.1186/cc11201", "link.springer.com"),
    ("HTTPS://LITFL.com:443/x#y", "litfl.com"),
    ("Data contributed by Northumbria Specialist Emergency Care Hospital, healthy 1.avi",
     "northumbria-specialist-emergency-care-hospital"),
    ("Data contributed by Northumbria Specialist Emergency Care Hospital",
     "northumbria-specialist-emergency-care-hospital"),
    ("charlotte", "charlotte"),
])
def test_source_rule(url, source):
    assert source_of_url(url) == source


def test_own_clips_source_from_the_label_csv():
    assert clip_source(_clip("a.mp4", "group:P1", source="own")) == "own"
    assert clip_source(_clip("a.mp4", "", source="own")) == "own"
    assert clip_source(_clip("a.mp4", "group:P1", source="Site B / Clarius")) == "site-b-clarius"


def test_source_folds_hold_out_whole_sources_and_groups():
    clips = [_clip("a1.mp4", "https://a.org/1", 0), _clip("a2.mp4", "https://a.org/2", 2),
             _clip("b1.mp4", "https://b.org/1", 0), _clip("c1.mp4", "https://c.org/1", None),
             # one recording family in two sources: the two sources are held out together
             _clip("Cov-rec_v1.mp4", "https://d.org/1", 1),
             _clip("Cov-rec_v2.mp4", "https://e.org/1", 3)]
    f = source_folds(clips)
    assert f.k == 3 and f.names == ("a.org", "b.org", "d.org+e.org")
    assert f.fold_of["c1.mp4"] == -1  # no labelled clip: trained on, never tested
    assert f.fold_of["Cov-rec_v1.mp4"] == f.fold_of["Cov-rec_v2.mp4"] == 2
    assert f.test(0) == ["a1.mp4", "a2.mp4"] and "c1.mp4" in f.train(0)
    with pytest.raises(ValueError, match="two or more sources"):
        source_folds([_clip("a1.mp4", "https://a.org/1", 0)])


@needs_pocus
def test_loso_on_the_pocus_manifest_no_source_or_group_in_two_folds():
    clips = read_pocus_manifest(POCUS / "MANIFEST.csv")
    src = clip_sources(clips)
    assert len(set(src.values())) == 8
    f = source_folds(clips)
    assert f.k == 7 and "charlotte" in f.names and "thepocusatlas.com" in f.names
    folds_of_source, folds_of_group = defaultdict(set), defaultdict(set)
    for c in clips:
        folds_of_source[src[c.filename]].add(f.fold_of[c.filename])
        folds_of_group[f.group_of[c.filename]].add(f.fold_of[c.filename])
    assert all(len(v) == 1 for v in folds_of_source.values())
    assert all(len(v) == 1 for v in folds_of_group.values())
    assert folds_of_source["link.springer.com"] == {-1}  # its one clip has no label
    labelled = sum(c.severity is not None for c in clips)
    assert sum(len(f.test(k)) for k in range(f.k)) == 124 - 1 and labelled == 75


@needs_pocus
def test_source_lookup_baseline_value_on_the_manifest():
    """What knowing the source alone is worth (leave one clip out, most common score of the
    clip's source, ties to the lower score): close to the grouped CV of the shipped model."""
    y, preds = leave_one_clip_out_lookup(read_pocus_manifest(POCUS / "MANIFEST.csv"))
    m = video_metrics(y, preds)
    assert m["n"] == 75
    assert m["weighted_f1"] == pytest.approx(0.6255, abs=1e-3)
    assert m["qwk"] == pytest.approx(0.5181, abs=1e-3)
    assert m["auroc_0_vs_1plus"] == pytest.approx(0.8970, abs=1e-3)


def test_source_lookup_predictor_uses_training_clips_of_the_same_source_only():
    src = {"a1": "a", "a2": "a", "a3": "a", "b1": "b", "b2": "b", "c1": "c"}
    score = {"a1": 2, "a2": 2, "a3": 0, "b1": 0, "b2": 0, "c1": 3}
    predict = source_lookup(src, score)
    assert predict(["a1", "a2", "b1"], ["a3", "b2"]) == [(2, 1.0), (0, 0.0)]
    # an unseen source: the training majority (ties to the lower score), the overall sick share
    assert predict(["a1", "a3"], ["c1"]) == [(0, 0.5)]


def test_within_source_auroc():
    y = [0, 1, 0, 2, 0, 0, 3]
    preds = [(0, 0.1), (1, 0.9), (0, 0.5), (2, 0.4), (0, 0.2), (0, 0.3), (3, 0.8)]
    srcs = ["a", "a", "b", "b", "c", "c", "d"]
    out = within_source_auroc(y, preds, srcs)
    assert set(out) == {"a", "b", "mean"}  # c: healthy only, d: sick only
    assert out["a"]["auroc"] == 1.0 and out["b"]["auroc"] == 0.0
    assert out["mean"] == {"auroc": 0.5, "n_sources": 2}


def test_source_probe_finds_a_source_in_the_features_and_not_in_noise():
    rng = np.random.default_rng(0)
    names = [f"s{s}-g{g}-c{c}" for s in range(4) for g in range(5) for c in range(3)]
    src = {n: n.split("-")[0] for n in names}
    grp = {n: "-".join(n.split("-")[:2]) for n in names}
    centres = rng.normal(size=(4, 16)) * 3
    leaky = {n: centres[int(src[n][1])] + rng.normal(size=16) for n in names}
    noise = {n: rng.normal(size=16) for n in names}
    hi = source_probe(leaky, src, grp)
    lo = source_probe(noise, src, grp)
    assert hi["accuracy"] > 0.9 and hi["n_sources"] == 4 and hi["chance_uniform"] == 0.25
    assert lo["balanced_accuracy"] < 0.5


@needs_pocus
def test_loso_cv_end_to_end_on_real_clips_and_reevaluation(tmp_path):
    """The LOSO path on a few short real clips of three sources with a 2-step model: folds
    by source, pooled and per-source metrics, within-source AUROC, source probe, report,
    re-evaluation from the saved predictions."""
    from train.real.cv import cross_validate, format_report, reevaluate
    from train.real.fit import RealConfig

    every = read_pocus_manifest(POCUS / "MANIFEST.csv")
    src = clip_sources(every)
    pick = defaultdict(list)
    for c in every:
        s = src[c.filename]
        if s in ("thepocusatlas.com", "charlotte", "stemlynsblog.org") and c.frames <= 120:
            pick[s].append(c)
    clips = [c for s in sorted(pick) for c in pick[s][:4]]
    cfg = RealConfig(steps=2, batch=4, max_frames=3, augment="none")
    rep = cross_validate(clips, cfg, tmp_path / "loso", cache_dir=None, split="source")
    assert rep["split"] == "source" and rep["k"] == 3
    assert rep["fold_names"] == ["charlotte", "stemlynsblog.org", "thepocusatlas.com"]
    pooled = rep["methods"]["uninorms"]["pooled"]
    assert pooled["n"] == sum(c.severity is not None for c in clips)
    by = rep["by_source"]["uninorms"]
    assert set(by) == set(rep["fold_names"])
    assert sum(v["n"] for v in by.values()) == pooled["n"]
    assert 0.0 <= rep["source_probe"]["accuracy"] <= 1.0 and rep["source_probe"]["n_models"] == 3
    text = format_report(rep)
    assert "leave-one-source-out (3 sources held out in turn)" in text
    assert "source probe" in text
    saved = json.loads((tmp_path / "loso" / "cv.json").read_text())
    assert saved["split"] == "source"
    again = reevaluate(tmp_path / "loso", clips, prior_adjust=True, cache_dir=None)
    assert again["split"] == "source"
    assert again["methods"]["uninorms"]["pooled"]["confusion"] == pooled["confusion"]
    assert again["source_probe"] == rep["source_probe"]
    # pleura adapt under LOSO: each fold's model adapted on its held-out source, unlabelled
    adapted = reevaluate(tmp_path / "loso", clips, prior_adjust=True, cache_dir=None,
                         adapt=["prior", "bn"])
    assert [a["n_clips"] for a in adapted["adaptation"]] == [len(pick[s][:4]) for s in sorted(pick)]
    assert all(a["parts"] == ["prior", "bn"] for a in adapted["adaptation"])
    assert adapted["methods"]["uninorms"]["pooled"]["n"] == pooled["n"]


# --------------------------------------------------------------------------- levers (#25 §2)


def test_gradient_reversal_flips_and_scales_the_gradient():
    import torch

    from train.real.fit import grad_reverse

    x = torch.ones(3, requires_grad=True)
    (grad_reverse(x, 0.5) * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert x.grad.tolist() == [-0.5, -1.0, -1.5]


def test_source_balanced_sampling_weighs_sources_alike():
    from train.real.fit import BalancedSampler, TrainClip

    img = np.zeros((2, 8, 8), np.uint8)
    flags = np.full(5, np.nan, np.float32)
    clips = [TrainClip(f"a{i}", img, 0, flags, source="a") for i in range(9)]
    clips += [TrainClip("b0", img, 0, flags, source="b")]
    sampler = BalancedSampler(clips, np.random.default_rng(0), 0.0, balance="source")
    draws = [sampler.draw()[0] for _ in range(2000)]
    share_b = np.mean([clips[i].source == "b" for i in draws])
    assert 0.45 < share_b < 0.55  # one clip of b weighs as much as nine of a
    with pytest.raises(ValueError, match="'source'"):
        BalancedSampler(clips, np.random.default_rng(0), balance="device")


def test_device_look_keeps_the_frame_and_its_scan_area():
    from train.real.fit import augment, device_look

    rng = np.random.default_rng(1)
    img = np.zeros((64, 64), np.uint8)
    img[8:60, 10:54] = rng.integers(20, 200, (52, 44))
    changed = 0
    for _ in range(30):
        out = device_look(img, rng)
        assert out.shape == img.shape and out.dtype == np.uint8
        changed += int(np.abs(out.astype(int) - img).mean() > 1)
        y = augment(img, rng, "device")
        assert y.shape == img.shape and y.dtype == np.float32 and 0 <= y.min() <= y.max() <= 1
    assert changed >= 20  # most draws change the look


def test_adversary_and_class_heads_train_and_stay_out_of_the_model(tmp_path):
    from train.real.fit import RealConfig, TrainClip, train_model

    rng = np.random.default_rng(0)
    flags = np.full(5, np.nan, np.float32)
    clips = [TrainClip(f"c{i}", rng.integers(0, 255, (3, 224, 224), dtype=np.uint8), i % 4,
                       flags, source=f"s{i % 3}", klass=i % 4) for i in range(8)]
    cfg = RealConfig(steps=3, batch=4, max_frames=3, augment="device", balance="source",
                     adversary=0.3, class_weight=0.3, findings_weight=0)
    model, _ = train_model(clips, cfg, tmp_path / "run")
    logged = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])
    assert {"sord", "source", "class"} <= set(logged)
    saved = np.load(tmp_path / "run" / "frame-weights.npz")
    assert not any(k.startswith(("source", "klass")) for k in saved.files)
    assert set(saved.files) == set(model.state_dict())


def test_real_table_pooled_rows(tmp_path):
    import subprocess
    import sys

    rep = {"split": "source",
           "methods": {"uninorms": {"pooled": {"weighted_f1": 0.5, "accuracy": 0.6, "qwk": 0.1,
                                               "within_one": 0.7, "auroc_0_vs_1plus": 0.8,
                                               "specificity_healthy": 0.9}}},
           "within_source": {"uninorms": {"mean": {"auroc": 0.65, "n_sources": 3}}},
           "findings": {"b_lines": {"auroc": 0.55}}, "source_probe": {"accuracy": 0.41}}
    (tmp_path / "cv.json").write_text(json.dumps(rep))
    out = subprocess.run([sys.executable, "scripts/real_table.py", "--pooled",
                          f"LOSO={tmp_path}/cv.json"], capture_output=True, text=True,
                         check=True).stdout
    assert "| LOSO | 0.500 | 0.600 | 0.100 | 0.700 | 0.800 | 0.900 | 0.650 | 0.550 | 0.410 |" \
        in out


def test_composites_of_held_out_clips_stay_out_of_training(tiny_sim, tmp_path):  # noqa: F811
    import csv
    import shutil

    from train.real.fit import sim_clips

    root = tmp_path / "comp"
    shutil.copytree(tiny_sim, root)
    with open(root / "videos.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for i, r in enumerate(rows):  # as pleura synth --on-real writes it
        r["source_clip"] = f"real{i % 2}.mp4"
    with open(root / "videos.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    every = sim_clips(root, size=(64, 64))
    kept = sim_clips(root, size=(64, 64), exclude_clips={"real0.mp4"})
    gone = {r["video_id"] for r in rows if r["source_clip"] == "real0.mp4"}
    assert 0 < len(kept) < len(every)
    assert not any(c.name.split(":")[1] in gone for c in kept)
    assert len(sim_clips(root, size=(64, 64), exclude_clips={"other.mp4"})) == len(every)


@needs_pocus
@pytest.mark.parametrize("name", ["Cov-Atlas+(44).gif", "Reg-NormalLungs.mp4",
                                  "Pneu_northumbria_0409_set1_vid1.avi"])
def test_training_and_runtime_give_the_model_the_same_input(name):
    """One preprocessing contract (#25): what pleura train real feeds the model (cached
    letterboxed grey frames / 255, repeated to the bundle's channels) equals what the worker
    feeds the bundle's frame model for the same decoded frame, to 1e-5."""
    from engines.bundle import default_bundle_path, load_bundle
    from engines.preprocess import preprocess_batch
    from stream.sources import decode_file
    from train.real.frames import decode_clip

    spec = load_bundle(default_bundle_path()).frame_spec
    clip = decode_clip(POCUS / name, (spec.height, spec.width), max_frames=4)
    frames = [f.image for f in decode_file(POCUS / name)]
    runtime, _ = preprocess_batch([frames[i] for i in clip.index], spec)
    training = np.repeat(clip.images.astype(np.float32)[:, None] / 255.0, spec.channels, axis=1)
    assert runtime.shape == training.shape
    assert np.abs(runtime - training).max() <= 1e-5
