"""Reg-STN (Roy et al. 2020, section II-B; PAPER.md section 1) and the single-crop STN baseline.

Φ = Φ_cnn ∘ Φ_stn. The localisation network (its own copy of the CNN trunk on the full
224x224 frame) predicts two transforms θ₁, θ₂ = [[σ, r₁, τ_α], [r₂, σ, τ_β]]; each cuts a
112x112 crop by bilinear sampling; Φ_cnn scores both and the prediction is Φ_cnn(x₁).
Unlike the released code, each crop uses its *own* translation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from train.frame.models.cnn import CHANNELS, FrameCNN, Trunk
from train.frame.models.sampling import affine_crop, base_grid, theta_from_params
from train.losses import PAPER_SCALES

CROP = 112
INPUT = 224
LOC_FEATURES = CHANNELS[-1] * (INPUT // 32) ** 2  # 128 * 7 * 7 = 6272


MAX_ANGLE = math.pi / 6
"""Largest crop rotation of the ``rotation`` parametrisation (30°)."""


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


class LocNet(nn.Module):
    """Localisation trunk: (B, 3, S, S) -> (B, 32) features (trunk -> 128·(S/32)² -> 32 -> ReLU).

    S = 224 in the paper (6272 features); the CPU recipe runs it on the frame average-pooled
    to S = 112 (1152 features, 4x fewer MACs).
    """

    def __init__(self, size: int = INPUT) -> None:
        super().__init__()
        self.size = size
        self.trunk = Trunk()
        n = CHANNELS[-1] * (size // 32) ** 2
        self.fc = nn.Sequential(nn.Linear(n, 32), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[1]

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) -> the trunk's map (B, 128, S/32, S/32) and the features (B, 32)."""
        if not torch.jit.is_tracing() and x.shape[-2:] != (self.size, self.size):
            raise ValueError(f"the STN localisation net needs {self.size}x{self.size} input, "
                             f"got {tuple(x.shape[-2:])}; preprocess with engines.preprocess")
        fmap = self.trunk(x)
        return fmap, self.fc(fmap.flatten(1))


class EvidenceTranslation(nn.Module):
    """Translations from where a per-location score map peaks (a soft-argmax head).

    The localisation trunk's map (B, 128, h, w) goes through a per-location classifier
    (1x1 convolutions 128 -> 256 -> BN -> ReLU -> 4, the shape of Φ_cnn's head, so it can be
    warm-started from a trained frame CNN's head: a class-activation map, Zhou et al. 2016);
    each location's expected score E[s] = Σ_c c·p_c is softmax-weighted over the map with a
    learnt sharpness β_k per crop, and the weighted mean of the cell centres is the crop's
    centre u_k in [-1 + 1/w, 1 - 1/w]. No box labels: the map learns only through the frame
    score loss, as the paper's heads do.
    """

    def __init__(self, channels: int = CHANNELS[-1], n_classes: int = 4,
                 beta_init: tuple[float, float] = (4.0, 2.0)) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv2d(channels, 256, 1), nn.BatchNorm2d(256),
                                 nn.ReLU(inplace=True), nn.Conv2d(256, n_classes, 1))
        self.log_beta = nn.Parameter(torch.log(torch.tensor(beta_init)))
        self.register_buffer("levels", torch.arange(n_classes, dtype=torch.float32)
                             .view(1, n_classes, 1, 1), persistent=False)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, 4) = (u_x¹, u_y¹, u_x², u_y²), cell-centre coordinates."""
        ev = (self.mlp(fmap).softmax(1) * self.levels).sum(1)  # (B, h, w) expected score
        b, h, w = ev.shape
        ys = (torch.arange(h, device=ev.device, dtype=ev.dtype) * 2 + 1) / h - 1
        xs = (torch.arange(w, device=ev.device, dtype=ev.dtype) * 2 + 1) / w - 1
        gx = xs.view(1, 1, w).expand(1, h, w).reshape(1, h * w)
        gy = ys.view(1, h, 1).expand(1, h, w).reshape(1, h * w)
        out = []
        for k in range(2):
            wgt = (ev.reshape(b, h * w) * self.log_beta[k].exp()).softmax(1)
            out += [(wgt * gx).sum(1), (wgt * gy).sum(1)]
        return torch.stack(out, 1)


def _head(n_out: int, bias: tuple[float, ...]) -> nn.Linear:
    """A zero-weight linear head whose output starts at ``bias`` for every input."""
    lin = nn.Linear(32, n_out)
    nn.init.zeros_(lin.weight)
    with torch.no_grad():
        lin.bias.copy_(torch.tensor(bias))
    return lin


class RegSTN(nn.Module):
    """CNN + Reg-STN + SORD. Two regularised crops, prediction from crop 1.

    Heads (PAPER.md): translation Linear(32, 4), zero weights, bias (0.3, 0.3, 0.2, 0.2)
    = (τ_α¹, τ_β¹, τ_α², τ_β²); scale Linear(32, 2) -> sigmoid, zero weights and bias
    logit(0.5), logit(0.75) so that σ₁, σ₂ start at the prior's targets 0.5 and 0.75;
    off-diagonal Linear(32, 4), zero weights and bias (r₁¹, r₂¹, r₁², r₂²).

    Args:
        fixed_scale: the paper's variant with fixed σ = (0.5, 0.75), no off-diagonal terms,
            and learnable translations only.
        loc_size: side of the localisation net's input. 224 = the paper; 112 = the CPU
            recipe (the frame is 2x2 average-pooled before the localisation trunk only; the
            crops are still cut from the full 224x224 frame).
        trans_init: initial (τ_α¹, τ_β¹, τ_α², τ_β²) (kept as ``trans_init`` for the
            frozen-translation comparison of ``pleura eval frame``).
        bounded: keep each crop inside the frame: τ = (1 − σ) · tanh(head output), per crop
            and axis (the CPU recipe; the head's bias starts at atanh(τ₀ / (1 − σ₀)) so the
            initial crops are the paper's). Unbounded (the paper), a crop can leave the frame
            and look at the black padding, which a frozen classifier reads as "healthy".
        evidence: translations from :class:`EvidenceTranslation` (attribute ``evidence``) on the
            localisation trunk's map instead of the paper's linear head on its 32 features
            (CPU recipe; implies bounded: τ = (1 − σ) · u / u_max). Scale and off-diagonal
            heads are the paper's.
        rotation: the off-diagonal head predicts one angle α per crop, |α| ≤ 30° (tanh), and
            θ's linear part is σ·R(α): exactly rotation + isotropic scale, as the method
            states. The paper's parametrisation (σ on the diagonal, free r₁, r₂) also allows
            shear; with a 10x learning rate on the θ heads it turned crops into thin
            parallelograms across the frame (CPU recipe, measured).
    """

    def __init__(self, n_classes: int = 4, fixed_scale: bool = False,
                 scale_init: tuple[float, float] = PAPER_SCALES,
                 trans_init: tuple[float, float, float, float] = (0.3, 0.3, 0.2, 0.2),
                 loc_size: int = INPUT, bounded: bool = False, evidence: bool = False,
                 rotation: bool = False) -> None:
        super().__init__()
        self.rotation = rotation
        if INPUT % loc_size:
            raise ValueError(f"loc_size must divide {INPUT}, got {loc_size}")
        self.fixed_scale = fixed_scale
        self.loc_size = loc_size
        self.bounded = bounded
        self.trans_init = tuple(trans_init)
        self.loc = LocNet(loc_size)
        self.use_evidence = evidence
        if evidence:
            self.evidence = EvidenceTranslation()
            cells = loc_size // 32
            self.u_max = 1.0 - 1.0 / cells
        elif bounded:
            s0 = (scale_init[0],) * 2 + (scale_init[1],) * 2
            if any(abs(t) >= 1 - s for t, s in zip(trans_init, s0, strict=True)):
                raise ValueError(f"bounded translations need |τ₀| < 1 − σ₀; got {trans_init} "
                                 f"with σ₀ = {scale_init}")
            self.translation = _head(4, tuple(math.atanh(t / (1 - s))
                                              for t, s in zip(trans_init, s0, strict=True)))
        else:
            self.translation = _head(4, trans_init)
        if fixed_scale:
            self.register_buffer("sigma_fixed", torch.tensor(scale_init))
        else:
            self.scale = _head(2, tuple(_logit(s) for s in scale_init))
            self.offdiag = _head(2 if rotation else 4, (0.0,) * (2 if rotation else 4))
        self.cnn = FrameCNN(n_classes)
        self.register_buffer("base", base_grid(CROP, CROP), persistent=False)

    def thetas(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 3, 224, 224) -> θ₁ (B, 2, 3), θ₂ (B, 2, 3), σ (B, 2)."""
        k = INPUT // self.loc_size
        fmap, h = self.loc.features(F.avg_pool2d(x, k) if k > 1 else x)
        tau = (self.evidence(fmap) if self.use_evidence else self.translation(h)).float()
        if self.fixed_scale:
            sigma = self.sigma_fixed.expand(x.shape[0], 2)
            r = torch.zeros_like(tau)
        else:
            sigma = torch.sigmoid(self.scale(h).float())  # (B, 2)
            r = self.offdiag(h).float()
        if self.rotation and not self.fixed_scale:
            return self._rotated(sigma, torch.tanh(r) * MAX_ANGLE, tau)
        if self.use_evidence:
            tau = tau / self.u_max * (1 - sigma.repeat_interleave(2, dim=1))
        elif self.bounded:
            tau = torch.tanh(tau) * (1 - sigma.repeat_interleave(2, dim=1))
        t1 = theta_from_params(sigma[:, 0], r[:, 0:2], tau[:, 0:2])
        t2 = theta_from_params(sigma[:, 1], r[:, 2:4], tau[:, 2:4])
        return t1, t2, sigma

    def _rotated(self, sigma: torch.Tensor, alpha: torch.Tensor, tau: torch.Tensor,
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """θ_k = [σ_k·R(α_k) | τ_k] with τ kept inside the frame (|τ| ≤ 1 − σ per axis)."""
        if self.use_evidence:
            tau = tau / self.u_max
        else:
            tau = torch.tanh(tau) if self.bounded else tau
        if self.use_evidence or self.bounded:
            tau = tau * (1 - sigma.repeat_interleave(2, dim=1))
        out = []
        for k in range(2):
            c, s_ = torch.cos(alpha[:, k]) * sigma[:, k], torch.sin(alpha[:, k]) * sigma[:, k]
            row1 = torch.stack([c, -s_, tau[:, 2 * k]], 1)
            row2 = torch.stack([s_, c, tau[:, 2 * k + 1]], 1)
            out.append(torch.stack([row1, row2], 1))
        return out[0], out[1], sigma

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """(B, 3, 224, 224) in [0, 1] -> the model output dict (see train.frame.models.registry)."""
        t1, t2, sigma = self.thetas(x)
        crops = torch.cat([affine_crop(x, t1, self.base, (CROP, CROP)),
                           affine_crop(x, t2, self.base, (CROP, CROP))])  # (2B, 3, 112, 112)
        logits_all = self.cnn(crops).float()
        logits, logits2 = logits_all.chunk(2)
        return {"logits": logits, "probs": logits.softmax(1), "theta1": t1, "theta2": t2,
                "logits2": logits2, "sigma": sigma}


class FreeSTN(nn.Module):
    """CNN + STN + SORD baseline: one crop, free 6-parameter affine, no consistency, no prior.

    The θ head starts at the identity (Jaderberg et al. 2015). θ₂ is reported equal to θ₁.
    """

    def __init__(self, n_classes: int = 4) -> None:
        super().__init__()
        self.loc = LocNet()
        self.affine = _head(6, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0))
        self.cnn = FrameCNN(n_classes)
        self.register_buffer("base", base_grid(CROP, CROP), persistent=False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        t1 = self.affine(self.loc(x)).float().view(-1, 2, 3)
        logits = self.cnn(affine_crop(x, t1, self.base, (CROP, CROP))).float()
        # isotropic-equivalent scale: sqrt(|det A|) of the 2x2 linear part
        det = t1[:, 0, 0] * t1[:, 1, 1] - t1[:, 0, 1] * t1[:, 1, 0]
        sigma = det.abs().clamp_min(1e-12).sqrt()[:, None]
        return {"logits": logits, "probs": logits.softmax(1), "theta1": t1, "theta2": t1,
                "logits2": None, "sigma": sigma.expand(-1, 2)}
