"""``pleura train seg``: train one segmentation member (PAPER.md section 3).

Pixel-wise categorical cross-entropy, Adam, batches drawn by :class:`BalancedSampler`
(balanced over scores and patients), the paper's on-line augmentation unless
``--no-augment``, validation after every epoch on a patient-disjoint split, and the epoch with
the best validation binary Dice kept as ``best.pt``.

The command line is in :mod:`train.seg.train_cli`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from engines.preprocess import SEG_SPEC
from train.seg.config import TrainConfig
from train.seg.data import AugmentConfig, BalancedSampler, build_augmentation, load_masked_frames
from train.seg.evaluate import evaluate_frames
from train.seg.models import DEFAULT_DROPOUT, ModelConfig, build_model
from train.seg.run import CLASSES


def warm_start(model: torch.nn.Module, mcfg: ModelConfig, run_dir: str | Path) -> None:
    """Load ``run_dir/best.pt`` into ``model``; the source run must have the same model config.

    Raises:
        FileNotFoundError: no ``best.pt`` in ``run_dir``.
        ValueError: the source run is another architecture, encoder or normalisation.
    """
    path = Path(run_dir) / "best.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: --init-from needs a finished run folder")
    src_cfg = json.loads((Path(run_dir) / "config.json").read_text())["model"]
    if src_cfg != dataclasses.asdict(mcfg):
        raise ValueError(f"--init-from {run_dir}: its model {src_cfg} differs from this run's "
                         f"{dataclasses.asdict(mcfg)}")
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict(state)


def train(cfg: TrainConfig, progress: bool = True) -> dict:
    """Train one member and write its run folder. Returns the best validation metrics."""
    from train.data.layout import read_dataset, split_by_patient

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    mcfg = ModelConfig(arch=cfg.arch, encoder=cfg.encoder,
                       dropout=DEFAULT_DROPOUT[cfg.arch] if cfg.dropout is None else cfg.dropout)
    model = build_model(mcfg)  # before reading data: a bad encoder name fails at once
    if cfg.init_from:
        warm_start(model, mcfg, cfg.init_from)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = read_dataset(cfg.data, check_masks=False)
    split = split_by_patient(ds, (1 - cfg.val_fraction, cfg.val_fraction, 0.0), seed=cfg.seed)
    train_set = load_masked_frames(ds, split["train"], cfg.max_frames, cfg.seed, cfg.probe,
                                   progress)
    val_set = load_masked_frames(ds, split["val"], cfg.val_frames, cfg.seed + 1, cfg.probe,
                                 progress)
    if cfg.augment:
        train_set.augment = build_augmentation(AugmentConfig())
    config = {"kind": "seg", "model": dataclasses.asdict(mcfg), "input": SEG_SPEC.to_dict(),
              "classes": list(CLASSES), "train": dataclasses.asdict(cfg),
              "n_train_frames": len(train_set), "n_val_frames": len(val_set),
              "split": {k: v for k, v in split.items() if v},
              "command": shlex.join(["pleura", *sys.argv[1:]]
                                    if sys.argv[1:3] == ["train", "seg"] else sys.argv)}
    (out / "config.json").write_text(json.dumps(config, indent=2))

    sampler = BalancedSampler(train_set.scores, train_set.patients,
                              cfg.steps_per_epoch * cfg.batch_size, seed=cfg.seed)
    loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler, drop_last=True)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    fields = ["epoch", "train_loss", "val_loss", "val_acc", "val_dice", "val_cat_dice",
              "seconds"]
    best: dict = {"val_dice": -1.0}
    t0 = time.time()

    def out_of_time() -> bool:
        return bool(cfg.time_limit_min) and time.time() - t0 > 60 * cfg.time_limit_min

    with open(out / "metrics.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            losses = []
            bar = tqdm(loader, desc=f"{cfg.arch} epoch {epoch}/{cfg.epochs}", disable=not progress,
                       leave=False)
            for x, y in bar:
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.item())
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
                if out_of_time():
                    break  # validate and save what we have
            val = evaluate_frames(model, val_set, batch_size=max(2, cfg.batch_size))
            row = {"epoch": epoch, "train_loss": float(np.mean(losses)),
                   "val_loss": val["loss"], "val_acc": val["acc"], "val_dice": val["dice"],
                   "val_cat_dice": val["cat_dice"], "seconds": round(time.time() - t0, 1)}
            writer.writerow(row)
            fh.flush()
            print(json.dumps(row), flush=True)
            score = row["val_dice"] if np.isfinite(row["val_dice"]) else 0.0
            if score > best["val_dice"]:
                best = {**row, "val_dice": score}
                torch.save({"state_dict": model.state_dict(), "epoch": epoch}, out / "best.pt")
            if out_of_time():
                print(f"time limit of {cfg.time_limit_min} min reached in epoch {epoch}")
                break
    config["best"] = best
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return best
