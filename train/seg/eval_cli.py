"""``pleura eval seg``: arguments (no heavy imports) and the call into ``train.seg.evaluate``.

Prints Table IV (pixel accuracy, binary COVID Dice, categorical Dice) for each run and the
ensemble, the MC-dropout uncertainty inside vs on the boundary of predicted regions, and with
``--onnx-timing`` each member's ONNX Runtime latency on this CPU.

Example::

    pleura eval seg --runs runs/seg-unet runs/seg-unet-noaug --data data/sim-test --json r.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", nargs="+", required=True, help="run folders of `pleura train seg`")
    p.add_argument("--data", required=True, help="dataset folder (a fresh simulated set)")
    p.add_argument("--ensemble", nargs="+", default=None,
                   help="runs averaged into the ensemble (default: those trained with augment)")
    p.add_argument("--json", default=None, help="write the result here")
    p.add_argument("--mc", type=int, default=40, help="MC-dropout passes per member (0: off)")
    p.add_argument("--mc-frames", type=int, default=32, help="frames for the MC statistics")
    p.add_argument("--max-frames", type=int, default=500, help="cap on test frames (seeded)")
    p.add_argument("--onnx-timing", action="store_true",
                   help="also time each member through ONNX Runtime (1 frame, CPU)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    ens = args.ensemble
    if ens is not None:
        missing = [e for e in ens if e not in args.runs]
        if missing:
            raise SystemExit(f"--ensemble runs {missing} must also be given in --runs")
    from train.seg.evaluate import evaluate_runs, format_table, run_label

    result = evaluate_runs(args.runs, args.data, ens, args.mc, args.mc_frames,
                           args.max_frames, seed=args.seed)
    if args.onnx_timing:
        from train.seg.run import load_run
        from train.seg.timing import onnx_latency_ms

        threads = args.threads or 1
        result["onnx_timing"] = [{"run": r, "name": run_label(load_run(r)[1]),
                                  **onnx_latency_ms(load_run(r)[0], threads=threads)}
                                 for r in args.runs]
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m train.seg.eval_cli", description=__doc__)
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))
