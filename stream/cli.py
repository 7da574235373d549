"""The single ``pleura`` entry point.

Each subcommand lives in its own module, which exposes ``add_arguments(parser)`` and
``run(args) -> int``. Modules are imported lazily, only for the command being run, so
``pleura live`` never imports torch and ``pleura --help`` stays fast. Training commands
live in ``train/`` and need the ``[train]`` extra; a missing extra gets a clear message.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# name -> (module, one-line help). The one place that lists what `pleura` can do.
COMMANDS: dict[str, tuple[str, str]] = {
    "bench": ("benchmarks.cli", "measure decode, models, latency and scaling vs a naive baseline"),
    "synth": ("train.synth.cli", "write a simulated LUS dataset (videos, labels, masks)"),
    "ui": ("ui.cli", "serve the web page alone, against a worker's result/control addresses"),
    "export": ("train.export", "export trained runs to a verified model bundle (ONNX + manifest)"),
    "build-engine": ("engines.cli_build", "build/cache TensorRT plans of a bundle on this GPU"),
    "score": ("stream.score", "score video files/folders offline, as fast as possible"),
    "exam": ("stream.exam.cli", "score a folder of zone-named clips: patient LUS score + report"),
    "live": ("stream.cli_live", "live scoring: capture, worker and UI under a supervisor"),
    "capture": ("stream.capture", "capture process alone: source -> frames on a ZeroMQ address"),
    "worker": ("stream.worker", "worker process alone: frames -> models -> results address"),
    "serve": ("stream.serve", "deploy the scoring models on a Ray cluster (the [serve] extra)"),
    "train": ("train.cli_train", "train a stage: pleura train frame|video|seg ..."),
    "eval": ("train.cli_eval", "evaluate a stage: pleura eval frame|video|seg ..."),
    "adapt": ("train.real.adapt", "adapt a real-scan bundle to a new site from unlabelled clips"),
}

_TRAIN_EXTRA_HINT = (
    "this command needs the training extra: pip install 'pleura[train]' "
    "(torch per the README)"
)


def _load(module_name: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:  # a missing optional dependency, not a bug
        if exc.name and exc.name.split(".")[0] in {"torch", "torchvision", "onnx",
                                                   "segmentation_models_pytorch",
                                                   "albumentations", "matplotlib"}:
            raise SystemExit(f"pleura: {_TRAIN_EXTRA_HINT} (missing module {exc.name!r})") from None
        raise


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pleura",
        description="Real-time lung-ultrasound scoring (Roy et al., IEEE TMI 2020). "
        "Research software, not a medical device.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    wanted = None
    if argv:
        wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        # Only the chosen command's module is imported (others may need extras).
        if name == wanted:
            _load(module_name).add_arguments(p)
            p.set_defaults(_module=module_name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    module = _load(args._module)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
