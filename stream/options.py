"""Command-line flags shared by ``pleura live`` and the single-process commands."""

from __future__ import annotations

import argparse
from pathlib import Path

import engines
from stream.sources import SourceOptions
from stream.streamtable import DEFAULT_IDLE_S, DEFAULT_MAX_STREAMS


def add_source_arguments(p: argparse.ArgumentParser) -> None:
    """Source flags shared by ``pleura capture`` and ``pleura live``."""
    p.add_argument("--loop", action=argparse.BooleanOptionalAction, default=None,
                   help="files: start again at the end (default: on for the demo clip)")
    p.add_argument("--speed", type=float, default=1.0, help="files: playback speed factor")
    p.add_argument("--fps", type=float, default=30.0, help="image folders: frames per second")
    p.add_argument("--size", default=None, help="capture card: WxH, e.g. 1920x1080")
    p.add_argument("--device-fps", type=float, default=None, help="capture card: frame rate")
    p.add_argument("--pixel-format", default=None, help="capture card: e.g. mjpeg, yuyv422")
    p.add_argument("--roi", default=None,
                   help="scan-region crop: auto | off | x,y,w,h (default: auto for live "
                        "sources, off for files)")


def source_options(args: argparse.Namespace) -> SourceOptions:
    return SourceOptions(loop=bool(args.loop), speed=args.speed, fps=args.fps, size=args.size,
                         device_fps=args.device_fps, pixel_format=args.pixel_format)


def add_worker_arguments(p: argparse.ArgumentParser) -> None:
    """Model flags shared by ``pleura worker`` and ``pleura live``."""
    p.add_argument("--bundle", default=None, help="model bundle folder (default: the bundled one)")
    p.add_argument("--backend", default="auto", choices=("auto", "onnxruntime", "tensorrt"))
    p.add_argument("--threads", type=int, default=None, help="frame-model CPU threads")
    p.add_argument("--seg", default="auto", choices=("auto", "lane", "inline", "off"),
                   help="segmentation: inline every frame (GPU), a rate-limited lane (CPU), off")
    p.add_argument("--seg-hz", type=float, default=2.0, help="segmentation lane rate")
    p.add_argument("--mc-samples", type=int, default=0, help="MC-dropout passes (uncertainty)")
    p.add_argument("--frame-model", default="auto", choices=("auto", "fp32", "int8"),
                   help="ONNX Runtime frame model: the bundle's CPU default, fp32 or int8")
    p.add_argument("--max-streams", type=_positive_int, default=DEFAULT_MAX_STREAMS,
                   help="most streams whose state the worker holds; the least recently seen "
                        f"is forgotten first (default {DEFAULT_MAX_STREAMS})")
    p.add_argument("--stream-idle-s", type=_positive_float, default=DEFAULT_IDLE_S,
                   help="the worker forgets a stream silent for this long "
                        f"(default {DEFAULT_IDLE_S:.0f} s)")


def _positive_int(v: str) -> int:
    n = int(v)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def _positive_float(v: str) -> float:
    x = float(v)
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
    return x


def resolve_bundle(path: str | None) -> str:
    """The bundle folder to use; a missing default bundle gets a message saying what to do.

    Raises:
        SystemExit: when the bundle folder does not exist.
    """
    p = Path(path) if path else engines.default_bundle_path()
    if not (p / "manifest.json").exists():
        what = "the default bundle" if path is None else "bundle"
        raise SystemExit(f"pleura: {what} {p} not found (no manifest.json). Train and export "
                         "one (`pleura train frame ...` then `pleura export RUN --out DIR`) and "
                         "pass --bundle DIR, or reinstall pleura with its bundled model.")
    return str(p)
