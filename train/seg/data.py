"""Masked frames for segmentation: letterboxing, the paper's augmentation, balanced sampling.

Images go through ``engines.preprocess`` exactly as at serving time (letterbox into
``SEG_SPEC``, then ``normalise`` to [-1, 1]); masks get the same letterbox geometry with
nearest-neighbour sampling (:func:`letterbox_mask`). Augmentation (PAPER.md section 3) runs on
the letterboxed uint8 image and its mask together, before normalisation.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from tqdm import tqdm

from engines.preprocess import SEG_SPEC, Letterbox, letterbox, normalise, to_grey


def letterbox_mask(mask: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Apply an image's letterbox to its label map with nearest-neighbour sampling.

    Uses the :class:`Letterbox` that ``engines.preprocess.letterbox`` returned for the image,
    so the mask lands on exactly the same pixels (same half-pixel convention as ``cv2.resize``:
    ``x_dst = scale * (x_src + 0.5) - 0.5 + pad``). Padding is 0 (BG).

    Args:
        mask: (H, W) uint8 label map of the source frame (``lb.src_hw``).
        lb: the image's letterbox.

    Returns:
        (dst_h, dst_w) uint8 label map.
    """
    if mask.shape[:2] != tuple(lb.src_hw):
        raise ValueError(f"mask shape {mask.shape[:2]} does not match its frame {lb.src_hw}")
    s = lb.scale
    M = np.array([[s, 0, lb.pad_x + 0.5 * s - 0.5], [0, s, lb.pad_y + 0.5 * s - 0.5]])
    dh, dw = lb.dst_hw
    return cv2.warpAffine(mask, M, (dw, dh), flags=cv2.INTER_NEAREST,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def letterbox_pair(frame: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Source frame + mask -> ``SEG_SPEC``-sized uint8 image (H, W) and label map (H, W)."""
    img, lb = letterbox(to_grey(frame), (SEG_SPEC.height, SEG_SPEC.width))
    return img, letterbox_mask(mask, lb)


@dataclass(frozen=True)
class AugmentConfig:
    """The paper's on-line augmentation (PAPER.md section 3): each op with probability ``p``."""

    p: float = 0.33
    translate: float = 0.15      # fraction of the image size
    rotate: float = 15.0         # degrees
    scale: float = 0.45          # x (1 +- scale)
    shear: float = 4.5           # degrees
    intensity: float = 0.45      # x (1 +- intensity)
    blur_sigma: float = 0.75
    contrast: float = 0.45
    flip_p: float = 0.5
    noise_sigma: float = 0.015   # fraction of the full range


def build_augmentation(cfg: AugmentConfig = AugmentConfig()) -> A.Compose:
    """albumentations pipeline for (uint8 image (H, W), uint8 mask (H, W)) pairs.

    Geometric ops use bilinear sampling for the image and nearest for the mask, both filled
    with 0 (black / BG) outside the frame.
    """
    geo = dict(interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST,
               border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=cfg.p)
    t, r, s, sh = cfg.translate, cfg.rotate, cfg.scale, cfg.shear
    return A.Compose([
        A.Affine(translate_percent=(-t, t), **geo),
        A.Affine(rotate=(-r, r), **geo),
        A.Affine(scale=(1 - s, 1 + s), **geo),
        A.Affine(shear=(-sh, sh), **geo),
        A.MultiplicativeNoise(multiplier=(1 - cfg.intensity, 1 + cfg.intensity),
                              per_channel=False, elementwise=False, p=cfg.p),
        A.GaussianBlur(blur_limit=(3, 3), sigma_limit=(0.1, cfg.blur_sigma), p=cfg.p),
        A.RandomBrightnessContrast(brightness_limit=0.0, contrast_limit=cfg.contrast, p=cfg.p),
        A.HorizontalFlip(p=cfg.flip_p),
        A.GaussNoise(std_range=(0.0, cfg.noise_sigma), p=cfg.p),
    ])


class SegFrames(Dataset):
    """Letterboxed masked frames held in memory (uint8), augmented on the fly.

    Args:
        images: (N, H, W) uint8 letterboxed frames.
        masks: (N, H, W) uint8 label maps (0 = BG, s + 1 = score s).
        scores: (N,) frame scores 0..3; patients: (N,) patient ids (for the sampler).
        augment: an albumentations pipeline or None.

    Items: ``(x (1, H, W) float32 in [-1, 1], y (H, W) int64)``.
    """

    def __init__(self, images: np.ndarray, masks: np.ndarray, scores: Sequence[int],
                 patients: Sequence[str], augment: A.Compose | None = None) -> None:
        if not (len(images) == len(masks) == len(scores) == len(patients)):
            raise ValueError("images, masks, scores and patients must have the same length")
        self.images, self.masks = images, masks
        self.scores = np.asarray(scores, dtype=np.int64)
        self.patients = np.asarray(patients)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img, mask = self.images[i], self.masks[i]
        if self.augment is not None:
            out = self.augment(image=img, mask=mask)
            img, mask = out["image"], out["mask"]
        x = normalise(np.ascontiguousarray(img), SEG_SPEC)
        return torch.from_numpy(x), torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64))


def load_masked_frames(ds, video_ids: Sequence[str], max_frames: int | None = None,
                       seed: int = 0, probe: str | None = None, progress: bool = True,
                       ) -> SegFrames:
    """Read every masked frame of ``video_ids`` from a ``LusDataset``, letterboxed.

    Args:
        ds: a ``train.data.layout.LusDataset``.
        video_ids: videos to take (e.g. one split of ``split_by_patient``).
        max_frames: keep at most this many frames, drawn at random (seeded) over all videos.
        probe: keep only this probe ("convex" as in the paper), or all when None.

    Raises:
        ValueError: when no frame with a mask is found, naming the dataset root.
    """
    wanted = set(video_ids)
    recs = [r for r in ds.frames if r.video_id in wanted and (probe is None or r.probe == probe)
            and ds.has_mask(r.video_id, r.frame)]
    if not recs:
        raise ValueError(f"no masked frames in {ds.root} for {len(wanted)} videos "
                         f"(probe={probe}); write masks/<video_id>/<frame>.json")
    if max_frames is not None and len(recs) > max_frames:
        keep = np.random.default_rng(seed).choice(len(recs), max_frames, replace=False)
        recs = [recs[i] for i in sorted(keep)]
    h, w = SEG_SPEC.height, SEG_SPEC.width
    images = np.zeros((len(recs), h, w), np.uint8)
    masks = np.zeros((len(recs), h, w), np.uint8)
    by_video: dict[str, list[int]] = {}
    for i, r in enumerate(recs):
        by_video.setdefault(r.video_id, []).append(i)
    for vid, idx in tqdm(by_video.items(), desc="load masks", disable=not progress, leave=False):
        frames = ds.read_frames(vid)
        for i in idx:
            images[i], masks[i] = letterbox_pair(frames[recs[i].frame],
                                                 ds.read_mask(vid, recs[i].frame))
    return SegFrames(images, masks, [r.score for r in recs], [r.patient_id for r in recs])


class BalancedSampler(Sampler[int]):
    """Draws frames balanced over scores, then over patients within a score.

    Each draw: a score uniformly among the scores present, a patient uniformly among the
    patients with frames of that score, then one of that patient's frames of that score, so
    every (score) and, within it, every (patient) is equally likely (PAPER.md section 3:
    "batches balanced over patients and scores"). Draws are with replacement; a new epoch
    (new ``__iter__``) gives new draws, reproducible from ``seed``.

    Args:
        scores: (N,) frame scores; patients: (N,) patient ids.
        num_samples: draws per epoch.
    """

    def __init__(self, scores: Sequence[int], patients: Sequence[str], num_samples: int,
                 seed: int = 0) -> None:
        self.groups: dict[int, list[np.ndarray]] = {}
        scores, patients = np.asarray(scores), np.asarray(patients)
        for s in np.unique(scores):
            self.groups[int(s)] = [np.flatnonzero((scores == s) & (patients == p))
                                   for p in np.unique(patients[scores == s])]
        self.num_samples, self.seed, self.epoch = num_samples, seed, 0

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        keys = sorted(self.groups)
        for _ in range(self.num_samples):
            pats = self.groups[keys[rng.integers(len(keys))]]
            idx = pats[rng.integers(len(pats))]
            yield int(idx[rng.integers(len(idx))])
