"""Settings of the video-stage fit (no torch here: the CLI's --help imports it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FitConfig:
    """Video-stage optimisation; defaults are the paper's (Roy et al. 2020, section 2).

    Attributes:
        lr: Adam learning rate (1e-2, no weight decay).
        epochs: at most this many full-batch steps (30).
        patience: stop after this many epochs without a new lowest training loss.
        init_e: initial neutral element of every class.
        sord_multiplier: SORD δ multiplier (2, score 0 at -0.5).
        head: video probabilities in the loss: ``softmax`` of the aggregates (the paper) or
            ``log`` (softmax of their logs = normalised aggregates; same argmax, but a
            gradient that does not vanish when long videos drive every aggregate to ~0).
    """

    lr: float = 1e-2
    epochs: int = 30
    patience: int = 5
    init_e: float = 0.5
    sord_multiplier: float = 2.0
    head: str = "softmax"
