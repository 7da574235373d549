"""``pleura eval video``: Tables II and III of a ``pleura train video`` run, and real clips.

::

    pleura eval video --run runs/video [--json OUT]
        [--pocus ../shared/data/pocus (--score-json SCORED.json | --bundle DIR)]

Simulated data: the cross-validated predictions of each fold's test videos (frame
probabilities cached in ``RUN2/frame_probs.npz``, e per fold in ``RUN2/cv.json``).
Real clips: the severity-labelled clips of the POCUS manifest, with per-frame probabilities
from ``pleura score`` (the runtime's bundle path: give its ``--json`` output, or a bundle to
score them now) and the run's mean e.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from train.video.evaluate import cv_report, format_cv, format_holdout, holdout_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="a `pleura train video` run folder")
    parser.add_argument("--json", default=None, metavar="OUT", help="write all figures")
    parser.add_argument("--pocus", default=None, metavar="DIR",
                        help="also evaluate on the severity-labelled clips of this POCUS folder "
                             "(MANIFEST.csv)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--score-json", default=None,
                     help="`pleura score DIR --json OUT` output with the clips' frame "
                          "probabilities (skips re-scoring)")
    src.add_argument("--bundle", default=None,
                     help="bundle to score the real clips with (default: the shipped one)")


def load_cv(run: Path) -> tuple[dict, dict[str, np.ndarray]]:
    cv_file, npz = run / "cv.json", run / "frame_probs.npz"
    for f in (cv_file, npz):
        if not f.is_file():
            raise SystemExit(f"pleura eval video: {f} is missing; train first with "
                             f"`pleura train video --out {run} ...`")
    cv = json.loads(cv_file.read_text(encoding="utf-8"))
    with np.load(npz) as z:
        probs = {k: z[k] for k in z.files}
    return cv, probs


def score_json_probs(doc: dict) -> dict[str, np.ndarray]:
    """``pleura score`` JSON -> clip file name -> (N, 4) frame probabilities (scored clips)."""
    return {c["name"]: np.array([f["probs"] for f in c["frames"]], dtype=np.float64)
            for c in doc["clips"] if c.get("n_frames")}


def real_clip_eval(pocus: Path, scored: dict, e: list[float]) -> dict:
    from train.data.pocus import read_pocus_manifest

    clips = read_pocus_manifest(pocus / "MANIFEST.csv")
    probs = score_json_probs(scored)
    labelled = {c.filename: c.severity for c in clips if c.severity is not None}
    missing = sorted(n for n in labelled if n not in probs)
    labels = {n: int(s) for n, s in labelled.items() if n in probs}
    rep = holdout_report(labels, probs, e)
    rep.update(source=str(pocus), scored_with=scored.get("model", {}), missing=missing)
    return rep


def run(args: argparse.Namespace) -> int:
    run_dir = Path(args.run)
    cv, probs = load_cv(run_dir)
    rep = cv_report(cv["folds"], {k: int(v) for k, v in cv["video_labels"].items()}, probs)
    print(f"data {cv['data']}, frame model {cv['frame_model']}, labels {cv['labels']}")
    print(format_cv(rep))
    out = {"simulated_cv": rep, "run": str(run_dir), "data": cv["data"]}
    if args.pocus:
        e = json.loads((run_dir / "uninorm.json").read_text(encoding="utf-8"))["e"]
        if args.score_json:
            scored = json.loads(Path(args.score_json).read_text(encoding="utf-8"))
        else:
            target = run_dir / "pocus-score.json"
            cmd = [sys.executable, "-m", "stream", "score", str(args.pocus), "--json",
                   str(target), *(["--bundle", args.bundle] if args.bundle else [])]
            print("scoring the real clips:", " ".join(cmd))
            subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL)
            scored = json.loads(target.read_text(encoding="utf-8"))
        real = real_clip_eval(Path(args.pocus), scored, e)
        print()
        print(format_holdout(real, f"Real clips ({args.pocus}, severity labels)"))
        if real["missing"]:
            print(f"not scored (missing from the score JSON): {real['missing']}")
        out["real_clips"] = real
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1), encoding="utf-8")
    return 0
