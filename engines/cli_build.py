"""``pleura build-engine BUNDLE [--fp16]``: build and cache the TensorRT plans of a bundle.

Runs on the target GPU machine (no torch needed). Missing plans are built, stale ones (another
GPU, TensorRT version, ONNX file or precision) rebuilt, fresh ones kept unless ``--force``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from engines.backends import gpu_available
from engines.bundle import default_bundle_path, load_bundle

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", nargs="?", type=Path, default=None,
                        help="bundle folder (default: the bundle shipped with pleura)")
    parser.add_argument("--fp16", action="store_true", help="allow FP16 kernels (TensorRT 10)")
    parser.add_argument("--max-batch", type=int, default=16,
                        help="largest batch of the optimisation profile (default 16)")
    parser.add_argument("--plan-dir", type=Path, default=None,
                        help="where plans go (default BUNDLE/plans, or ~/.cache/pleura/plans "
                             "when the bundle is read-only)")
    parser.add_argument("--force", action="store_true", help="rebuild fresh plans too")


def run(args: argparse.Namespace) -> int:
    bundle = load_bundle(args.bundle or default_bundle_path())
    if not gpu_available():
        raise SystemExit("pleura build-engine: no NVIDIA GPU visible (nvidia-smi / driver); "
                         "TensorRT plans are built on the GPU that will run them. On this "
                         "machine use --backend onnxruntime.")
    from engines.backends.tensorrt import DEFAULT_MAX_BATCH, default_plan_dir, ensure_plans

    plan_dir = args.plan_dir or default_plan_dir(bundle.path)
    if args.force:
        for p in plan_dir.glob("*.plan"):
            p.unlink()
    try:
        plans = ensure_plans(bundle, fp16=args.fp16, max_batch=args.max_batch or
                             DEFAULT_MAX_BATCH, plan_dir=plan_dir, build=True,
                             rebuild_stale=True)
    except RuntimeError as exc:
        raise SystemExit(f"pleura build-engine: {exc}") from None
    for onnx, plan in plans.items():
        print(f"{onnx.name} -> {plan}")
    return 0
