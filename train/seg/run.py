"""A segmentation run folder: ``config.json`` + ``best.pt`` (+ ``metrics.csv``).

``config.json``::

    {"kind": "seg", "model": {"arch", "dropout", "encoder"}, "input": SEG_SPEC.to_dict(),
     "classes": ["BG", "0", "1", "2", "3"], "train": {...}, "best": {...}}

``best.pt`` holds ``{"state_dict": ..., "epoch": int}`` of the model selected on validation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from train.seg.models import ModelConfig, build_model

CLASSES = ("BG", "0", "1", "2", "3")


def model_config(config: dict[str, Any]) -> ModelConfig:
    """The :class:`ModelConfig` stored in a run's ``config.json``."""
    m = config["model"]
    return ModelConfig(arch=m["arch"], dropout=float(m["dropout"]),
                       encoder=m.get("encoder", "resnet50"), norm=bool(m.get("norm", False)))


def load_run(path: str | Path, map_location: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Load a trained member from its run folder, in eval mode.

    Args:
        path: the run folder (holding ``config.json`` and ``best.pt``).

    Returns:
        (model, config dict). The model maps (B, 1, H, W) in [-1, 1] to logits (B, 5, H, W).

    Raises:
        FileNotFoundError: a missing file, saying how to make one.
    """
    path = Path(path)
    cfg_path, ckpt = path / "config.json", path / "best.pt"
    for p in (cfg_path, ckpt):
        if not p.is_file():
            raise FileNotFoundError(f"{p} is missing; is {path} a run of `pleura train seg`?")
    config = json.loads(cfg_path.read_text())
    if config.get("kind") != "seg":
        raise ValueError(f"{cfg_path}: kind is {config.get('kind')!r}, not 'seg'")
    model = build_model(model_config(config))
    state = torch.load(ckpt, map_location=map_location, weights_only=True)
    model.load_state_dict(state["state_dict"])
    return model.eval(), config
