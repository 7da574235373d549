"""Frame losses: known values of SORD targets, the SORD/CE/consistency/prior terms."""

import math

import pytest
import torch

from train.losses import (
    consistency_loss,
    scale_prior,
    sord_loss,
    sord_targets,
    total_loss,
)


def test_sord_targets_known_value_score0():
    t = sord_targets(torch.tensor([0]), 4, 2.0)
    torch.testing.assert_close(t[0], torch.tensor([0.8805, 0.1192, 0.0003, 0.0000]),
                               atol=1e-4, rtol=0)


def test_sord_targets_formula_and_symmetry():
    t = sord_targets(torch.tensor([1, 2]), 4, 2.0)
    e = [math.exp(-2 * (1 - i) ** 2) for i in range(4)]
    torch.testing.assert_close(t[0], torch.tensor([v / sum(e) for v in e]), atol=1e-6, rtol=0)
    torch.testing.assert_close(t[1], t[0].flip(0))  # s=2 mirrors s=1 on 4 classes
    torch.testing.assert_close(t.sum(1), torch.ones(2))


def test_sord_zero_gap_pushes_zero_away():
    plain = sord_targets(torch.tensor([0, 1]), multiplier=2.0)
    gap = sord_targets(torch.tensor([0, 1]), multiplier=2.0, zero_gap=True)
    assert gap[0, 1] < plain[0, 1]  # score 0 sits at -0.5: less mass on class 1
    assert gap[1, 0] < plain[1, 0]
    # s=0 at -0.5: delta to class 1 is 2 * 1.5^2 = 4.5
    e = [1.0, math.exp(-4.5), math.exp(-12.5), math.exp(-24.5)]
    torch.testing.assert_close(gap[0], torch.tensor([v / sum(e) for v in e]), atol=1e-6,
                               rtol=0)


def test_sord_loss_is_cross_entropy_to_soft_targets():
    logits = torch.tensor([[2.0, 0.5, -1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    y = torch.tensor([0, 3])
    tgt = sord_targets(y)
    ref = -(tgt * torch.log_softmax(logits, 1)).sum(1).mean()
    torch.testing.assert_close(sord_loss(logits, y), ref)
    # uniform logits: loss = log 4 whatever the target
    assert float(sord_loss(logits[1:], y[1:])) == pytest.approx(math.log(4), abs=1e-6)


def test_consistency_and_prior_values():
    a = torch.zeros(2, 4)
    b = torch.ones(2, 4) * 2
    assert float(consistency_loss(a, b)) == pytest.approx(4.0)
    assert float(consistency_loss(a, a)) == 0.0
    sig = torch.tensor([[0.5, 0.75], [0.7, 0.25]])
    # row 1: 0; row 2: 0.2 + 0.5 = 0.7; mean 0.35
    assert float(scale_prior(sig)) == pytest.approx(0.35)


def test_total_loss_sums_the_active_terms():
    out = {"logits": torch.randn(3, 4), "logits2": torch.randn(3, 4),
           "sigma": torch.tensor([[0.6, 0.7]] * 3)}
    y = torch.tensor([0, 1, 3])
    total, parts = total_loss(out, y, "sord", True, True)
    expect = sord_loss(out["logits"], y) + consistency_loss(out["logits"], out["logits2"]) \
        + scale_prior(out["sigma"])
    torch.testing.assert_close(total, expect)
    assert set(parts) == {"cls", "mse", "prior"}
    ce, parts = total_loss(out, y, "ce", False, False)
    torch.testing.assert_close(ce, torch.nn.functional.cross_entropy(out["logits"], y))
    assert set(parts) == {"cls"}
    with pytest.raises(ValueError, match="sord"):
        total_loss(out, y, "hinge")


def test_scale_prior_targets_are_a_parameter():
    sig = torch.tensor([[0.7, 0.9]])
    assert float(scale_prior(sig, (0.7, 0.9))) == pytest.approx(0.0, abs=1e-6)
    assert float(scale_prior(sig)) == pytest.approx(0.35)
