"""``pleura live``: capture, worker and (unless ``--headless``) the UI under one supervisor.

    pleura live                                   # demo clip, default bundle, page on :7860
    pleura live --source v4l2:///dev/video0 --roi auto
    pleura live --headless --source clip.mp4 --seconds 60 --stats-json stats.json
    pleura live --source a.mp4 --source b.mp4 --headless     # two sources, one worker
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import engines
import stream
from stream.options import add_source_arguments, add_worker_arguments, resolve_bundle
from stream.pipeline import LiveConfig, compose, ui_available
from stream.procutil import install_stop_handler
from stream.stats import RunStats
from stream.supervisor import Supervisor

log = logging.getLogger(__name__)


def demo_clip() -> Path:
    """The bundled demo clip: a real convex-probe clip with B-lines (``stream/demo/
    real-convex-covid.mov``, CC BY 4.0, credited in ``stream/demo/README.md``), since the
    default bundle is trained on real scans; the simulated clips stay as other demo sources."""
    return Path(stream.__file__).parent / "demo" / "real-convex-covid.mov"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", action="append", default=None,
                   help="file, image folder, v4l2:///dev/videoN or stream URL; repeat for "
                        "several sources (default: the demo clip, looped)")
    add_worker_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="UI address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860, help="UI port (default 7860)")
    p.add_argument("--auth", default=None, help="UI USER:PASSWORD (needed for --host 0.0.0.0)")
    p.add_argument("--headless", action="store_true", help="no UI; print / write statistics")
    p.add_argument("--seconds", type=float, default=None, help="stop after this long")
    p.add_argument("--stats-json", default=None, help="write run statistics here at the end")
    p.add_argument("--record", default=None, metavar="DIR",
                   help="record frames (lossless) and results (JSONL) to DIR")
    p.add_argument("--transport", default="ipc", choices=("ipc", "tcp"),
                   help="local sockets between the processes (default ipc)")
    add_source_arguments(p)


def _passthrough(args: argparse.Namespace) -> tuple[tuple[str, ...], tuple[str, ...],
                                                     tuple[str, ...]]:
    src = ["--speed", str(args.speed), "--fps", str(args.fps)]
    if args.loop is not None:
        src.append("--loop" if args.loop else "--no-loop")
    for flag, v in (("--size", args.size), ("--device-fps", args.device_fps),
                    ("--pixel-format", args.pixel_format), ("--roi", args.roi)):
        if v is not None:
            src += [flag, str(v)]
    wrk = ["--backend", args.backend, "--seg", args.seg, "--seg-hz", str(args.seg_hz),
           "--mc-samples", str(args.mc_samples), "--frame-model", args.frame_model,
           "--max-streams", str(args.max_streams), "--stream-idle-s", str(args.stream_idle_s)]
    if args.threads:
        wrk += ["--threads", str(args.threads)]
    ui = ["--host", args.host, "--port", str(args.port)]
    if args.auth:
        ui += ["--auth", args.auth]
    return tuple(src), tuple(wrk), tuple(ui)


def run(args: argparse.Namespace) -> int:
    if args.source is None:
        clip = demo_clip()
        if not clip.exists():
            raise SystemExit(f"pleura live: the demo clip {clip} is missing; pass --source "
                             "FILE|v4l2:///dev/videoN|URL")
        args.source = [str(clip)]
        if args.loop is None:
            args.loop = True
    bundle = resolve_bundle(args.bundle)
    try:  # refuse a broken bundle before starting any process
        engines.load_bundle(bundle)
    except engines.BundleError as exc:
        raise SystemExit(f"pleura live: {exc}") from None
    headless = args.headless
    if not headless and not ui_available():
        log.warning("the UI package is not available; running headless")
        headless = True
    src, wrk, ui = _passthrough(args)
    stop = install_stop_handler()
    with tempfile.TemporaryDirectory(prefix="pleura-") as run_dir:
        cfg = LiveConfig(sources=tuple(args.source), bundle=bundle, transport=args.transport,
                         headless=headless, record=args.record, source_args=src,
                         worker_args=wrk, ui_args=ui, verbose=bool(args.verbose))
        plan = compose(cfg, Path(run_dir))
        stats = RunStats() if (headless or args.stats_json) else None
        sup = Supervisor(plan, stats, headless=headless)
        sup.stop_event = stop
        sup.record_dir = args.record
        if not headless:
            log.info("open http://%s:%d", args.host, args.port)
        rc = sup.run(seconds=args.seconds)
    if stats is not None:
        summary = stats.summary()
        summary["command"] = "pleura live " + " ".join(_argv_echo(args))
        if args.stats_json:
            Path(args.stats_json).write_text(json.dumps(summary, indent=1) + "\n")
            log.info("statistics written to %s", args.stats_json)
        f, lat = summary["frames"], summary["latency_ms"]["end_to_end"]
        if f["processed"]:
            print(f"frames captured {f['captured']} processed {f['processed']} "
                  f"skipped {f['skipped']} ({f['scored_pct']}% scored), {summary['fps']} fps, "
                  f"end-to-end latency p50 {lat['p50']} ms p99 {lat['p99']} ms")
        else:
            print(f"no frame was scored (frames captured: {f['captured']})")
    return rc


def _argv_echo(args: argparse.Namespace) -> list[str]:
    out = []
    for s in args.source:
        out += ["--source", s]
    for k in ("bundle", "backend", "seconds", "speed", "roi", "record"):
        v = getattr(args, k, None)
        if v is not None:
            out += [f"--{k}", str(v)]
    if args.headless:
        out.append("--headless")
    return out
