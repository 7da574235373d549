"""``pleura score``: score recorded clips offline, as fast as possible (no real-time pacing).

The same path as the live worker: :func:`stream.sources.decode_file` decodes, the bundle's
frame spec preprocesses (:func:`engines.preprocess.preprocess_batch`), the bundle's engine
scores batches of frames, :func:`engines.postprocess.crop_boxes` turns θ₁, θ₂ into crop
corners (mapped back to source-frame pixels by the letterbox) and
:class:`engines.uninorm.RunningUninorm` keeps the running video score (Roy et al. 2020,
PAPER.md sections 1-2). Per clip it records per-frame probabilities, argmax and boxes, the
running video score after every frame, the final video score and probabilities, and frames/s;
with a bundle whose frame model has a findings head (B-lines, consolidations, ...) also the
per-frame findings and their clip summary (:mod:`engines.findings`). It prints one line per
clip and writes a JSON (schema: ``docs/score-json.md``) and/or a CSV.

A clip that cannot be read is reported with the reason and the rest are still scored; a clip
that ends before its container says (``truncated: true``, :class:`stream.sources.TruncatedError`)
keeps the frames before the cut but counts as failed, with a warning. The exit code is 1 when any
clip failed, 2 when ``--json`` / ``--csv`` cannot be written (checked before any scoring).
Only regular files are read (a FIFO named ``x.mp4`` is refused, not waited on). ``--run RUN``
scores with a PyTorch frame run instead of a bundle (imports torch lazily; for development
before a bundle is exported).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engines.base import FrameOutput
from engines.findings import (
    RunningFindings,
    check_findings,
    finding_label,
    findings_dict,
    resolve_names,
)
from engines.postprocess import crop_boxes
from engines.preprocess import FRAME_SPEC, PreprocessSpec, preprocess_batch
from engines.uninorm import RunningUninorm, check_e, uninorm_reduce, video_probs
from stream.sources import IMAGE_SUFFIXES, TruncatedError, decode_file

log = logging.getLogger(__name__)

SCHEMA = "pleura-score"
SCHEMA_VERSION = 1
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mpeg", ".mpg", ".mkv", ".webm", ".gif",
                  ".wmv", ".ogv", ".flv", ".ts", ".dcm", ".dicom")
"""File endings collected when a folder is walked (compared case-insensitively; ``.dcm`` is
a DICOM cine, :mod:`stream.dicom`)."""
DEFAULT_E = 0.5
"""Neutral element used when a bundle has no aggregator (an untrained video score)."""


@dataclass
class Scorer:
    """A frame model ready to score: anything with ``frame(x) -> FrameOutput``.

    Attributes:
        engine: object whose ``frame((B, C, H, W) float32) -> FrameOutput``.
        spec: the model's preprocessing (from the bundle manifest).
        e: (4,) uninorm neutral elements for the video score.
        name: bundle or run name (recorded in the JSON).
        backend: e.g. "onnxruntime", "torch".
        finding_names: names of the frame model's ``findings`` output, () when it has none.
    """

    engine: Any
    spec: PreprocessSpec
    e: np.ndarray
    name: str
    backend: str
    finding_names: tuple[str, ...] = ()


def read_uninorm_json(path: str | Path) -> np.ndarray:
    """``{"e": [4 floats], ...}`` (``RUN2/uninorm.json`` or a bundle's ``aggregator.json``)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        return check_e(data["e"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"pleura score: cannot read uninorm neutral elements from {p} ({exc}); "
                         'expected JSON like {"e": [0.3, 0.5, 0.6, 0.8]} as written by '
                         "`pleura train video`") from None


def scorer_from_bundle(path: str | Path | None, backend: str = "auto",
                       threads: int | None = None) -> Scorer:
    """Load a bundle (default: the shipped one) and create its engine."""
    import engines

    bundle = engines.load_bundle(path if path is not None else engines.default_bundle_path())
    engine = engines.create_engine(bundle, backend=backend, threads=threads)
    if bundle.uninorm_e is None:
        log.warning("bundle %s has no aggregator; the video score uses e = %.1f (untrained)",
                    bundle.path, DEFAULT_E)
        e = np.full(4, DEFAULT_E)
    else:
        e = check_e(bundle.uninorm_e)
    return Scorer(engine, bundle.frame_spec, e, bundle.name,
                  str(getattr(engine, "backend", backend)), bundle.finding_names)


def scorer_from_run(run: str | Path, device: str = "cpu") -> Scorer:
    """A PyTorch frame run (``pleura train frame``) as a scorer. Imports torch lazily."""
    from train.video.features import engine_from_run  # the [train] extra, only for --run

    engine = engine_from_run(run, device=device)
    return Scorer(engine, FRAME_SPEC, np.full(4, DEFAULT_E), Path(run).name, "torch")


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


def _prepared(frames: Iterable[Any], size: int, spec: PreprocessSpec,
              timer: dict[str, float]) -> Iterator[tuple[tuple[int, int], np.ndarray, list]]:
    """Decode and preprocess in batches: yields (frame_hw, (B, C, H, W) input, letterboxes)."""
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
            x, lbs = preprocess_batch(images, spec)
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


def _r(a: np.ndarray, nd: int = 6) -> list:
    return np.round(np.asarray(a, dtype=np.float64), nd).tolist()


@dataclass
class _Clip:
    """What :func:`score_frames` accumulates over one clip."""

    running: RunningUninorm
    findings: RunningFindings | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    dropped: int = 0


def _frame_findings(out: FrameOutput, i: int, clip: _Clip,
                    names: Sequence[str]) -> np.ndarray | None:
    """Frame ``i``'s (F,) findings, checked, or None when the model has no findings head."""
    if out.findings is None:
        return None
    if clip.findings is None:  # sized by the model's output on the first batch
        clip.findings = RunningFindings(resolve_names(names, out.findings.shape[1]))
    return check_findings(out.findings[i], len(clip.findings.names))


def _add_batch(out: FrameOutput, lbs: Sequence[Any], corners: np.ndarray, clip: _Clip,
               names: Sequence[str]) -> None:
    """Record one scored batch frame by frame; a bad frame is counted, logged and dropped.

    Args:
        out: the engine's outputs for the batch (B frames).
        lbs: B letterboxes (model input -> source frame).
        corners: (B, 2, 4, 2) crop corners in model-input pixels.
        clip: the clip's running state, updated in place.
        names: the scorer's finding names.
    """
    for i, lb in enumerate(lbs):
        probs = np.asarray(out.probs[i], dtype=np.float64)
        try:
            found = _frame_findings(out, i, clip, names)
            agg = clip.running.update(probs)
        except ValueError as exc:  # one bad frame never stops the clip
            clip.dropped += 1
            log.warning("frame %d dropped: %s", len(clip.records) + clip.dropped - 1, exc)
            continue
        rec = {"index": len(clip.records) + clip.dropped, "probs": _r(probs),
               "score": int(np.argmax(probs)), "boxes": _r(lb.to_source(corners[i]), 2),
               "video_score": clip.running.score, "video_probs": _r(video_probs(agg))}
        if found is not None and clip.findings is not None:
            clip.findings.update(found)
            rec["findings"] = findings_dict(clip.findings.names, found)
        clip.records.append(rec)


def _video(clip: _Clip) -> dict[str, Any]:
    """The clip's ``video`` record (docs/score-json.md)."""
    running = clip.running
    value = running.value
    video = {"score": running.score, "probs": _r(video_probs(value)),
             "aggregate": [float(v) for v in value],
             "log_aggregate": [float(v) if np.isfinite(v) else None for v in running.log_value],
             "n_frames": running.n_frames}
    if clip.findings is not None:
        video["findings"] = clip.findings.summary()
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
    clip = _Clip(RunningUninorm(scorer.e))
    frame_hw: list[int] | None = None
    in_hw = (scorer.spec.height, scorer.spec.width)
    batches = _prefetch(_prepared(frames, batch, scorer.spec, timer))
    error: str | None = None
    truncated = False
    while True:
        try:
            hw, x, boxes_lb = next(batches)
        except StopIteration:
            break
        except Exception as exc:  # a clip that breaks mid-way keeps the frames scored so far
            error = f"{type(exc).__name__}: {exc}"
            truncated = isinstance(exc, TruncatedError)
            break
        t = time.perf_counter()
        out: FrameOutput = scorer.engine.frame(x)
        corners = crop_boxes(out, in_hw)  # (B, 2, 4, 2) model-input pixels
        timer["infer_s"] += time.perf_counter() - t
        frame_hw = frame_hw or list(hw)
        _add_batch(out, boxes_lb, corners, clip, scorer.finding_names)
    return {"error": error, "truncated": truncated, "frame_hw": frame_hw,
            "n_frames": len(clip.records), "dropped": clip.dropped, "frames": clip.records,
            "video": _video(clip)}


def score_clip(path: Path, scorer: Scorer, batch: int = 16,
               max_frames: int | None = None) -> dict[str, Any]:
    """Decode and score one clip; never raises for a bad clip (``ok`` false + ``error``)."""
    timer = {"decode_s": 0.0, "infer_s": 0.0}
    t0 = time.perf_counter()
    rec: dict[str, Any] = {"path": str(path), "name": path.name, "ok": True, "error": None,
                           "truncated": False}
    try:
        rec.update(score_frames(decode_file(path, max_frames=max_frames), scorer, batch, timer))
        if rec["error"] is None and rec["n_frames"] == 0:
            rec["error"] = "ValueError: no frame could be scored"
        rec["ok"] = rec["error"] is None
        if rec["truncated"]:
            log.warning("%s is truncated: only the %d frames before the cut were scored; its "
                        "video score is not the whole clip's", path, rec["n_frames"])
    except Exception as exc:  # report and go on with the next clip
        log.debug("%s failed", path, exc_info=True)
        rec.update(ok=False, error=f"{type(exc).__name__}: {exc}")
    total = time.perf_counter() - t0
    n = int(rec.get("n_frames") or 0)
    rec["timing"] = {"decode_s": round(timer["decode_s"], 4), "infer_s": round(timer["infer_s"], 4),
                     "total_s": round(total, 4), "fps": round(n / total, 2) if total > 0 else None}
    return rec


def summary_line(i: int, n: int, rec: dict[str, Any]) -> str:
    """One line per clip for stdout."""
    head = f"[{i}/{n}] {rec['name']}:"
    if rec.get("truncated") and rec.get("n_frames"):
        v = rec["video"]
        return (f"{head} TRUNCATED, {rec['n_frames']} frames before the cut scored (video "
                f"score {v['score']} of those only) ({rec['error']})")
    if not rec["ok"]:
        return f"{head} FAILED ({rec['error']})"
    v = rec["video"]
    probs = " ".join(f"{p:.2f}" for p in v["probs"])
    return (f"{head} {rec['n_frames']} frames, video score {v['score']} (probs {probs}), "
            f"{rec['timing']['fps']:.1f} frames/s{_findings_note(v)}")


def _findings_note(video: dict[str, Any]) -> str:
    """``", findings: B-lines, A-lines"`` (clip mean >= 0.5); "" without a findings head."""
    found = video.get("findings")
    if not found:
        return ""
    present = [finding_label(n) for n, s in found.items() if s["present"]]
    return f", findings: {', '.join(present) or 'none'}"


CSV_FIELDS = ("path", "ok", "error", "n_frames", "video_score", "p0", "p1", "p2", "p3",
              "max_frame_score", "fps", "truncated")
"""The CSV's fixed columns; a bundle with findings adds ``<name>_mean`` columns after them."""


def _clip_findings(clip: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return (clip.get("video") or {}).get("findings") or {}


def write_csv(path: str | Path, clips: Sequence[dict[str, Any]]) -> None:
    """One row per clip: :data:`CSV_FIELDS`, then the clip mean of each finding (if any)."""
    names = list(dict.fromkeys(n for c in clips for n in _clip_findings(c)))
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=[*CSV_FIELDS, *(f"{n}_mean" for n in names)])
        w.writeheader()
        for c in clips:
            has_video = bool(c.get("n_frames"))
            probs = c["video"]["probs"] if has_video else [""] * 4
            found = _clip_findings(c)
            w.writerow({
                "path": c["path"], "ok": int(c["ok"]), "error": c["error"] or "",
                "n_frames": c.get("n_frames", 0),
                "video_score": c["video"]["score"] if has_video else "",
                **{f"p{k}": probs[k] for k in range(4)},
                "max_frame_score": max((fr["score"] for fr in c.get("frames", [])), default=""),
                "fps": c["timing"]["fps"], "truncated": int(bool(c.get("truncated"))),
                **{f"{n}_mean": found[n]["mean"] if n in found else "" for n in names},
            })


def score_paths(paths: Sequence[str | Path], scorer: Scorer, batch: int = 16,
                max_frames: int | None = None,
                echo: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Score every clip under ``paths``; returns the JSON document (docs/score-json.md)."""
    clips = find_clips(paths)
    t0 = time.perf_counter()
    results = []
    for i, clip in enumerate(clips, 1):
        rec = score_clip(clip, scorer, batch, max_frames)
        results.append(rec)
        if echo:
            echo(summary_line(i, len(clips), rec))
    wall = time.perf_counter() - t0
    n_frames = sum(int(r.get("n_frames") or 0) for r in results)
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "model": {"name": scorer.name, "backend": scorer.backend, "e": _r(scorer.e),
                  "input": scorer.spec.to_dict(),
                  **({"finding_names": list(scorer.finding_names)}
                     if scorer.finding_names else {})},
        "clips": results,
        "summary": {"n_clips": len(results), "n_failed": sum(not r["ok"] for r in results),
                    "n_truncated": sum(bool(r.get("truncated")) for r in results),
                    "n_frames": n_frames, "wall_s": round(wall, 3),
                    "fps": round(n_frames / wall, 2) if wall > 0 else None},
    }


def batch_video_score(doc_clip: dict[str, Any], e: Sequence[float]) -> np.ndarray:
    """Aggregate a scored clip's per-frame probabilities at once (check of the running score)."""
    P = np.array([fr["probs"] for fr in doc_clip["frames"]], dtype=np.float64)
    return uninorm_reduce(P, np.asarray(e, dtype=np.float64))


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="video files (any container FFmpeg reads, GIFs) or folders "
                             "(walked for videos; an image-only folder is one clip)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--bundle", default=None,
                     help="model bundle directory (default: the shipped default bundle)")
    src.add_argument("--run", default=None,
                     help="PyTorch frame run folder instead of a bundle (needs the [train] "
                          "extra)")
    parser.add_argument("--backend", default="auto",
                        help="engine backend: auto, onnxruntime or tensorrt (bundles only)")
    parser.add_argument("--threads", type=int, default=None, help="CPU inference threads")
    parser.add_argument("--uninorm", default=None, metavar="JSON",
                        help='neutral elements {"e": [4 floats]} to use instead of the '
                             "bundle's (e.g. RUN2/uninorm.json of `pleura train video`)")
    parser.add_argument("--batch", type=int, default=16, help="frames per inference batch")
    parser.add_argument("--max-frames", type=int, default=None,
                        help="score at most this many frames per clip")
    parser.add_argument("--device", default="cpu", help="torch device for --run")
    parser.add_argument("--json", default=None, metavar="OUT", help="write the full results")
    parser.add_argument("--csv", default=None, metavar="OUT", help="write one row per clip")


def destination_problem(path: str | Path, flag: str) -> str | None:
    """Why ``path`` cannot be written as an output file, or None when it can.

    Checked before any clip is scored, so a typo in ``--json`` never costs a whole run.
    """
    p = Path(path)
    if p.exists() and not p.is_file():
        return (f"{flag} {p}: not a regular file (a folder, FIFO or device); give a file name "
                f"such as {p / 'scores.json' if p.is_dir() else 'scores.json'}")
    parent = p.parent
    if not parent.is_dir():
        return f"{flag} {p}: folder {parent} does not exist; create it (mkdir -p {parent})"
    if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        return f"{flag} {p}: no permission to write there; pick another path"
    return None


def run(args: argparse.Namespace) -> int:
    if args.batch < 1:
        raise SystemExit(f"pleura score: --batch must be >= 1, got {args.batch}")
    for flag, path in (("--json", args.json), ("--csv", args.csv)):
        problem = path and destination_problem(path, flag)
        if problem:
            print(f"pleura score: {problem}", file=sys.stderr)
            return 2
    try:
        if args.run:
            scorer = scorer_from_run(args.run, device=args.device)
        else:
            scorer = scorer_from_bundle(args.bundle, backend=args.backend, threads=args.threads)
    except (ValueError, OSError) as exc:  # BundleError is a ValueError; missing files OSError
        print(f"pleura score: {exc}")
        return 2
    if args.uninorm:
        scorer.e = read_uninorm_json(args.uninorm)
    doc = score_paths(args.paths, scorer, args.batch, args.max_frames)
    s = doc["summary"]
    truncated = f", {s['n_truncated']} truncated" if s["n_truncated"] else ""
    print(f"scored {s['n_clips']} clips ({s['n_failed']} failed{truncated}), {s['n_frames']} "
          f"frames in {s['wall_s']:.1f} s ({s['fps']} frames/s) with {scorer.name} on "
          f"{scorer.backend}")
    try:
        if args.json:
            Path(args.json).write_text(json.dumps(doc), encoding="utf-8")
        if args.csv:
            write_csv(args.csv, doc["clips"])
    except OSError as exc:  # e.g. the disk filled up during the run
        print(f"pleura score: cannot write the results: {exc}", file=sys.stderr)
        return 2
    if s["n_clips"] == 0:
        print("pleura score: no clips found; give video files or folders that contain them")
        return 1
    return 1 if s["n_failed"] else 0
