"""The real-scan frame network: the paper's CNN on the whole frame, made robust to devices.

Differences from ``cnn-sord`` (WholeFrameCNN), each measured in ``docs/results/real.md``:

- **Per-frame intensity standardisation inside the graph** (``norm="frame"``):
  ``x ← (x − mean(x)) / (std(x) + 0.02)`` over the whole letterboxed frame. Real devices and
  presets differ in gain and dynamic range, and in the POCUS clips the mean grey level tracks
  the label (34.7 / 59.1 / 73.3 / 44.9 for scores 0–3): standardising removes that shortcut
  from the input. It lives in the model, so the runtime's preprocessing is unchanged.
- **A findings head** (multi-label, sigmoid): B-lines, consolidations, effusion, A-lines,
  pleural irregularities, trained from the clips' flags as an auxiliary task; exported as the
  ``findings`` output.
- The frame is resampled to 112×112 by 2×2 average pooling (anti-aliased; the CNN's native
  crop size, 4× fewer MACs than 224²). θ₁ = θ₂ = identity: no localisation crops.
- **Prior correction** (logit adjustment, Menon et al. 2021): training draws the four scores
  equally often, but healthy clips are the majority; in eval mode the logits get
  ``log(prior) − log(1/4)`` (``logit_adjust``, set from the training clips' score counts by
  :func:`set_prior`), the Bayes correction from the balanced to the real prior.
- ``width`` scales the trunk's channels (0.5: 16, 32, 32, 32, 64, 64), ~3.5× faster to train on
  a 2-core CPU than the paper's widths, for 75 clips of training data.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from train.frame.models.cnn import CHANNELS, Trunk, conv_block
from train.frame.models.sampling import identity_theta

FINDING_NAMES = ("b_lines", "consolidations", "effusion", "a_lines", "pleural_irregularities")
"""Order of the ``findings`` output (the POCUS manifest's flag columns)."""
NORMS = ("frame", "none")


def standardise(x: torch.Tensor, eps: float = 0.02) -> torch.Tensor:
    """Per-frame standardisation: (B, C, H, W) → same shape, zero mean and ~unit std per frame."""
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    s = (x - m).pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
    return (x - m) / (s + eps)


class RealFrameNet(nn.Module):
    """forward(x: (B, 3, 224, 224) in [0, 1]) → the registry dict (see train.frame.models.registry)
    plus ``findings_logits`` / ``findings`` (B, 5).

    Args:
        norm: "frame" (per-frame standardisation) or "none" (raw [0, 1] input).
        n_findings: size of the findings head (0: none).
        width: channel multiplier of the paper's trunk (1.0 = 32 … 128).
    """

    def __init__(self, n_classes: int = 4, n_findings: int = len(FINDING_NAMES),
                 norm: str = "frame", width: float = 0.5) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if not 0.1 <= width <= 2.0:
            raise ValueError(f"width must be in [0.1, 2], got {width}")
        self.norm, self.width, self.n_findings = norm, width, n_findings
        chans = tuple(max(4, round(c * width)) for c in CHANNELS)
        self.trunk = Trunk(3)
        c_in = (3, *chans)
        self.trunk.blocks = nn.ModuleList(conv_block(c_in[i], c_in[i + 1]) for i in range(6))
        self.hidden = nn.Sequential(nn.Linear(chans[-1], 256), nn.BatchNorm1d(256),
                                    nn.ReLU(inplace=True), nn.Dropout(0.5))
        self.score = nn.Linear(256, n_classes)
        self.findings = nn.Linear(256, n_findings) if n_findings else None
        self.register_buffer("logit_adjust", torch.zeros(n_classes))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 224, 224) in [0, 1] → the penultimate features (B, 256) the heads read
        (the source probe of :mod:`train.real.sources` reads them too)."""
        if self.norm == "frame":
            x = standardise(x)
        x = F.avg_pool2d(x, 2)  # (B, 3, 112, 112)
        return self.hidden(self.trunk(x).mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        h = self.embed(x)
        logits = self.score(h)
        if not self.training:
            logits = logits + self.logit_adjust
        t = identity_theta(x.shape[0], x.device)
        out: dict[str, torch.Tensor | None] = {
            "logits": logits, "probs": logits.softmax(1), "theta1": t, "theta2": t,
            "logits2": None, "sigma": torch.ones(x.shape[0], 2, device=x.device),
            "findings_logits": None, "findings": None, "features": h}
        if self.findings is not None:
            f = self.findings(h)
            out["findings_logits"], out["findings"] = f, torch.sigmoid(f)
        return out


def prior_adjustment(counts, smoothing: float = 1.0) -> torch.Tensor:
    """``log(prior) − log(1/C)`` from per-score clip counts (add-``smoothing``)."""
    c = torch.as_tensor(counts, dtype=torch.float32) + smoothing
    return torch.log(c / c.sum()) - torch.log(torch.tensor(1.0 / len(c)))


def set_prior(model: RealFrameNet, counts) -> None:
    """Set the eval-mode logit adjustment from the training clips' score counts."""
    model.logit_adjust.copy_(prior_adjustment(counts))
