"""``pleura eval frame``: Settings 1-3 and localisation of a trained frame run."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", help="run folder from `pleura train frame`")
    parser.add_argument("--checkpoint", default="best", choices=("best", "last"),
                        help="the run's best.pt (its chosen model: best validation F1, or "
                        "the final epoch of a --select last run) or last.pt (final epoch)")
    parser.add_argument("--bundle", default=None,
                        help="evaluate an exported bundle instead of --run (needs engines)")
    parser.add_argument("--data", required=True, help="dataset folder (pleura layout)")
    parser.add_argument("--split", default="test", choices=("test", "all"),
                        help="test = the run's held-out patients; all = every video "
                        "(for a separately simulated test set)")
    parser.add_argument("--stride", type=int, default=1, help="score every N-th frame")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda")
    parser.add_argument("--loc-frames", type=int, default=240,
                        help="frames used for the localisation / Grad-CAM comparison")
    parser.add_argument("--cache-dir", default="runs/.cache")
    parser.add_argument("--json", default=None, help="write the full results here")
    parser.add_argument("--figure", default=None,
                        help="also draw crops vs Grad-CAM to this PNG (docs/img/stn-crops.png)")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from train.frame.evaluate import evaluate
    from train.frame.report import format_summary

    if not args.run and not args.bundle:
        raise SystemExit("pleura eval frame: give --run RUN (or --bundle DIR)")
    res = evaluate(args.run, args.data, args.split, args.stride, args.batch, args.device,
                   args.loc_frames, args.bundle, args.cache_dir or None,
                   args.checkpoint)
    print(format_summary(res))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1))
    if args.figure and args.run:
        from train.frame.figure import crops_figure

        crops_figure(args.run, args.data, args.figure, cache_dir=args.cache_dir or None)
        print(f"figure: {args.figure}")
    return 0
