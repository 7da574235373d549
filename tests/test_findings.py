"""engines.findings: the running clip summary equals the batch one; names, labels, checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from engines.findings import (
    FINDING_LABELS,
    RunningFindings,
    check_findings,
    finding_label,
    findings_dict,
    resolve_names,
    summarise,
)

NAMES = ("b_lines", "consolidations", "effusion", "a_lines", "pleural_irregularities")
probs = st.floats(0.0, 1.0, allow_nan=False, width=32)


@given(arrays(np.float32, st.tuples(st.integers(1, 40), st.just(len(NAMES))), elements=probs))
def test_running_summary_equals_batch_summary(P):
    run = RunningFindings(NAMES)
    for p in P:
        run.update(p)
    assert run.n_frames == len(P)
    got, want = run.summary(), summarise(NAMES, P)
    assert got is not None and want is not None and list(got) == list(NAMES)
    for n in NAMES:
        assert got[n]["present"] == want[n]["present"]
        for k in ("mean", "max", "fraction"):
            assert got[n][k] == pytest.approx(want[n][k], abs=2e-6)


def test_summary_values_and_reset():
    run = RunningFindings(("b_lines", "effusion"))
    assert run.summary() is None and summarise(run.names, np.zeros((0, 2))) is None
    for p in ([0.9, 0.1], [0.4, 0.2], [0.6, 0.3], [0.5, 0.0]):
        run.update(np.array(p))
    s = run.summary()
    assert s["b_lines"] == {"mean": 0.6, "max": 0.9, "fraction": 0.75, "present": True}
    assert s["effusion"] == {"mean": 0.15, "max": 0.3, "fraction": 0.0, "present": False}
    run.reset()
    assert run.n_frames == 0 and run.summary() is None
    run.update(np.array([0.2, 0.7]))
    assert run.summary()["effusion"]["mean"] == pytest.approx(0.7)


def test_bad_frame_leaves_the_state_unchanged():
    run = RunningFindings(NAMES[:2])
    run.update(np.array([0.3, 0.6]))
    for bad in ([np.nan, 0.5], [0.1, 0.2, 0.3], [np.inf, 0.0]):
        with pytest.raises(ValueError, match="finding probabilities|expected 2"):
            run.update(np.array(bad))
    assert run.n_frames == 1 and run.mean.tolist() == pytest.approx([0.3, 0.6])
    np.testing.assert_array_equal(check_findings(np.array([-0.1, 1.2]), 2), [0.0, 1.0])


def test_names_labels_and_rounding():
    assert [finding_label(n) for n in NAMES] == ["B-lines", "consolidation", "pleural effusion",
                                                 "A-lines", "pleural irregularity"]
    assert set(FINDING_LABELS) == set(NAMES)
    assert finding_label("lung_point") == "lung point"
    assert resolve_names(NAMES, 5) == NAMES
    assert resolve_names(NAMES, 2) == ("finding_0", "finding_1")
    assert findings_dict(("a", "b"), np.array([0.123456789, 1.0], np.float32)) == {
        "a": 0.123457, "b": 1.0}
