"""Frames of a :class:`train.data.layout.LusDataset` as model inputs.

Decoding the videos is the slow part, so every labelled frame of a dataset is decoded once,
letterboxed to the frame model's input size by :mod:`engines.preprocess` (the shared
contract) and cached as (N, 224, 224) uint8 in an ``.npz`` next to the runs. Augmentation
(torchvision v2, the paper's recipe) runs on those uint8 frames; :func:`engines.preprocess.
normalise` then makes the (3, 224, 224) [0, 1] input, exactly as at serving time.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, WeightedRandomSampler
from tqdm import tqdm

from engines.preprocess import FRAME_SPEC, letterbox, normalise, to_grey
from train.data.layout import LusDataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameTable:
    """Every labelled frame of a dataset, preprocessed.

    Attributes:
        images: (N, H, W) uint8 letterboxed grey frames (H = W = 224).
        scores: (N,) int64 frame scores 0..3.
        video_ids: (N,) str.
        frames: (N,) int64 frame index inside its video.
    """

    images: np.ndarray
    scores: np.ndarray
    video_ids: np.ndarray
    frames: np.ndarray

    def select(self, video_ids: list[str] | None = None, max_per_video: int | None = None,
               stride: int = 1) -> np.ndarray:
        """Row indices of the chosen videos; at most ``max_per_video`` evenly spaced per video.

        Args:
            video_ids: keep these videos (None = all).
            max_per_video: cap per video (None = no cap).
            stride: keep every ``stride``-th labelled frame (before the cap).
        """
        keep = np.ones(len(self.scores), bool) if video_ids is None else \
            np.isin(self.video_ids, np.asarray(sorted(video_ids)))
        rows = []
        for vid in np.unique(self.video_ids[keep]):
            idx = np.nonzero(self.video_ids == vid)[0]
            idx = idx[np.argsort(self.frames[idx], kind="stable")][::max(1, stride)]
            if max_per_video and len(idx) > max_per_video:
                idx = idx[np.linspace(0, len(idx) - 1, max_per_video).round().astype(int)]
            rows.append(idx)
        return np.concatenate(rows) if rows else np.zeros(0, np.int64)


def _cache_key(ds: LusDataset) -> str:
    h = hashlib.sha1(str(ds.root).encode())
    for name in ("frames.csv", "videos.csv"):
        st = (ds.root / name).stat()
        h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    h.update(f"{FRAME_SPEC.height}x{FRAME_SPEC.width}".encode())
    return h.hexdigest()[:16]


def preprocess_uint8(frame: np.ndarray) -> np.ndarray:
    """A decoded frame -> (224, 224) uint8 letterboxed grey (engines.preprocess contract)."""
    boxed, _ = letterbox(to_grey(frame), (FRAME_SPEC.height, FRAME_SPEC.width))
    return boxed


def build_table(ds: LusDataset, cache_dir: str | Path | None = None,
                progress: bool = True) -> FrameTable:
    """Decode + letterbox every labelled frame of ``ds`` (cached in ``cache_dir``).

    Raises:
        ValueError: a labelled frame index is beyond the decoded video's length.
    """
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"frames-{ds.root.name}-{_cache_key(ds)}.npz"
        if path.exists():
            z = np.load(path, allow_pickle=False)
            return FrameTable(z["images"], z["scores"], z["video_ids"], z["frames"])
    images, scores, vids, idxs = [], [], [], []
    for vid in tqdm(sorted(ds.videos), desc=f"decode {ds.root.name}", disable=not progress):
        recs = ds.frames_of(vid)
        if not recs:
            continue
        arr = ds.read_frames(vid)
        for r in recs:
            if r.frame >= len(arr):
                raise ValueError(f"{ds.root / 'frames.csv'}: {vid} frame {r.frame} but the "
                                 f"video has {len(arr)} frames; fix the CSV or the video")
            images.append(preprocess_uint8(arr[r.frame]))
            scores.append(r.score)
            vids.append(vid)
            idxs.append(r.frame)
        ds._cache.clear()  # keep memory flat: each video is read once
    table = FrameTable(np.stack(images), np.asarray(scores, np.int64), np.asarray(vids),
                       np.asarray(idxs, np.int64))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, images=table.images, scores=table.scores, video_ids=table.video_ids,
                 frames=table.frames)
        tmp.replace(path)
    return table


def make_augment():
    """The paper's training augmentation (released code), torchvision v2 on (1, H, W) uint8.

    Random resized crop (scale 0.9-1), horizontal flip, rotation ±23°, intensity jitter 0.3.
    """
    from torchvision.transforms import v2

    return v2.Compose([
        v2.RandomResizedCrop((FRAME_SPEC.height, FRAME_SPEC.width), scale=(0.9, 1.0),
                             antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomRotation(23),
        v2.ColorJitter(brightness=0.3, contrast=0.3),
    ])


class FrameDataset(Dataset):
    """Rows of a :class:`FrameTable` -> ((3, 224, 224) float32 in [0, 1], score).

    Args:
        table: the preprocessed frames.
        rows: which rows (from :meth:`FrameTable.select`).
        augment: apply :func:`make_augment` (training only).
    """

    def __init__(self, table: FrameTable, rows: np.ndarray, augment: bool = False) -> None:
        self.table, self.rows = table, np.asarray(rows)
        self.augment = make_augment() if augment else None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        r = self.rows[i]
        img = self.table.images[r]
        if self.augment is not None:
            img = self.augment(torch.from_numpy(np.ascontiguousarray(img))[None])[0].numpy()
        x = torch.from_numpy(normalise(img, FRAME_SPEC))
        return x, int(self.table.scores[r])


def balanced_sampler(scores: np.ndarray, num_samples: int,
                     generator: torch.Generator) -> WeightedRandomSampler:
    """Class-balanced sampling with replacement: weight 1 / (frames of that class)."""
    counts = np.bincount(scores, minlength=4).astype(np.float64)
    w = 1.0 / np.maximum(counts[scores], 1.0)
    return WeightedRandomSampler(torch.as_tensor(w, dtype=torch.double), num_samples,
                                 replacement=True, generator=generator)
