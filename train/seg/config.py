"""Configuration of a segmentation training run (light: no torch import, for ``--help``)."""

from __future__ import annotations

from dataclasses import dataclass

ARCH_NAMES = ("unet", "unetpp", "deeplabv3p")
"""Names of ``train.seg.models.ARCHITECTURES`` (kept here so the CLI needs no torch)."""


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults are what ``runs/seg-unet`` used, plus ``--threads 1
    --time-limit 36`` (``docs/results/seg.md``).

    ``lr``: the paper uses 1e-5 with batch 32 on ICLUS-DB; here 1e-3 was used so that the
    simulator's task is learnt within a CPU budget of under an hour.
    """

    data: str
    arch: str = "unet"
    out: str = "runs/seg-unet"
    augment: bool = True
    epochs: int = 60
    steps_per_epoch: int = 20
    batch_size: int = 8
    lr: float = 1e-3
    max_frames: int | None = 1000
    val_frames: int = 40
    val_fraction: float = 0.2
    probe: str | None = None
    dropout: float | None = None
    encoder: str = "resnet50"
    threads: int | None = None
    time_limit_min: float | None = None
    init_from: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.arch not in ARCH_NAMES:
            raise ValueError(f"unknown segmentation architecture {self.arch!r}; choose one of "
                             f"{', '.join(ARCH_NAMES)}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be >= 2 (batch norm in the smp members)")
