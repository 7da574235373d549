"""The module that is exported to ``frame.onnx``: tuple outputs instead of a dict."""

from __future__ import annotations

import torch
from torch import nn


class FrameExportWrapper(nn.Module):
    """Wraps any registry frame model for export.

    forward(x: (B, 3, 224, 224) float32 in [0, 1]) -> (probs (B, 4), theta1 (B, 2, 3),
    theta2 (B, 2, 3)), the outputs of :class:`engines.base.FrameOutput`. The model is put in
    eval mode, where Reg-STN runs Φ_cnn on crop 1 only (its prediction; crop 2's θ is still
    an output, for its box).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.model(x)
        return out["probs"], out["theta1"], out["theta2"]
