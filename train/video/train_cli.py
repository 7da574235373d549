"""``pleura train video``: learn the uninorm neutral elements with patient-level CV.

::

    pleura train video --data data/sim-test --frame-run runs/frame-regstn --out runs/video \\
        [--folds 5] [--labels majority|annotator_1..5] [--videos all|test]

The frame model is frozen and must not have trained on the videos used here: give a dataset
it never saw (``--videos all``, the default — e.g. ``data/sim-test`` for a frame model trained
on ``data/sim-train``), or its own dataset with ``--videos test`` (the patient-level test split
of :func:`train.data.layout.split_by_patient`, which the frame training never uses).

Writes ``RUN2/frame_probs.npz`` (cache), ``RUN2/cv.json`` (folds, e per fold, loss curves,
labels) and ``RUN2/uninorm.json`` (``{"e": [4 floats], ...}``: the mean of the folds' e, read by
``pleura export`` into the bundle's ``aggregator.json``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from train.video.fit_config import FitConfig

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="dataset folder (layout of DESIGN.md)")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--frame-run", help="frozen frame model: a `pleura train frame` run")
    src.add_argument("--bundle", help="frozen frame model: a bundle (runs through the engines)")
    src.add_argument("--oracle-noise", type=float, metavar="SIGMA",
                     help="no frame model: simulate frame probabilities from the ground-truth "
                          "frame scores with logit noise SIGMA (tests the aggregation alone)")
    parser.add_argument("--out", required=True, help="output run folder (RUN2)")
    parser.add_argument("--folds", type=int, default=5, help="CV folds, split by patient")
    parser.add_argument("--labels", default="majority",
                        help="video labels: majority or annotator_1..annotator_5")
    parser.add_argument("--videos", choices=("all", "test"), default="all",
                        help="all videos of --data, or only its patient-level test split")
    parser.add_argument("--split-seed", type=int, default=None,
                        help="seed of split_by_patient for --videos test (default: the frame "
                             "run's split_seed, else 0)")
    parser.add_argument("--seed", type=int, default=0, help="fold assignment seed")
    parser.add_argument("--epochs", type=int, default=FitConfig.epochs)
    parser.add_argument("--lr", type=float, default=FitConfig.lr)
    parser.add_argument("--patience", type=int, default=FitConfig.patience,
                        help="early stopping: epochs without a new lowest training loss")
    parser.add_argument("--init-e", type=float, default=FitConfig.init_e)
    parser.add_argument("--head", choices=("softmax", "log"), default=FitConfig.head,
                        help="video probabilities in the loss: softmax of the aggregates (the "
                             "paper) or of their logs (same score; learns on long videos)")
    parser.add_argument("--batch", type=int, default=32, help="frames per inference batch")
    parser.add_argument("--frame-step", type=int, default=1, metavar="K",
                        help="use every K-th frame of each video (K > 1 only to save CPU time)")
    parser.add_argument("--device", default="cpu", help="torch device for --frame-run")


def _engine(args: argparse.Namespace):
    """(engine, spec, description) of the frozen frame model."""
    from engines.preprocess import FRAME_SPEC

    if args.frame_run:
        from train.video.features import engine_from_run

        _check_not_trained_on(Path(args.frame_run), Path(args.data), args.videos)
        return engine_from_run(args.frame_run, args.device), FRAME_SPEC, \
            f"frame run {args.frame_run}"
    import engines

    bundle = engines.load_bundle(args.bundle)
    return engines.create_engine(bundle, "auto"), bundle.frame_spec, f"bundle {args.bundle}"


def _check_not_trained_on(run: Path, data: Path, videos: str) -> None:
    """Refuse the frame model's own training data unless only its test split is used."""
    cfg_file = run / "config.json"
    if videos == "test" or not cfg_file.is_file():
        return
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return
    trained = cfg.get("data") if isinstance(cfg, dict) else None
    if trained and Path(trained).resolve() == data.resolve():
        raise SystemExit(f"pleura train video: the frame run {run} trained on {data}; its "
                         "frame probabilities there are optimistic. Use a dataset it never saw "
                         "(e.g. data/sim-test) or add --videos test")


def run(args: argparse.Namespace) -> int:
    from train.data.layout import read_dataset, split_by_patient, video_label
    from train.video.evaluate import cv_report, format_cv
    from train.video.features import dataset_frame_probs
    from train.video.fit import fit_uninorm
    from train.video.folds import patient_folds

    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = read_dataset(args.data, check_masks=False)
    vids = sorted(ds.videos)
    if args.videos == "test":
        fractions, seed = _frame_split(args)
        vids = split_by_patient(ds, fractions, seed=seed)["test"]
    labels = {v: video_label(ds.videos[v], args.labels) for v in vids}
    unlabelled = sorted(v for v, s in labels.items() if s is None)
    labels = {v: int(s) for v, s in labels.items() if s is not None}
    if unlabelled:
        log.warning("%d videos have no %s label and are skipped", len(unlabelled), args.labels)
    if not labels:
        raise SystemExit(f"pleura train video: no video of {args.data} has a {args.labels} "
                         "label (videos.csv annotator_1..5)")
    if args.oracle_noise is not None:
        from train.video.features import oracle_frame_probs

        rng = np.random.default_rng(args.seed)
        step = max(1, args.frame_step)
        probs = {v: oracle_frame_probs([f.score for f in sorted(ds.frames_of(v),
                                                                key=lambda f: f.frame)][::step],
                                       args.oracle_noise, rng) for v in sorted(labels)}
        np.savez_compressed(out / "frame_probs.npz", **probs)
        source = f"oracle (ground-truth frame scores + logit noise {args.oracle_noise})"
    else:
        engine, spec, source = _engine(args)
        step = max(1, args.frame_step)
        probs = dataset_frame_probs(lambda v: ds.read_frames(v)[::step], sorted(labels), engine,
                                    spec, args.batch, cache=out / "frame_probs.npz")
    frame_acc = _frame_accuracy(ds, probs, max(1, args.frame_step))
    print(f"frame model: {source}; frame accuracy on these videos {frame_acc:.3f}")
    folds = patient_folds({v: ds.videos[v].patient_id for v in labels}, args.folds, args.seed)
    cfg = FitConfig(lr=args.lr, epochs=args.epochs, patience=args.patience, init_e=args.init_e,
                    head=args.head)
    fold_docs = []
    for i, test in enumerate(folds):
        train_ids = [v for v in sorted(labels) if v not in set(test)]
        res = fit_uninorm([probs[v] for v in train_ids], [labels[v] for v in train_ids], cfg)
        fold_docs.append({"fold": i, "test": test, "train": train_ids,
                          "e": res.e.tolist(), "best_epoch": res.best_epoch,
                          "best_loss": res.best_loss, "losses": res.losses})
        print(f"fold {i}: {len(train_ids)} train / {len(test)} test videos, "
              f"e = {np.round(res.e, 4).tolist()}, lowest training loss {res.best_loss:.4f} "
              f"at epoch {res.best_epoch}")
    e_mean = np.mean([f["e"] for f in fold_docs], axis=0)
    command = "pleura " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("pleura") else \
        " ".join(["pleura train video", *_argv(args)])
    cv = {"data": str(args.data), "frame_model": source, "frame_accuracy": frame_acc,
          "labels": args.labels,
          "videos": args.videos, "folds": fold_docs, "config": cfg.__dict__,
          "video_labels": labels, "patients": {v: ds.videos[v].patient_id for v in labels},
          "skipped_unlabelled": unlabelled, "command": command}
    (out / "cv.json").write_text(json.dumps(cv, indent=1), encoding="utf-8")
    (out / "uninorm.json").write_text(json.dumps({
        "e": [float(x) for x in e_mean], "kind": "uninorm",
        "t_norm": "product", "t_conorm": "probabilistic sum", "off_diagonal": "min",
        "method": f"mean of the {len(folds)} cross-validation folds' e",
        "e_folds": [f["e"] for f in fold_docs], "data": str(args.data),
        "frame_model": source, "labels": args.labels, "command": command,
    }, indent=1), encoding="utf-8")
    rep = cv_report(fold_docs, labels, probs)
    (out / "config.json").write_text(json.dumps({
        "kind": "video", "command": command, "data": str(args.data), "frame_model": source,
        "labels": args.labels, "videos": args.videos, "folds": args.folds, "seed": args.seed,
        "frame_step": args.frame_step,
        "fit": cfg.__dict__}, indent=1), encoding="utf-8")
    (out / "command.txt").write_text(command + "\n", encoding="utf-8")
    (out / "metrics.json").write_text(json.dumps(_headline(rep), indent=1), encoding="utf-8")
    print(format_cv(rep))
    print(f"e (mean over folds) = {np.round(e_mean, 4).tolist()} -> {out / 'uninorm.json'} "
          f"({time.time() - t0:.0f} s)")
    return 0


def _argv(args: argparse.Namespace) -> list[str]:
    src = (["--frame-run", args.frame_run] if args.frame_run else
           ["--bundle", args.bundle] if args.bundle else ["--oracle-noise", str(args.oracle_noise)])
    return ["--data", str(args.data), *src, "--out", str(args.out), "--folds", str(args.folds),
            "--labels", args.labels, "--videos", args.videos, "--head", args.head,
            "--frame-step", str(args.frame_step)]


def _headline(rep: dict) -> dict:
    """Table II figures for the bundle manifest (``pleura export`` reads metrics.json)."""
    return {"video_cv": {
        "n_videos": rep["n_videos"], "n_folds": rep["n_folds"],
        **{m: {k: r[k] for k in ("f1", "precision", "recall")} | {
            "qwk_pooled": r["pooled"]["qwk"],
            "auroc_0_vs_1plus_pooled": r["pooled"]["auroc_0_vs_1plus"]}
           for m, r in rep["methods"].items()}}}


def _frame_split(args: argparse.Namespace) -> tuple[tuple[float, float, float], int]:
    """The (fractions, seed) of the frame run's patient split, so its test split is reused."""
    fractions, seed = (0.7, 0.15, 0.15), 0
    cfg_file = Path(args.frame_run) / "config.json" if args.frame_run else None
    if cfg_file is not None and cfg_file.is_file():
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
        fractions = tuple(cfg.get("split", fractions))
        seed = int(cfg.get("split_seed", seed))
    if args.split_seed is not None:
        seed = args.split_seed
    return fractions, seed


def _frame_accuracy(ds, probs: dict[str, np.ndarray], step: int = 1) -> float:
    """Micro F1 (= accuracy) of the frame probabilities against the labelled frames."""
    hit = total = 0
    for vid, P in probs.items():
        for f in ds.frames_of(vid):
            if f.frame % step == 0 and f.frame // step < len(P):
                hit += int(np.argmax(P[f.frame // step]) == f.score)
                total += 1
    return hit / total if total else float("nan")
