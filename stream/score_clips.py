"""``pleura score``'s clip loop: decode a clip, score it through the one scoring core.

Frames are decoded by :func:`stream.sources.decode_file` and prepared in a thread one batch
ahead (stage 1 of :mod:`engines.scorer`); each batch then goes through
:func:`engines.scorer.score_batch` (engine -> crop boxes in source pixels -> the clip's
running uninorm video score and findings summary, Roy et al. 2020, PAPER.md sections 1-2) —
the functions the live worker uses too. Per clip the result records per-frame probabilities,
argmax and boxes, the running video score after every frame, the final video score and
probabilities (schema: ``docs/score-json.md``).

Every third decoded frame (the first always) also goes through the "not scorable" gate
(:mod:`engines.scorable`, in the decoding thread). A clip whose frames are not a lung image —
a black screen, noise, an eye scan — gets ``scorable: false`` with the reason, no video score
(``video.score`` null) and counts as failed (``ok`` false, ``error`` says why); its per-frame
model outputs stay in ``frames``.

A clip that breaks mid-way keeps the frames scored before the error (``error`` says why,
``truncated`` when :class:`stream.sources.TruncatedError`); a frame whose model output is not
finite is logged, counted in ``dropped`` and skipped.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engines.findings import findings_dict
from engines.scorable import ClipGate, ClipVerdict
from engines.scorer import FrameScore, RunningScore, Scorer, prepare_batch, score_batch
from engines.uninorm import uninorm_reduce
from stream.sources import IMAGE_SUFFIXES, TruncatedError, decode_file

log = logging.getLogger("stream.score")

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mpeg", ".mpg", ".mkv", ".webm", ".gif",
                  ".wmv", ".ogv", ".flv", ".ts", ".dcm", ".dicom")
"""File endings collected when a folder is walked (compared case-insensitively; ``.dcm`` is
a DICOM cine, :mod:`stream.sources.dicom`)."""


def find_clips(paths: Sequence[str | Path]) -> list[Path]:
    """Expand the command-line paths into clips.

    A file is a clip (whatever its ending; the decoder judges it). A folder is walked
    recursively for video files (:data:`VIDEO_SUFFIXES`); a folder with no videos but images
    is one clip (an image sequence). A path that does not exist is kept, so it gets reported
    as a failed clip.
    """
    clips: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.is_dir():
            clips.append(p)
            continue
        videos = sorted(f for f in p.rglob("*")
                        if f.is_file() and f.suffix.lower() in VIDEO_SUFFIXES)
        if videos:
            clips.extend(videos)
        elif any(f.suffix.lower() in IMAGE_SUFFIXES for f in p.iterdir()):
            clips.append(p)
        else:
            log.warning("%s: no video files (%s) or images in this folder", p,
                        " ".join(VIDEO_SUFFIXES))
    return clips


def _prepared(frames: Iterable[Any], size: int, scorer: Scorer,
              timer: dict[str, float]) -> Iterator[tuple[tuple[int, int], np.ndarray, list]]:
    """Decode and prepare in batches (core stage 1): yields (frame_hw, (B, C, H, W), lbs)."""
    it = iter(frames)
    while True:
        t = time.perf_counter()
        images: list[np.ndarray] = []
        failure: Exception | None = None
        try:
            images.extend(df.image for df in itertools.islice(it, size))
        except Exception as exc:  # score the frames decoded before the failure, then raise
            failure = exc
        if images:
            x, lbs = prepare_batch(images, scorer.spec)
            timer["decode_s"] += time.perf_counter() - t
            yield images[0].shape[:2], x, lbs
        if failure is not None:
            raise failure
        if len(images) < size:
            return


_DONE = object()


def _prefetch(gen: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Run a generator in a thread, ``depth`` items ahead, so decoding overlaps inference.

    Exceptions of the generator are re-raised in the consumer, in order. If the consumer stops
    early the thread notices within 0.1 s and ends.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in gen:
                if not put((True, item)):
                    return
        except BaseException as exc:  # handed to the consumer, never lost
            put((False, exc))
            return
        put((True, _DONE))

    thread = threading.Thread(target=work, name="score-decode", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def rounded(a: Any, nd: int = 6) -> list:
    """``a`` as nested lists of floats rounded to ``nd`` decimals (the JSON's precision)."""
    return np.round(np.asarray(a, dtype=np.float64), nd).tolist()


@dataclass
class _Clip:
    """What :func:`score_frames` accumulates over one clip."""

    running: RunningScore
    records: list[dict[str, Any]] = field(default_factory=list)
    dropped: int = 0


def frame_record(index: int, fs: FrameScore, running: RunningScore) -> dict[str, Any]:
    """One frame's entry of ``frames`` (docs/score-json.md) from the core's result.

    Args:
        index: the frame's position in the clip (decoding order).
        fs: the frame's :class:`engines.scorer.FrameScore`.
        running: the clip's running state (for the findings' names).
    """
    rec = {"index": index, "probs": rounded(fs.probs), "score": fs.score,
           "boxes": rounded(fs.boxes, 2), "video_score": fs.video_score,
           "video_probs": rounded(fs.video_probs)}
    if fs.findings is not None and running.findings is not None:
        rec["findings"] = findings_dict(running.findings.names, fs.findings)
    return rec


def _add_batch(scored: Sequence[FrameScore | ValueError], clip: _Clip) -> None:
    """Record one scored batch frame by frame; a bad frame is counted, logged and dropped."""
    for fs in scored:
        index = len(clip.records) + clip.dropped
        if isinstance(fs, ValueError):  # one bad frame never stops the clip
            clip.dropped += 1
            log.warning("frame %d dropped: %s", index, fs)
            continue
        clip.records.append(frame_record(index, fs, clip.running))


def video_record(running: RunningScore) -> dict[str, Any]:
    """The clip's ``video`` record (docs/score-json.md) from its running state."""
    agg = running.agg
    video = {"score": agg.score, "probs": rounded(agg.probs),
             "aggregate": [float(v) for v in agg.value],
             "log_aggregate": [float(v) if np.isfinite(v) else None for v in agg.log_value],
             "n_frames": agg.n_frames}
    if running.findings is not None:
        video["findings"] = running.findings.summary()
    return video


def score_frames(frames: Iterable[Any], scorer: Scorer, batch: int = 16,
                 timer: dict[str, float] | None = None) -> dict[str, Any]:
    """Score decoded frames (objects with ``.image``) and aggregate the running video score.

    Decoding and preprocessing run in a thread one batch ahead of inference. A decoding error
    stops the clip but keeps what was scored before it (``error`` says why).

    Returns:
        ``{"error", "truncated", "frame_hw", "n_frames", "dropped", "frames": [...],
        "video": {...}}`` as in ``docs/score-json.md`` (no timing or path).
    """
    timer = timer if timer is not None else {"decode_s": 0.0, "infer_s": 0.0}
    clip = _Clip(scorer.running())
    frame_hw: list[int] | None = None
    batches = _prefetch(_prepared(frames, batch, scorer, timer))
    error: str | None = None
    truncated = False
    while True:
        try:
            hw, x, lbs = next(batches)
        except StopIteration:
            break
        except Exception as exc:  # a clip that breaks mid-way keeps the frames scored so far
            error = f"{type(exc).__name__}: {exc}"
            truncated = isinstance(exc, TruncatedError)
            break
        t = time.perf_counter()
        _out, scored = score_batch(scorer, x, lbs, [clip.running] * len(lbs))
        timer["infer_s"] += time.perf_counter() - t
        frame_hw = frame_hw or list(hw)
        _add_batch(scored, clip)
    return {"error": error, "truncated": truncated, "frame_hw": frame_hw,
            "n_frames": len(clip.records), "dropped": clip.dropped, "frames": clip.records,
            "video": video_record(clip.running)}


def _tapped(frames: Iterable[Any], on_frame: Callable[[int, Any], None]) -> Iterator[Any]:
    """``frames``, calling ``on_frame(i, frame)`` on each as it is decoded."""
    for i, df in enumerate(frames):
        on_frame(i, df)
        yield df


def _gated(frames: Iterable[Any], gate: ClipGate) -> Iterator[Any]:
    """``frames``, each counted by ``gate`` as it is decoded (every third checked); all are
    scored."""
    for df in frames:
        gate.update(df.image)
        yield df


def gate_record(verdict: ClipVerdict) -> dict[str, Any]:
    """The clip's gate fields (docs/score-json.md); all null when no frame was decoded."""
    if verdict.n_checked == 0:
        return {"scorable": None, "scorable_reason": None, "scorable_share": None,
                "scorable_counts": None}
    return {"scorable": verdict.scorable, "scorable_reason": verdict.reason,
            "scorable_share": round(verdict.share, 4), "scorable_counts": dict(verdict.counts)}


def refuse_unscorable(rec: dict[str, Any], verdict: ClipVerdict) -> None:
    """A clip the gate refused: no video score, no findings summary; failed with the reason.

    Its per-frame model outputs stay in ``frames`` (for inspection; not a lung score).
    """
    message = verdict.message()
    rec["ok"] = False
    rec["error"] = f"{rec['error']}; {message}" if rec.get("error") else message
    video = rec.get("video")
    if isinstance(video, dict):
        video.update(score=None, probs=None)
        if "findings" in video:
            video["findings"] = None


def score_clip(path: Path, scorer: Scorer, batch: int = 16, max_frames: int | None = None,
               on_frame: Callable[[int, Any], None] | None = None) -> dict[str, Any]:
    """Decode and score one clip; never raises for a bad clip (``ok`` false + ``error``).

    Args:
        path: the clip.
        scorer: the core's scorer (:func:`engines.scorer.load_scorer`).
        batch: frames per inference batch.
        max_frames: score at most this many frames.
        on_frame: called as ``on_frame(i, decoded_frame)`` for every decoded frame, in the
            decoding thread (the report tab keeps its strip's frames and the timestamps this
            way, so the clip is decoded once).

    Returns:
        The clip record of docs/score-json.md (with ``timing``); a clip the "not scorable"
        gate refuses has ``ok`` false and no video score (:func:`refuse_unscorable`).
    """
    timer = {"decode_s": 0.0, "infer_s": 0.0}
    t0 = time.perf_counter()
    rec: dict[str, Any] = {"path": str(path), "name": path.name, "ok": True, "error": None,
                           "truncated": False}
    gate = ClipGate()
    try:
        frames = _gated(decode_file(path, max_frames=max_frames), gate)
        if on_frame is not None:
            frames = _tapped(frames, on_frame)
        rec.update(score_frames(frames, scorer, batch, timer))
        if rec["error"] is None and rec["n_frames"] == 0:
            rec["error"] = "ValueError: no frame could be scored"
        rec["ok"] = rec["error"] is None
        if rec["truncated"]:
            log.warning("%s is truncated: only the %d frames before the cut were scored; its "
                        "video score is not the whole clip's", path, rec["n_frames"])
    except Exception as exc:  # report and go on with the next clip
        log.debug("%s failed", path, exc_info=True)
        rec.update(ok=False, error=f"{type(exc).__name__}: {exc}")
    verdict = gate.verdict()
    rec.update(gate_record(verdict))
    if rec["scorable"] is False:
        refuse_unscorable(rec, verdict)
    total = time.perf_counter() - t0
    n = int(rec.get("n_frames") or 0)
    rec["timing"] = {"decode_s": round(timer["decode_s"], 4), "infer_s": round(timer["infer_s"], 4),
                     "total_s": round(total, 4), "fps": round(n / total, 2) if total > 0 else None}
    return rec


def batch_video_score(doc_clip: dict[str, Any], e: Sequence[float]) -> np.ndarray:
    """Aggregate a scored clip's per-frame probabilities at once (check of the running score)."""
    P = np.array([fr["probs"] for fr in doc_clip["frames"]], dtype=np.float64)
    return uninorm_reduce(P, np.asarray(e, dtype=np.float64))
