"""The Ray Serve application: the stateless per-frame part of scoring, on replicas.

``pleura serve --bundle B --replicas N`` deploys :class:`ScoringReplica` (``ray[serve]``, the
``pleura[serve]`` extra) as the Serve application :data:`APP_NAME`. A replica holds one
:class:`~engines.base.Engine` of the bundle (``engines.create_engine``: ONNX Runtime on CPU,
TensorRT or ONNX Runtime CUDA where the replica was given a GPU) and answers:

- ``frame(x)``: (B, 3, 224, 224) float32 preprocessed frames -> ``{"probs", "theta1",
  "theta2", "findings"}`` numpy arrays (:class:`~engines.base.FrameOutput` fields) and
  ``"replica"`` (the answering replica's pid) and ``"merged"`` (frames in the engine run
  this call was part of). Calls from
  every caller (workers, ``pleura score``) are merged by ``serve.batch`` (dynamic batching:
  up to ``max_batch`` *frames* per engine run, waiting at most ``batch_wait_ms`` for more).
- ``segment(x, mc_samples)``: the segmentation ensemble (:class:`~engines.base.SegOutput`
  fields), not batched (it runs at the worker's segmentation-lane rate).
- ``info()``: the replica's backend, device, bundle name and frame-model sha256, so a caller
  can refuse an application that serves another model than its own bundle.

Per-stream state (running uninorm, findings summary, recorder) never lives here: it stays in
the worker (:class:`engines.backends.ray.RayEngine` is the client), so a replica can die
without losing a stream's video score. ``ray`` is imported only inside the functions that
need it: this module imports without it (the bedside runtime never needs Ray).
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

APP_NAME = "pleura"
"""Serve application name that ``pleura serve`` deploys and :class:`RayEngine` calls."""
DEPLOYMENT_NAME = "PleuraScorer"
NAMESPACE = "serve"
"""Ray namespace of Serve's actors (the replicas are ``SERVE_REPLICA::pleura#PleuraScorer#…``)."""

INSTALL_HINT = ("Ray Serve is not installed; install the serve extra: pip install "
                "'pleura[serve]' (ray[serve] 2.x), or use --backend onnxruntime")


def import_ray():
    """``(ray, ray.serve)``, or an ImportError that says how to install them."""
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} ({exc})") from None
    return ray, serve


@dataclass(frozen=True)
class ServeConfig:
    """How ``pleura serve`` deploys the application.

    Attributes:
        bundle: bundle folder, readable at the same path on every node that runs a replica.
        replicas: number of replicas (each one engine).
        max_batch: most frames per engine run (``serve.batch`` counts frames, not calls).
        batch_wait_ms: longest wait for more frames before a partial batch runs.
        threads: ONNX Runtime intra-op threads per replica.
        num_cpus: CPUs Ray reserves per replica (default: ``threads``).
        num_gpus: GPUs per replica (0: CPU replicas; e.g. 0.5 puts two replicas on one GPU).
        backend: engine backend on the replica (``auto``: TensorRT / CUDA on a GPU replica).
        app_name: Serve application name.
    """

    bundle: str
    replicas: int = 1
    max_batch: int = 16
    batch_wait_ms: float = 5.0
    threads: int = 1
    num_cpus: float | None = None
    num_gpus: float = 0.0
    backend: str = "auto"
    app_name: str = APP_NAME
    extra_actor_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.replicas < 1 or self.max_batch < 1 or self.threads < 1:
            raise ValueError("--replicas, --max-batch and --threads must be >= 1, got "
                             f"{self.replicas}, {self.max_batch}, {self.threads}")
        if self.batch_wait_ms < 0 or self.num_gpus < 0 or (self.num_cpus or 0) < 0:
            raise ValueError("--batch-wait-ms, --num-gpus and --num-cpus must be >= 0")
        if self.backend == "ray":
            raise ValueError("a replica cannot use the ray backend itself; use auto, "
                             "onnxruntime or tensorrt")

    def actor_options(self) -> dict[str, Any]:
        """``ray_actor_options`` of each replica (CPUs, GPUs, the engine's thread count)."""
        opts: dict[str, Any] = {"num_cpus": self.threads if self.num_cpus is None
                                else self.num_cpus}
        if self.num_gpus:
            opts["num_gpus"] = self.num_gpus
        env = {"OMP_NUM_THREADS": str(self.threads)}
        opts["runtime_env"] = {"env_vars": env}
        opts.update(self.extra_actor_options)
        return opts


def frame_outputs(out: Any) -> dict[str, np.ndarray | None]:
    """A :class:`~engines.base.FrameOutput` as the dict a replica returns."""
    return {"probs": out.probs, "theta1": out.theta1, "theta2": out.theta2,
            "findings": out.findings}


def split_rows(out: dict[str, np.ndarray | None], sizes: list[int]) -> list[dict]:
    """Cut a merged batch's outputs back into the callers' batches (``sizes`` rows each)."""
    parts, start = [], 0
    for n in sizes:
        parts.append({k: None if v is None else v[start:start + n] for k, v in out.items()})
        start += n
    return parts


def run_chunked(fn, x: np.ndarray, max_batch: int) -> dict[str, np.ndarray | None]:
    """``frame_outputs(fn(x))`` in chunks of at most ``max_batch`` rows (TensorRT profiles
    accept at most their max batch), concatenated back."""
    chunks = [frame_outputs(fn(x[i:i + max_batch])) for i in range(0, len(x), max_batch)]
    if len(chunks) == 1:
        return chunks[0]
    return {k: None if chunks[0][k] is None else np.concatenate([c[k] for c in chunks])
            for k in chunks[0]}


class ScoringReplica:
    """One Serve replica: a bundle on an engine behind ``serve.batch`` (see the module doc).

    The engine runs on one dedicated thread (engines are not thread-safe), off the replica's
    event loop, so new calls keep queueing into the next batch while one batch runs.

    Args:
        cfg: the deployment's :class:`ServeConfig` as a dict (Ray ships it to every replica).
    """

    def __init__(self, cfg: dict[str, Any]) -> None:
        _, serve = import_ray()
        import engines
        from engines.bundle import sha256_file

        self.cfg = ServeConfig(**cfg)
        trt = {} if self.cfg.backend == "onnxruntime" else {  # the TensorRT profile's batch
            "max_batch": max(16, self.cfg.max_batch)}  # >= 16: MC-dropout runs 16 passes a call
        self.engine = engines.create_engine(self.cfg.bundle, backend=self.cfg.backend,
                                            threads=self.cfg.threads, **trt)
        bundle = self.engine.bundle if hasattr(self.engine, "bundle") else \
            engines.load_bundle(self.cfg.bundle)
        self._info = {"backend": getattr(self.engine, "backend", "?"),
                      "device": getattr(self.engine, "device", "cpu"),
                      "bundle": bundle.name, "frame_sha256": sha256_file(bundle.frame_file),
                      "pid": os.getpid(), "max_batch": self.cfg.max_batch,
                      "batch_wait_ms": self.cfg.batch_wait_ms}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pleura-engine")
        self._batched = serve.batch(max_batch_size=self.cfg.max_batch,
                                    batch_wait_timeout_s=self.cfg.batch_wait_ms / 1000.0,
                                    batch_size_fn=_frames_in)(self._frame_batch)
        self.batches = 0
        log.info("replica %d: %s on %s (%s)", os.getpid(), bundle.name, self._info["backend"],
                 self._info["device"])

    async def _frame_batch(self, xs: list[np.ndarray]) -> list[dict]:
        """One engine run over every queued call's frames; each caller gets its rows back."""
        sizes = [len(x) for x in xs]
        merged = xs[0] if len(xs) == 1 else np.concatenate(xs, axis=0)
        loop = asyncio.get_running_loop()
        out = await loop.run_in_executor(self._pool, run_chunked, self.engine.frame, merged,
                                         self.cfg.max_batch)
        self.batches += 1
        return [{**part, "replica": self._info["pid"], "merged": len(merged)}
                for part in split_rows(out, sizes)]

    async def frame(self, x: np.ndarray) -> dict[str, np.ndarray | None]:
        """(B, 3, H, W) float32 -> FrameOutput fields; batched with other callers' frames."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 4 or x.shape[0] == 0:
            raise ValueError(f"frame input must be (B, C, H, W) float32 with B >= 1, got "
                             f"{x.shape}; make it with engines.preprocess.preprocess_batch")
        return await self._batched(x)

    async def segment(self, x: np.ndarray, mc_samples: int = 0) -> dict[str, np.ndarray | None]:
        """(B, 1, H, W) float32 -> ``{"probs", "std"}`` (SegOutput fields); not batched."""
        loop = asyncio.get_running_loop()
        out = await loop.run_in_executor(self._pool, self.engine.segment, x, int(mc_samples))
        return {"probs": out.probs, "std": out.std}

    async def has_segmentation(self) -> bool:
        return bool(self.engine.has_segmentation())

    async def info(self) -> dict[str, Any]:
        """Backend, device, bundle name, frame-model sha256, pid, batching settings."""
        return {**self._info, "batches": self.batches}


def _frames_in(items: list[np.ndarray]) -> int:
    """``serve.batch``'s batch size: frames, not calls (a worker call carries one per stream)."""
    return int(sum(len(x) for x in items))


def build_app(cfg: ServeConfig):
    """The bound Serve application of :class:`ScoringReplica` for ``serve.run``."""
    _, serve = import_ray()
    deployment = serve.deployment(
        ScoringReplica, name=DEPLOYMENT_NAME, num_replicas=cfg.replicas,
        ray_actor_options=cfg.actor_options(),
        max_ongoing_requests=max(8, 2 * cfg.max_batch),  # enough queued calls to fill a batch
        health_check_period_s=2.0, health_check_timeout_s=10.0,
        graceful_shutdown_timeout_s=2.0)
    return deployment.bind(asdict(cfg))


def app_builder(args: dict[str, Any]):
    """Serve's application builder: ``serve run engines.serve:app_builder bundle=DIR
    replicas=2`` or a KubeRay ``RayService`` with ``import_path: engines.serve:app_builder``
    and these ``args`` (values may be strings, as ``serve run`` passes them).

    Raises:
        ValueError: an unknown key or a value of the wrong type, naming it.
    """
    types = {"replicas": int, "max_batch": int, "threads": int, "batch_wait_ms": float,
             "num_cpus": float, "num_gpus": float, "bundle": str, "backend": str,
             "app_name": str}
    unknown = set(args) - set(types)
    if unknown or "bundle" not in args:
        raise ValueError(f"serve args: need bundle, may have {sorted(types)}; got "
                         f"{sorted(args)}")
    try:
        cfg = ServeConfig(**{k: types[k](v) for k, v in args.items()})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"serve args {args}: {exc}") from None
    return build_app(cfg)


def deploy(cfg: ServeConfig):
    """Deploy (or update) the application on the connected Ray cluster; returns its handle
    once every replica is up (``serve.run`` waits for them).

    Serve runs without its HTTP proxy (callers use deployment handles), so a node runs no
    extra proxy actor. Call ``ray.init(...)`` first.
    """
    _, serve = import_ray()
    serve.start(proxy_location="Disabled")
    return serve.run(build_app(cfg), name=cfg.app_name, route_prefix=None)


def replica_actor_names(app_name: str = APP_NAME) -> list[str]:
    """Names of the application's live replica actors (for ``ray.get_actor(name, NAMESPACE)``)."""
    ray, _ = import_ray()
    prefix = f"SERVE_REPLICA::{app_name}#{DEPLOYMENT_NAME}#"
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["name"].startswith(prefix))
