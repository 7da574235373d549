"""``pleura train frame``: train a Table I frame model into a run folder."""

from __future__ import annotations

import argparse

# train.frame.models.MODELS without importing torch (the CLI's parser is built in the runtime
# install too); tests/test_frame_models.py checks the two lists agree.
MODEL_NAMES = ("reg-stn", "reg-stn-cpu", "reg-stn-cpu-wide", "reg-stn-cpu-shear", "reg-stn-cpu-fc",
               "reg-stn-cpu-free", "reg-stn-cpu-fixed-scale", "reg-stn-fixed-scale", "cnn-ce",
               "cnn-sord", "cnn-sord-224", "resnet18-sord", "cnn-stn-sord", "cnn-randcrop-sord")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from train.frame.recipe import recipe_help

    parser.add_argument("--data", required=True, help="dataset folder (pleura layout)")
    parser.add_argument("--out", required=True, help="run folder to create (or --resume)")
    parser.add_argument("--model", default="reg-stn",
                        help=f"registry name (default reg-stn): {', '.join(MODEL_NAMES)}")
    parser.add_argument("--epochs", type=int, default=120, help="epochs (paper: 120)")
    parser.add_argument("--batch", type=int, default=64, help="batch size (paper: 64)")
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (1e-4)")
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--frames-per-epoch", type=int, default=None,
                        help="class-balanced samples per epoch (default: all train frames)")
    parser.add_argument("--max-frames-per-video", type=int, default=None,
                        help="use at most N evenly spaced train frames per video")
    parser.add_argument("--val-max-frames-per-video", type=int, default=None,
                        help="use at most N evenly spaced validation frames per video")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split-seed", type=int, default=0, help="patient split seed")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--cache-dir", default="runs/.cache",
                        help="cache of decoded 224x224 frames ('' = none)")
    parser.add_argument("--init-from", default=None, metavar="RUN",
                        help="warm start from RUN/best.pt (matching weights; a CNN trunk also "
                        "fills the Reg-STN localisation trunk). Default: random init")
    parser.add_argument("--resume", action="store_true", help="continue from RUN/last.pt")
    parser.add_argument("--freeze-cnn", action="store_true",
                        help="keep the classifier Φ_cnn fixed; train the localisation net and "
                        "θ heads only")
    parser.add_argument("--init-loc-from", default=None, metavar="RUN",
                        help="after --init-from, fill the localisation trunk from RUN's "
                        "classifier trunk")
    parser.add_argument("--freeze-loc", action="store_true",
                        help="keep the localisation trunk (and a soft-argmax head's score map) "
                        "fixed")
    parser.add_argument("--theta-lr-mult", type=float, default=1.0,
                        help="learning-rate multiplier of the θ heads (default 1 = paper)")
    parser.add_argument("--zero-gap", action="store_true",
                        help="SORD with score 0 placed at -0.5, farther from the others (the "
                        "paper's video-stage option; default off = the paper's frame stage)")
    parser.add_argument("--select", default="val", choices=("val", "last"),
                        help="model kept as best.pt: best validation micro F1 (val, paper) or "
                        "the final epoch (last)")
    parser.add_argument("--recipe", default=None, metavar="NAME",
                        help="run a named multi-stage recipe into --out instead of one run "
                        "(only --data, --out, --threads, --seed, --split-seed, --device, "
                        "--cache-dir apply; re-run the same command to resume). Recipes: "
                        f"{recipe_help()} (train/frame/recipe.py)")


def run(args: argparse.Namespace) -> int:
    from train.frame.config import TrainConfig
    from train.frame.models import get_spec
    from train.frame.trainer import train

    if args.recipe:
        return _run_recipe(args)
    get_spec(args.model)  # a wrong name fails now, listing the valid ones
    cfg = TrainConfig(
        data=args.data, out=args.out, model=args.model.lower(), epochs=args.epochs,
        batch=args.batch, lr=args.lr, weight_decay=args.weight_decay,
        frames_per_epoch=args.frames_per_epoch, max_frames_per_video=args.max_frames_per_video,
        val_max_frames_per_video=args.val_max_frames_per_video, seed=args.seed,
        split_seed=args.split_seed, device=args.device, threads=args.threads,
        cache_dir=args.cache_dir or None, init_from=args.init_from,
        freeze_cnn=args.freeze_cnn, theta_lr_mult=args.theta_lr_mult,
        init_loc_from=args.init_loc_from, freeze_loc=args.freeze_loc, select=args.select,
        zero_gap=args.zero_gap)
    out = train(cfg, resume=args.resume)
    chosen = "on the validation split" if cfg.select == "val" else "= the final epoch"
    print(f"run folder: {out} (best.pt chosen {chosen})")
    return 0


def _run_recipe(args: argparse.Namespace) -> int:
    import time

    from train.frame.recipe import run_recipe

    t0 = time.perf_counter()
    times = run_recipe(args.recipe, args.data, args.out, threads=args.threads, seed=args.seed,
                       split_seed=args.split_seed, device=args.device,
                       cache_dir=args.cache_dir or None)
    done = ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) or "nothing left to do"
    print(f"recipe {args.recipe}: {done}; {time.perf_counter() - t0:.0f} s wall in this call; "
          f"run folder: {args.out} (stage times in {args.out}/recipe.json)")
    return 0
