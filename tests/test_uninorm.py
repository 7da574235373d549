"""Laws of the min-uninorm (Roy et al. 2020, section 2) and the running == batch guarantee."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from engines.uninorm import (
    RunningUninorm,
    check_e,
    evidence_shares,
    uninorm,
    uninorm_reduce,
    uninorm_reduce_log,
    video_prediction,
    video_probs,
    video_score,
)

# Probabilities with the edge values 0, 1 and 0.5 drawn often.
prob = st.one_of(st.sampled_from([0.0, 1.0, 0.5]), st.floats(0.0, 1.0, allow_nan=False))
TOL = 1e-12


@given(prob, prob, prob)
def test_commutative(a, b, e):
    assert uninorm(a, b, e) == uninorm(b, a, e)


@given(prob, prob, prob, prob)
def test_associative(a, b, c, e):
    left = uninorm(uninorm(a, b, e), c, e)
    right = uninorm(a, uninorm(b, c, e), e)
    assert abs(float(left) - float(right)) <= 1e-9


@given(prob, prob)
def test_neutral_element(a, e):
    assert float(uninorm(a, e, e)) == a
    assert float(uninorm(e, a, e)) == a


@given(prob, prob, prob, prob)
def test_monotone(a1, a2, b, e):
    lo, hi = min(a1, a2), max(a1, a2)
    assert float(uninorm(lo, b, e)) <= float(uninorm(hi, b, e)) + TOL


@given(prob, prob, prob)
def test_bounds_by_block(a, b, e):
    u = float(uninorm(a, b, e))
    assert 0.0 <= u <= 1.0
    if a <= e and b <= e:  # t-norm block: below the min
        assert u <= min(a, b) + TOL
    elif a >= e and b >= e:  # t-conorm block: above the max
        assert u >= max(a, b) - TOL
    else:  # off the diagonal blocks: between min and max (the min-uninorm takes the min)
        assert min(a, b) - TOL <= u <= max(a, b) + TOL
        assert u == min(a, b)


def test_known_values():
    # Lower block: e * (a/e) * (b/e); upper block: e + (1-e) S(...).
    assert np.isclose(uninorm(0.2, 0.4, 0.5), 0.5 * 0.4 * 0.8)
    x, y = (0.7 - 0.5) / 0.5, (0.9 - 0.5) / 0.5
    assert np.isclose(uninorm(0.7, 0.9, 0.5), 0.5 + 0.5 * (x + y - x * y))
    assert uninorm(0.2, 0.9, 0.5) == 0.2
    # e = 1: product t-norm everywhere but (1, 1); e = 0: probabilistic sum.
    assert np.isclose(uninorm(0.3, 0.6, 1.0), 0.18)
    assert np.isclose(uninorm(0.3, 0.6, 0.0), 0.3 + 0.6 - 0.18)


@pytest.mark.parametrize("e", [0.0, 1.0])
def test_extreme_e_and_probabilities_are_finite(e):
    vals = np.array([0.0, 1.0, 0.0, 1.0, 0.5])
    a, b = np.meshgrid(vals, vals)
    u = uninorm(a, b, e)
    assert np.all(np.isfinite(u)) and np.all((u >= 0) & (u <= 1))
    P = np.array([[0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    for ee in (np.full(4, e), np.array([0.0, 1.0, 0.0, 1.0])):
        r = uninorm_reduce(P, ee)
        assert np.all(np.isfinite(r))
        run = RunningUninorm(ee)
        for p in P:
            v = run.update(p)
        assert np.all(np.isfinite(v))
        np.testing.assert_allclose(v, r, atol=1e-12)
        assert np.all(np.isfinite(video_probs(v)))


frames = st.integers(1, 40).flatmap(
    lambda n: arrays(np.float64, (n, 4), elements=prob))
evec = arrays(np.float64, (4,), elements=prob)


@settings(max_examples=80, deadline=None)
@given(frames, evec, st.randoms(use_true_random=False))
def test_running_equals_batch_in_any_order(P, e, rnd):
    order = list(range(len(P)))
    rnd.shuffle(order)
    run = RunningUninorm(e)
    for i in order:
        v = run.update(P[i])
    np.testing.assert_allclose(v, uninorm_reduce(P, e), rtol=0, atol=1e-6)
    np.testing.assert_allclose(run.value, uninorm_reduce(P[order], e), rtol=0, atol=1e-6)
    assert run.n_frames == len(P)


@settings(max_examples=100, deadline=None)
@given(frames, evec)
def test_batch_equals_sequential_fold(P, e):
    acc = P[0]
    for p in P[1:]:
        acc = uninorm(acc, p, e)
    np.testing.assert_allclose(acc, uninorm_reduce(P, e), rtol=0, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(frames, evec)
def test_running_equals_pairwise_fold(P, e):
    run = RunningUninorm(e)
    acc = np.asarray(e)
    for p in P:
        acc = uninorm(acc, p, e)
        np.testing.assert_allclose(run.update(p), acc, rtol=0, atol=1e-9)


def test_long_clip_underflow_is_zero_not_nan_and_score_still_defined():
    rng = np.random.default_rng(0)
    P = rng.uniform(0.01, 0.05, (3000, 4))
    P[:, 2] *= 1.5  # class 2 a little more likely on every frame
    e = np.full(4, 0.5)
    r = uninorm_reduce(P, e)
    assert np.all(r == 0.0)
    np.testing.assert_allclose(video_probs(r), 0.25)
    log_r = uninorm_reduce_log(P, e)
    assert np.all(np.isfinite(log_r)) and video_score(log_r) == 2
    run = RunningUninorm(e)
    for p in P:
        run.update(p)
    assert run.score == 2
    np.testing.assert_allclose(run.log_value, log_r, rtol=1e-9)


@settings(max_examples=100, deadline=None)
@given(frames, evec)
def test_log_reduce_matches_value(P, e):
    with np.errstate(divide="ignore"):
        expect = np.log(uninorm_reduce(P, e))
    got = uninorm_reduce_log(P, e)
    fine = uninorm_reduce(P, e) > 1e-300
    np.testing.assert_allclose(got[fine], expect[fine], rtol=0, atol=1e-9)
    assert np.all(got[~fine] < -600)


def test_value_just_above_a_tiny_neutral_element_is_exact():
    # found by hypothesis (issue #15): 1 - (1 - 5.5e-149) rounds to 0 in float64; the closed
    # form now keeps it through log1p/expm1, so value and log agree with the exact answer
    e = np.array([4.3e-204, 0.5, 0.5, 0.5])
    P = np.array([[5.5e-149, 0.5, 0.5, 0.5]])
    np.testing.assert_allclose(uninorm_reduce(P, e)[0], 5.5e-149, rtol=1e-12)
    np.testing.assert_allclose(uninorm_reduce_log(P, e)[0], np.log(5.5e-149), rtol=1e-12)
    np.testing.assert_allclose(uninorm(P[0], e, e)[0], 5.5e-149, rtol=1e-9)


def test_running_reset_and_empty():
    e = np.array([0.1, 0.2, 0.3, 0.4])
    run = RunningUninorm(e)
    np.testing.assert_array_equal(run.value, e)
    np.testing.assert_array_equal(uninorm_reduce(np.zeros((0, 4)), e), e)
    run.update([0.7, 0.1, 0.1, 0.1])
    assert run.n_frames == 1 and run.score == 0
    run.reset()
    assert run.n_frames == 0
    np.testing.assert_array_equal(run.value, e)


def test_running_rejects_bad_frames_and_keeps_state():
    run = RunningUninorm(0.5)
    run.update([0.2, 0.3, 0.4, 0.1])
    before = run.value
    with pytest.raises(ValueError, match="4 class probabilities"):
        run.update([0.5, 0.5])
    with pytest.raises(ValueError, match="finite"):
        run.update([np.nan, 0.1, 0.1, 0.1])
    np.testing.assert_array_equal(run.value, before)
    assert run.n_frames == 1


def test_check_e_errors():
    with pytest.raises(ValueError, match="one per class"):
        check_e([0.5, 0.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        check_e([0.5, 0.5, 1.5, 0.5])
    with pytest.raises(ValueError, match="2-D|\\(N, C\\)"):
        uninorm_reduce(np.zeros(4), 0.5)


def test_video_probs_softmax():
    agg = np.array([0.1, 0.9, 0.2, 0.0])
    p = video_probs(agg)
    np.testing.assert_allclose(p.sum(), 1.0)
    np.testing.assert_allclose(p, np.exp(agg) / np.exp(agg).sum())
    assert video_prediction is video_probs


# --- the torch twin (train/video/uninorm_torch.py) agrees with numpy -----------------------

@settings(max_examples=30, deadline=None)
@given(frames, evec)
def test_torch_parity(P, e):
    torch = pytest.importorskip("torch")
    from train.video.uninorm_torch import uninorm_reduce_torch, uninorm_torch

    Pt = torch.from_numpy(P)[None]  # (1, N, 4)
    et = torch.from_numpy(e)
    got = uninorm_reduce_torch(Pt, et).numpy()[0]
    np.testing.assert_allclose(got, uninorm_reduce(P, e), rtol=0, atol=1e-9)
    if len(P) >= 2:
        pair = uninorm_torch(Pt[0, 0], Pt[0, 1], et).numpy()
        np.testing.assert_allclose(pair, uninorm(P[0], P[1], e), rtol=0, atol=1e-12)


@pytest.mark.parametrize("e0", [0.0, 1.0, 0.5])
def test_torch_gradient_finite_at_extremes(e0):
    torch = pytest.importorskip("torch")
    from train.video.uninorm_torch import UninormAggregator

    P = torch.tensor([[[0.0, 1.0, 0.5, 0.0], [1.0, 0.0, 0.5, 1.0], [0.0, 0.0, 1.0, 1.0]]])
    agg = UninormAggregator(init=e0)
    out = agg(P)
    torch.log_softmax(out, -1)[0, 1].backward()
    assert torch.isfinite(out).all() and torch.isfinite(agg.e.grad).all()


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 300).flatmap(
    lambda n: arrays(np.float64, (n, 4), elements=st.floats(1e-3, 1.0))), evec)
def test_torch_log_parity(P, e):
    torch = pytest.importorskip("torch")
    from train.video.uninorm_torch import uninorm_reduce_log_torch

    got = uninorm_reduce_log_torch(torch.from_numpy(P)[None], torch.from_numpy(e)).numpy()[0]
    want = uninorm_reduce_log(P, e)
    fin = np.isfinite(want)
    np.testing.assert_allclose(got[fin], want[fin], rtol=1e-9, atol=1e-9)
    assert np.all(got[~fin] < -60)  # log(e) floored at log(1e-30) where e == 0


# ------------------------------------------------------------------ evidence shares (issue #14)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, (4,), elements=st.floats(0.01, 1.0)), arrays(np.float64, (4,),
       elements=st.floats(0.05, 0.95)))
def test_evidence_of_one_frame_is_its_probabilities(p, e):
    p = p / p.sum()
    agg = RunningUninorm(e)
    agg.update(p)
    np.testing.assert_allclose(agg.evidence, p, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 40), st.just(4)),
              elements=st.floats(0.0, 1.0)), arrays(np.float64, (4,), elements=prob))
def test_evidence_argmax_is_the_video_score(P, e):
    agg = RunningUninorm(e)
    for p in P:
        agg.update(p)
    ev = agg.evidence
    assert ev.sum() == pytest.approx(1.0) and np.all(ev >= 0)
    # the bars agree with the number: the largest share is the video score (ties: lowest)
    assert int(np.argmax(ev)) == agg.score or ev[agg.score] == pytest.approx(ev.max())


def test_evidence_does_not_flatten_on_a_long_clip():
    """300 frames mostly of a clear score 2 (one in five less sure) drive every class's
    aggregate to ~0: Roy et al.'s softmax reads 0.25 each (the issue's bars), the evidence
    shares still say 2."""
    rng = np.random.default_rng(0)
    agg = RunningUninorm([0.5, 0.5, 0.5, 0.5])
    for i in range(300):
        p = np.array([0.05, 0.15, 0.65 if i % 5 else 0.3, 0.15]) + rng.uniform(0, 0.05, 4)
        agg.update(p / p.sum())
    np.testing.assert_allclose(agg.probs, 0.25, atol=0.02)  # the old bars: uninformative
    assert agg.score == 2 and agg.evidence[2] > 0.5 and agg.evidence.max() < 0.99
    assert evidence_shares(np.full(4, -np.inf), 10).tolist() == [0.25] * 4
    assert evidence_shares([-np.inf, -1.0, -2.0, -np.inf], 3)[0] == 0.0
