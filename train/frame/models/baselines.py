"""Table I baselines without a learned localisation (Roy et al. 2020, PAPER.md section 1).

Every model returns the same output dict as Reg-STN, so the runtime draws boxes uniformly:
models that see the whole frame return identity transforms.
"""

from __future__ import annotations

import torch
from torch import nn

from train.frame.models.cnn import FrameCNN
from train.frame.models.sampling import affine_crop, base_grid, identity_theta, theta_from_params
from train.frame.models.stn import CROP


def _out(logits: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor,
         logits2: torch.Tensor | None) -> dict[str, torch.Tensor | None]:
    sigma = torch.stack([t1[:, 0, 0], t2[:, 0, 0]], 1)
    return {"logits": logits, "probs": logits.softmax(1), "theta1": t1, "theta2": t2,
            "logits2": logits2, "sigma": sigma}


class WholeFrameCNN(nn.Module):
    """CNN + CE / CNN + SORD: the CNN on the whole frame resampled to size x size (θ = identity).

    Args:
        size: 112 (Table I rows: the frame at half its pixel scale) or 224 (the frame as it
            is, i.e. the pixel scale of Reg-STN's σ = 0.5 crops; stage 1 of the CPU recipe,
            so a Φ_cnn warm-started from it sees findings at the size it learnt them).
    """

    def __init__(self, n_classes: int = 4, size: int = CROP) -> None:
        super().__init__()
        self.size = size
        self.cnn = FrameCNN(n_classes)
        self.register_buffer("base", base_grid(size, size), persistent=False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        t = identity_theta(x.shape[0], x.device)
        xs = x if x.shape[-1] == self.size and x.shape[-2] == self.size else \
            affine_crop(x, t, self.base, (self.size, self.size))
        logits = self.cnn(xs).float()
        return _out(logits, t, t, None)


class RandomCropCNN(nn.Module):
    """CNN + random crop + SORD: two overlapping random crops and the consistency loss.

    Training: σ₁, σ₂ ~ U(0.5, 1); τ₁ ~ U(-(1-σ₁), 1-σ₁) per axis (crop 1 inside the frame);
    τ₂ = τ₁ + U(-0.25, 0.25) so the crops overlap. Evaluation: both crops are the whole frame
    (θ = identity), which is inside the training distribution (σ = 1).
    """

    def __init__(self, n_classes: int = 4) -> None:
        super().__init__()
        self.cnn = FrameCNN(n_classes)
        self.register_buffer("base", base_grid(CROP, CROP), persistent=False)

    @staticmethod
    def random_thetas(batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Two overlapping random crops per image: θ₁, θ₂ (B, 2, 3)."""
        sig = 0.5 + 0.5 * torch.rand(batch, 2, device=device)
        tau1 = (2 * torch.rand(batch, 2, device=device) - 1) * (1 - sig[:, :1])
        tau2 = (tau1 + 0.5 * torch.rand(batch, 2, device=device) - 0.25).clamp(-0.5, 0.5)
        zero = torch.zeros(batch, 2, device=device)
        return (theta_from_params(sig[:, 0], zero, tau1),
                theta_from_params(sig[:, 1], zero, tau2))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        if not self.training:
            t = identity_theta(x.shape[0], x.device)
            logits = self.cnn(affine_crop(x, t, self.base, (CROP, CROP))).float()
            return _out(logits, t, t, None)
        t1, t2 = self.random_thetas(x.shape[0], x.device)
        crops = torch.cat([affine_crop(x, t1, self.base, (CROP, CROP)),
                           affine_crop(x, t2, self.base, (CROP, CROP))])
        logits, logits2 = self.cnn(crops).float().chunk(2)
        return _out(logits, t1, t2, logits2)


class ResNet18(nn.Module):
    """ResNet-18 + SORD: torchvision ResNet-18 (random init, no download) on the 224x224 frame."""

    def __init__(self, n_classes: int = 4) -> None:
        super().__init__()
        from torchvision.models import resnet18

        self.net = resnet18(weights=None, num_classes=n_classes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        t = identity_theta(x.shape[0], x.device)
        return _out(self.net(x).float(), t, t, None)
