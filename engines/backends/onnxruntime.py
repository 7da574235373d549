"""ONNX Runtime backend: the CPU default, and the CUDA provider where one is present.

(Named after the registry entry; ``import onnxruntime`` below is the absolute, top-level
package.)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from engines.backends.common import BundleEngine
from engines.bundle import Bundle, BundleError

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def cuda_provider_available() -> bool:
    """True when this onnxruntime build has the CUDA execution provider."""
    return CUDA in ort.get_available_providers()


def session_options(threads: int | None) -> ort.SessionOptions:
    """Graph optimisations on, ``threads`` intra-op threads (None: ORT's default, all cores)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.inter_op_num_threads = 1
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1 (or None for all cores), got {threads}")
        so.intra_op_num_threads = int(threads)
    so.log_severity_level = 3
    return so


class OrtEngine(BundleEngine):
    """A bundle on ONNX Runtime.

    Args:
        bundle: a verified bundle.
        threads: intra-op threads (None: all cores).
        device: ``"auto"`` (CUDA provider if present, else CPU), ``"cpu"`` or ``"cuda"``.
        frame_model: ``"auto"`` (the bundle's CPU default on CPU, fp32 on CUDA), ``"fp32"``
            or ``"int8"``.
    """

    backend = "onnxruntime"

    def __init__(self, bundle: Bundle, threads: int | None = None, device: str = "auto",
                 frame_model: str = "auto") -> None:
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
        has_cuda = cuda_provider_available()
        if device == "cuda" and not has_cuda:
            raise RuntimeError(
                "ONNX Runtime has no CUDA provider here (providers: "
                f"{ort.get_available_providers()}); install onnxruntime-gpu or use device='cpu'")
        self.device = "cuda" if (device == "cuda" or (device == "auto" and has_cuda)) else "cpu"
        self._providers = [CUDA, CPU] if self.device == "cuda" else [CPU]
        if frame_model == "auto":
            frame_file = bundle.cpu_frame_file if self.device == "cpu" else bundle.frame_file
        elif frame_model == "fp32":
            frame_file = bundle.frame_file
        elif frame_model == "int8":
            if bundle.frame_int8_file is None:
                raise ValueError(f"bundle {bundle.path} has no int8 frame model; export with "
                                 f"`pleura export RUN --int8 --out DIR`")
            frame_file = bundle.frame_int8_file
        else:
            raise ValueError(f"frame_model must be auto, fp32 or int8, got {frame_model!r}")
        super().__init__(bundle, frame_file)
        self.threads = threads
        self._options = session_options(threads)
        self._sessions: dict[Path, ort.InferenceSession] = {}
        self._session(frame_file)  # fail at construction, not on the first frame
        log.info("engine: %s, %s threads", self.describe(), threads or "all")

    def _session(self, model: Path) -> ort.InferenceSession:
        """The session of one model file, created on first use.

        Raises:
            BundleError: ONNX Runtime cannot load the file; one line naming it.
        """
        s = self._sessions.get(model)
        if s is None:
            try:
                s = ort.InferenceSession(str(model), sess_options=self._options,
                                         providers=self._providers)
            except Exception as exc:  # noqa: BLE001 - ORT raises its own (pybind) types
                why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                raise BundleError(f"bundle {self.bundle.path}: ONNX Runtime cannot load "
                                  f"{model.name} ({why}); re-export the bundle with `pleura "
                                  f"export RUN --out DIR`") from None
            self._sessions[model] = s
        return s

    def _output_names(self, model: Path) -> Sequence[str]:
        return [o.name for o in self._session(model).get_outputs()]

    def _run(self, model: Path, x: np.ndarray) -> Sequence[np.ndarray]:
        s = self._session(model)
        return s.run(None, {s.get_inputs()[0].name: x})

    def close(self) -> None:
        self._sessions.clear()
