"""When a score is a close call: the page's "uncertain" state for the frame and the video score.

A score is shown as **uncertain** when

- its probability (frame) or evidence share (video, :func:`engines.uninorm.evidence_shares`) is
  low, or the margin to the second score is small: thresholds below, measured on held-out
  clips; or
- the bundle's findings head contradicts it: a finding that Soldati et al. 2020 put at a higher
  score than the one shown (B-lines or an irregular pleural line mean at least 1, a
  consolidation at least 2; ``docs/clinician.md``'s table) is present at >= 50 % while the score
  is lower (e.g. frame "0" with consolidation 77 %).

Pure functions of a RESULT's JSON; :mod:`ui.live_routes` sends the outcome with every frame.

Where the thresholds come from: ``scripts/certainty_thresholds.py runs/real/loso-base`` on the
out-of-fold predictions of the default recipe's leave-one-source-out run (``pleura train real
--cv-by source --steps 500 --out runs/real/loso-base``: all 7 sources held out in turn, 4492
frames of the 75 clips with a severity; frame probabilities prior-corrected and the uninorm
fitted on the training folds, as the exported model does; truth = the clip's severity). A bin
whose score was right at most half the time is a close call, and each threshold is the upper
edge of the last such bin: frames with a top probability under 0.80 were right 10-44 % of the
time (0.80-0.90: 60 %, above: 85 %), frames less than 0.50 ahead of the second score 15-46 %
(0.50-0.70: 51 %); video scores with a top evidence share under 0.60 were right 12-50 % of the
time (0.60-0.70: 67 %, above: 83-90 %), less than 0.30 ahead 0-56 % (above: 79-100 %; 75 clips:
a rough figure). An unseen source is the bedside case and the hardest one, so these flag many
frames (a third of them there). Re-run the script after retraining.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from engines.findings import PRESENT_AT, finding_label

FRAME_MIN_TOP = 0.80
"""A frame score whose probability is below this is uncertain (held out: right <= 44 %)."""
FRAME_MIN_MARGIN = 0.50
"""A frame score less than this ahead of the second score is uncertain (right <= 46 %)."""
VIDEO_MIN_TOP = 0.60
"""A video score whose evidence share is below this is uncertain (right <= 50 %)."""
VIDEO_MIN_MARGIN = 0.30
"""A video score less than this evidence share ahead of the second score is uncertain."""

FINDING_FLOOR: dict[str, int] = {"b_lines": 1, "pleural_irregularities": 1, "consolidations": 2}
"""The lowest score a finding is compatible with (Soldati et al. 2020: B-lines and an indented
pleural line are score 1, a broken pleura with consolidations score 2). A-lines and effusion
bound nothing: the A-line head does not separate its clips (AUROC 0.50) and an effusion is not
part of the score."""


def _probs(v: Any) -> list[float] | None:
    if not isinstance(v, Sequence) or isinstance(v, str) or len(v) < 2:
        return None
    out = []
    for p in v:
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p):
            return None
        out.append(float(p))
    return out


def close_call(probs: Sequence[float], min_top: float, min_margin: float) -> str:
    """Why a score from ``probs`` is a close call ("" when it is not).

    Args:
        probs: (4,) probabilities or evidence shares of scores 0..3.
        min_top, min_margin: the thresholds (module constants).
    """
    top, second = sorted(probs, reverse=True)[:2]
    best = max(range(len(probs)), key=lambda i: probs[i])
    runner = max((i for i in range(len(probs)) if i != best), key=lambda i: probs[i])
    if top < min_top or top - second < min_margin:
        return (f"close call: {best} at {100 * top:.0f} %, {runner} at {100 * second:.0f} %")
    return ""


def contradiction(score: int, findings: Mapping[str, float]) -> str:
    """Why the findings contradict ``score`` ("" when they do not): the findings at or above
    :data:`engines.findings.PRESENT_AT` whose :data:`FINDING_FLOOR` is above the score."""
    against = [(name, p) for name, p in findings.items()
               if name in FINDING_FLOOR and p >= PRESENT_AT and FINDING_FLOOR[name] > score]
    if not against:
        return ""
    floor = max(FINDING_FLOOR[n] for n, _ in against)
    shown = ", ".join(f"{finding_label(n)} {100 * p:.0f} %" for n, p in against)
    return f"findings suggest at least {floor}: {shown}"


def judge(score: Any, probs: Any, findings: Mapping[str, float] | None, min_top: float,
          min_margin: float) -> dict[str, Any] | None:
    """``{"uncertain": bool, "reasons": [...]}`` of one score, None without a score."""
    p = _probs(probs)
    if p is None or isinstance(score, bool) or not isinstance(score, int):
        return None
    reasons = [r for r in (close_call(p, min_top, min_margin),
                           contradiction(score, findings or {})) if r]
    return {"uncertain": bool(reasons), "reasons": reasons}


def _frame_findings(meta: Mapping[str, Any]) -> dict[str, float]:
    f = meta.get("findings")
    if not isinstance(f, dict):
        return {}
    return {str(k): float(v) for k, v in f.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def _clip_findings(video: Mapping[str, Any]) -> dict[str, float]:
    f = video.get("findings")
    if not isinstance(f, dict):
        return {}
    out = {}
    for k, v in f.items():
        m = v.get("mean") if isinstance(v, dict) else None
        if isinstance(m, (int, float)) and not isinstance(m, bool) and math.isfinite(m):
            out[str(k)] = float(m)
    return out


def result_certainty(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The page's certainty of a RESULT: ``{"frame": judge | None, "video": judge | None}``.

    The frame is judged on its probabilities and its own findings; the video on its evidence
    shares (the bars the page draws; its softmax ``probs`` for an older worker) and the clip's
    mean findings.
    """
    video = meta.get("video") if isinstance(meta.get("video"), dict) else {}
    return {
        "frame": judge(meta.get("score"), meta.get("probs"), _frame_findings(meta),
                       FRAME_MIN_TOP, FRAME_MIN_MARGIN),
        "video": judge(video.get("score"), video.get("evidence") or video.get("probs"),
                       _clip_findings(video), VIDEO_MIN_TOP, VIDEO_MIN_MARGIN),
    }
