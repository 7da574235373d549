"""Per-member inference time through ONNX Runtime on this machine's CPU.

Each member is exported (softmax output, opset 17, via ``train.export``) to a temporary folder
just for timing; the bundle itself is written by ``pleura export``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engines.preprocess import SEG_SPEC


def onnx_latency_ms(model: nn.Module, threads: int = 1, runs: int = 20, warmup: int = 3,
                    ) -> dict[str, float]:
    """Median / p90 latency of one (1, 1, 200, 260) frame through ONNX Runtime's CPU provider.

    Args:
        model: a member (logits out); exported with a softmax head like the bundle's.
        threads: ``intra_op_num_threads``.

    Returns:
        ``{"median_ms", "p90_ms", "threads", "runs"}``.
    """
    import onnxruntime as ort

    from train.export import SegExport, export_onnx

    x = torch.zeros(1, SEG_SPEC.channels, SEG_SPEC.height, SEG_SPEC.width)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(SegExport(model.eval()), x, Path(tmp) / "seg.onnx", "seg", ["probs"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feed = {"seg": np.random.default_rng(0).uniform(-1, 1, x.shape).astype(np.float32)}
        for _ in range(warmup):
            sess.run(None, feed)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            sess.run(None, feed)
            times.append(1000 * (time.perf_counter() - t))
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)),
            "threads": threads, "runs": runs}
