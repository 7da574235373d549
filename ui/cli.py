"""``pleura ui``: serve the page alone, against a worker's result / control addresses.

    pleura ui --results tcp://gpu-box:5556 --control tcp://gpu-box:5557 --port 7860

Binds 127.0.0.1 unless ``--host`` says otherwise, and then only with ``--auth user:password``
(or ``PLEURA_AUTH``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ui.results import check_address
from ui.safety import AUTH_ENV, SafetyError, check_exposure, resolve_auth

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", required=True, metavar="ADDR",
                        help="worker RESULT address to subscribe to, e.g. tcp://127.0.0.1:5556")
    parser.add_argument("--control", action="append", default=None, metavar="ADDR",
                        help="CONTROL address for the buttons (reset, pause, source, ...); "
                        "repeat to reach several (e.g. a stand-alone worker and capture)")
    parser.add_argument("--control-bind", action="store_true",
                        help="bind the control address instead of connecting to it")
    add_server_arguments(parser)
    parser.add_argument("--bundle", default=None,
                        help="model bundle for the offline report (default: the shipped one)")
    parser.add_argument("--backend", default="auto",
                        help="engine backend for the offline report (auto|onnxruntime|tensorrt)")
    parser.add_argument("--demo-dir", type=Path, default=None,
                        help="folder of demo clips offered as sources (default: stream/demo)")


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """``--host --port --auth --share``; shared with ``pleura live``."""
    parser.add_argument("--host", default="127.0.0.1",
                        help="bind address of the page (default 127.0.0.1; anything else "
                        "needs --auth)")
    parser.add_argument("--port", type=int, default=7860, help="port of the page (default 7860)")
    parser.add_argument("--auth", default=None, metavar="USER:PASSWORD",
                        help=f"require a login (or set {AUTH_ENV}=user:password)")
    parser.add_argument("--share", action="store_true",
                        help="create a public Gradio share link (needs --auth)")


def run(args: argparse.Namespace) -> int:
    try:
        auth = resolve_auth(args.auth)
        check_exposure(args.host, args.share, auth)
        check_address(args.results, "results")
        for a in args.control or ():
            check_address(a, "control")
    except (SafetyError, ValueError) as exc:
        print(f"pleura ui: {exc}", file=sys.stderr)
        return 2
    from ui.app import serve  # gradio is slow to import: only after the checks pass

    try:
        serve(args.results, args.control, host=args.host, port=args.port, auth=auth,
              bundle_info=str(args.bundle or "default"), share=args.share, bundle=args.bundle,
              backend=args.backend, demo_dir=args.demo_dir, control_bind=args.control_bind,
              block=True)
    except OSError as exc:  # port taken, address not available
        print(f"pleura ui: cannot serve on {args.host}:{args.port}: {exc} "
              "(pick another --port)", file=sys.stderr)
        return 2
    except ValueError as exc:  # a malformed --results / --control address
        print(f"pleura ui: {exc}", file=sys.stderr)
        return 2
    return 0
