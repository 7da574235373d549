"""Is a PyTorch baseline the bundle's model? The gate every ratio of ``pleura bench`` passes.

A speed ratio only means something between two runs of the *same* network with the *same*
weights (issue #28: a default-bundle run once set a 2.32-GMAC untrained Reg-STN against the
0.099-GMAC real-scan CNN and called the 3× target met). A baseline is the bundle's model when

- **parity**: its outputs equal ONNX Runtime's fp32 outputs of the bundle graph within
  :data:`PARITY_TOLERANCE` (max abs difference, every output, same preprocessed frames), and
- **work**: its multiply-accumulates per frame (hooks on Conv2d / Linear) are within
  :data:`MAC_TOLERANCE` of the bundle graph's executed MACs (:mod:`benchmarks.macs`).

:func:`verdict` says whether both hold (and why not); :func:`gated_ratios` is the only way the
bench divides by a baseline, and returns nothing when the verdict is not "same model".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from benchmarks.report import ratios

PARITY_TOLERANCE = 1e-4
"""Max abs difference of any output, baseline vs ONNX Runtime fp32 (the export's own bar)."""
MAC_TOLERANCE = 0.01
"""Largest relative difference of MACs per frame, baseline vs the bundle graph (executed)."""


def parity_record(baseline: Any, reference: Any, names: list[str], x: np.ndarray,
                  what: str) -> dict[str, Any]:
    """Compare every output of ``baseline`` with ``reference`` on the batch ``x``.

    Args:
        baseline: anything with ``outputs(x) -> list of arrays`` (a baseline child).
        reference: ``run(x) -> list of arrays`` in the same order (ONNX Runtime fp32).
        names: the output names, in that order.
        x: the preprocessed batch both see.
        what: which frames ``x`` holds (recorded).

    Returns:
        {"frames", "n", "max_abs_diff" {name: diff}, "max_abs_diff_probs", "tolerance",
        "ok", "same_weights" (= ok), "reason" (None when ok)}.
    """
    got, ref = baseline.outputs(x), reference(x)
    rec: dict[str, Any] = {"frames": what, "n": int(len(x)), "tolerance": PARITY_TOLERANCE}
    if len(got) != len(ref):
        diff = {}
        reason = (f"the baseline returns {len(got)} outputs, the bundle graph {len(ref)} "
                  f"({', '.join(names)})")
    else:
        diff = {n: round(float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))
                               .max()), 8) if np.shape(a) == np.shape(b) else float("inf")
                for n, a, b in zip(names, got, ref, strict=True)}
        worst = max(diff.values(), default=float("inf"))
        reason = None if worst <= PARITY_TOLERANCE else (
            f"outputs differ from ONNX Runtime fp32 by up to {worst:.2e} (> "
            f"{PARITY_TOLERANCE:g}): not the bundle's weights or network")
    probs = diff.get("probs", next(iter(diff.values()), None))
    return {**rec, "max_abs_diff": diff, "max_abs_diff_probs": probs, "ok": reason is None,
            "same_weights": reason is None, "reason": reason}


def verdict(baseline: Mapping[str, Any] | None, bundle_macs: int | None) -> dict[str, Any]:
    """Whether ratios against this baseline may be computed.

    Args:
        baseline: the bench's baseline record: {"available", "skipped_reason", "info":
            {"macs_per_frame", ...}, "parity": :func:`parity_record`}.
        bundle_macs: executed MACs per frame of the bundle graph (None: not counted).

    Returns:
        {"same_model": bool, "reasons": [...], "macs_baseline", "macs_bundle",
        "macs_rel_diff", "mac_tolerance", "parity_max_abs_diff", "parity_tolerance"}.
    """
    b = baseline or {}
    reasons: list[str] = []
    if not b.get("available"):
        reasons.append(f"no baseline: {b.get('skipped_reason') or 'not run'}")
    par = b.get("parity")
    if b.get("available"):
        if not par:
            reasons.append("no parity check against the bundle graph was recorded")
        elif not par.get("ok"):
            reasons.append(f"parity: {par.get('reason')}")
    macs = (b.get("info") or {}).get("macs_per_frame")
    rel = None
    if b.get("available"):
        if not bundle_macs or macs is None:
            reasons.append("MACs of the baseline or of the bundle graph not counted")
        else:
            rel = abs(macs - bundle_macs) / bundle_macs
            if rel > MAC_TOLERANCE:
                reasons.append(f"MACs: baseline {macs / 1e9:.4f} G vs bundle graph "
                               f"{bundle_macs / 1e9:.4f} G per frame ({100 * rel:.1f} % > "
                               f"{100 * MAC_TOLERANCE:g} %): a different network")
    return {"same_model": not reasons, "reasons": reasons, "macs_baseline": macs,
            "macs_bundle": bundle_macs, "macs_rel_diff": None if rel is None else round(rel, 6),
            "mac_tolerance": MAC_TOLERANCE,
            "parity_max_abs_diff": None if not par else max(
                (par.get("max_abs_diff") or {}).values(), default=None),
            "parity_tolerance": PARITY_TOLERANCE}


def gated_ratios(values: Mapping[str, float | None], base: str | None,
                 gate: Mapping[str, Any] | None) -> dict[str, float]:
    """:func:`benchmarks.report.ratios` against ``values[base]``, or {} unless ``gate`` (a
    :func:`verdict`) says the baseline is the bundle's model."""
    if not base or not gate or not gate.get("same_model"):
        return {}
    return ratios(values, values.get(base))
