"""``pleura eval real``: reference rows and bundles on the folds of the real clips.

``--split source`` (leave-one-source-out, the headline protocol, :mod:`train.real.sources`) or
``--split group`` (grouped k-fold, folds share sources). ``--baseline
majority|brightness|source-lookup`` fits on the training folds; ``--bundle B`` scores a fixed
bundle (honest hold-out only if B was not trained on these clips). ``--cv-run RUN`` re-prints a
``pleura train real --cv`` result. Same clip metrics as the CV (``docs/results/real.md``),
pooled over the held-out clips, per source and within source.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True, help="POCUS MANIFEST.csv")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--baseline", choices=("majority", "brightness", "source-lookup"))
    what.add_argument("--bundle", help="a bundle folder to score on the cached frames")
    what.add_argument("--cv-run", help="re-evaluate a `pleura train real --cv` run folder from "
                      "its saved predictions")
    parser.add_argument("--no-prior-adjust", action="store_true",
                        help="with --cv-run: evaluate without the prior correction")
    parser.add_argument("--test-all", action="store_true",
                        help="with --cv-run: also score the test clips the run did not use "
                        "(e.g. the non-commercial ones of --commercial-only) with each fold's "
                        "saved weights")
    parser.add_argument("--split", choices=("source", "group"), default="source",
                        help="folds: leave-one-source-out (source, default) or grouped k-fold "
                        "(group; folds share sources)")
    parser.add_argument("--adapt", default="",
                        help="with --cv-run: adapt each fold's model on its held-out clips "
                        "without their labels before scoring them (pleura adapt's parts: "
                        "prior, bn, or prior,bn)")
    parser.add_argument("--k", type=int, default=5, help="grouped folds (with --split group)")
    parser.add_argument("--fold-seed", type=int, default=0)
    parser.add_argument("--max-frames", type=int, default=64)
    parser.add_argument("--commercial-only", action="store_true")
    parser.add_argument("--cache-dir", default=None,
                        help="cache of decoded frames (default: the user cache, "
                        "$PLEURA_CACHE_DIR or ~/.cache/pleura/real-frames; '' = none)")
    parser.add_argument("--json", default=None, help="write the report here")


def run(args: argparse.Namespace) -> int:
    import json
    import time
    from pathlib import Path

    from train.data.pocus import read_pocus_manifest
    from train.real import baselines
    from train.real.clips import trainable
    from train.real.cv import format_report, load_train_clips
    from train.real.frames import default_cache_dir
    from train.real.sources import clip_sources, folds_for

    t0 = time.perf_counter()
    args.cache_dir = default_cache_dir() if args.cache_dir is None else args.cache_dir
    clips = read_pocus_manifest(args.manifest)
    if args.cv_run:
        from train.real.cv import reevaluate

        adapt = [p.strip() for p in args.adapt.split(",") if p.strip()]
        rep = reevaluate(args.cv_run, clips, not args.no_prior_adjust, args.cache_dir or None,
                         test_all=args.test_all, adapt=adapt)
        print(format_report(rep))
        if args.json:
            Path(args.json).write_text(json.dumps(rep, indent=2))
        return 0
    folds = folds_for(clips, args.split, args.k, args.fold_seed)
    source_of = clip_sources(clips)
    use = [c for c in trainable(clips, args.commercial_only) if c.severity is not None]
    data = load_train_clips(use, args.cache_dir or None, args.max_frames)
    if args.baseline == "source-lookup":
        predictor = baselines.source_lookup(data, source_of)
        name = args.baseline
    elif args.baseline:
        predictor = getattr(baselines, args.baseline)(data)
        name = args.baseline
    else:
        predictor, _ = baselines.bundle_predictor(args.bundle, data)
        name = f"bundle {args.bundle}"
    method = baselines.fold_report(folds, data, predictor, source_of)
    rep = {"methods": {name: method}, "findings": {}, "split": args.split,
           "fold_names": list(folds.names),
           "by_source": {name: method.pop("by_source")},
           "within_source": {name: method.pop("within_source")},
           "k": folds.k, "label_counts": [sum(1 for c in data.values() if c.score == s)
                                          for s in range(4)],
           "wall_s": round(time.perf_counter() - t0, 1)}
    print(format_report(rep))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rep, indent=2))
    return 0
