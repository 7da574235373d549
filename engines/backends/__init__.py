"""Backend registry, availability probes and the ``--backend auto`` choice.

Backend modules are imported only when chosen: ``tensorrt`` (and CUDA) load only on a GPU
machine that asked for them.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engines.base import Engine
from engines.bundle import Bundle, load_bundle

log = logging.getLogger(__name__)

BACKENDS: dict[str, tuple[str, str]] = {
    "onnxruntime": ("engines.backends.onnxruntime", "OrtEngine"),
    "tensorrt": ("engines.backends.tensorrt", "TrtEngine"),
    "ray": ("engines.backends.ray", "RayEngine"),
}
"""name -> (module, class). ``auto`` picks onnxruntime or tensorrt (see :func:`choose_backend`);
``ray`` sends batches to a ``pleura serve`` application (the ``[serve]`` extra)."""


def backend_class(name: str) -> Any:
    """The engine class registered under ``name`` (a subclass of :class:`Engine`).

    Raises:
        ValueError: unknown name, listing the valid ones.
    """
    key = name.lower()
    if key not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; valid: auto, {', '.join(BACKENDS)}")
    module, cls = BACKENDS[key]
    return getattr(importlib.import_module(module), cls)


# --- availability probes (cheap, import nothing heavy) --------------------------------------

def gpu_available() -> bool:
    """True if an NVIDIA GPU is visible (driver files or ``nvidia-smi -L``)."""
    gpus = Path("/proc/driver/nvidia/gpus")
    if gpus.is_dir() and any(gpus.iterdir()):
        return True
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def tensorrt_available() -> bool:
    """True if the ``tensorrt`` Python package is installed (not imported here)."""
    return importlib.util.find_spec("tensorrt") is not None


def ort_cuda_available() -> bool:
    """True if onnxruntime has the CUDA execution provider."""
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


@dataclass(frozen=True)
class Choice:
    """What ``--backend auto`` picked, and why (logged)."""

    backend: str
    device: str
    reason: str


def choose_backend(gpu: bool, tensorrt: bool, ort_cuda: bool) -> Choice:
    """The ``auto`` rule: TensorRT if a GPU and tensorrt are present, else ONNX Runtime CUDA,
    else ONNX Runtime CPU (DESIGN.md, issue "Engines")."""
    if gpu and tensorrt:
        return Choice("tensorrt", "cuda", "GPU and tensorrt present")
    if gpu and ort_cuda:
        return Choice("onnxruntime", "cuda", "GPU present, tensorrt not installed: "
                                             "ONNX Runtime CUDA provider")
    why = ("no GPU visible" if not gpu else
           "GPU present but neither tensorrt nor onnxruntime's CUDA provider is installed")
    return Choice("onnxruntime", "cpu", why + ": ONNX Runtime CPU")


def probe() -> Choice:
    """Run the probes and apply :func:`choose_backend`."""
    gpu = gpu_available()
    return choose_backend(gpu, gpu and tensorrt_available(), gpu and ort_cuda_available())


def create_engine(bundle_or_path: Bundle | str | Path | None = None, backend: str = "auto",
                  threads: int | None = None, **options: Any) -> Engine:
    """Load (and verify) a bundle and put it on a backend.

    Args:
        bundle_or_path: a :class:`Bundle`, a bundle folder, or None for the default bundle.
        backend: ``auto``, ``onnxruntime``, ``tensorrt`` or ``ray``.
        threads: CPU intra-op threads for ONNX Runtime (None: all cores).
        **options: backend options (onnxruntime: ``device``, ``frame_model``; tensorrt:
            ``fp16``, ``max_batch``, ``plan_dir``, ``build``; ray: ``address``, ``fallback``,
            ``retry_s``, ...: :class:`engines.backends.ray.RayEngine`).

    Raises:
        ValueError: unknown backend (lists the valid ones).
        engines.bundle.BundleError: the bundle fails verification.
    """
    from engines.bundle import default_bundle_path

    bundle = load_bundle(default_bundle_path() if bundle_or_path is None else bundle_or_path)
    name = backend.lower()
    if name != "auto":
        cls = backend_class(name)
        if name in ("onnxruntime", "ray"):  # ray: threads of its local fallback engine
            return cls(bundle, threads=threads, **options)
        return cls(bundle, **options)
    choice = probe()
    log.info("backend auto -> %s on %s (%s)", choice.backend, choice.device, choice.reason)
    if choice.backend == "tensorrt":
        trt_opts = {k: v for k, v in options.items() if k in ("fp16", "max_batch", "plan_dir",
                                                                "build")}
        try:
            return backend_class("tensorrt")(bundle, **trt_opts)
        except Exception as exc:  # noqa: BLE001 - any TensorRT failure falls back, loudly
            log.warning("TensorRT backend failed (%s); falling back to ONNX Runtime", exc)
    ort_opts = {k: v for k, v in options.items() if k in ("device", "frame_model")}
    ort_opts.setdefault("device", "auto")
    return backend_class("onnxruntime")(bundle, threads=threads, **ort_opts)
