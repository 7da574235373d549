"""One registry of frame models (Table I of Roy et al. 2020) and how each one is trained.

Forward contract, for every model::

    forward(x: (B, 3, 224, 224) float in [0, 1]) -> {
        "logits": (B, 4), "probs": (B, 4) softmax of logits (crop 1),
        "theta1": (B, 2, 3), "theta2": (B, 2, 3)   # identity/fixed where there is no STN
        "logits2": (B, 4) logits of crop 2, or None where there is no second crop,
        "sigma": (B, 2) scales of the two crops,
    }
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from train.frame.models.baselines import RandomCropCNN, ResNet18, WholeFrameCNN
from train.frame.models.stn import FreeSTN, RegSTN
from train.losses import PAPER_SCALES


@dataclass(frozen=True)
class ModelSpec:
    """A Table I row: the network and the loss terms it is trained with.

    Attributes:
        name: registry key (``--model``).
        build: constructor, ``build() -> nn.Module``.
        loss: "sord" (soft ordinal targets) or "ce" (one-hot cross-entropy).
        consistency: add the MSE between the logits of the two crops.
        scale_prior: add |σ₁ − t₁| + |σ₂ − t₂|.
        help: one line for ``--help`` and docs.
        scale_targets: (t₁, t₂) of the scale prior; the paper's (0.5, 0.75).
    """

    name: str
    build: Callable[[], nn.Module]
    loss: str
    consistency: bool
    scale_prior: bool
    help: str
    scale_targets: tuple[float, float] = PAPER_SCALES


WIDE = (0.7, 0.9)  # reg-stn-cpu-wide: crop 1 sees about half the frame's area, not a quarter
_SPECS = (
    ModelSpec("reg-stn", RegSTN, "sord", True, True,
              "CNN + Reg-STN + SORD (two crops, consistency, scale prior) — the default"),
    ModelSpec("reg-stn-cpu", lambda: RegSTN(loc_size=112, evidence=True, rotation=True),
              "sord", True, True,
              "Reg-STN for the CPU recipe: localisation net on the 2x-pooled 112x112 frame "
              "(crops still from the 224 frame), translations from a soft-argmax over its "
              "score map (crops stay in the frame), θ = σ·R(α) (rotation + isotropic scale); "
              "same losses and crops"),
    ModelSpec("reg-stn-cpu-wide",
              lambda: RegSTN(loc_size=112, evidence=True, rotation=True, scale_init=WIDE),
              "sord", True, True,
              "reg-stn-cpu with larger crops: scale prior targets (0.7, 0.9) instead of the "
              "paper's (0.5, 0.75) (ablation; a change to the method)", WIDE),
    ModelSpec("reg-stn-cpu-shear", lambda: RegSTN(loc_size=112, evidence=True), "sord", True,
              True, "reg-stn-cpu with the paper's free off-diagonal terms (ablation)"),
    ModelSpec("reg-stn-cpu-fc", lambda: RegSTN(loc_size=112, bounded=True), "sord", True, True,
              "reg-stn-cpu with the paper's linear translation head (bounded; ablation)"),
    ModelSpec("reg-stn-cpu-free", lambda: RegSTN(loc_size=112), "sord", True, True,
              "reg-stn-cpu with the paper's unbounded translations (ablation)"),
    ModelSpec("reg-stn-cpu-fixed-scale",
              lambda: RegSTN(fixed_scale=True, loc_size=112, evidence=True), "sord",
              True, False, "reg-stn-cpu with fixed scales (0.5, 0.75) and no rotation: "
              "translations only"),
    ModelSpec("reg-stn-fixed-scale", lambda: RegSTN(fixed_scale=True), "sord", True, False,
              "Reg-STN with fixed scales (0.5, 0.75), learnable translations only"),
    ModelSpec("cnn-ce", WholeFrameCNN, "ce", False, False, "CNN + cross-entropy"),
    ModelSpec("cnn-sord", WholeFrameCNN, "sord", False, False, "CNN + SORD"),
    ModelSpec("cnn-sord-224", lambda: WholeFrameCNN(size=224), "sord", False, False,
              "CNN + SORD on the full 224x224 frame (the pixel scale of σ = 0.5 crops; stage 1 "
              "of the cpu-stn recipe)"),
    ModelSpec("resnet18-sord", ResNet18, "sord", False, False, "ResNet-18 (no pretraining) + SORD"),
    ModelSpec("cnn-stn-sord", FreeSTN, "sord", False, False,
              "CNN + STN (one crop, free affine) + SORD"),
    ModelSpec("cnn-randcrop-sord", RandomCropCNN, "sord", True, False,
              "CNN + two random overlapping crops + consistency + SORD"),
)
MODELS: dict[str, ModelSpec] = {s.name: s for s in _SPECS}
DEFAULT_MODEL = "reg-stn"


def get_spec(name: str) -> ModelSpec:
    """The spec registered as ``name`` (case-insensitive).

    Raises:
        KeyError: for an unknown name, listing the valid ones.
    """
    key = name.lower()
    if key not in MODELS:
        raise KeyError(f"unknown frame model {name!r}; choose one of: {', '.join(MODELS)}")
    return MODELS[key]


def build_model(name: str) -> nn.Module:
    """A freshly initialised model registered as ``name`` (see :func:`get_spec`)."""
    return get_spec(name).build()
