"""TensorRT backend: ONNX -> cached plan (FP16, batch profile, timing cache) -> inference.

``tensorrt`` and CUDA (``cuda-python``'s ``cuda.bindings.runtime``) are imported only when
this backend is built or run; the pure parts (plan keys, stale-plan checks, profile shapes)
import neither and are unit-tested without a GPU.

Plans are machine-specific, so they are not part of the hashed bundle: they live in
``BUNDLE/plans/`` (or ``~/.cache/pleura/plans`` when the bundle folder is read-only), each with a
``.json`` sidecar holding its :class:`PlanKey` (GPU name, TensorRT version, ONNX sha256,
precision, max batch). A plan whose key differs from this machine's is *stale* and refused;
``pleura build-engine BUNDLE`` rebuilds it.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines.backends.common import BundleEngine
from engines.bundle import Bundle, sha256_file

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 16
"""Largest batch of the optimisation profile; MC-dropout runs 16 passes per call (MC_CHUNK)."""
WORKSPACE_BYTES = 2 << 30

_INSTALL_HINT = ("the tensorrt backend needs an NVIDIA GPU, `pip install 'pleura[gpu]'` "
                 "(tensorrt 10 and cuda-python); use --backend onnxruntime otherwise")


class StalePlanError(RuntimeError):
    """A cached plan that was built for another GPU, TensorRT, model or precision."""


@dataclass(frozen=True)
class PlanKey:
    """Everything a TensorRT plan depends on; plans are reused only on an exact match."""

    gpu: str
    trt_version: str
    onnx_sha256: str
    precision: str  # "fp16" | "fp32"
    max_batch: int

    def __post_init__(self) -> None:
        if self.precision not in ("fp16", "fp32"):
            raise ValueError(f"precision must be fp16 or fp32, got {self.precision!r}")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")

    def plan_name(self, onnx_name: str) -> str:
        """File name of the plan: model stem, ONNX hash prefix, precision, batch, GPU slug."""
        gpu = re.sub(r"[^a-z0-9]+", "-", self.gpu.lower()).strip("-") or "gpu"
        stem = Path(onnx_name).stem
        return f"{stem}-{self.onnx_sha256[:12]}-{self.precision}-b{self.max_batch}-{gpu}.plan"

    def diff(self, other: dict[str, Any]) -> list[str]:
        """Fields where a recorded key (dict) differs from this one: ``"gpu: A != B"``."""
        return [f"{k}: built for {other.get(k)!r}, this machine needs {v!r}"
                for k, v in asdict(self).items() if other.get(k) != v]


def profile_shapes(input_chw: Sequence[int], max_batch: int, opt_batch: int = 1,
                   ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(min, opt, max) shapes of the batch-1..N optimisation profile for one input.

    Args:
        input_chw: the input's non-batch dims, e.g. (3, 224, 224); all must be fixed.
        max_batch: N, the largest batch the plan accepts.
        opt_batch: the batch TensorRT tunes for (1: live streaming is one frame at a time).
    """
    dims = tuple(int(d) for d in input_chw)
    if any(d <= 0 for d in dims):
        raise ValueError(f"only the batch dimension may be dynamic, got input dims {dims}")
    if not 1 <= opt_batch <= max_batch:
        raise ValueError(f"need 1 <= opt_batch <= max_batch, got {opt_batch}, {max_batch}")
    return (1, *dims), (opt_batch, *dims), (max_batch, *dims)


def default_plan_dir(bundle_path: Path) -> Path:
    """``BUNDLE/plans`` when the bundle folder is writable, else ``~/.cache/pleura/plans``."""
    if os.access(bundle_path, os.W_OK):
        return bundle_path / "plans"
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "pleura" / "plans"


def write_plan_meta(plan: Path, key: PlanKey) -> Path:
    meta = plan.with_suffix(".json")
    meta.write_text(json.dumps({"key": asdict(key), "plan_sha256": sha256_file(plan),
                                "plan_bytes": plan.stat().st_size}, indent=2) + "\n")
    return meta


def check_plan(plan: Path, key: PlanKey) -> None:
    """Refuse a plan that does not match ``key`` or whose bytes changed.

    Raises:
        FileNotFoundError: no plan (build it).
        StalePlanError: built for another GPU/TensorRT/ONNX/precision, or altered.
    """
    hint = "rebuild it with `pleura build-engine BUNDLE` (add --fp16 for half precision)"
    meta = plan.with_suffix(".json")
    if not plan.is_file():
        raise FileNotFoundError(f"no TensorRT plan {plan}; build it with "
                                f"`pleura build-engine BUNDLE`")
    if not meta.is_file():
        raise StalePlanError(f"TensorRT plan {plan.name} has no key file {meta.name}; {hint}")
    try:
        recorded = json.loads(meta.read_text())
        rec_key = recorded["key"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise StalePlanError(f"TensorRT plan key {meta.name} is unreadable ({exc}); "
                             f"{hint}") from None
    diffs = key.diff(rec_key)
    if diffs:
        raise StalePlanError(f"TensorRT plan {plan.name} is stale ({'; '.join(diffs)}); {hint}")
    if sha256_file(plan) != recorded.get("plan_sha256"):
        raise StalePlanError(f"TensorRT plan {plan.name} was altered or truncated; {hint}")


# --- the parts that need tensorrt / CUDA ---------------------------------------------------

def import_tensorrt():
    try:
        import tensorrt
    except ImportError as exc:
        raise RuntimeError(f"tensorrt is not installed ({exc}); {_INSTALL_HINT}") from None
    return tensorrt


class CudaRuntime:
    """The few CUDA runtime calls the backend needs, through ``cuda-python`` (no torch)."""

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            try:
                from cuda import cudart  # cuda-python < 12.6 layout
            except ImportError as exc:
                raise RuntimeError(f"cuda-python is not installed ({exc}); "
                                   f"{_INSTALL_HINT}") from None
        self.rt = cudart
        self.stream = self._ok(cudart.cudaStreamCreate())

    def _ok(self, result):
        err, *vals = result if isinstance(result, tuple) else (result,)
        if err != self.rt.cudaError_t.cudaSuccess:
            raise RuntimeError(f"CUDA call failed: {err} (is an NVIDIA GPU and driver "
                               f"present?); {_INSTALL_HINT}")
        return vals[0] if len(vals) == 1 else (vals or None)

    def gpu_name(self, device: int = 0) -> str:
        props = self._ok(self.rt.cudaGetDeviceProperties(device))
        name = props.name
        return (name.decode(errors="replace") if isinstance(name, bytes) else str(name)
                ).split("\x00")[0].strip()

    def malloc(self, nbytes: int) -> int:
        return int(self._ok(self.rt.cudaMalloc(max(1, nbytes))))

    def free(self, ptr: int) -> None:
        self.rt.cudaFree(ptr)

    def h2d(self, dst: int, src: np.ndarray) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._ok(self.rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes, kind, self.stream))

    def d2h(self, dst: np.ndarray, src: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._ok(self.rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes, kind, self.stream))

    def sync(self) -> None:
        self._ok(self.rt.cudaStreamSynchronize(self.stream))


def plan_key(onnx_path: Path, gpu: str, trt_version: str, fp16: bool, max_batch: int,
             onnx_sha256: str | None = None) -> PlanKey:
    return PlanKey(gpu=gpu, trt_version=trt_version,
                   onnx_sha256=onnx_sha256 or sha256_file(onnx_path),
                   precision="fp16" if fp16 else "fp32", max_batch=max_batch)


def build_plan(onnx_path: Path, plan: Path, key: PlanKey, timing_cache: Path,
               opt_batch: int = 1, workspace: int = WORKSPACE_BYTES) -> Path:
    """Parse ONNX, build a serialized plan with an FP16 flag, a 1..N profile and a timing cache.

    Writes ``plan`` and its ``.json`` key sidecar atomically; updates ``timing_cache``.
    """
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    if key.precision == "fp16":
        if not hasattr(trt.BuilderFlag, "FP16"):
            raise RuntimeError("this TensorRT (>= 11) removed the FP16 builder flag (strong "
                               "typing only); build without --fp16 or use TensorRT 10")
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        inp = network.get_input(i)
        profile.set_shape(inp.name, *profile_shapes(tuple(inp.shape)[1:], key.max_batch,
                                                    opt_batch))
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file()
                                       else b"")
    config.set_timing_cache(cache, False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build a plan for {onnx_path.name} (see log)")
    plan.parent.mkdir(parents=True, exist_ok=True)
    tmp = plan.with_suffix(".plan.tmp")
    tmp.write_bytes(bytes(serialized))
    os.replace(tmp, plan)
    write_plan_meta(plan, key)
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    log.info("built TensorRT plan %s (%s, batch 1..%d)", plan, key.precision, key.max_batch)
    return plan


class TrtRunner:
    """One deserialized plan with device buffers pre-allocated for its largest batch."""

    def __init__(self, plan: Path, cuda: CudaRuntime) -> None:
        trt = import_tensorrt()
        self.trt, self.cuda = trt, cuda
        self._logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self._logger)
        self.engine = self.runtime.deserialize_cuda_engine(plan.read_bytes())
        if self.engine is None:
            raise StalePlanError(f"TensorRT could not load {plan.name}; rebuild it with "
                                 f"`pleura build-engine BUNDLE`")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names
                       if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.max_batch = int(self.engine.get_tensor_profile_shape(self.inputs[0], 0)[2][0])
        self.buffers: dict[str, int] = {}
        self.dtypes: dict[str, Any] = {}
        for n in names:
            dims = tuple(self.engine.get_tensor_shape(n))[1:]
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(n)))
            self.dtypes[n] = dtype
            self.buffers[n] = cuda.malloc(int(np.prod(dims)) * self.max_batch * dtype.itemsize)
            self.context.set_tensor_address(n, self.buffers[n])

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """(B, ...) float32 -> outputs in engine order; B > max batch runs in chunks."""
        parts: list[list[np.ndarray]] = []
        name = self.inputs[0]
        for s in range(0, x.shape[0], self.max_batch):
            chunk = np.ascontiguousarray(x[s:s + self.max_batch], dtype=self.dtypes[name])
            self.context.set_input_shape(name, chunk.shape)
            self.cuda.h2d(self.buffers[name], chunk)
            if not self.context.execute_async_v3(int(self.cuda.stream)):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            outs = []
            for o in self.outputs:
                host = np.empty(tuple(self.context.get_tensor_shape(o)), self.dtypes[o])
                self.cuda.d2h(host, self.buffers[o])
                outs.append(host)
            self.cuda.sync()
            parts.append(outs)
        return [np.concatenate([p[i] for p in parts]).astype(np.float32, copy=False)
                for i in range(len(self.outputs))]

    def close(self) -> None:
        for ptr in self.buffers.values():
            self.cuda.free(ptr)
        self.buffers.clear()


def bundle_models(bundle: Bundle) -> list[Path]:
    """The ONNX files a GPU runs: the fp32 frame model and every seg member (+ MC variant)."""
    files = [bundle.frame_file]
    for m in bundle.seg_members:
        files += [m.file, *([m.mc_file] if m.mc_file else [])]
    return files


def ensure_plans(bundle: Bundle, fp16: bool = True, max_batch: int = DEFAULT_MAX_BATCH,
                 plan_dir: Path | None = None, build: bool = True, rebuild_stale: bool = False,
                 cuda: CudaRuntime | None = None) -> dict[Path, Path]:
    """Plan path for every model of ``bundle``, building missing ones (and stale ones if asked).

    Raises:
        StalePlanError: a stale plan and ``rebuild_stale`` is False.
        FileNotFoundError: a missing plan and ``build`` is False.
    """
    trt = import_tensorrt()
    cuda = cuda or CudaRuntime()
    gpu = cuda.gpu_name()
    plan_dir = Path(plan_dir) if plan_dir else default_plan_dir(bundle.path)
    out = {}
    for onnx_path in bundle_models(bundle):
        key = plan_key(onnx_path, gpu, trt.__version__, fp16, max_batch,
                       bundle.files.get(onnx_path.name))
        plan = plan_dir / key.plan_name(onnx_path.name)
        try:
            check_plan(plan, key)
        except FileNotFoundError:
            if not build:
                raise
            build_plan(onnx_path, plan, key, plan_dir / "timing.cache")
        except StalePlanError:
            if not rebuild_stale:
                raise
            log.warning("rebuilding stale plan %s", plan.name)
            build_plan(onnx_path, plan, key, plan_dir / "timing.cache")
        out[onnx_path] = plan
    return out


class TrtEngine(BundleEngine):
    """A bundle on TensorRT (one GPU, one CUDA stream, pre-allocated device buffers)."""

    backend = "tensorrt"
    device = "cuda"

    def __init__(self, bundle: Bundle, fp16: bool | None = None,
                 max_batch: int = DEFAULT_MAX_BATCH, plan_dir: Path | None = None,
                 build: bool = True) -> None:
        super().__init__(bundle, bundle.frame_file)
        trt = import_tensorrt()  # first: its absence is the common, clearly reportable case
        self.cuda = CudaRuntime()
        plans = None
        if fp16 is None:  # use fresh plans of either precision (build-engine's), else build
            for precision in (True, False):
                try:
                    plans = ensure_plans(bundle, precision, max_batch, plan_dir, build=False,
                                         cuda=self.cuda)
                    fp16 = precision
                    break
                except (FileNotFoundError, StalePlanError):
                    continue
            if plans is None:
                fp16 = hasattr(trt.BuilderFlag, "FP16")
        if plans is None:
            plans = ensure_plans(bundle, bool(fp16), max_batch, plan_dir, build=build,
                                 cuda=self.cuda)
        self.runners = {onnx: TrtRunner(plan, self.cuda) for onnx, plan in plans.items()}
        self.device = f"cuda:0 {self.cuda.gpu_name()}"
        log.info("engine: %s, %s, batch 1..%d", self.describe(), "fp16" if fp16 else "fp32",
                 max_batch)

    def _output_names(self, model: Path) -> Sequence[str]:
        return self.runners[model].outputs

    def _run(self, model: Path, x: np.ndarray) -> Sequence[np.ndarray]:
        return self.runners[model].run(x)

    def close(self) -> None:
        for r in self.runners.values():
            r.close()
        self.runners.clear()
