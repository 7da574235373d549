"""Segmentation members of the ensemble (Roy et al. 2020, section 3; PAPER.md section 3).

Three architectures behind one registry, all with the same forward contract::

    x: (B, 1, H, W) float32 in [-1, 1]  ->  logits (B, 5, H, W)   # classes {BG, 0, 1, 2, 3}

``H, W`` are normally ``SEG_SPEC`` (200 x 260), but any size works: each model pads its input
internally to the multiple its pooling needs (with -1, the letterbox background after
normalisation) and crops the logits back.

- ``unet``: the paper's small U-Net, written here (pooling 2-2-5, 16/32/64 filters, latent layer,
  nearest-neighbour upsampling, skips, dropout 0.5 at the bottleneck).
- ``unetpp``: U-Net++ with a ResNet-50 encoder (segmentation-models-pytorch).
- ``deeplabv3p``: DeepLabv3+ (segmentation-models-pytorch, ResNet-50 encoder).

Every member has dropout layers that :func:`enable_mc_dropout` can keep on at inference (MC
dropout, Gal & Ghahramani 2016, as used by the paper for its uncertainty maps).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from train.seg.config import ARCH_NAMES

N_CLASSES = 5
"""BG + scores 0..3 (label = score + 1)."""

PAD_VALUE = -1.0
"""Letterbox background (black) after [-1, 1] normalisation."""


@dataclass(frozen=True)
class ModelConfig:
    """What :func:`build_model` needs; stored in a run's ``config.json``.

    Attributes:
        arch: registry name, one of :data:`ARCHITECTURES`.
        dropout: dropout probability at the bottleneck (``unet``) or before the head (smp).
        encoder: smp encoder name (ignored by ``unet``).
        norm: batch norm after each conv of ``unet`` (not in the paper's description; without
            it the U-Net stayed at all-background for 75 Adam steps on the simulator, see
            docs/results/seg.md).
    """

    arch: str = "unet"
    dropout: float = 0.5
    encoder: str = "resnet50"
    norm: bool = True


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, int, int]:
    """Pad (B, C, H, W) at the bottom/right to multiples of ``multiple`` with ``PAD_VALUE``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), value=PAD_VALUE)
    return x, h, w


def _double_conv(cin: int, cout: int, norm: bool = True) -> nn.Sequential:
    """Two 3x3 conv + ReLU, with batch norm before each ReLU when ``norm``."""
    layers: list[nn.Module] = []
    for a, b in ((cin, cout), (cout, cout)):
        layers.append(nn.Conv2d(a, b, 3, padding=1, bias=not norm))
        if norm:
            layers.append(nn.BatchNorm2d(b))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class PaperUNet(nn.Module):
    """The paper's light U-Net.

    Encoder: three blocks of two 3x3 conv + ReLU (16, 32, 64 filters), each followed by max
    pooling with factors 2, 2 and 5 (200x260 -> 100x130 -> 50x65 -> 10x13); batch norm before
    each ReLU unless ``norm=False`` (our addition, see :class:`ModelConfig`). Latent layer: two
    3x3 conv + ReLU with 128 filters and dropout at the bottleneck. Decoder mirrors the encoder
    with nearest-neighbour upsampling (5, 2, 2), concatenated skips and two conv + ReLU per
    block, then a 1x1 conv to the 5 classes. Inputs are padded to a multiple of 2*2*5 = 20.
    """

    pools = (2, 2, 5)
    filters = (16, 32, 64)

    def __init__(self, in_channels: int = 1, classes: int = N_CLASSES, dropout: float = 0.5,
                 latent: int = 128, norm: bool = True) -> None:
        super().__init__()
        chans = (in_channels, *self.filters)
        self.down = nn.ModuleList(_double_conv(chans[i], chans[i + 1], norm) for i in range(3))
        self.latent = _double_conv(self.filters[-1], latent, norm)
        self.dropout = nn.Dropout(dropout)
        ups, cin = [], latent
        for f in reversed(self.filters):
            ups.append(_double_conv(cin + f, f, norm))
            cin = f
        self.up = nn.ModuleList(ups)
        self.head = nn.Conv2d(self.filters[0], classes, 1)
        self.multiple = 1
        for p in self.pools:
            self.multiple *= p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) in [-1, 1] -> logits (B, classes, H, W)."""
        x, h, w = _pad_to_multiple(x, self.multiple)
        skips = []
        for block, p in zip(self.down, self.pools, strict=True):
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, p)                      # (B, f, H/p, W/p)
        x = self.dropout(self.latent(x))                # bottleneck (B, latent, H/20, W/20)
        for block, p, skip in zip(self.up, reversed(self.pools), reversed(skips), strict=True):
            x = F.interpolate(x, scale_factor=float(p), mode="nearest")
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)[..., :h, :w]


class SmpMember(nn.Module):
    """An smp model with dropout before its segmentation head, padded to a multiple of 32."""

    multiple = 32

    def __init__(self, net: nn.Module, dropout: float) -> None:
        super().__init__()
        self.net = net
        # Dropout on the decoder features right before the classifier: what MC dropout samples.
        net.segmentation_head = nn.Sequential(nn.Dropout(dropout), net.segmentation_head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) in [-1, 1] -> logits (B, 5, H, W)."""
        x, h, w = _pad_to_multiple(x, self.multiple)
        return self.net(x)[..., :h, :w]


def _smp(cls_name: str) -> Callable[[ModelConfig], nn.Module]:
    def build(cfg: ModelConfig) -> nn.Module:
        import segmentation_models_pytorch as smp  # heavy; only when an smp member is built

        cls = getattr(smp, cls_name)
        net = cls(encoder_name=cfg.encoder, encoder_weights=None, in_channels=1,
                  classes=N_CLASSES)
        return SmpMember(net, cfg.dropout)
    return build


ARCHITECTURES: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "unet": lambda cfg: PaperUNet(dropout=cfg.dropout, norm=cfg.norm),
    "unetpp": _smp("UnetPlusPlus"),
    "deeplabv3p": _smp("DeepLabV3Plus"),
}
"""Registry: name -> builder taking a :class:`ModelConfig`."""
assert tuple(ARCHITECTURES) == ARCH_NAMES, "keep train.seg.config.ARCH_NAMES in sync"

DEFAULT_DROPOUT = {"unet": 0.5, "unetpp": 0.2, "deeplabv3p": 0.2}
"""Dropout per member: the paper's 0.5 at the U-Net bottleneck; 0.2 before the smp heads."""


def build_model(cfg: ModelConfig | str) -> nn.Module:
    """Build a member from its config (or just its name, with that member's defaults).

    Raises:
        ValueError: unknown ``arch``, listing the valid names.
    """
    if isinstance(cfg, str):
        cfg = ModelConfig(arch=cfg, dropout=DEFAULT_DROPOUT.get(cfg, 0.5))
    key = cfg.arch.lower()
    if key not in ARCHITECTURES:
        raise ValueError(
            f"unknown segmentation architecture {cfg.arch!r}; choose one of "
            f"{sorted(ARCHITECTURES)}"
        )
    return ARCHITECTURES[key](cfg)


def enable_mc_dropout(model: nn.Module) -> nn.Module:
    """Put ``model`` in eval mode except its dropout layers (MC dropout). Returns ``model``.

    Batch norm keeps its running statistics; only ``nn.Dropout*`` layers sample masks.
    """
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.Dropout | nn.Dropout2d | nn.Dropout3d | nn.AlphaDropout):
            m.train()
    return model
