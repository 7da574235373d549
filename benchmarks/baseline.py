"""The PyTorch baselines: what a researcher would write, and what a PyTorch expert would write.

Two variants of **the bundle's own network with the bundle's own weights** (the frame model,
or one segmentation member), rebuilt in PyTorch by :mod:`benchmarks.rebuild`, each in its own
*spawned child process*, so the benchmark process never imports torch and no two candidates
share a thread pool; the parent drives them phase by phase, interleaved with the ONNX Runtime
candidates, under the same load, and checks before any ratio that they *are* the bundle's
model (outputs vs ONNX Runtime fp32, MACs: :mod:`benchmarks.same_model`).

- **naive** — PyTorch eager, an OpenCV ``VideoCapture`` read loop, batch 1, a
  ``torch.no_grad()`` forward per frame (the forward the bundle's graph was exported from).
- **tuned** — what an expert would write for CPU inference (issue #19): ``torch.inference_mode``,
  channels-last weights and inputs, batches of 8, and ``torch.compile`` (Inductor) where it
  works on this machine; when it does not, eager with the reason recorded. Compilation happens
  in :meth:`BaselineProcess.prepare`, timed on its own and **excluded from throughput**.

Only this module (and :mod:`benchmarks.rebuild`, which it calls) touches torch and ``train``,
and only inside the children.
"""

from __future__ import annotations

import contextlib
import importlib.util
import multiprocessing as mp
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.rebuild import CannotRebuildError
from benchmarks.stats import ResourceMonitor, summarise

READY_TIMEOUT_S = 240.0
PREPARE_TIMEOUT_S = 600.0
NAIVE_WHAT = ("PyTorch eager, one process, cv2.VideoCapture read loop, batch 1, "
              "torch.no_grad() forward per frame")
TUNED_WHAT = ("PyTorch, one process, cv2.VideoCapture read loop, batch {batch}, "
              "torch.inference_mode(), channels-last weights and inputs, {compiled}")


def torch_missing_reason() -> str | None:
    """None when the baseline can run; otherwise why not (torch or train/ missing)."""
    if importlib.util.find_spec("torch") is None:
        return ("torch is not installed (the [train] extra), so the PyTorch baseline was "
                "skipped; install it with pip install 'pleura[train]' to compare")
    if importlib.util.find_spec("train") is None:
        return "the train/ package is not importable (run from a source checkout)"
    return None


# --------------------------------------------------------------------------- child side

@dataclass(frozen=True)
class BaselineSpec:
    """Which network a baseline child rebuilds (:mod:`benchmarks.rebuild`).

    Attributes:
        kind: "frame" (the bundle's frame model) or "seg" (one segmentation member).
        bundle: the bundle folder.
        shape: (C, H, W) of one input (the bundle's spec).
        onnx: seg only: the member's ONNX file, whose initializers are the weights.
        arch: seg only: its ``train.seg.models`` architecture.
        run_dir: frame only: a trained run to load instead of the bundle's weights.
        model_name: frame only: the registry name when the manifest names none.
        target_macs: the bundle graph's executed MACs per frame (picks the forward variant).
    """

    kind: str
    bundle: str
    shape: tuple[int, int, int]
    onnx: str | None = None
    arch: str | None = None
    run_dir: str | None = None
    model_name: str | None = None
    target_macs: int | None = None


def _build(spec: BaselineSpec):
    """(model in eval mode, {"model", "forward", "macs_per_frame", "params_m"})."""
    from benchmarks.rebuild import frame_network, seg_network

    if spec.kind == "seg":
        return seg_network(Path(spec.onnx or ""), spec.arch or "", spec.shape)
    return frame_network(Path(spec.bundle), spec.shape, run_dir=spec.run_dir,
                         model_name=spec.model_name, target_macs=spec.target_macs)


class _Child:
    """The model of one child, naive or tuned, and how it runs a batch."""

    def __init__(self, model, torch, tuned: bool, shape: tuple[int, int, int]) -> None:
        self.torch, self.tuned, self.shape = torch, tuned, shape
        self.eager = model
        self.model = model
        self.compile: dict[str, Any] = {"compiled": False, "reason": "naive: eager"}
        if tuned:
            self.model = self.eager = model.to(memory_format=torch.channels_last)
            self.compile = {"compiled": False, "reason": "not prepared yet"}

    def prepare(self, batches: list[int], use_compile: bool) -> dict[str, Any]:
        """torch.compile and one call per batch size (shape-specialised), timed separately."""
        torch = self.torch
        if not self.tuned:
            return self.compile
        if not use_compile:
            self.compile = {"compiled": False, "reason": "--no-compile"}
            return self.compile
        t0 = time.perf_counter()
        try:
            # static shapes: each batch size gets its own specialised graph (no dynamic-shape
            # graph silently serving batch 8 after batch 1 was seen)
            compiled = torch.compile(self.eager, dynamic=False)
            seconds = {}
            for b in batches:
                a = time.perf_counter()
                self._call(compiled, self._input(b))
                seconds[f"b{b}"] = round(time.perf_counter() - a, 2)
            with torch.inference_mode():  # same numbers as eager, or it is not a baseline
                x = self._input(batches[0])
                diff = float((self._out(compiled(x)) - self._out(self.eager(x))).abs().max())
            if diff > 1e-3:
                raise RuntimeError(f"compiled output differs from eager by {diff:.2e}")
            self.model = compiled
            self.compile = {"compiled": True, "backend": "inductor", "seconds_total":
                            round(time.perf_counter() - t0, 2), "seconds_per_batch": seconds,
                            "max_abs_diff_vs_eager": diff, "dynamic": False, "reason": None,
                            "note": "compile time depends on Inductor's on-disk cache "
                                    "(a second run in a new process is faster)"}
        except Exception as exc:  # noqa: BLE001 - fall back to eager, and say why
            self.model = self.eager
            self.compile = {"compiled": False, "seconds_total": round(time.perf_counter() - t0,
                                                                      2),
                            "reason": f"torch.compile failed here, eager used: "
                                      f"{type(exc).__name__}: {str(exc)[:400]}"}
        return self.compile

    def _input(self, b: int):
        x = self.torch.rand(b, *self.shape)
        return x.contiguous(memory_format=self.torch.channels_last) if self.tuned else x

    @staticmethod
    def _out(out):
        """The probabilities: a dict's "probs", a tuple's first output (the exported order),
        a tensor's softmax (a segmentation member's logits)."""
        if isinstance(out, dict):
            return out["probs"]
        return out[0] if isinstance(out, tuple | list) else out.softmax(1)

    def outputs(self, x_np: np.ndarray) -> list[np.ndarray]:
        """Every output, in the bundle graph's order (probabilities for a bare tensor)."""
        x = self.torch.from_numpy(np.ascontiguousarray(x_np, np.float32))
        if self.tuned:
            x = x.contiguous(memory_format=self.torch.channels_last)
        with self.torch.inference_mode() if self.tuned else self.torch.no_grad():
            out = self.model(x)
        outs = list(out) if isinstance(out, tuple | list) else [self._out(out)]
        return [o.float().contiguous().numpy() for o in outs]

    def _call(self, model, x):
        ctx = self.torch.inference_mode() if self.tuned else self.torch.no_grad()
        with ctx:
            return self._out(model(x)).numpy()

    def run(self, x_np: np.ndarray) -> np.ndarray:
        """(B, C, H, W) float32 -> probabilities (the model's own output, softmaxed)."""
        x = self.torch.from_numpy(x_np)
        if self.tuned:
            x = x.contiguous(memory_format=self.torch.channels_last)
        return self._call(self.model, x)


def _open(clip: str):
    import cv2

    cap = cv2.VideoCapture(clip)
    if not cap.isOpened():
        raise RuntimeError(f"OpenCV cannot open {clip}; give --source a video OpenCV reads")
    return cap


def _read_rgb(cap_box: list, clip: str):
    """Next RGB frame, restarting the clip at its end (OpenCV read loop)."""
    import cv2

    for _ in range(3):
        ok, bgr = cap_box[0].read()
        if ok:
            return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        cap_box[0].release()
        cap_box[0] = _open(clip)
    raise RuntimeError(f"OpenCV reads no frame from {clip}")


def _pipeline(ch: _Child, clip: str, seconds: float, batch: int) -> dict[str, Any]:
    """The researcher's loop: cv2.VideoCapture -> preprocess -> forward, ``batch`` at a time."""
    from engines.preprocess import FRAME_SPEC, preprocess_frame

    cap = [_open(clip)]
    lat, n = [], 0
    with ResourceMonitor(children=False) as mon:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds or n == 0:
            a = time.perf_counter()
            xs = [preprocess_frame(_read_rgb(cap, clip), FRAME_SPEC)[0] for _ in range(batch)]
            ch.run(np.stack(xs) if batch > 1 else xs[0][None])
            lat.append(1000.0 * (time.perf_counter() - a))
            n += batch
        dt = time.perf_counter() - t0
    cap[0].release()
    return {"batch": batch, "frames": n, "seconds": round(dt, 2), "fps": round(n / dt, 2),
            "ms_per_frame": round(1000.0 * dt / n, 3), "latency_ms": summarise(lat),
            **mon.result}


def _model_only(ch: _Child, seconds: float, batch: int = 1, min_iters: int = 3) -> dict:
    x = np.random.default_rng(0).random((batch, *ch.shape), dtype=np.float32)
    ms: list[float] = []
    if min_iters > 1:
        ch.run(x)  # warm-up
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds or len(ms) < min_iters:
        a = time.perf_counter()
        ch.run(x)
        ms.append(1000.0 * (time.perf_counter() - a))
    s = summarise(ms)
    per = s["p50"] / batch
    return {"batch": batch, "ms": s, "ms_per_frame": round(per, 3),
            "fps": round(1000.0 / per, 2) if per else 0.0}


def _paced(ch: _Child, clip: str, seconds: float, warmup_s: float = 1.0) -> dict[str, Any]:
    """One stream played in real time (the clip's fps) by a reader thread into a latest-wins
    slot; the main thread scores the newest frame at batch 1. Latency = result - frame read."""
    import cv2

    from engines.preprocess import FRAME_SPEC, preprocess_frame

    cap = [_open(clip)]
    fps = cap[0].get(cv2.CAP_PROP_FPS) or 30.0
    slot: dict[str, Any] = {"item": None, "times": []}
    cond, stop = threading.Condition(), threading.Event()

    def reader() -> None:
        t_next = time.perf_counter()
        while not stop.is_set():
            img = _read_rgb(cap, clip)
            # a live source does not speed up to make up for lost time: when the reader fell
            # behind (a busy CPU), the schedule restarts from now instead of bursting
            t_next = max(t_next + 1.0 / fps, time.perf_counter())
            time.sleep(max(0.0, t_next - time.perf_counter()))
            with cond:
                slot["item"] = (img, time.perf_counter())
                slot["times"].append(slot["item"][1])
                cond.notify()

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    lat: list[float] = []
    t_measure = time.perf_counter() + warmup_s
    measuring = False
    with ResourceMonitor(children=False) as mon:
        while time.perf_counter() < t_measure + seconds:
            with cond:
                cond.wait_for(lambda: slot["item"] is not None, timeout=0.5)
                item, slot["item"] = slot["item"], None
                if not measuring and time.perf_counter() >= t_measure:
                    measuring, lat = True, []
                    t_measure = item[1] if item is not None else time.perf_counter()
            if item is None:
                continue
            ch.run(preprocess_frame(item[0], FRAME_SPEC)[0][None])
            lat.append(1000.0 * (time.perf_counter() - item[1]))
    t_end = time.perf_counter()
    dt = max(t_end - t_measure, 1e-9)  # a slow last forward overruns `seconds`
    with cond:  # frames the source released in the measured window (the first one included)
        captured = sum(t_measure <= t <= t_end for t in slot["times"])
    stop.set()
    th.join(2.0)
    return {"mode": "in-process (PyTorch baseline)", "streams": 1, "seconds": round(dt, 2),
            "source_fps": round(captured / dt, 2), "captured": captured,
            "processed": len(lat), "processed_fps": round(len(lat) / dt, 2),
            "served_fraction": round(len(lat) / captured, 3) if captured else 0.0,
            "latency_ms": summarise(lat),
            **{k: mon.result[k] for k in ("cpu_percent", "peak_rss_mb")}}


def _answer(ch: _Child, cmd: dict[str, Any]) -> Any:
    op = cmd["op"]
    if op == "prepare":
        return ch.prepare(cmd["batches"], cmd["compile"])
    if op == "pipeline":
        return _pipeline(ch, cmd["clip"], cmd["seconds"], cmd.get("batch", 1))
    if op == "model":
        return _model_only(ch, cmd["seconds"], cmd.get("batch", 1), cmd.get("min_iters", 3))
    if op == "paced":
        return _paced(ch, cmd["clip"], cmd["seconds"])
    if op == "probs":
        return ch.run(np.ascontiguousarray(cmd["x"], np.float32))
    if op == "outputs":
        return ch.outputs(cmd["x"])
    return {"error": f"unknown op {op!r}"}


def serve(conn, spec: BaselineSpec, tuned: bool = False) -> None:
    """Child process main: rebuild the bundle's network, then answer commands until "stop"."""
    try:
        import torch

        try:
            model, built = _build(spec)
        except CannotRebuildError as exc:
            conn.send({"ok": False, "error": str(exc), "cannot_rebuild": True})
            return
        ch = _Child(model, torch, tuned, spec.shape)
        conn.send({"ok": True, **built, "kind": spec.kind, "tuned": tuned,
                   "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                   "gmac_per_frame": round(built["macs_per_frame"] / 1e9, 4)})
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which skips the baseline
        conn.send({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return
    while True:
        cmd = conn.recv()
        if cmd["op"] == "stop":
            return
        try:
            conn.send(_answer(ch, cmd))
        except Exception as exc:  # noqa: BLE001
            conn.send({"error": f"{type(exc).__name__}: {exc}"})


# --------------------------------------------------------------------------- parent side

class BaselineProcess:
    """Handle on one baseline child. Use as a context manager; never imports torch here.

    Args:
        spec: which network (the bundle's frame model or one seg member), rebuilt with the
            bundle's own weights in the child (:mod:`benchmarks.rebuild`).
        tuned: the expert variant (inference_mode, channels-last, torch.compile after
            :meth:`prepare`) instead of the naive one.
    """

    def __init__(self, spec: BaselineSpec, tuned: bool = False) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.tuned = tuned
        self.spec = spec
        self._proc = ctx.Process(target=serve, args=(child, spec, tuned),
                                 name=f"pleura-bench-{'tuned' if tuned else 'naive'}-"
                                      f"{spec.kind}", daemon=True)
        self.info: dict[str, Any] = {}

    def __enter__(self) -> BaselineProcess:
        self._proc.start()
        if not self._conn.poll(READY_TIMEOUT_S):
            self.close()
            raise RuntimeError(f"the baseline process did not start in {READY_TIMEOUT_S:.0f} s")
        self.info = self._conn.recv()
        if not self.info.get("ok"):
            self.close()
            if self.info.get("cannot_rebuild"):
                raise CannotRebuildError.from_message(self.info["error"])
            raise RuntimeError(f"the baseline model could not be built: {self.info['error']}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def _ask(self, timeout: float | None = None, **cmd: Any) -> Any:
        self._conn.send(cmd)
        if timeout is not None and not self._conn.poll(timeout):
            raise RuntimeError(f"baseline {cmd['op']}: no answer in {timeout:.0f} s")
        out = self._conn.recv()
        if isinstance(out, dict) and "error" in out:
            raise RuntimeError(f"baseline {cmd['op']}: {out['error']}")
        return out

    def prepare(self, batches: list[int], use_compile: bool = True) -> dict[str, Any]:
        """Tuned only: torch.compile for each batch size, timed (not part of throughput).
        Returns {"compiled", "seconds_total", "seconds_per_batch", "reason"}."""
        return self._ask(timeout=PREPARE_TIMEOUT_S, op="prepare", batches=list(batches),
                         compile=use_compile)

    def pipeline(self, clip: Path, seconds: float, batch: int = 1) -> dict[str, Any]:
        """Score ``clip`` (looping) for ``seconds``, ``batch`` frames per forward."""
        return self._ask(op="pipeline", clip=str(clip), seconds=seconds, batch=batch)

    def model_only(self, seconds: float, min_iters: int = 3, batch: int = 1) -> dict[str, Any]:
        """Forward latency at ``batch`` on a random input (no decoding)."""
        return self._ask(op="model", seconds=seconds, min_iters=min_iters, batch=batch)

    def paced(self, clip: Path, seconds: float) -> dict[str, Any]:
        """One real-time stream, newest frame wins: served fraction and latency."""
        return self._ask(op="paced", clip=str(clip), seconds=seconds)

    def probs(self, x: np.ndarray) -> np.ndarray:
        """(B, 4) probabilities of the baseline model for a preprocessed batch."""
        return self._ask(op="probs", x=np.ascontiguousarray(x, np.float32))

    def outputs(self, x: np.ndarray) -> list[np.ndarray]:
        """Every output of the baseline model, in the bundle graph's output order."""
        return self._ask(op="outputs", x=np.ascontiguousarray(x, np.float32))

    def close(self) -> None:
        if self._proc.is_alive():
            with contextlib.suppress(OSError, BrokenPipeError):
                self._conn.send({"op": "stop"})
            self._proc.join(3)  # torch's interpreter teardown can be slow: don't wait on it
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(5)
