"""``pleura adapt`` (#25 section 3): EM label-shift estimation recovers a prior shifted on
purpose; a real-scan bundle in, a bundle out, on real clips, whose scores change only through
the documented parts (the prior: exactly a reweighting of the probabilities; batch norm)."""

from __future__ import annotations

import shutil

import numpy as np

from engines import create_engine, default_bundle_path
from engines.bundle import load_bundle
from stream import cli
from tests._shared_data import POCUS, needs_pocus
from train.calib_frames import random_frames
from train.real.adapt import em_prior, smoothed_adjustment


def test_em_recovers_a_prior_shifted_on_purpose():
    """Calibrated posteriors of a 4-class Gaussian problem under a training prior; the test
    set drawn with another prior; EM finds it (the naive mean of posteriors does not)."""
    rng = np.random.default_rng(0)
    means = np.array([[0, 0], [2.2, 0], [0, 2.2], [2.2, 2.2]])
    pi_train = np.array([0.25, 0.25, 0.25, 0.25])
    pi_site = np.array([0.6, 0.05, 0.25, 0.1])
    y = rng.choice(4, size=6000, p=pi_site)
    x = means[y] + rng.normal(size=(len(y), 2))
    lik = np.exp(-0.5 * ((x[:, None, :] - means[None]) ** 2).sum(-1))
    post = lik * pi_train
    post /= post.sum(axis=1, keepdims=True)
    clips = [post[i:i + 50] for i in range(0, len(post), 50)]  # 120 clips of 50 frames
    got, iters = em_prior(clips, pi_train)
    assert np.abs(got - pi_site).max() < 0.03 and iters > 1
    assert np.abs(post.mean(axis=0) - pi_site).max() > 0.08  # the shift EM had to undo
    # posteriors already under the estimated prior: EM stays where it is (a fixpoint)
    under = lik * got
    under /= under.sum(axis=1, keepdims=True)
    same, _ = em_prior([under[i:i + 50] for i in range(0, len(under), 50)], got)
    assert np.abs(same - got).max() < 1e-3


def test_smoothed_adjustment_is_the_training_rule():
    from train.real.model import prior_adjustment

    counts = np.array([8, 1, 2, 1])
    adj = smoothed_adjustment(counts / counts.sum(), counts.sum())
    assert np.allclose(adj, prior_adjustment(counts).numpy(), atol=1e-6)


@needs_pocus
def test_adapt_a_bundle_on_real_clips_changes_scores_only_through_the_prior(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    for name in ("Cov-Atlas+(44).gif", "Cov-Atlas+(45).gif"):
        shutil.copy(POCUS / name, site / name)
    src = default_bundle_path()
    rc = cli.main(["adapt", str(src), "--clips", str(site), "--out", str(tmp_path / "new"),
                   "--parts", "prior", "--max-frames", "8", "--cache-dir", ""])
    assert rc == 0
    old, new = load_bundle(src), load_bundle(tmp_path / "new")  # hashes verified
    assert "Adapted from bundle default with pleura adapt on 2 unlabelled clips" in (
        tmp_path / "new" / "MODEL_CARD.md").read_text()
    rep = new.manifest["evaluation"]["adaptation"]
    assert rep["parts"] == ["prior"] and rep["clips"] == ["Cov-Atlas+(44).gif",
                                                          "Cov-Atlas+(45).gif"]
    assert new.uninorm_e == old.uninorm_e and new.frame_spec == old.frame_spec
    assert new.masks_shown == old.masks_shown
    x = random_frames(6, 3)
    a = create_engine(old, "onnxruntime").frame(x)
    b = create_engine(new, "onnxruntime").frame(x)
    w = np.asarray(rep["prior_after"]) / np.asarray(rep["prior_before"])
    expect = a.probs * w[None]
    expect /= expect.sum(axis=1, keepdims=True)
    assert np.abs(b.probs - expect).max() < 1e-4  # a reweighting, nothing else
    assert np.abs(b.findings - a.findings).max() < 1e-5
    # batch norm: the findings change too (the trunk's statistics moved)
    rc = cli.main(["adapt", str(src), "--clips", str(site), "--out", str(tmp_path / "bn"),
                   "--parts", "bn", "--max-frames", "8", "--cache-dir", ""])
    assert rc == 0
    c = create_engine(load_bundle(tmp_path / "bn"), "onnxruntime").frame(x)
    assert np.abs(c.findings - a.findings).max() > 1e-3


def test_adapt_refuses_what_it_cannot_adapt(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    bundles = default_bundle_path().parent
    rc = cli.main(["adapt", str(bundles / "regstn-cpu"), "--clips", str(empty), "--out",
                   str(tmp_path / "x")])
    assert rc == 2 and "no frame-weights.npz" in capsys.readouterr().err
    rc = cli.main(["adapt", str(default_bundle_path()), "--clips", str(empty), "--out",
                   str(tmp_path / "x")])
    assert rc == 2 and "no clip" in capsys.readouterr().err
    rc = cli.main(["adapt", str(default_bundle_path()), "--clips", str(empty), "--out",
                   str(tmp_path / "x"), "--parts", "prior,weights"])
    assert rc == 2 and "unknown part" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
