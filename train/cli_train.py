"""``pleura train frame|video|seg``: nested dispatch to each stage's training command.

Each entry of :data:`SUBCOMMANDS` is ``name: (module, help)``; the module exposes
``add_arguments(parser)`` and ``run(args) -> int`` (as for ``stream/cli.py``) and must keep
its top-level imports light (torch inside ``run``), since ``--help`` imports every entry.
To add a stage, add one line here.
"""

from __future__ import annotations

import argparse
import importlib

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "frame": ("train.frame.train_cli", "train a frame scorer (Reg-STN + SORD, Table I models)"),
    "seg": ("train.seg.train_cli", "train a segmentation member (U-Net, U-Net++, DeepLabv3+)"),
    "video": ("train.video.train_cli", "learn the uninorm video aggregation (CV by patient)"),
    "real": ("train.real.cli", "train the real-scan frame model on labelled clips (grouped CV, "
             "final model for export)"),
}


def add_nested(parser: argparse.ArgumentParser, registry: dict[str, tuple[str, str]],
               dest: str) -> None:
    """Add one sub-parser per registry entry; each remembers its module in ``_sub_module``."""
    sub = parser.add_subparsers(dest=dest, metavar="STAGE")
    sub.required = True
    for name, (module_name, help_text) in registry.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module_name).add_arguments(p)
        p.set_defaults(_sub_module=module_name)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_nested(parser, SUBCOMMANDS, "stage")


def run(args: argparse.Namespace) -> int:
    return int(importlib.import_module(args._sub_module).run(args) or 0)
