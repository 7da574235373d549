"""``pleura train real``: train the real-scan frame model on labelled clips.

Two sources of clips:

- ``--manifest shared/data/pocus/MANIFEST.csv``: the public POCUS clips (licence-checked);
- ``--clips FOLDER --labels CSV``: your own clips, a CSV with ``file,score`` and optional
  ``group`` (patient or recording; clips of one group never straddle folds), the finding flags
  (``b_lines, consolidations, effusion, a_lines, pleural_irregularities`` as 1/0) and
  ``license``. Without a ``license`` column, ``--own-data`` states that you hold the rights.

Modes: ``--cv K`` (grouped K-fold CV → ``cv.json``), ``--cv-by source`` (leave-one-source-out:
one fold per source, :mod:`train.real.sources`; the headline numbers of
``docs/results/real.md``),
``--final`` (train on every clip → ``final/frame-weights.npz`` + uninorm fitted on the same
training clips → ``pleura export RUN --out BUNDLE``), or both.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_argument_group("clips")
    src.add_argument("--manifest", help="POCUS MANIFEST.csv (clips next to it)")
    src.add_argument("--clips", help="folder of your own clips (with --labels)")
    src.add_argument("--labels", help="CSV: file,score[,group][,license][,finding flags]")
    src.add_argument("--own-data", action="store_true",
                     help="your --labels CSV has no license column: you hold the clips' rights")
    src.add_argument("--commercial-only", action="store_true",
                     help="train only on commercial-use (CC BY) clips")
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--cv", type=int, default=0, metavar="K",
                        help="grouped K-fold cross-validation (0: none)")
    parser.add_argument("--cv-by", choices=("group", "source"), default="group",
                        help="CV folds: grouped K-fold (group, default with --cv K) or "
                        "leave-one-source-out (source: one fold per labelled source, K unused)")
    parser.add_argument("--folds", default=None,
                        help="only these folds, comma-separated (e.g. 0,1: split a CV over jobs)")
    parser.add_argument("--final", action="store_true", help="train on every clip for export")
    parser.add_argument("--norm", default="frame", choices=("frame", "none"),
                        help="per-frame intensity standardisation in the model (default frame)")
    parser.add_argument("--width", type=float, default=0.5, help="trunk channel multiplier")
    parser.add_argument("--findings-weight", type=float, default=0.5,
                        help="weight of the findings head's loss (0: no findings head)")
    parser.add_argument("--augment", default="strong",
                        choices=("strong", "device", "geometric", "none"),
                        help="strong (default), device (strong + scanner randomisation: TGC, "
                        "dynamic range, resolution, JPEG, haze, depth, burned-in text), "
                        "geometric, none")
    parser.add_argument("--balance", default="clip", choices=("clip", "group", "source"),
                        help="within a score draw a clip uniformly (clip, default), a "
                        "recording/patient group first (group) or a source first (source)")
    parser.add_argument("--adversary", type=float, default=0.0,
                        help="weight of a source classifier behind gradient reversal "
                        "(domain-adversarial training; 0: off)")
    parser.add_argument("--class-weight", type=float, default=0.0,
                        help="weight of an auxiliary diagnosis-class head (class_label; 0: off)")
    parser.add_argument("--no-prior-adjust", action="store_true",
                        help="keep the balanced training prior (no logit adjustment)")
    parser.add_argument("--no-unlabelled", action="store_true",
                        help="do not use clips without a score for the findings head")
    parser.add_argument("--steps", type=int, default=700, help="training steps")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--max-frames", type=int, default=64,
                        help="frames kept per clip, evenly spaced")
    parser.add_argument("--sim-data", default=None, metavar="DIR",
                        help="simulated dataset (pleura synth) mixed into every batch")
    parser.add_argument("--sim-share", type=float, default=0.25,
                        help="share of each batch drawn from --sim-data (default 0.25)")
    parser.add_argument("--init-from", default=None, metavar="BUNDLE|RUN",
                        help="warm start from a bundle's or run's frame-weights.npz")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--cache-dir", default=None,
                        help="cache of decoded frames (default: the user cache, "
                        "$PLEURA_CACHE_DIR or ~/.cache/pleura/real-frames; '' = none)")


def load_clips(args: argparse.Namespace):
    from train.data.pocus import read_pocus_manifest
    from train.real.labels import read_label_csv

    if bool(args.manifest) == bool(args.clips):
        raise SystemExit("pleura train real: give either --manifest or --clips with --labels")
    if args.manifest:
        return read_pocus_manifest(args.manifest)
    if not args.labels:
        raise SystemExit("pleura train real: --clips needs --labels CSV (file,score,...)")
    return read_label_csv(args.clips, args.labels, own_data=args.own_data)


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    from pathlib import Path

    from train.data.layout import DatasetError
    from train.real.clips import LicenceError, trainable
    from train.real.cv import cross_validate, format_report
    from train.real.final import train_final
    from train.real.fit import RealConfig

    if args.cv_by == "source" and not args.cv:
        args.cv = 1  # LOSO: the number of folds is the number of sources
    if not args.cv and not args.final:
        raise SystemExit("pleura train real: choose --cv K, --cv-by source, --final, or both")
    try:
        clips = load_clips(args)
        trainable(clips)  # every clip's licence checked before any work
    except (DatasetError, LicenceError) as exc:
        print(f"pleura train real: {exc}", file=sys.stderr)
        return 2
    cfg = RealConfig(norm=args.norm, width=args.width, findings_weight=args.findings_weight,
                     augment=args.augment, steps=args.steps, batch=args.batch, lr=args.lr,
                     unlabelled=not args.no_unlabelled, max_frames=args.max_frames,
                     init_from=args.init_from, sim_data=args.sim_data,
                     sim_share=args.sim_share, balance=args.balance,
                     adversary=args.adversary, class_weight=args.class_weight,
                     prior_adjust=not args.no_prior_adjust, seed=args.seed,
                     threads=args.threads)
    from train.real.frames import default_cache_dir

    cache = default_cache_dir() if args.cache_dir is None else (args.cache_dir or None)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "command.txt").write_text("pleura train real " + " ".join(_argv(args)) + "\n")
    if args.cv:
        only = [int(f) for f in args.folds.split(",")] if args.folds else None
        rep = cross_validate(clips, cfg, out, k=args.cv, commercial_only=args.commercial_only,
                             cache_dir=cache, only_folds=only, split=args.cv_by)
        print(format_report(rep))
    if args.final:
        meta = train_final(clips, cfg, out / "final", commercial_only=args.commercial_only,
                           cache_dir=cache)
        print(json.dumps({k: meta[k] for k in ("n_clips", "uninorm_e", "train")}, indent=2))
        print(f"next: pleura export {out / 'final'} --out BUNDLE")
    return 0


def _argv(args: argparse.Namespace) -> list[str]:
    import sys

    argv = sys.argv[1:]
    return argv[2:] if argv[:2] == ["train", "real"] else argv
