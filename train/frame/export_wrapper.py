"""The module that is exported to ``frame.onnx``: tuple outputs instead of a dict."""

from __future__ import annotations

import torch
from torch import nn

from train.frame.models.sampling import affine_crop
from train.frame.models.stn import CROP, RegSTN


class FrameExportWrapper(nn.Module):
    """Wraps any registry frame model for export.

    forward(x: (B, 3, 224, 224) float32 in [0, 1]) -> (probs (B, 4), theta1 (B, 2, 3),
    theta2 (B, 2, 3)), the outputs of :class:`engines.base.FrameOutput`.

    Reg-STN predicts from crop 1 only (PAPER.md section 1); crop 2's classification feeds the
    training loss's consistency term and nothing at inference. The exported graph therefore
    runs Φ_cnn on crop 1 alone (crop 2's θ is still an output, for its box): the same outputs
    as the model's ``forward`` in eval mode, without the wasted half of Φ_cnn's batch.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m = self.model
        if isinstance(m, RegSTN):
            t1, t2, _ = m.thetas(x)
            logits = m.cnn(affine_crop(x, t1, m.base, (CROP, CROP))).float()
            return logits.softmax(1), t1, t2
        out = m(x)
        return out["probs"], out["theta1"], out["theta2"]
