"""``pleura eval frame|video|seg|real|score``: nested dispatch to each stage's evaluation command.

Same contract as :mod:`train.cli_train`: one line per stage in :data:`SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib

from train.cli_train import add_nested

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "frame": ("train.frame.eval_cli", "evaluate a frame scorer: Settings 1-3, localisation"),
    "seg": ("train.seg.eval_cli", "evaluate segmentation runs + ensemble: Table IV, MC dropout"),
    "video": ("train.video.eval_cli", "video score: Tables II-III, QWK, real-clip AUROC"),
    "real": ("train.real.eval_cli", "reference rows and bundles on the grouped real-clip folds"),
    "score": ("train.frame.score_cli", "pleura score with a PyTorch frame run (--run RUN) "
              "instead of a bundle"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_nested(parser, SUBCOMMANDS, "stage")


def run(args: argparse.Namespace) -> int:
    return int(importlib.import_module(args._sub_module).run(args) or 0)
