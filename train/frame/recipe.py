"""Named multi-stage training recipes: one command, several resumable :func:`train` stages.

``cpu-stn`` makes Reg-STN's two crops localise the findings on two CPU cores (issue "Reg-STN
that learns where to look, on a CPU budget"; results and what each ingredient bought in
docs/results/frame.md). Kept from the paper (PAPER.md section 1): two crops restricted to
rotation/translation/isotropic scale, SORD, consistency MSE, scale prior, prediction from crop
1, no box labels. Changed: the schedule, the localisation input, and where the translations
come from:

1. ``cnn112`` — the Table I CNN + SORD: the whole frame resampled to 112x112 (8 x 1,024
   samples; the cheapest model to train).
2. ``cnn224`` — the same network fine-tuned on the full 224x224 frame (3 x 1,024): the pixel
   scale of a σ = 0.5 crop, so Φ_cnn starts out seeing findings in a crop at the size it
   learnt them (the 112 model scores 47 % of sim-test frames right at 224 input, 82 % at 112).
3. final — ``reg-stn-cpu``: the localisation trunk runs on the 2x-pooled 112x112 frame (4x
   fewer MACs than the paper's 224 input) and is ``cnn112``'s trunk; the translations are a
   soft-argmax over a class-activation map whose 1x1 convolutions are ``cnn112``'s head
   (weakly supervised by the same frame labels), **kept fixed** (``freeze_loc``) while Φ_cnn
   (from ``cnn224``, at 1.5e-4), the scale and off-diagonal heads and the map's sharpness
   learn end to end with the paper's loss, the θ heads at 5e-3 (33.3x). Measured on this
   budget: letting the gradient through the sampler move the map (or the paper's linear head)
   pulls both crops to one fixed place for every frame (docs/results/frame.md).

``cpu-stn-v3`` is the same chain whose final stage places score 0 at −0.5 in the SORD targets
(``zero_gap``; the paper uses it for the video stage), measured against ``cpu-stn`` in
docs/results/frame.md.

Each stage is an ordinary frame run folder (``config.json``, ``metrics.csv``, ``best.pt``);
the last stage is written to ``out`` itself, so ``pleura eval frame --run OUT`` and ``pleura
export OUT`` work unchanged. Re-running the same command resumes: finished stages are skipped,
an interrupted one continues from its ``last.pt``.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from train.frame.config import TrainConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    """One stage of a recipe.

    Attributes:
        name: sub-folder of the recipe's ``out`` ("" = ``out`` itself, the final stage).
        overrides: TrainConfig fields of this stage (``init_from`` is filled in with the
            previous stage's folder).
    """

    name: str
    overrides: dict


# Every stage keeps its final epoch (select="last"): the 4-patient validation split of
# sim-train ranked epochs against both fresh test sets (it picked epoch 1 of the final stage in
# every run; docs/results/frame.md), so it is logged, not used to choose.
_COMMON = {"batch": 16, "val_max_frames_per_video": 4, "select": "last"}
RECIPES: dict[str, tuple[Stage, ...]] = {
    "cpu-stn": (
        Stage("cnn112", {**_COMMON, "model": "cnn-sord", "epochs": 8, "lr": 1e-3,
                         "frames_per_epoch": 1024}),
        Stage("cnn224", {**_COMMON, "model": "cnn-sord-224", "epochs": 3, "lr": 5e-4,
                         "frames_per_epoch": 1024, "decay_at": 2 / 3}),
        # Φ_cnn at 1.5e-4 (it starts trained), the θ heads at 5e-3 (33.3x): at 5e-4 the
        # classifier's F1 on a fresh simulated set swung by up to 8 points between epochs.
        Stage("", {**_COMMON, "model": "reg-stn-cpu", "epochs": 6, "lr": 1.5e-4,
                   "frames_per_epoch": 1024, "theta_lr_mult": 33.3, "decay_at": 4 / 6,
                   "init_loc_from": "@cnn112", "freeze_loc": True}),
    ),
}
# v3 = v2 with the final stage's SORD targets placing score 0 at -0.5 (the paper's option for
# the video stage, PAPER.md section 1): on 96 simulated patients +1.2 and +4.3 points mean
# micro F1 over v2, none on 24 (docs/results/frame.md, "... score 0 set apart").
RECIPES["cpu-stn-v3"] = RECIPES["cpu-stn"][:2] + (
    Stage("", {**RECIPES["cpu-stn"][2].overrides, "zero_gap": True}),)


def stage_configs(recipe: str, data: str, out: str, **common) -> list[tuple[str, TrainConfig]]:
    """The (stage name, config) chain of ``recipe`` writing under ``out``.

    Args:
        common: TrainConfig fields shared by every stage (threads, seed, device, cache_dir).

    Raises:
        KeyError: unknown recipe (the message lists the valid ones).
    """
    if recipe not in RECIPES:
        raise KeyError(f"unknown recipe {recipe!r}; choose one of: {', '.join(RECIPES)}")
    chain, prev = [], None
    for st in RECIPES[recipe]:
        folder = str(Path(out) / st.name) if st.name else str(out)
        kw = {k: (str(Path(out) / v[1:]) if isinstance(v, str) and v.startswith("@") else v)
              for k, v in st.overrides.items()}  # "@stage" = that stage's folder
        cfg = TrainConfig(data=data, out=folder, init_from=prev, **common, **kw)
        chain.append((st.name or "final", cfg))
        prev = folder
    return chain


def _finished(cfg: TrainConfig) -> bool:
    """True when ``cfg.out`` holds a run of this exact config with all its epochs done."""
    out = Path(cfg.out)
    if not (out / "best.pt").exists() or not (out / "metrics.csv").exists():
        return False
    if TrainConfig.load(out) != cfg:
        raise ValueError(f"{out} holds a run with other options than this recipe's stage; "
                         "choose a new --out")
    with (out / "metrics.csv").open() as f:
        done = sum(1 for _ in csv.DictReader(f))
    return done >= cfg.epochs


def run_recipe(recipe: str, data: str, out: str,
               train_fn: Callable[..., Path] | None = None, **common) -> dict[str, float]:
    """Train every stage of ``recipe`` in order; returns {stage: wall seconds in this call}.

    ``out/recipe.json`` records the recipe, its stages and their wall times (summed over
    resumed calls).
    """
    import json

    from train.frame.trainer import train

    train_fn = train_fn or train
    Path(out).mkdir(parents=True, exist_ok=True)
    record_path = Path(out) / "recipe.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else \
        {"recipe": recipe, "stages": {}}
    times: dict[str, float] = {}
    for name, cfg in stage_configs(recipe, data, out, **common):
        if _finished(cfg):
            log.info("recipe %s: stage %s already finished in %s", recipe, name, cfg.out)
            continue
        t0 = time.perf_counter()
        print(f"recipe {recipe}: stage {name} ({cfg.model}) -> {cfg.out}", flush=True)
        train_fn(cfg, resume=(Path(cfg.out) / "config.json").exists())
        times[name] = time.perf_counter() - t0
        rec = record["stages"].setdefault(name, {"out": cfg.out, "model": cfg.model,
                                                 "seconds": 0.0})
        rec["seconds"] = round(rec["seconds"] + times[name], 1)
        record_path.write_text(json.dumps(record, indent=1))
    return times


def recipe_help() -> str:
    lines = []
    for name, stages in RECIPES.items():
        parts = [f"{st.name or 'final'}={st.overrides['model']}" for st in stages]
        lines.append(f"{name}: {' -> '.join(parts)}")
    return "; ".join(lines)

