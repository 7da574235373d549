"""An *untrained* Reg-STN bundle for speed measurements (needs torch and ``train/``).

Speed does not depend on the weights, so until (or without) a trained bundle, ``pleura bench
--untrained`` measures the real architecture exported by the project's own exporter
(:func:`train.export.export_bundle`: ONNX, parity check, int8 QDQ quantisation, manifest).
Its scores mean nothing; its baselines rebuild the same network with the same (random)
weights from ``frame.onnx`` (:mod:`benchmarks.rebuild`).

    python -m benchmarks.devbundle OUT [--no-int8] [--seg unet,unetpp,deeplabv3p]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def make_untrained_bundle(out: str | Path, int8: bool = True, seg: Sequence[str] = ("unet",),
                          seed: int = 0) -> Path:
    """Export ``reg-stn`` (+ the ``seg`` members) with fresh random weights into ``out``, as
    ``pleura export`` does (:class:`train.frame.export_wrapper.FrameExportWrapper`).

    Args:
        out: bundle folder (created).
        int8: also write the static int8 frame model (calibrated on simulated frames).
        seg: segmentation architectures (``train.seg.models.ARCHITECTURES`` names).

    Returns:
        ``out``, a bundle that :func:`engines.load_bundle` verifies.
    """
    import torch

    from train.export import SegRun, export_bundle
    from train.frame.export_wrapper import FrameExportWrapper
    from train.frame.models.registry import build_model
    from train.seg.models import build_model as build_seg

    torch.manual_seed(seed)
    # wrapped as `pleura export` wraps a frame run: crop 2's classifier is not exported
    frame = FrameExportWrapper(build_model("reg-stn"))
    members = [SegRun(a, build_seg(a), arch=a) for a in seg]
    cmd = f"python -m benchmarks.devbundle {out}" + ("" if int8 else " --no-int8") + \
        f" --seg {','.join(seg)}"
    export_bundle(out, frame, seg=members, uninorm_e=[0.5] * 4, int8=int8,
                  name="untrained-reg-stn", commands=[cmd], seed=seed,
                  training={"data": "none: untrained weights, for speed measurements only",
                            # the bench's baselines rebuild this network from frame.onnx
                            "frame_model": "reg-stn"})
    return Path(out)


def resolve_bundle(args: Any, tmp: Path) -> Path:
    """The bundle a ``pleura bench`` run measures: ``--dummy`` (a tiny test bundle),
    ``--untrained`` (exported here, in a child process), ``--bundle DIR``, or the default one.

    Raises:
        SystemExit: no bundle there, or the untrained export failed (the message says why).
    """
    import engines

    if args.dummy:
        from engines.testing import make_dummy_bundle

        return make_dummy_bundle(tmp / "dummy-bundle")
    if args.untrained:  # in a child process: this one never imports torch
        import subprocess

        out = tmp / "untrained-bundle"
        logging.getLogger("pleura.bench").info("exporting an untrained Reg-STN bundle (torch, "
                                                "child process)")
        root = str(Path(__file__).resolve().parents[1])  # benchmarks/ sits in the checkout
        proc = subprocess.run([sys.executable, "-m", "benchmarks.devbundle", str(out)], cwd=root,
                              capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": root})
        if proc.returncode != 0:
            raise SystemExit(f"pleura bench: --untrained export failed: {proc.stderr[-1500:]}")
        return out
    path = args.bundle or engines.default_bundle_path()
    if not (path / "manifest.json").is_file():
        raise SystemExit(f"pleura bench: no bundle at {path}; pass --bundle DIR (make one with "
                         f"`pleura export RUN --out DIR`) or --dummy to exercise the tool")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.devbundle", description=__doc__)
    p.add_argument("out", type=Path)
    p.add_argument("--no-int8", action="store_true")
    p.add_argument("--seg", default="unet", help="comma-separated seg members ('' for none)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    make_untrained_bundle(a.out, int8=not a.no_int8, seg=[s for s in a.seg.split(",") if s])
    print(a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
