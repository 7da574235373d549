"""Frames fed to an exported frame model: random and simulated ones for the export parity check,
frames spread over a dataset for int8 calibration and its F1 check.

Used by :mod:`train.export` (parity of ONNX vs PyTorch) and :mod:`train.quantize` (calibration
and evaluation); kept apart so neither imports the other for its inputs.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from engines.preprocess import FRAME_SPEC, preprocess_batch


def random_frames(n: int, seed: int) -> np.ndarray:
    """(n, 3, 224, 224) float32 uniform [0, 1], grey replicated (the frame contract)."""
    g = np.random.default_rng(seed).random((n, 1, FRAME_SPEC.height, FRAME_SPEC.width))
    return np.repeat(g.astype(np.float32), FRAME_SPEC.channels, axis=1)


def simulated_frames(n: int, seed: int) -> list[np.ndarray]:
    """n simulated B-mode frames (H, W) uint8 from pleura's simulator, mixed scores/probes."""
    from train.synth.writer import SynthConfig, synth_video

    cfg = SynthConfig(frames=max(1, (n + 1) // 2), size=256, seed=seed)
    frames: list[np.ndarray] = []
    for i, probe in enumerate(("convex", "linear")):
        frames += list(synth_video(cfg, 0, i, (seed + 2 * i + 1) % 4, probe)[0])
    return frames[:n]



def sample_frames(root: str | Path, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` frames spread evenly over a dataset's videos, preprocessed for the frame model.

    Returns:
        x (n, 3, 224, 224) float32, scores (n,) int64.
    """
    from train.data.layout import read_dataset

    ds = read_dataset(root, check_masks=False)
    recs = sorted(ds.frames, key=lambda r: (r.video_id, r.frame))
    if not recs:
        raise ValueError(f"{root}: the dataset has no labelled frames")
    idx = np.linspace(0, len(recs) - 1, min(n, len(recs))).round().astype(int)
    rng = np.random.default_rng(seed)
    idx = np.unique(np.clip(idx + rng.integers(0, 2, len(idx)), 0, len(recs) - 1))
    by_video: dict[str, list] = defaultdict(list)
    for i in idx:
        by_video[recs[i].video_id].append(recs[i])
    frames, scores = [], []
    for vid, rs in by_video.items():
        decoded = ds.read_frames(vid)
        for r in rs:
            frames.append(decoded[r.frame])
            scores.append(r.score)
    x, _ = preprocess_batch(frames, FRAME_SPEC)
    return x, np.asarray(scores, dtype=np.int64)
