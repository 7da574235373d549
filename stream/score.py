"""``pleura score``: score recorded clips offline, as fast as possible (no real-time pacing).

The same path as the live worker, the one scoring core :mod:`engines.scorer`: frames are
decoded (:func:`stream.sources.decode_file`) and prepared with the bundle's frame spec, scored
by the bundle's engine in batches, their crop boxes mapped to source-frame pixels, and the
running uninorm video score (Roy et al. 2020, PAPER.md sections 1-2) and findings summary
(:mod:`engines.findings`) updated frame by frame. The clip loop is
:mod:`stream.score_clips`, the CSV and the stdout lines :mod:`stream.score_output`; this module
is the command and the JSON document (schema: ``docs/score-json.md``).

A clip that cannot be read is reported with the reason and the rest are still scored; a clip
that ends before its container says (``truncated: true``, :class:`stream.sources.TruncatedError`)
keeps the frames before the cut but counts as failed, with a warning. A clip that is not a lung
image (``scorable: false``: no image, noise, not a lung view; :mod:`engines.scorable`) gets no
video score and counts as failed too: whoever asked for scores did not get this one. The exit
code is 1 when any clip failed, 2 when ``--json`` / ``--csv`` cannot be written (checked before
any scoring).
Only regular files are read (a FIFO named ``x.mp4`` is refused, not waited on).

Scoring with a PyTorch training run instead of a bundle is ``pleura eval score --run RUN``
(:mod:`train.frame.score_cli`, the ``[train]`` extra): the runtime never imports ``train``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from engines.scorer import Scorer, load_scorer
from engines.uninorm import check_e
from stream.score_clips import VIDEO_SUFFIXES, find_clips, rounded, score_clip, score_frames
from stream.score_output import CSV_FIELDS, destination_problem, summary_line, write_clips_csv

__all__ = ["CSV_FIELDS", "SCHEMA", "VIDEO_SUFFIXES", "find_clips", "score_clip",
           "score_frames", "score_paths", "write_clips_csv"]

SCHEMA = "pleura-score"
SCHEMA_VERSION = 1
RUN_MOVED = ("pleura score: --run moved to `pleura eval score --run RUN PATH...` (scoring with "
             "a PyTorch training run needs the [train] extra); pleura score scores bundles, "
             "e.g. one made by `pleura export RUN --out BUNDLE`")


def read_uninorm_json(path: str | Path) -> Any:
    """``{"e": [4 floats], ...}`` (``RUN2/uninorm.json`` or a bundle's ``aggregator.json``)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        return check_e(data["e"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"pleura score: cannot read uninorm neutral elements from {p} ({exc}); "
                         'expected JSON like {"e": [0.3, 0.5, 0.6, 0.8]} as written by '
                         "`pleura train video`") from None


def model_record(scorer: Scorer) -> dict[str, Any]:
    """The document's ``model`` field: name, backend, neutral elements, input spec, findings."""
    return {"name": scorer.name, "backend": scorer.backend, "e": rounded(scorer.e),
            "input": scorer.spec.to_dict(),
            **({"finding_names": list(scorer.finding_names)} if scorer.finding_names else {})}


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
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "model": model_record(scorer),
        "clips": results,
        "summary": {"n_clips": len(results), "n_failed": sum(not r["ok"] for r in results),
                    "n_truncated": sum(bool(r.get("truncated")) for r in results),
                    "n_not_scorable": sum(r.get("scorable") is False for r in results),
                    "n_frames": n_frames, "wall_s": round(wall, 3),
                    "fps": round(n_frames / wall, 2) if wall > 0 else None},
    }


# --------------------------------------------------------------------------- CLI


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of any clip scoring command (``pleura score``, ``pleura eval score``)."""
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="video files (any container FFmpeg reads, GIFs) or folders "
                             "(walked for videos; an image-only folder is one clip)")
    parser.add_argument("--uninorm", default=None, metavar="JSON",
                        help='neutral elements {"e": [4 floats]} to use instead of the '
                             "model's (e.g. RUN2/uninorm.json of `pleura train video`)")
    parser.add_argument("--batch", type=int, default=16, help="frames per inference batch")
    parser.add_argument("--max-frames", type=int, default=None,
                        help="score at most this many frames per clip")
    parser.add_argument("--json", default=None, metavar="OUT", help="write the full results")
    parser.add_argument("--csv", default=None, metavar="OUT", help="write one row per clip")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--bundle", default=None,
                        help="model bundle directory (default: the shipped default bundle)")
    parser.add_argument("--backend", default="auto",
                        help="engine backend: auto, onnxruntime, tensorrt or ray (a `pleura "
                             "serve` application: archive re-scoring on a cluster)")
    parser.add_argument("--serve-address", default=None, metavar="ADDR",
                        help="--backend ray: Ray cluster address (default $RAY_ADDRESS, else auto)")
    parser.add_argument("--threads", type=int, default=None, help="CPU inference threads")
    # moved to `pleura eval score`; kept hidden so the old spelling gets a message, not a usage
    parser.add_argument("--run", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--device", default=None, help=argparse.SUPPRESS)


def output_problem(args: argparse.Namespace) -> str | None:
    """Why the arguments cannot work (bad ``--batch``, unwritable ``--json`` / ``--csv``)."""
    if args.batch < 1:
        raise SystemExit(f"pleura score: --batch must be >= 1, got {args.batch}")
    for flag, path in (("--json", args.json), ("--csv", args.csv)):
        problem = path and destination_problem(path, flag)
        if problem:
            return problem
    return None


def run_scorer(args: argparse.Namespace, scorer: Scorer) -> int:
    """Score ``args.paths`` with ``scorer``, print the summary, write ``--json`` / ``--csv``.

    Returns:
        0 all clips scored; 1 a clip failed (unreadable, truncated or not scorable) or none was
        found; 2 the outputs cannot be written.
    """
    if args.uninorm:
        scorer = dataclasses.replace(scorer, e=read_uninorm_json(args.uninorm))
    doc = score_paths(args.paths, scorer, args.batch, args.max_frames)
    s = doc["summary"]
    truncated = f", {s['n_truncated']} truncated" if s["n_truncated"] else ""
    if s["n_not_scorable"]:
        truncated += f", {s['n_not_scorable']} not scorable: no video score"
    print(f"scored {s['n_clips']} clips ({s['n_failed']} failed{truncated}), {s['n_frames']} "
          f"frames in {s['wall_s']:.1f} s ({s['fps']} frames/s) with {scorer.name} on "
          f"{scorer.backend}")
    try:
        if args.json:
            Path(args.json).write_text(json.dumps(doc), encoding="utf-8")
        if args.csv:
            write_clips_csv(args.csv, doc["clips"])
    except OSError as exc:  # e.g. the disk filled up during the run
        print(f"pleura score: cannot write the results: {exc}", file=sys.stderr)
        return 2
    if s["n_clips"] == 0:
        print("pleura score: no clips found; give video files or folders that contain them")
        return 1
    return 1 if s["n_failed"] else 0


def run(args: argparse.Namespace) -> int:
    if getattr(args, "run", None):
        print(RUN_MOVED, file=sys.stderr)
        return 2
    problem = output_problem(args)
    if problem:
        print(f"pleura score: {problem}", file=sys.stderr)
        return 2
    try:
        remote = {"address": args.serve_address} if args.backend == "ray" else {}
        scorer = load_scorer(args.bundle, backend=args.backend, threads=args.threads, **remote)
    except (ValueError, OSError) as exc:  # BundleError is a ValueError; missing files OSError
        print(f"pleura score: {exc}")
        return 2
    try:
        return run_scorer(args, scorer)
    finally:
        scorer.close()
