"""The naive baseline: what a researcher would write to score a video with the paper's model.

The same Reg-STN (``train.models``) in PyTorch eager mode, one process, an OpenCV
``VideoCapture`` read loop, no batching, a ``torch.no_grad()`` forward per frame, the model's
own ``forward`` (both crops, as trained). It runs in a *child process* (spawned), so the
benchmark process itself never imports torch and the two never share thread pools; the parent
drives it phase by phase so baseline and candidates are measured interleaved, under the same
machine load.

Only this module touches torch and ``train``, and only inside the child.
"""

from __future__ import annotations

import contextlib
import importlib.util
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.stats import ResourceMonitor, summarise

READY_TIMEOUT_S = 240.0


def torch_missing_reason() -> str | None:
    """None when the baseline can run; otherwise why not (torch or train/ missing)."""
    if importlib.util.find_spec("torch") is None:
        return ("torch is not installed (the [train] extra), so the PyTorch baseline was "
                "skipped; install it with pip install 'pleura[train]' to compare")
    if importlib.util.find_spec("train") is None:
        return "the train/ package is not importable (run from a source checkout)"
    return None


# --------------------------------------------------------------------------- child side

def _count_macs(model, torch, x) -> float:
    """Multiply-accumulates of one forward, counted with hooks on Conv2d and Linear."""
    total = [0]

    def conv_hook(m, _inp, out):
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total[0] += out.numel() * k

    def lin_hook(m, _inp, out):
        total[0] += out.numel() * m.in_features

    hooks = []
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, torch.nn.Linear):
            hooks.append(m.register_forward_hook(lin_hook))
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return total[0] / x.shape[0]


def _build(run_dir: str | None, model_name: str, torch):
    note = ""
    if run_dir:
        from train.frame.run import load_run

        try:
            model, _config = load_run(run_dir)
            return model.eval(), f"trained run {run_dir}"
        except (FileNotFoundError, KeyError, RuntimeError) as exc:  # e.g. still training
            note = f" (run {run_dir} not loadable: {exc})"
    from train.models.registry import build_model

    torch.manual_seed(0)
    model = build_model(model_name)
    return model.eval(), (f"train.models.registry.build_model({model_name!r}), untrained "
                          f"weights{note}")


def _pipeline(model, torch, clip: str, seconds: float) -> dict[str, Any]:
    """The researcher's loop: cv2.VideoCapture -> preprocess -> per-frame forward."""
    import cv2

    from engines.preprocess import FRAME_SPEC, preprocess_frame

    cap = cv2.VideoCapture(clip)
    if not cap.isOpened():
        raise RuntimeError(f"OpenCV cannot open {clip}; give --source a video OpenCV reads")
    lat, n, fails = [], 0, 0
    with ResourceMonitor(children=False) as mon:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds or n == 0:
            a = time.perf_counter()
            ok, bgr = cap.read()
            if not ok:  # end of clip: start again
                fails += 1
                if fails > 2:
                    raise RuntimeError(f"OpenCV reads no frame from {clip}")
                cap.release()
                cap = cv2.VideoCapture(clip)
                continue
            fails = 0
            x, _ = preprocess_frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), FRAME_SPEC)
            with torch.no_grad():
                out = model(torch.from_numpy(x).unsqueeze(0))
            out["probs"].numpy()
            lat.append(1000.0 * (time.perf_counter() - a))
            n += 1
        dt = time.perf_counter() - t0
    cap.release()
    return {"frames": n, "seconds": round(dt, 2), "fps": round(n / dt, 2),
            "ms_per_frame": round(1000.0 * dt / n, 3), "latency_ms": summarise(lat),
            **mon.result}


def _model_only(model, torch, seconds: float, min_iters: int = 3) -> dict[str, Any]:
    x = torch.rand(1, 3, 224, 224)
    ms: list[float] = []
    with torch.no_grad():
        if min_iters > 1:
            model(x)  # warm-up
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds or len(ms) < min_iters:
            a = time.perf_counter()
            model(x)
            ms.append(1000.0 * (time.perf_counter() - a))
    s = summarise(ms)
    return {"batch": 1, "ms": s, "ms_per_frame": s["p50"],
            "fps": round(1000.0 / s["p50"], 2) if s["p50"] else 0.0}


def serve(conn, run_dir: str | None, model_name: str) -> None:
    """Child process main: build the model, then answer commands until "stop"."""
    try:
        import torch

        model, source = _build(run_dir, model_name, torch)
        macs = _count_macs(model, torch, torch.rand(1, 3, 224, 224))
        conn.send({"ok": True, "model": source, "torch": torch.__version__,
                   "torch_threads": torch.get_num_threads(),
                   "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
                   "gmac_per_frame": round(macs / 1e9, 4)})
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which skips the baseline
        conn.send({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return
    while True:
        cmd = conn.recv()
        try:
            if cmd["op"] == "stop":
                return
            if cmd["op"] == "pipeline":
                conn.send(_pipeline(model, torch, cmd["clip"], cmd["seconds"]))
            elif cmd["op"] == "model":
                conn.send(_model_only(model, torch, cmd["seconds"], cmd.get("min_iters", 3)))
            elif cmd["op"] == "probs":
                with torch.no_grad():
                    conn.send(model(torch.from_numpy(cmd["x"]))["probs"].numpy())
            else:
                conn.send({"error": f"unknown op {cmd['op']!r}"})
        except Exception as exc:  # noqa: BLE001
            conn.send({"error": f"{type(exc).__name__}: {exc}"})


# --------------------------------------------------------------------------- parent side

class BaselineProcess:
    """Handle on the baseline child. Use as a context manager; never imports torch here.

    Args:
        run_dir: a trained frame run (``train.frame.run.load_run``), or None for an untrained
            Reg-STN (speed does not depend on the weights).
        model_name: registry name used when ``run_dir`` is None.
    """

    def __init__(self, run_dir: str | Path | None = None, model_name: str = "reg-stn") -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=serve, args=(child, str(run_dir) if run_dir else None,
                                                     model_name), name="pleura-bench-baseline",
                                 daemon=True)
        self.info: dict[str, Any] = {}

    def __enter__(self) -> BaselineProcess:
        self._proc.start()
        if not self._conn.poll(READY_TIMEOUT_S):
            self.close()
            raise RuntimeError(f"the baseline process did not start in {READY_TIMEOUT_S:.0f} s")
        self.info = self._conn.recv()
        if not self.info.get("ok"):
            self.close()
            raise RuntimeError(f"the baseline model could not be built: {self.info['error']}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ask(self, **cmd: Any) -> Any:
        self._conn.send(cmd)
        out = self._conn.recv()
        if isinstance(out, dict) and "error" in out:
            raise RuntimeError(f"baseline {cmd['op']}: {out['error']}")
        return out

    def pipeline(self, clip: Path, seconds: float) -> dict[str, Any]:
        """Score ``clip`` (looping) the naive way for ``seconds``; fps, latency, CPU, RSS."""
        return self._ask(op="pipeline", clip=str(clip), seconds=seconds)

    def model_only(self, seconds: float, min_iters: int = 3) -> dict[str, Any]:
        """Forward latency at batch 1 on a random input (no decoding)."""
        return self._ask(op="model", seconds=seconds, min_iters=min_iters)

    def probs(self, x: np.ndarray) -> np.ndarray:
        """(B, 4) probabilities of the baseline model for a preprocessed batch."""
        return self._ask(op="probs", x=np.ascontiguousarray(x, np.float32))

    def close(self) -> None:
        if self._proc.is_alive():
            with contextlib.suppress(OSError, BrokenPipeError):
                self._conn.send({"op": "stop"})
            self._proc.join(3)  # torch's interpreter teardown can be slow: don't wait on it
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(5)
