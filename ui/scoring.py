"""The report page's scoring: ``stream.score`` (the ``pleura score`` machinery), nothing else.

The scorer (bundle + engine) is created once per (bundle, backend) and kept, with one inference
thread so a report never starves the live worker of CPU.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from ui.report import FrameRow

_scorers: dict[tuple[str | None, str], object] = {}
_crops: dict[tuple[str | None, str], dict[str, Any]] = {}
_lock = threading.Lock()


class ScoredClip(NamedTuple):
    """What :func:`score_rows` returns.

    Attributes:
        rows: one :class:`ui.report.FrameRow` per scored frame.
        backend, bundle: the engine's backend and the bundle's name.
        frames: {frame index: (H, W) uint8 grey frame} for the rows the caller asked for.
        findings: the clip summary of the findings, ``video.findings`` of ``pleura score``
            ({name: {"mean", "max", "fraction", "present"}}), None without a findings head.
        crops: whether the crop boxes are drawn and why not (:func:`crop_policy`).
        evidence: (4,) each score's share of the clip's evidence
            (:func:`engines.uninorm.evidence_shares`; its argmax is the video score).
    """

    rows: list[FrameRow]
    backend: str
    bundle: str
    frames: dict[int, np.ndarray]
    findings: dict[str, dict[str, Any]] | None = None
    crops: dict[str, Any] | None = None
    evidence: tuple[float, ...] | None = None


def get_scorer(bundle: str | None, backend: str, threads: int = 1):
    """A cached :class:`stream.score.Scorer` for ``bundle`` (None: the default bundle)."""
    from stream.score import scorer_from_bundle

    key = (bundle, backend)
    with _lock:
        if key not in _scorers:
            _scorers[key] = scorer_from_bundle(bundle, backend=backend, threads=threads)
        return _scorers[key]


def crop_policy(bundle: str | None, scorer) -> dict[str, Any]:
    """The report's crop boxes, as the live page's (:func:`stream.results.crops_meta`): none
    for a whole-frame model (θ = identity, checked on one blank input), hidden when the
    bundle's manifest says its crops do not localise. Cached per bundle and backend."""
    key = (bundle, str(scorer.backend))
    with _lock:
        if key in _crops:
            return _crops[key]
    import engines
    from stream.results import crops_meta, is_identity

    b = engines.load_bundle(bundle if bundle is not None else engines.default_bundle_path())
    with _lock:
        out = scorer.engine.frame(np.zeros((1, 3, scorer.spec.height, scorer.spec.width),
                                           np.float32))
        _crops[key] = crops_meta(is_identity(out.theta1[0], out.theta2[0]), b.crops_localise,
                                 b.localisation_note)
        return _crops[key]


def score_rows(path: Path, bundle: str | None, backend: str, max_frames: int,
               keep: Callable[[int], list[int]]) -> ScoredClip:
    """Score every frame of ``path`` as ``pleura score`` does.

    Args:
        path: the clip (already checked by :func:`ui.safety.check_upload`).
        bundle: bundle folder or None for the default bundle.
        backend: engine backend.
        max_frames: score at most this many frames.
        keep: n_frames -> the row positions whose frames the caller wants back (the strip).

    Returns:
        The rows, backend and bundle names, the strip's frames and the findings summary.

    Raises:
        RuntimeError: the clip could not be scored (the message of ``pleura score``).
    """
    from engines.preprocess import to_grey
    from stream.score import score_clip
    from stream.sources import decode_file
    from ui.report import FrameRow

    scorer = get_scorer(bundle, backend)
    with _lock:  # one engine, one report at a time
        rec = score_clip(path, scorer, batch=16, max_frames=max_frames)
    if not rec.get("ok"):
        raise RuntimeError(f"{path.name}: {rec.get('error') or 'could not be scored'}")
    n = len(rec["frames"])
    wanted = {int(rec["frames"][i]["index"]) for i in keep(n)}
    frames: dict[int, np.ndarray] = {}
    times: dict[int, float] = {}
    last = int(rec["frames"][-1]["index"]) if n else -1
    for i, df in enumerate(decode_file(path, max_frames=last + 1)):  # frames and timestamps
        times[i] = df.pts_s
        if i in wanted:
            frames[i] = to_grey(df.image)
        if i >= last:
            break
    rows = [FrameRow(index=int(f["index"]), probs=tuple(f["probs"]),
                     video_probs=tuple(f["video_probs"]),
                     video_score=int(f["video_score"]), boxes=f.get("boxes"),
                     findings=f.get("findings"), t_s=times.get(int(f["index"])))
            for f in rec["frames"]]
    return ScoredClip(rows, str(scorer.backend), str(scorer.name), frames,
                      rec["video"].get("findings"), crop_policy(bundle, scorer),
                      clip_evidence(rec["video"]))


def clip_evidence(video: dict[str, Any]) -> tuple[float, ...] | None:
    """Each score's share of a scored clip's evidence from its ``log_aggregate`` (null = -inf,
    docs/score-json.md) and ``n_frames``; None when the record has no log aggregate."""
    from engines.uninorm import evidence_shares

    log_agg = video.get("log_aggregate")
    if not isinstance(log_agg, list) or not log_agg:
        return None
    values = [-np.inf if v is None else float(v) for v in log_agg]
    return tuple(float(v) for v in evidence_shares(np.array(values), int(video["n_frames"])))
