"""The one inference interface every backend implements, and its outputs.

The runtime (``stream/``, ``ui/``) only ever runs models through an :class:`Engine` made by
``engines.create_engine(bundle, backend)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FrameOutput:
    """Reg-STN outputs for a batch.

    Attributes:
        probs: (B, 4) float32, class probabilities of crop 1 (scores 0..3), rows sum to 1.
        theta1: (B, 2, 3) float32, affine transform of crop 1 in ``affine_grid`` convention
            (output grid in [-1, 1] -> input coordinates in [-1, 1]).
        theta2: (B, 2, 3) float32, the same for crop 2.
        findings: (B, F) float32 sigmoid probabilities of the findings named in the bundle's
            ``models.frame.finding_names`` (e.g. B-lines, consolidations), or None when the
            frame model has no findings head.
    """

    probs: np.ndarray
    theta1: np.ndarray
    theta2: np.ndarray
    findings: np.ndarray | None = None


@dataclass(frozen=True)
class SegOutput:
    """Segmentation outputs for a batch, in the segmentation model's input space.

    Attributes:
        probs: (B, 5, H, W) float32 softmax over {BG, 0, 1, 2, 3} (ensemble / MC mean).
        std: (B, H, W) float32 per-pixel standard deviation over MC-dropout passes (of the
            probability of the predicted class), or None when no sampling was done.
    """

    probs: np.ndarray
    std: np.ndarray | None = None


class Engine(ABC):
    """A loaded bundle on one backend. Not thread-safe: one engine per worker thread."""

    backend: str = "abstract"

    @abstractmethod
    def frame(self, x: np.ndarray) -> FrameOutput:
        """Score preprocessed frames.

        Args:
            x: (B, 3, 224, 224) float32 from :func:`engines.preprocess.preprocess_batch`
               with the bundle's frame spec.
        """

    def has_segmentation(self) -> bool:
        return False

    def segment(self, x: np.ndarray, mc_samples: int = 0) -> SegOutput:
        """Segment preprocessed frames (the bundle's seg spec). Optional per bundle."""
        raise NotImplementedError("this bundle has no segmentation model")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free backend resources."""
