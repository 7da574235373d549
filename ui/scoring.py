"""The report tab's scoring: ``pleura score``'s clip loop on the one scoring core, nothing else.

:func:`score_rows` scores a clip with :func:`stream.score_clips.score_clip` (which runs
:mod:`engines.scorer`, as the live worker and ``pleura score`` do), so the report, the command
line and the live page give the same numbers. The clip is decoded once: while it is scored,
:class:`StripFrames` keeps every frame's timestamp and a bounded, evenly spaced set of frames for
the strip.

Scorers (bundle + engine, one inference thread so a report never starves the live worker of
CPU) are kept in :data:`SCORERS`, a small LRU (:class:`ScorerCache`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from engines.scorer import Scorer


@dataclass(frozen=True)
class FrameRow:
    """One scored frame of a clip.

    Attributes:
        index: frame index in the clip.
        probs: (4,) frame class probabilities.
        video_probs: (4,) running video probabilities after this frame.
        boxes: crop 1 and crop 2 corners in source-frame pixels ((2, 4, 2)), or None.
        findings: {name: probability} of the frame's findings, or None without a findings
            head.
        t_s: the frame's time in the clip in seconds (its timestamp), or None.
    """

    index: int
    probs: tuple[float, ...]
    video_probs: tuple[float, ...]
    video_score: int
    boxes: tuple | None = None
    findings: dict[str, float] | None = None
    t_s: float | None = None

    @property
    def score(self) -> int:
        return int(np.argmax(self.probs))


class ScoredClip(NamedTuple):
    """What :func:`score_rows` returns.

    Attributes:
        rows: one :class:`FrameRow` per scored frame.
        backend, bundle: the engine's backend and the bundle's name.
        frames: {frame index: (H, W) uint8 grey frame} for the strip (at most as many as
            ``keep`` asked for, each the kept frame nearest to an asked-for row).
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


class ScorerCache:
    """Loaded scorers by (bundle, backend), at most ``max_items``, least recently used closed.

    Loading a bundle verifies its hashes and opens ONNX Runtime sessions (tenths of a second to
    seconds), too slow to repeat on every report; holding every bundle the page's menu ever
    picked would keep their sessions forever. :meth:`use` holds one lock while a scorer is in
    use (engines are not thread-safe; one report at a time) and while evicting, so a scorer is
    never closed under a running report.

    Args:
        max_items: scorers kept (>= 1).
        threads: inference threads of each scorer.
    """

    def __init__(self, max_items: int = 2, threads: int = 1) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        self.max_items, self.threads = max_items, threads
        self._items: OrderedDict[tuple[str | None, str], tuple[Scorer, dict]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    @contextmanager
    def use(self, bundle: str | None, backend: str) -> Iterator[tuple[Scorer, dict]]:
        """``with cache.use(bundle, backend) as (scorer, crops):`` the scorer (loaded on first
        use) and its crop policy (:func:`crop_policy`), exclusively."""
        from engines.scorer import load_scorer

        key = (bundle, backend)
        with self._lock:
            if key not in self._items:
                scorer = load_scorer(bundle, backend=backend, threads=self.threads)
                self._items[key] = (scorer, crop_policy(scorer))
                while len(self._items) > self.max_items:
                    _key, (old, _crops) = self._items.popitem(last=False)
                    old.close()
            self._items.move_to_end(key)
            yield self._items[key]

    def clear(self) -> None:
        """Close and forget every scorer."""
        with self._lock:
            while self._items:
                self._items.popitem()[1][0].close()


SCORERS = ScorerCache(max_items=2, threads=1)
"""The report tab's scorers. Module-level because the report button is a Gradio callback with no
owner object to hold them; bounded (two: the live bundle and one other picked in the menu)."""


def crop_policy(scorer: Scorer) -> dict[str, Any]:
    """The report's crop boxes, as the live page's (:func:`stream.result_fields.crops_meta`): none
    for a whole-frame model (θ = identity on a blank input, :func:`engines.scorer.locate`),
    hidden when the bundle's manifest says its crops do not localise."""
    from engines.scorer import infer, locate, prepare_batch
    from stream.result_fields import crops_meta

    x, lbs = prepare_batch([np.zeros((scorer.spec.height, scorer.spec.width), np.uint8)],
                           scorer.spec)
    _boxes, whole = locate(infer(scorer, x), lbs, scorer.in_hw)
    b = scorer.bundle
    return crops_meta(bool(whole[0]), b is None or b.crops_localise,
                      "" if b is None else b.localisation_note)


class StripFrames:
    """Every decoded frame's timestamp and a bounded set of evenly spaced frames of a clip.

    Frames at multiples of ``stride`` are kept; when more than ``2 * k`` are held the stride
    doubles and every other one is dropped, so at most ``2 * k + 1`` frames are held whatever
    the clip's length, spread evenly over it. :meth:`pick` then chooses the ones nearest to the
    rows the strip shows.

    Args:
        k: frames the strip shows.
    """

    def __init__(self, k: int) -> None:
        self.k = max(1, k)
        self.stride = 1
        self.frames: dict[int, np.ndarray] = {}
        self.times: dict[int, float | None] = {}

    def add(self, i: int, df: Any) -> None:
        """Frame ``i`` (a decoded frame with ``image`` and ``pts_s``), in decoding order."""
        from engines.preprocess import to_grey

        self.times[i] = df.pts_s
        if i % self.stride:
            return
        self.frames[i] = to_grey(df.image)
        if len(self.frames) > 2 * self.k:
            self.stride *= 2
            self.frames = {j: f for j, f in self.frames.items() if j % self.stride == 0}

    def pick(self, wanted: list[int], scored: set[int]) -> dict[int, np.ndarray]:
        """{index: frame}: for each wanted frame index the nearest kept frame that was scored."""
        kept = sorted(j for j in self.frames if j in scored)
        if not kept:
            return {}
        picked = {min(kept, key=lambda j, t=t: abs(j - t)) for t in wanted}
        return {j: self.frames[j] for j in sorted(picked)}


def score_rows(path: Path, bundle: str | None, backend: str, max_frames: int,
               keep: Callable[[int], list[int]], strip_frames: int = 8) -> ScoredClip:
    """Score every frame of ``path`` as ``pleura score`` does, decoding it once.

    Args:
        path: the clip (already checked by :func:`ui.safety.check_upload`).
        bundle: bundle folder or None for the default bundle.
        backend: engine backend.
        max_frames: score at most this many frames.
        keep: n_rows -> the row positions whose frames the caller wants back (the strip).
        strip_frames: how many frames ``keep`` asks for at most (bounds the frames held while
            the clip is decoded, :class:`StripFrames`).

    Returns:
        The rows, backend and bundle names, the strip's frames and the findings summary.

    Raises:
        RuntimeError: the clip could not be scored (the message of ``pleura score``).
    """
    from stream.score_clips import score_clip

    strip = StripFrames(strip_frames)
    with SCORERS.use(bundle, backend) as (scorer, crops):
        rec = score_clip(path, scorer, batch=16, max_frames=max_frames, on_frame=strip.add)
    if not rec.get("ok"):
        raise RuntimeError(f"{path.name}: {rec.get('error') or 'could not be scored'}")
    rows = [FrameRow(index=int(f["index"]), probs=tuple(f["probs"]),
                     video_probs=tuple(f["video_probs"]),
                     video_score=int(f["video_score"]), boxes=f.get("boxes"),
                     findings=f.get("findings"), t_s=strip.times.get(int(f["index"])))
            for f in rec["frames"]]
    frames = strip.pick([rows[i].index for i in keep(len(rows))], {r.index for r in rows})
    return ScoredClip(rows, str(scorer.backend), str(scorer.name), frames,
                      rec["video"].get("findings"), crops, clip_evidence(rec["video"]))


def clip_evidence(video: dict[str, Any]) -> tuple[float, ...] | None:
    """Each score's share of a scored clip's evidence from its ``log_aggregate`` (null = -inf,
    docs/score-json.md) and ``n_frames``; None when the record has no log aggregate."""
    from engines.uninorm import evidence_shares

    log_agg = video.get("log_aggregate")
    if not isinstance(log_agg, list) or not log_agg:
        return None
    values = [-np.inf if v is None else float(v) for v in log_agg]
    return tuple(float(v) for v in evidence_shares(np.array(values), int(video["n_frames"])))
