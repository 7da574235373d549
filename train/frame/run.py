"""Frame run folders: ``config.json``, ``metrics.csv``, ``last.pt``, ``best.pt``.

:func:`load_run` is what the export and the video stage use to get a trained frame model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from train.frame.config import TrainConfig
from train.frame.models import build_model


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" -> cuda if available else cpu; otherwise ``torch.device(name)``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {name}: no CUDA device here; use --device cpu or auto")
    return dev


def load_run(path: str | Path, which: str = "best", device: str = "cpu",
             ) -> tuple[nn.Module, TrainConfig]:
    """The trained model of a run folder, in eval mode, and its config.

    Args:
        path: the run folder (``pleura train frame --out``).
        which: "best" (the run's chosen model: best validation F1, or the final epoch with
            ``select="last"``), "last" (the final epoch written), or any other checkpoint
            stem in the folder.
        device: where to put the model.

    Raises:
        FileNotFoundError: not a run folder, or no checkpoint yet (naming the file).
    """
    run = Path(path)
    cfg = TrainConfig.load(run)
    ckpt_path = run / f"{which}.pt"
    if not ckpt_path.exists():
        raise FileNotFoundError(f"{ckpt_path} missing: train first (`pleura train frame "
                                f"--out {run}`), or pass which='last'")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    model = build_model(cfg.model)
    model.load_state_dict(ckpt["model"])
    return model.to(resolve_device(device)).eval(), cfg
