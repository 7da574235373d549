"""Frame probabilities of whole videos from a *frozen* frame model, cached per run.

The video stage never trains the frame model: it runs it (a PyTorch frame run, or a bundle
through the engines, the runtime's own path) over every frame of videos that model did not
train on, and keeps the (N, 4) probabilities per video (Roy et al. 2020, section 2).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from engines.base import FrameOutput
from engines.preprocess import FRAME_SPEC, PreprocessSpec, preprocess_batch

log = logging.getLogger(__name__)


class TorchFrameEngine:
    """A PyTorch frame model behind the runtime's ``Engine.frame`` interface.

    Args:
        model: a frame model of :mod:`train.frame.models.registry` (forward returns a dict with
            ``probs``, ``theta1``, ``theta2``).
        device: torch device string.
    """

    backend = "torch"

    def __init__(self, model: torch.nn.Module, device: str = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    @torch.inference_mode()
    def frame(self, x: np.ndarray) -> FrameOutput:
        out = self.model(torch.from_numpy(np.ascontiguousarray(x)).to(self.device))
        return FrameOutput(out["probs"].float().cpu().numpy(),
                           out["theta1"].float().cpu().numpy(),
                           out["theta2"].float().cpu().numpy())

    def close(self) -> None:
        pass


def engine_from_run(run: str | Path, device: str = "cpu") -> TorchFrameEngine:
    """Load a frame run (``pleura train frame --out RUN``) as an engine (best checkpoint)."""
    from train.frame.run import load_run

    loaded = load_run(run, device=device)
    model = loaded[0] if isinstance(loaded, tuple) else getattr(loaded, "model", loaded)
    return TorchFrameEngine(model, device)


def video_frame_probs(frames: np.ndarray, engine, spec: PreprocessSpec = FRAME_SPEC,
                      batch: int = 32) -> np.ndarray:
    """(N, H, W[, C]) uint8 frames -> (N, 4) float32 probabilities from ``engine.frame``."""
    out = []
    for i in range(0, len(frames), batch):
        x, _ = preprocess_batch(list(frames[i:i + batch]), spec)
        out.append(np.asarray(engine.frame(x).probs, dtype=np.float32))
    return np.concatenate(out) if out else np.zeros((0, 4), np.float32)


def dataset_frame_probs(read_frames: Callable[[str], np.ndarray], video_ids: Iterable[str],
                        engine, spec: PreprocessSpec = FRAME_SPEC, batch: int = 32,
                        cache: str | Path | None = None) -> dict[str, np.ndarray]:
    """Frame probabilities of many videos, reusing (and extending) an ``.npz`` cache.

    Args:
        read_frames: video_id -> (N, H, W) uint8 frames (e.g. ``LusDataset.read_frames``).
        video_ids: videos to score.
        engine: ``frame(x) -> FrameOutput``.
        cache: ``.npz`` file keyed by video id; videos already in it are not recomputed.

    Returns:
        video_id -> (N, 4) float32.
    """
    ids = list(video_ids)
    probs: dict[str, np.ndarray] = {}
    cache_path = Path(cache) if cache else None
    if cache_path and cache_path.is_file():
        with np.load(cache_path) as z:  # keep every cached video, not only the ones asked for
            probs = {k: z[k] for k in z.files}
    todo = [v for v in ids if v not in probs]
    for k, vid in enumerate(todo, 1):
        probs[vid] = video_frame_probs(read_frames(vid), engine, spec, batch)
        log.info("frame probabilities %d/%d: %s (%d frames)", k, len(todo), vid, len(probs[vid]))
        if cache_path and (k % 10 == 0 or k == len(todo)):
            np.savez_compressed(cache_path, **probs)
    return {v: probs[v] for v in ids}


def oracle_frame_probs(scores: np.ndarray, noise: float, rng: np.random.Generator,
                       margin: float = 2.0) -> np.ndarray:
    """Simulated frame-model output from ground-truth frame scores (no model at all).

    ``logits_i = margin * [i == s] - 0.5 * |i - s| + noise * N(0, 1)``, softmaxed: a frame
    classifier whose mistakes are mostly to the neighbouring score and whose accuracy falls as
    ``noise`` grows. A controlled test of the aggregation alone, independent of any frame
    model; never a substitute for one in reported results without saying so.

    Args:
        scores: (N,) frame scores 0..3.
        noise: standard deviation of the logit noise.

    Returns:
        (N, 4) float32 probabilities.
    """
    s = np.asarray(scores, dtype=np.int64)
    i = np.arange(4)[None, :]
    logits = margin * (i == s[:, None]) - 0.5 * np.abs(i - s[:, None])
    logits = logits + noise * rng.standard_normal(logits.shape)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
