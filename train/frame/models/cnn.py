"""The frame CNN of van Sloun & Demi (2020), as used by Roy et al. 2020 (PAPER.md section 1).

Six blocks of two 3x3 convolutions (stride 1, padding 1, bias) each followed by BatchNorm and
ReLU; channels 32, 64, 64, 64, 128, 128; 2x2 max-pool after blocks 1-5; dropout 0.3 after
block 5; global average pool -> Linear(128, 256) -> BN -> ReLU -> dropout 0.5 -> Linear(256, 4).
The same trunk (without the head) is the Reg-STN localisation network.
"""

from __future__ import annotations

import torch
from torch import nn

CHANNELS: tuple[int, ...] = (32, 64, 64, 64, 128, 128)


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """Two (3x3 conv + BN + ReLU). (B, c_in, H, W) -> (B, c_out, H, W)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=True), nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=True), nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class Trunk(nn.Module):
    """The 6-block convolutional trunk. (B, 3, H, W) -> (B, 128, H/32, W/32).

    Attributes:
        blocks: the six conv blocks; ``blocks[-1]`` is the Grad-CAM target layer.
    """

    def __init__(self, in_channels: int = 3, dropout: float = 0.3) -> None:
        super().__init__()
        chans = (in_channels, *CHANNELS)
        self.blocks = nn.ModuleList(conv_block(chans[i], chans[i + 1]) for i in range(6))
        self.pool = nn.MaxPool2d(2)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i < 5:  # pool after blocks 1-5
                x = self.pool(x)
            if i == 4:  # dropout 0.3 after block 5
                x = self.drop(x)
        return x


class FrameCNN(nn.Module):
    """van Sloun & Demi's frame classifier: trunk -> GAP -> 128 -> 256 -> n_classes.

    Fully convolutional up to the global average pool, so it runs on any input size (the
    Reg-STN feeds it 112x112 crops).
    """

    def __init__(self, n_classes: int = 4, in_channels: int = 3) -> None:
        super().__init__()
        self.trunk = Trunk(in_channels)
        self.head = nn.Sequential(
            nn.Linear(CHANNELS[-1], 256), nn.BatchNorm1d(256), nn.ReLU(inplace=True),
            nn.Dropout(0.5), nn.Linear(256, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, n_classes) logits."""
        f = self.trunk(x)  # (B, 128, h, w)
        return self.head(f.mean(dim=(2, 3)))
