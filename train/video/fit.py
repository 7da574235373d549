"""Learning the four uninorm neutral elements (Roy et al. 2020, PAPER.md section 2).

Adam, lr 1e-2, no weight decay, one full-batch step per epoch over all training videos, at
most 30 epochs, early stopping on the *training* loss keeping the e of the **lowest** loss (the
released code's option kept the highest — a bug we do not copy). Loss: cross-entropy of the
softmax of the aggregated values (``head="softmax"``, the paper; or of their logs,
``head="log"``) against SORD soft labels at video level with score 0 placed at -0.5 (the paper
pushes score 0 away from the others).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from train.losses import sord_targets
from train.video.fit_config import FitConfig
from train.video.uninorm_torch import UninormAggregator


def video_sord_targets(labels: np.ndarray | Sequence[int],
                       multiplier: float = 2.0) -> np.ndarray:
    """Video-level SORD soft labels with score 0 placed at -0.5 (Roy et al. 2020, section 2).

    :func:`train.losses.sord_targets` with ``zero_gap=True``: ``t_i ∝ exp(-m (s' - i')^2)``,
    where 0' = -0.5 and s' = s otherwise.

    Returns:
        (V, C) float64, rows sum to 1.
    """
    t = sord_targets(torch.as_tensor(np.asarray(labels, dtype=np.int64)), 4, multiplier,
                     zero_gap=True)
    return t.double().numpy()


def pad_videos(probs: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """List of (N_v, C) frame probabilities -> (V, N_max, C) float64 and (V, N_max) mask."""
    if not probs:
        raise ValueError("no videos to aggregate")
    n_max = max(len(p) for p in probs)
    c = probs[0].shape[1]
    P = torch.zeros((len(probs), n_max, c), dtype=torch.float64)
    mask = torch.zeros((len(probs), n_max), dtype=torch.bool)
    for i, p in enumerate(probs):
        P[i, : len(p)] = torch.as_tensor(np.asarray(p, dtype=np.float64))
        mask[i, : len(p)] = True
    return P, mask


@dataclass
class FitResult:
    """Result of :func:`fit_uninorm`.

    Attributes:
        e: (C,) neutral elements of the lowest training loss.
        best_epoch: epoch (0 = before any step) of that loss.
        losses: training loss at each evaluated epoch (losses[0] is before any step).
    """

    e: np.ndarray
    best_epoch: int
    losses: list[float] = field(default_factory=list)

    @property
    def best_loss(self) -> float:
        return self.losses[self.best_epoch]


def fit_uninorm(probs: Sequence[np.ndarray], labels: Sequence[int],
                cfg: FitConfig = FitConfig()) -> FitResult:
    """Fit the neutral elements on training videos.

    Epoch t evaluates the loss at the current e (t = 0: the initial e), remembers it if it is
    the lowest so far, then takes one Adam step; training stops after ``cfg.epochs`` steps or
    ``cfg.patience`` epochs without a new lowest loss.

    Args:
        probs: V arrays (N_v, C) of frozen frame-model probabilities.
        labels: V video scores.
        cfg: optimisation settings.

    Returns:
        The e with the lowest training loss and the loss curve.
    """
    P, mask = pad_videos(probs)
    target = torch.as_tensor(video_sord_targets(labels, cfg.sord_multiplier))
    model = UninormAggregator(P.shape[2], cfg.init_e, cfg.head)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    losses: list[float] = []
    best_e, best_epoch, since_best = model.neutral_elements(), 0, 0
    for epoch in range(cfg.epochs + 1):
        opt.zero_grad()
        logits = model(P, mask)
        loss = -(target * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
        losses.append(loss.item())
        if losses[-1] < losses[best_epoch] or epoch == 0:
            best_e, best_epoch, since_best = model.neutral_elements(), epoch, 0
        else:
            since_best += 1
        if epoch == cfg.epochs or since_best >= cfg.patience:
            break
        loss.backward()
        opt.step()
        model.project_()
    return FitResult(np.asarray(best_e), best_epoch, losses)
