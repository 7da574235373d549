"""Training configuration of a frame run (saved as ``config.json`` in the run folder)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a frame training run (defaults: Roy et al. 2020 / PAPER.md).

    Attributes:
        data: dataset folder (pleura layout).
        out: run folder.
        model: registry name (train.frame.models.MODELS).
        epochs: training epochs (paper: 120).
        batch: batch size (paper: 64).
        lr, weight_decay: Adam (paper: 1e-4, 1e-4).
        decay_at: the learning rate is ×0.1 from epoch round(decay_at · epochs) (paper: 70/120).
        frames_per_epoch: class-balanced samples drawn per epoch (None = number of train frames).
        max_frames_per_video: cap on train frames per video, evenly spaced (None = all).
        val_max_frames_per_video: cap on validation frames per video (speed).
        split: patient-level (train, val, test) fractions; model selection uses val only.
        split_seed, seed: data split and training seeds.
        device: "auto", "cpu", "cuda", "cuda:N".
        threads: torch CPU threads (None = torch default).
        sord_multiplier, zero_gap: SORD target options.
        cache_dir: where decoded 224x224 frames are cached (None = no cache).
        init_from: warm start from another run's ``best.pt`` (see
            :func:`train.frame.trainer.warm_start`; None = random init, as in the paper).
        freeze_cnn: keep the classifier Φ_cnn fixed (weights and BatchNorm statistics, no
            dropout) so only the localisation net and θ heads learn (CPU recipe, stage 2).
        theta_lr_mult: learning-rate multiplier of the θ heads (translation, scale,
            off-diagonal) over ``lr`` (paper: 1).
        freeze_loc: keep the localisation trunk and a soft-argmax translation head's score map
            fixed (weights, BatchNorm statistics): the crops go where that map (a
            class-activation map warm-started from a frame CNN) peaks, while Φ_cnn, the scale
            and off-diagonal heads and the map's sharpness learn (CPU recipe).
        init_loc_from: after ``init_from``, fill the localisation trunk from this run's
            classifier trunk (CPU recipe: the 112-pixel whole-frame CNN, whose pixel scale is
            that of the 2x-pooled localisation input; None = keep ``init_from``'s).
        select: which epoch ``best.pt`` holds: "val" = best validation micro F1 (paper);
            "last" = the final epoch of the fixed schedule (CPU recipe: its 4-patient
            validation split ranked epochs against two fresh test sets, see
            docs/results/frame.md). Validation is still run and logged every epoch.
    """

    data: str
    out: str
    model: str = "reg-stn"
    epochs: int = 120
    batch: int = 64
    lr: float = 1e-4
    weight_decay: float = 1e-4
    decay_at: float = 70 / 120
    frames_per_epoch: int | None = None
    max_frames_per_video: int | None = None
    val_max_frames_per_video: int | None = None
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    split_seed: int = 0
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    sord_multiplier: float = 2.0
    zero_gap: bool = False
    cache_dir: str | None = "runs/.cache"
    init_from: str | None = None
    freeze_cnn: bool = False
    theta_lr_mult: float = 1.0
    init_loc_from: str | None = None
    freeze_loc: bool = False
    select: str = "val"

    def __post_init__(self) -> None:
        if self.select not in ("val", "last"):
            raise ValueError(f"select must be 'val' or 'last', got {self.select!r}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; valid: {sorted(known)}")
        d = dict(d)
        if "split" in d:
            d["split"] = tuple(d["split"])
        return cls(**d)

    @classmethod
    def load(cls, run_dir: str | Path) -> TrainConfig:
        path = Path(run_dir) / "config.json"
        if not path.exists():
            raise FileNotFoundError(f"{path} missing: {run_dir} is not a frame run folder "
                                    "(make one with `pleura train frame --out RUN`)")
        return cls.from_dict(json.loads(path.read_text()))
