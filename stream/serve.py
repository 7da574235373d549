"""``pleura serve``: deploy the scoring application on a Ray cluster (the ``[serve]`` extra).

::

    pleura serve --bundle B [--replicas N] [--max-batch 16] [--batch-wait-ms 5] [--threads T]
                 [--num-gpus G] [--address ADDR | --local-cpus C]

joins the Ray cluster at ``--address`` (``ray start --head`` on this or another node; ``auto``:
the one this machine runs) or, with ``--local-cpus C``, starts a private single-node one with C
CPUs; deploys :class:`engines.serve.ScoringReplica` with N replicas (each ``--threads`` ONNX
Runtime threads on CPU, or TensorRT / CUDA when ``--num-gpus`` gives it a GPU); prints the
address workers pass as ``pleura worker --backend ray --serve-address ADDR``; and keeps the
application up until Ctrl-C / SIGTERM, when it deletes it (and stops a private cluster).
Scaling out later is ``pleura serve`` again with another ``--replicas`` (Serve updates the
running application in place). See ``docs/scale-out.md``.
"""

from __future__ import annotations

import argparse
import logging
import threading
from typing import Any

from engines.serve import APP_NAME, ServeConfig, import_ray, replica_actor_names
from stream.lifecycle import install_stop_handler
from stream.options import resolve_bundle

log = logging.getLogger("pleura.serve")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", default=None, help="model bundle folder (default: the bundled "
                   "one); the same path must hold it on every node that runs a replica")
    p.add_argument("--replicas", type=int, default=1, help="replicas (one engine each)")
    p.add_argument("--max-batch", type=int, default=16, help="most frames per engine run, "
                   "merged across all callers (serve.batch)")
    p.add_argument("--batch-wait-ms", type=float, default=5.0,
                   help="longest wait for more frames before a partial batch runs")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per replica")
    p.add_argument("--num-cpus", type=float, default=None,
                   help="CPUs Ray reserves per replica (default: --threads)")
    p.add_argument("--num-gpus", type=float, default=0.0,
                   help="GPUs per replica (0: CPU; 0.5: two replicas share a GPU)")
    p.add_argument("--backend", default="auto", choices=("auto", "onnxruntime", "tensorrt"),
                   help="engine on each replica (auto: TensorRT / CUDA where it has a GPU)")
    p.add_argument("--app-name", default=APP_NAME, help="Serve application name")
    p.add_argument("--detach", action="store_true",
                   help="deploy, print the address and exit, leaving the application running "
                        "(on a cluster started with `ray start`; `serve shutdown` removes it)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--address", default=None,
                       help="Ray cluster to join: auto, HOST:6379 (default: auto if a cluster "
                            "runs here, else a private one)")
    where.add_argument("--local-cpus", type=int, default=None,
                       help="start a private single-node cluster with this many CPUs")


def _config(args: argparse.Namespace) -> ServeConfig:
    return ServeConfig(bundle=resolve_bundle(args.bundle), replicas=args.replicas,
                       max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms,
                       threads=args.threads, num_cpus=args.num_cpus, num_gpus=args.num_gpus,
                       backend=args.backend, app_name=args.app_name)


def _join(ray, args: argparse.Namespace) -> str:
    """Connect to (or start) the cluster; returns the address workers should use."""
    quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    if args.local_cpus is not None:
        ray.init(num_cpus=args.local_cpus, include_dashboard=False, **quiet)
    else:
        try:
            ray.init(address=args.address or "auto", **quiet)
        except ConnectionError:
            if args.address:
                raise
            log.info("no Ray cluster runs here; starting a private one")
            ray.init(include_dashboard=False, **quiet)
    return ray.get_runtime_context().gcs_address


def run(args: argparse.Namespace) -> int:
    try:
        ray, serve = import_ray()
    except ImportError as exc:
        print(f"pleura serve: {exc}")
        return 2
    try:
        cfg = _config(args)
    except ValueError as exc:
        print(f"pleura serve: {exc}")
        return 2
    if args.detach and args.local_cpus is not None:
        print("pleura serve: --detach needs a cluster that outlives this command (`ray start "
              "--head`, then --address auto), not --local-cpus")
        return 2
    try:
        address = _join(ray, args)
    except ConnectionError as exc:
        print(f"pleura serve: cannot join the Ray cluster at {args.address} ({exc}); start "
              "one with `ray start --head` or use --local-cpus N")
        return 2
    stop = install_stop_handler()  # after ray.init, which sets its own SIGTERM handler
    try:
        from engines.serve import deploy

        deploy(cfg)
        print(f"pleura serve: {cfg.replicas} replica(s) of {cfg.app_name!r} "
              f"({len(replica_actor_names(cfg.app_name))} running) ready; workers: pleura "
              f"worker --backend ray --serve-address {address}", flush=True)
        if args.detach:
            return 0
        _wait(stop)
    finally:
        if not args.detach:
            serve.delete(cfg.app_name)
        ray.shutdown()
    return 0


def _wait(stop: threading.Event) -> None:
    while not stop.wait(1.0):
        pass
