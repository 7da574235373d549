"""``pleura ui``: serve the page alone, against a worker's result / control addresses.

    pleura ui --results tcp://gpu-box:5556 --control tcp://gpu-box:5557 --port 7860

Binds 127.0.0.1 unless ``--host`` says otherwise, and then only with ``--auth user:password``
(or ``PLEURA_AUTH``) and TLS (``--tls-cert FILE --tls-key FILE``; ``--allow-plain-http`` accepts
the login in clear text). Requests for another host name than loopback, an IP address, ``--host``
or an ``--allowed-host`` get 421 (:mod:`ui.httpguard`). ``--config FILE`` reads the ``[ui]`` section
(:class:`stream.config.UiConfig`); flags override it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from stream.config import UiConfig
from stream.options import add_config_argument, add_flags, process_config
from ui.result_feed import check_address
from ui.safety import SafetyError, check_exposure, check_transport, resolve_auth

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` (its ``[ui]`` section) and one flag per field of
    :class:`stream.config.UiConfig`."""
    add_config_argument(parser)
    add_flags(parser, UiConfig)


def run(args: argparse.Namespace) -> int:
    try:
        cfg = process_config(UiConfig, args)
        auth = resolve_auth(cfg.auth)
        check_exposure(cfg.host, cfg.share, auth)
        check_transport(cfg.host, auth, cfg.tls_cert, cfg.tls_key, cfg.allow_plain_http)
        check_address(cfg.results_addr, "results")
        for a in cfg.control_addrs:
            check_address(a, "control")
    except (SafetyError, ValueError) as exc:  # ConfigError is a ValueError
        print(f"pleura ui: {exc}", file=sys.stderr)
        return 2
    from ui.app import serve  # gradio is slow to import: only after the checks pass

    try:
        serve(cfg.results_addr, list(cfg.control_addrs) or None, host=cfg.host, port=cfg.port,
              auth=auth, bundle_info=str(cfg.bundle or "default"), share=cfg.share,
              bundle=cfg.bundle, backend=cfg.backend,
              demo_dir=Path(cfg.demo_dir) if cfg.demo_dir else None,
              control_bind=cfg.control_bind, tls_cert=cfg.tls_cert, tls_key=cfg.tls_key,
              allow_plain_http=cfg.allow_plain_http, allowed_hosts=cfg.allowed_hosts,
              block=True)
    except OSError as exc:  # port taken, address not available
        print(f"pleura ui: cannot serve on {cfg.host}:{cfg.port}: {exc} "
              "(pick another --port)", file=sys.stderr)
        return 2
    except ValueError as exc:  # a malformed --results / --control address
        print(f"pleura ui: {exc}", file=sys.stderr)
        return 2
    return 0
