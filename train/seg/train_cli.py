"""``pleura train seg``: arguments (no heavy imports) and the call into ``train.seg.train``.

Example::

    pleura train seg --data data/sim-train --arch unet --out runs/seg-unet
"""

from __future__ import annotations

import argparse
import json

from train.seg.config import ARCH_NAMES, TrainConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = TrainConfig(data="")
    p.add_argument("--data", required=True, help="dataset folder (e.g. from `pleura synth`)")
    p.add_argument("--arch", choices=ARCH_NAMES, default=d.arch)
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--no-augment", action="store_true", help="switch the augmentation off")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--steps-per-epoch", type=int, default=d.steps_per_epoch)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate (paper: 1e-5)")
    p.add_argument("--max-frames", type=int, default=d.max_frames,
                   help="cap on training frames held in memory (random, seeded)")
    p.add_argument("--val-frames", type=int, default=d.val_frames)
    p.add_argument("--probe", choices=["convex", "linear"], default=None,
                   help="train on one probe only (the paper: convex)")
    p.add_argument("--dropout", type=float, default=None,
                   help="dropout for MC sampling (default: 0.5 for unet, 0.2 for smp members)")
    p.add_argument("--encoder", default=d.encoder, help="smp encoder (unetpp, deeplabv3p)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--time-limit", type=float, default=None, dest="time_limit_min",
                   help="stop (validate, keep the best) after this many minutes")
    p.add_argument("--init-from", default=None, metavar="RUN", dest="init_from",
                   help="start from the weights of RUN/best.pt (same architecture), e.g. to "
                        "continue a run with a lower learning rate")
    p.add_argument("--seed", type=int, default=d.seed)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(data=args.data, arch=args.arch, out=args.out, augment=not args.no_augment,
                       epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                       batch_size=args.batch_size, lr=args.lr, max_frames=args.max_frames,
                       val_frames=args.val_frames, probe=args.probe, dropout=args.dropout,
                       encoder=args.encoder, threads=args.threads,
                       time_limit_min=args.time_limit_min,
                       init_from=args.init_from, seed=args.seed)


def run(args: argparse.Namespace) -> int:
    from train.seg.train import train

    best = train(config_from_args(args))
    print(json.dumps({"out": args.out, "best": best}))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m train.seg.train_cli", description=__doc__)
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))
