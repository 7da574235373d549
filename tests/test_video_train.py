"""Video stage: patient folds, the uninorm fit (early stopping keeps the lowest loss), metrics."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from train.metrics import confusion_matrix  # noqa: E402
from train.video.baselines import argmax_mean, max_argmax, predict_all, uninorms  # noqa: E402
from train.video.evaluate import cv_report, format_cv  # noqa: E402
from train.video.fit import (  # noqa: E402
    FitConfig,
    fit_uninorm,
    pad_videos,
    video_sord_targets,
)
from train.video.folds import patient_folds  # noqa: E402
from train.video.metrics import auroc, weighted_prf  # noqa: E402
from train.video.uninorm_torch import uninorm_reduce_torch  # noqa: E402


def _toy(n_videos: int = 40, seed: int = 0, noise: float = 1.0):
    """Videos whose frames lean to the video's score, with noisy frames."""
    rng = np.random.default_rng(seed)
    probs, labels = [], []
    for v in range(n_videos):
        s = v % 4
        n = int(rng.integers(10, 50))
        logits = rng.normal(0, noise, (n, 4))
        logits[:, s] += 1.5
        p = np.exp(logits)
        probs.append(p / p.sum(1, keepdims=True))
        labels.append(s)
    return probs, labels


def _loss(probs, labels, e) -> float:
    P, mask = pad_videos(probs)
    agg = uninorm_reduce_torch(P, torch.as_tensor(e, dtype=torch.float64), mask)
    t = torch.as_tensor(video_sord_targets(labels))
    return float(-(t * torch.log_softmax(agg, 1)).sum(1).mean())


def test_patient_folds_disjoint_cover_and_balanced():
    patient_of = {f"v{i}": f"p{i % 13}" for i in range(60)}
    folds = patient_folds(patient_of, k=5, seed=3)
    assert len(folds) == 5
    assert sorted(v for f in folds for v in f) == sorted(patient_of)
    pats = [{patient_of[v] for v in f} for f in folds]
    for i in range(5):
        for j in range(i + 1, 5):
            assert not pats[i] & pats[j]
    sizes = [len(f) for f in folds]
    assert max(sizes) - min(sizes) <= 5  # a patient holds 4-5 videos
    assert folds == patient_folds(patient_of, k=5, seed=3)  # deterministic
    with pytest.raises(ValueError, match="--folds"):
        patient_folds({"a": "p1", "b": "p2"}, k=5)


def test_sord_targets_zero_pushed_away():
    t = video_sord_targets([0, 1, 2, 3])
    np.testing.assert_allclose(t.sum(1), 1.0)
    # Score 0 at -0.5: its neighbour 1 is 1.5 away, so 0's target is sharper than 3's.
    assert t[0, 0] > t[3, 3]
    np.testing.assert_allclose(t[3], [np.exp(-2 * 3.5**2), np.exp(-8), np.exp(-2), 1]
                               / np.sum([np.exp(-2 * 3.5**2), np.exp(-8), np.exp(-2), 1]))


def test_fit_decreases_loss_on_toy_problem():
    probs, labels = _toy()
    res = fit_uninorm(probs, labels, FitConfig(epochs=30, patience=30))
    assert res.best_loss < res.losses[0] - 1e-3
    assert np.all((res.e >= 0) & (res.e <= 1))
    assert len(res.losses) <= 31


def test_early_stopping_keeps_lowest_loss():
    probs, labels = _toy(seed=1)
    # A large learning rate overshoots, so the loss goes up again after its minimum.
    res = fit_uninorm(probs, labels, FitConfig(lr=0.3, epochs=30, patience=4, init_e=0.5))
    assert res.best_epoch == int(np.argmin(res.losses))
    assert res.best_loss == min(res.losses)
    assert any(loss > res.best_loss for loss in res.losses[res.best_epoch + 1:])
    np.testing.assert_allclose(_loss(probs, labels, res.e), res.best_loss, rtol=1e-9)
    # Stopped by patience: at most `patience` epochs after the best one.
    assert len(res.losses) - 1 - res.best_epoch <= 4


def test_weighted_prf_and_confusion_known_values():
    y = [0, 0, 1, 1, 2, 3]
    yhat = [0, 1, 1, 1, 3, 3]
    cm = confusion_matrix(np.array(y), np.array(yhat))
    assert cm.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 0, 1], [0, 0, 0, 1]]
    p, r, f = weighted_prf(y, yhat)
    # per class P = [1, 2/3, 0, 1/2], R = [1/2, 1, 0, 1], support [2, 2, 1, 1]
    np.testing.assert_allclose(p, (2 * 1 + 2 * 2 / 3 + 0 + 0.5) / 6)
    np.testing.assert_allclose(r, 4 / 6)  # weighted recall = accuracy
    f_c = [2 / 3, 0.8, 0.0, 2 / 3]
    np.testing.assert_allclose(f, (2 * f_c[0] + 2 * f_c[1] + f_c[2] + f_c[3]) / 6)


def test_auroc():
    assert auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert auroc([0, 1, 1], [0.5, 0.5, 0.9]) == pytest.approx(0.75)  # a tie counts one half
    assert np.isnan(auroc([1, 1], [0.2, 0.3]))


def test_baselines_on_hand_made_video():
    P = np.array([[0.7, 0.2, 0.1, 0.0], [0.6, 0.1, 0.3, 0.0], [0.1, 0.1, 0.2, 0.6]])
    assert max_argmax(P)[0] == 3
    assert argmax_mean(P)[0] == 0
    s, _ = uninorms(P, np.array([0.05, 0.5, 0.5, 0.5]))  # e_0 low: class 0 aggregates upward
    assert s == 0
    assert set(predict_all(P, np.full(4, 0.5))) == {"max_argmax", "argmax_mean", "uninorms"}


def test_cv_report_structure():
    probs, labels = _toy(20)
    vids = [f"v{i}" for i in range(20)]
    pr = dict(zip(vids, probs, strict=True))
    lab = dict(zip(vids, labels, strict=True))
    folds = [{"test": vids[i::2], "e": [0.5] * 4} for i in range(2)]
    rep = cv_report(folds, lab, pr)
    assert rep["n_videos"] == 20 and rep["n_folds"] == 2
    for m in ("max_argmax", "argmax_mean", "uninorms"):
        r = rep["methods"][m]
        assert len(r["folds"]) == 2 and 0 <= r["f1"]["mean"] <= 1
        assert np.isclose(np.sum(r["pooled"]["confusion_pct"]), 100, atol=0.5)
    text = format_cv(rep)
    assert "Table II" in text and "Table III" in text


def test_train_and_eval_video_end_to_end(tmp_path, capsys):
    """Tiny simulated dataset + dummy bundle (random weights) through train and eval video."""
    import json

    from engines.testing import make_dummy_bundle
    from stream import cli

    data = tmp_path / "sim"
    assert cli.main(["synth", "--out", str(data), "--patients", "4", "--videos-per-patient",
                     "2", "--frames", "5", "--size", "64", "--seed", "7",
                     "--no-progress"]) == 0
    bundle = make_dummy_bundle(tmp_path / "bundle", seg=False)
    out = tmp_path / "video"
    assert cli.main(["train", "video", "--data", str(data), "--bundle", str(bundle),
                     "--out", str(out), "--folds", "2", "--epochs", "3"]) == 0
    uni = json.loads((out / "uninorm.json").read_text())
    assert len(uni["e"]) == 4 and all(0 <= v <= 1 for v in uni["e"])
    np.testing.assert_allclose(uni["e"], np.mean(uni["e_folds"], axis=0))
    cv = json.loads((out / "cv.json").read_text())
    pats = [{cv["patients"][v] for v in f["test"]} for f in cv["folds"]]
    assert not pats[0] & pats[1]
    assert sorted(cv["folds"][0]["test"] + cv["folds"][1]["test"]) == sorted(cv["video_labels"])
    assert json.loads((out / "config.json").read_text())["kind"] == "video"
    report = tmp_path / "eval.json"
    assert cli.main(["eval", "video", "--run", str(out), "--json", str(report)]) == 0
    text = capsys.readouterr().out
    assert "Table II" in text and "uninorms" in text
    rep = json.loads(report.read_text())["simulated_cv"]
    assert rep["n_videos"] == len(cv["video_labels"]) and rep["n_folds"] == 2


def test_log_head_learns_where_softmax_head_is_flat():
    """Long noisy videos: every aggregate ~0, softmax(U) flat; the log head still learns."""
    probs, labels = _toy(40, seed=2, noise=2.5)
    probs = [np.concatenate([p] * 4) for p in probs]  # 40-200 frames
    flat = fit_uninorm(probs, labels, FitConfig(head="softmax", patience=30))
    logh = fit_uninorm(probs, labels, FitConfig(head="log", patience=30))
    assert flat.losses[0] - flat.best_loss < 1e-3  # nothing to learn from a flat softmax
    assert logh.losses[0] - logh.best_loss > 1e-2
    assert np.abs(logh.e - 0.5).max() > 0.05
