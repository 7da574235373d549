"""``pleura live``: capture, worker and (unless ``--headless``) the UI under one supervisor.

    pleura live                                   # demo clip, default bundle, page on :7860
    pleura live --source v4l2:///dev/video0 --roi auto
    pleura live --headless --source clip.mp4 --seconds 60 --stats-json stats.json
    pleura live --source a.mp4 --source b.mp4 --headless     # two sources, one worker
    pleura live --config pleura.toml --seg off    # a config file; every flag overrides it

The config file (TOML or JSON; documented example: ``stream/pleura.example.toml``) has one
section per stage (:mod:`stream.config`); ``--print-config`` prints the one in force.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import engines
import stream
from stream.config import (
    CaptureSettings,
    ConfigError,
    LiveSettings,
    PleuraConfig,
    UiSettings,
    WorkerSettings,
)
from stream.configfile import dumps_toml, to_dict
from stream.lifecycle import install_stop_handler
from stream.options import add_config_argument, add_flags, live_config, resolve_bundle
from stream.pipeline import compose, ui_available
from stream.stats import RunStats
from stream.supervisor import Supervisor

log = logging.getLogger(__name__)


def demo_clip() -> Path:
    """The bundled demo clip: a real convex-probe clip with B-lines (``stream/demo/
    real-convex-covid.mov``, CC BY 4.0, credited in ``stream/demo/README.md``), since the
    default bundle is trained on real scans; the simulated clips stay as other demo sources."""
    return Path(stream.__file__).parent / "demo" / "real-convex-covid.mov"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``--config FILE`` and one flag per option of every section (:mod:`stream.config`)."""
    add_config_argument(p)
    p.add_argument("--print-config", action="store_true",
                   help="print the config (file, then flags, then defaults) as TOML and exit")
    add_flags(p, LiveSettings)
    add_flags(p, CaptureSettings, title="capture ([capture] in --config)")
    add_flags(p, WorkerSettings, title="worker ([worker] in --config)")
    add_flags(p, UiSettings, title="page ([ui] in --config)")


def resolve(cfg: PleuraConfig) -> PleuraConfig:
    """The demo clip (looped) when no source is given, the bundle folder checked and resolved,
    headless when the UI package is missing.

    Raises:
        SystemExit: a missing demo clip or a bundle that does not load.
    """
    live, capture = cfg.live, cfg.capture
    if not live.sources:
        clip = demo_clip()
        if not clip.exists():
            raise SystemExit(f"pleura live: the demo clip {clip} is missing; pass --source "
                             "FILE|v4l2:///dev/videoN|URL")
        live = replace(live, sources=(str(clip),))
        if capture.loop is None:
            capture = replace(capture, loop=True)
    bundle = resolve_bundle(cfg.worker.bundle)
    try:  # refuse a broken bundle before starting any process
        engines.load_bundle(bundle)
    except engines.BundleError as exc:
        raise SystemExit(f"pleura live: {exc}") from None
    if not live.headless and not ui_available():
        log.warning("the UI package is not available; running headless")
        live = replace(live, headless=True)
    return replace(cfg, live=live, capture=capture, worker=replace(cfg.worker, bundle=bundle))


def printable_config(cfg: PleuraConfig) -> str:
    """``--print-config``'s TOML: the config in force, the login's password left out (the
    ``auth`` key becomes a comment naming the user, so the output still loads as a config)."""
    data = to_dict(cfg)
    auth = data["ui"].pop("auth", None)
    text = dumps_toml(data)
    if auth is not None:
        masked = json.dumps(auth.partition(":")[0] + ":...")  # escaped: no line break gets out
        text = text.replace("[ui]\n", f"[ui]\n# auth = {masked} is set; the password is not "
                            "printed (give it with --auth or PLEURA_AUTH)\n", 1)
    return text


def redacted(cfg: PleuraConfig) -> dict:
    """``to_dict(cfg)`` with the login's password replaced by ``***`` (for the stats JSON)."""
    data = to_dict(cfg)
    if "auth" in data["ui"]:
        data["ui"]["auth"] = data["ui"]["auth"].partition(":")[0] + ":***"
    return data


def run(args: argparse.Namespace) -> int:
    try:
        cfg = live_config(args)
    except ConfigError as exc:
        raise SystemExit(f"pleura live: {exc}") from None
    if args.print_config:
        print(printable_config(cfg), end="")
        return 0
    cfg = resolve(cfg)
    live = cfg.live
    stop = install_stop_handler()
    with tempfile.TemporaryDirectory(prefix="pleura-") as run_dir:
        try:
            plan = compose(cfg, Path(run_dir), verbose=bool(args.verbose))
        except ValueError as exc:
            raise SystemExit(f"pleura live: {exc}") from None
        stats = RunStats() if (live.headless or live.stats_json) else None
        sup = Supervisor(plan, stats, headless=live.headless)
        sup.stop_event = stop
        sup.record_dir = live.record
        if not live.headless:
            log.info("open http://%s:%d", cfg.ui.host, cfg.ui.port)
        rc = sup.run(seconds=live.seconds)
    if stats is not None:
        _report(stats, cfg)
    return rc


def _report(stats: RunStats, cfg: PleuraConfig) -> None:
    """Print the run's summary; write it (with the command and the config) to ``stats_json``."""
    summary = stats.summary()
    summary["command"] = "pleura " + shlex.join(sys.argv[1:])
    summary["config"] = redacted(cfg)
    if cfg.live.stats_json:
        Path(cfg.live.stats_json).write_text(json.dumps(summary, indent=1) + "\n")
        log.info("statistics written to %s", cfg.live.stats_json)
    f, lat = summary["frames"], summary["latency_ms"]["end_to_end"]
    if f["processed"]:
        print(f"frames captured {f['captured']} processed {f['processed']} "
              f"skipped {f['skipped']} ({f['scored_pct']}% scored), {summary['fps']} fps, "
              f"end-to-end latency p50 {lat['p50']} ms p99 {lat['p99']} ms")
    else:
        print(f"no frame was scored (frames captured: {f['captured']})")
