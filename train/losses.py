"""Frame losses of Roy et al. 2020 (PAPER.md section 1), as pure functions.

L = L_SORD + L_MSE + L_P: soft-ordinal cross-entropy on crop 1, consistency between the
logits of the two crops, and the scale prior that keeps the two crops apart.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sord_targets(scores: torch.Tensor, n_classes: int = 4, multiplier: float = 2.0,
                 zero_gap: bool = False) -> torch.Tensor:
    """Soft ordinal (SORD) targets, Roy et al. 2020 eq. (3), Díaz & Marathe 2019.

    ŝ_i = exp(−δ(s, i)) / Σ_j exp(−δ(s, j)),  δ(s, i) = multiplier · (s − i)².
    With ``zero_gap`` score 0 is placed at −0.5 (for both s and i), pushing it farther from
    the others, as the paper's video stage does.

    Args:
        scores: (B,) integer scores in [0, n_classes).
        n_classes: number of ordinal classes.
        multiplier: δ multiplier (2 in the released code).
        zero_gap: place class 0 at −0.5.

    Returns:
        (B, n_classes) float32 rows summing to 1. For s = 0, multiplier 2:
        [0.8805, 0.1192, 0.0003, 0.0000].
    """
    s = torch.as_tensor(scores).reshape(-1).float()
    levels = torch.arange(n_classes, dtype=torch.float32, device=s.device)
    if zero_gap:
        levels = torch.where(levels == 0, torch.full_like(levels, -0.5), levels)
        s = torch.where(s == 0, torch.full_like(s, -0.5), s)
    delta = multiplier * (s[:, None] - levels[None, :]) ** 2
    return torch.softmax(-delta, dim=1)


def sord_loss(logits: torch.Tensor, scores: torch.Tensor, multiplier: float = 2.0,
              zero_gap: bool = False) -> torch.Tensor:
    """SORD cross-entropy: −Σ_i ŝ_i log softmax(logits)_i, averaged over the batch.

    Args:
        logits: (B, C) raw scores.
        scores: (B,) integer ground-truth scores.

    Returns:
        scalar tensor.
    """
    target = sord_targets(scores.to(logits.device), logits.shape[1], multiplier, zero_gap)
    return -(target * F.log_softmax(logits.float(), dim=1)).sum(1).mean()


def ce_loss(logits: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Plain cross-entropy with one-hot targets (the CNN + CE baseline). Scalar."""
    return F.cross_entropy(logits.float(), scores.to(logits.device).long())


def consistency_loss(logits1: torch.Tensor, logits2: torch.Tensor) -> torch.Tensor:
    """L_MSE = mean over batch and classes of (Φ_cnn(x₁) − Φ_cnn(x₂))² (Roy et al. eq. 4).

    Args:
        logits1, logits2: (B, C) logits of crop 1 and crop 2.
    """
    return F.mse_loss(logits1.float(), logits2.float())


# The scale prior's (σ₁, σ₂) targets in Roy et al. (eq. 5); a model spec may set its own.
PAPER_SCALES: tuple[float, float] = (0.5, 0.75)


def scale_prior(sigma: torch.Tensor, targets: tuple[float, float] = PAPER_SCALES) -> torch.Tensor:
    """L_P = |σ₁ − 0.5| + |σ₂ − 0.75|, averaged over the batch (Roy et al. eq. 5).

    Without it the two crops collapse onto one.

    Args:
        sigma: (B, 2) scales of crop 1 and crop 2.
        targets: (σ₁, σ₂) targets; the paper's (0.5, 0.75) unless a model says otherwise.
    """
    t = torch.tensor(targets, dtype=torch.float32, device=sigma.device)
    return (sigma.float() - t).abs().sum(1).mean()


def total_loss(out: dict[str, torch.Tensor | None], scores: torch.Tensor, loss: str = "sord",
               consistency: bool = True, prior: bool = True, multiplier: float = 2.0,
               zero_gap: bool = False, prior_targets: tuple[float, float] = PAPER_SCALES,
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """L = L_SORD (or CE) + [L_MSE] + [L_P] for one model output dict.

    Args:
        out: model output (``logits``, ``logits2``, ``sigma``; see train.frame.models.registry).
        scores: (B,) ground-truth scores.
        loss: "sord" or "ce".
        consistency: add L_MSE (needs ``logits2``).
        prior: add L_P (needs ``sigma``).
        prior_targets: the scale prior's (σ₁, σ₂) targets; the paper's (0.5, 0.75).

    Returns:
        (scalar loss, {"cls", "mse", "prior"} float parts for logging).
    """
    if loss == "sord":
        cls = sord_loss(out["logits"], scores, multiplier, zero_gap)
    elif loss == "ce":
        cls = ce_loss(out["logits"], scores)
    else:
        raise ValueError(f"unknown classification loss {loss!r}; use 'sord' or 'ce'")
    total, parts = cls, {"cls": float(cls.detach())}
    if consistency and out.get("logits2") is not None:
        mse = consistency_loss(out["logits"], out["logits2"])
        total = total + mse
        parts["mse"] = float(mse.detach())
    if prior and out.get("sigma") is not None:
        p = scale_prior(out["sigma"], prior_targets)
        total = total + p
        parts["prior"] = float(p.detach())
    return total, parts
