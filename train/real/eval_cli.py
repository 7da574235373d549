"""``pleura eval real``: reference rows and bundles on the grouped folds of the real clips.

``--baseline majority|brightness`` fits on the training folds; ``--bundle B`` scores a fixed
bundle (honest hold-out only if B was not trained on these clips). ``--cv-run RUN`` re-prints a
``pleura train real --cv`` result. Same clip metrics as the CV (``docs/results/real.md``).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True, help="POCUS MANIFEST.csv")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--baseline", choices=("majority", "brightness"))
    what.add_argument("--bundle", help="a bundle folder to score on the cached frames")
    what.add_argument("--cv-run", help="re-evaluate a `pleura train real --cv` run folder from "
                      "its saved predictions")
    parser.add_argument("--no-prior-adjust", action="store_true",
                        help="with --cv-run: evaluate without the prior correction")
    parser.add_argument("--test-all", action="store_true",
                        help="with --cv-run: also score the test clips the run did not use "
                        "(e.g. the non-commercial ones of --commercial-only) with each fold's "
                        "saved weights")
    parser.add_argument("--k", type=int, default=5, help="grouped folds (as the CV)")
    parser.add_argument("--fold-seed", type=int, default=0)
    parser.add_argument("--max-frames", type=int, default=64)
    parser.add_argument("--commercial-only", action="store_true")
    parser.add_argument("--cache-dir", default="runs/.cache/real")
    parser.add_argument("--json", default=None, help="write the report here")


def run(args: argparse.Namespace) -> int:
    import json
    import time
    from pathlib import Path

    from train.data.pocus import read_pocus_manifest
    from train.real import baselines
    from train.real.clips import grouped_folds, trainable
    from train.real.cv import format_report, load_train_clips

    t0 = time.perf_counter()
    clips = read_pocus_manifest(args.manifest)
    if args.cv_run:
        from train.real.cv import reevaluate

        rep = reevaluate(args.cv_run, clips, not args.no_prior_adjust, args.cache_dir or None,
                         test_all=args.test_all)
        print(format_report(rep))
        if args.json:
            Path(args.json).write_text(json.dumps(rep, indent=2))
        return 0
    folds = grouped_folds(clips, args.k, args.fold_seed)
    use = [c for c in trainable(clips, args.commercial_only) if c.severity is not None]
    data = load_train_clips(use, args.cache_dir or None, args.max_frames)
    if args.baseline:
        predictor = getattr(baselines, args.baseline)(data)
        name = args.baseline
    else:
        predictor, _ = baselines.bundle_predictor(args.bundle, data)
        name = f"bundle {args.bundle}"
    rep = {"methods": {name: baselines.fold_report(folds, data, predictor)}, "findings": {},
           "k": args.k, "label_counts": [sum(1 for c in data.values() if c.score == s)
                                          for s in range(4)],
           "wall_s": round(time.perf_counter() - t0, 1)}
    print(format_report(rep))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rep, indent=2))
    return 0
