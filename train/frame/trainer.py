"""The frame training loop (Roy et al. 2020, PAPER.md section 1 "Training").

Adam (lr 1e-4, weight decay 1e-4), step decay ×0.1 at 70/120 of the epochs, class-balanced
sampling, the paper's augmentation, patient-level train/val split, **model selection on the
validation split only**. Every epoch appends to ``metrics.csv`` and writes ``last.pt``; a
better validation micro F1 writes ``best.pt`` (``select="last"``: the final epoch does, for
fixed schedules whose validation split is too small to rank epochs). ``resume=True``
continues from ``last.pt`` with the same state: each epoch re-seeds its own RNGs from (seed,
epoch), so epoch e draws the same samples, augmentations and dropout masks whether or not the
run was interrupted before it.
"""

from __future__ import annotations

import csv
import json
import logging
import random
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from train.data.layout import read_dataset, split_by_patient
from train.frame.config import TrainConfig
from train.frame.data import FrameDataset, FrameTable, balanced_sampler, build_table
from train.frame.models import build_model, get_spec
from train.frame.run import resolve_device
from train.losses import total_loss
from train.metrics import classification_report

log = logging.getLogger(__name__)
FIELDS = ("epoch", "lr", "train_loss", "train_cls", "train_mse", "train_prior", "train_acc",
          "val_loss", "val_micro_f1", "val_weighted_f1", "val_sigma1", "val_sigma2",
          "frames", "seconds", "frames_per_s")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _autocast(device: torch.device):
    # AMP only on CUDA: on this CPU (AVX2, no AMX) bf16 autocast is not faster.
    return torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else nullcontext()


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, device: torch.device,
            ) -> dict[str, np.ndarray]:
    """Run ``model`` (eval mode) over a loader of (x, score).

    Returns:
        {"probs" (N, 4), "theta1" (N, 2, 3), "theta2" (N, 2, 3), "scores" (N,)} numpy.
    """
    model.eval()
    outs: dict[str, list] = {"probs": [], "theta1": [], "theta2": [], "scores": []}
    for x, y in loader:
        x = x.to(device)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device):
            o = model(x)
        for k in ("probs", "theta1", "theta2"):
            outs[k].append(o[k].float().cpu().numpy())
        outs["scores"].append(y.numpy())
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in outs.items()}


def _sord_kwargs(cfg: TrainConfig) -> dict:
    spec = get_spec(cfg.model)
    return {"loss": spec.loss, "consistency": spec.consistency, "prior": spec.scale_prior,
            "multiplier": cfg.sord_multiplier, "zero_gap": cfg.zero_gap,
            "prior_targets": spec.scale_targets}


def train_one_epoch(model: nn.Module, loader: DataLoader, opt: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, cfg: TrainConfig, device: torch.device,
                    epoch: int) -> dict[str, float]:
    """One pass over ``loader``; returns mean loss parts, accuracy and throughput."""
    set_train_mode(model, cfg)
    kw = _sord_kwargs(cfg)
    sums: dict[str, float] = {}
    n = correct = 0
    t0 = time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False)
    for x, y in bar:
        x, y = x.to(device), y.to(device)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device):
            out = model(x)
        loss, parts = total_loss(out, y, **kw)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        b = len(y)
        n += b
        correct += int((out["logits"].argmax(1) == y).sum())
        parts["loss"] = float(loss.detach())
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v * b
        bar.set_postfix(loss=f"{sums['loss'] / n:.3f}", acc=f"{correct / n:.2f}")
    dt = time.perf_counter() - t0
    res = {f"train_{k}": v / max(n, 1) for k, v in sums.items()}
    res.update({"train_acc": correct / max(n, 1), "frames": n, "seconds": dt,
                "frames_per_s": n / dt if dt > 0 else 0.0})
    return res


THETA_HEADS = ("translation", "scale", "offdiag", "affine")


def set_train_mode(model: nn.Module, cfg: TrainConfig) -> None:
    """``model.train()``, except a frozen classifier (``cfg.freeze_cnn``) stays in eval mode:
    its BatchNorm statistics do not move and its dropout is off."""
    model.train()
    if cfg.freeze_cnn:
        _classifier(model, cfg).eval()
    if cfg.freeze_loc:
        for m in _localiser(model, cfg):
            m.eval()


def _localiser(model: nn.Module, cfg: TrainConfig) -> list[nn.Module]:
    """The localisation trunk and, with a soft-argmax translation head, its score map."""
    loc = getattr(model, "loc", None)
    if loc is None:
        raise ValueError(f"--freeze-loc needs a model with a localisation net; {cfg.model} "
                         "has none")
    ev = getattr(model, "evidence", None)
    return [loc.trunk] + ([ev.mlp] if ev is not None else [])


def _classifier(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    cnn = getattr(model, "cnn", None)
    if cnn is None:
        raise ValueError(f"--freeze-cnn needs a model with a classifier Φ_cnn; {cfg.model} "
                         "has none")
    return cnn


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """Adam parameter groups: the θ heads (and a soft-argmax head's sharpness) at
    ``lr · theta_lr_mult``, the rest at ``lr``.

    With ``cfg.freeze_cnn`` (``cfg.freeze_loc``) the classifier's (localiser's) parameters
    get ``requires_grad=False`` and are left out of the optimiser.
    """
    if cfg.freeze_cnn:
        _classifier(model, cfg).requires_grad_(False)
    if cfg.freeze_loc:
        for m in _localiser(model, cfg):
            m.requires_grad_(False)
    heads, rest = [], []
    for name, prm in model.named_parameters():
        if prm.requires_grad:
            head = name.split(".")[0] in THETA_HEADS or name == "evidence.log_beta"
            (heads if head else rest).append(prm)
    groups = [{"params": rest, "lr": cfg.lr}]
    if heads:
        groups.append({"params": heads, "lr": cfg.lr * cfg.theta_lr_mult})
    return groups


def _loaders(cfg: TrainConfig, table: FrameTable, split: dict[str, list[str]]):
    tr_rows = table.select(split["train"], cfg.max_frames_per_video)
    va_rows = table.select(split["val"], cfg.val_max_frames_per_video)
    if len(tr_rows) == 0 or len(va_rows) == 0:
        raise ValueError(f"{cfg.data}: the patient split left {len(tr_rows)} train and "
                         f"{len(va_rows)} val frames; the dataset needs more patients")
    return FrameDataset(table, tr_rows, augment=True), FrameDataset(table, va_rows)


def warm_start(model: nn.Module, run_dir: str | Path, only_loc: bool = False) -> int:
    """Copy matching weights from another run's ``best.pt`` into ``model``.

    A tensor is copied when the same name and shape exist in the source; the Reg-STN
    localisation trunk ``loc.trunk.*`` is also filled from a source CNN trunk ``cnn.trunk.*``
    (same architecture), and a soft-argmax translation head ``evidence.mlp.*`` from the
    source's classifier head ``cnn.head.*`` (its linear layers as 1x1 convolutions: a
    class-activation map). ``only_loc`` copies only those two. Returns the number of tensors
    copied.

    Raises:
        FileNotFoundError: no ``best.pt`` in ``run_dir``.
    """
    path = Path(run_dir) / "best.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: --init-from needs a finished run folder")
    src = torch.load(path, map_location="cpu", weights_only=True)["model"]
    dst = model.state_dict()
    n = 0
    for k, v in dst.items():
        if only_loc and not k.startswith(("loc.trunk.", "evidence.mlp.")):
            continue
        cand = None if only_loc else src.get(k)
        if cand is None and k.startswith("loc.trunk."):
            cand = src.get("cnn.trunk." + k[len("loc.trunk."):])
        if cand is None and k.startswith("evidence.mlp."):
            cand = _evidence_from_head(src, k)
        if cand is not None and cand.shape == v.shape:
            dst[k] = cand.clone()
            n += 1
    model.load_state_dict(dst)
    log.info("warm start: %d/%d tensors from %s", n, len(dst), path)
    return n


_EVIDENCE_FROM_HEAD = {"evidence.mlp.0.": "cnn.head.0.", "evidence.mlp.1.": "cnn.head.1.",
                       "evidence.mlp.3.": "cnn.head.4."}


def _evidence_from_head(src: dict, key: str) -> torch.Tensor | None:
    """The source classifier-head tensor for ``evidence.mlp.*`` (Linear -> 1x1 Conv)."""
    for dst_prefix, src_prefix in _EVIDENCE_FROM_HEAD.items():
        if key.startswith(dst_prefix):
            t = src.get(src_prefix + key[len(dst_prefix):])
            if t is not None and key.endswith("weight") and t.ndim == 2:
                t = t[:, :, None, None]
            return t
    return None


def _checkpoint(model, opt, sched, scaler, epoch: int, best: float) -> dict:
    return {"model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
            "epoch": epoch, "best": best}


def train(cfg: TrainConfig, resume: bool = False, table: FrameTable | None = None,
          progress: bool = True, stop_after: int | None = None) -> Path:
    """Train a frame model into ``cfg.out``. Returns the run folder.

    Args:
        cfg: the run configuration (saved as ``config.json``).
        resume: continue from ``cfg.out/last.pt`` (the config must match the saved one).
        table: preprocessed frames of ``cfg.data`` (built and cached when None).
        stop_after: stop after this many epochs in this call (an interruption, for tests).

    Raises:
        FileExistsError: ``cfg.out`` already holds a run and ``resume`` is False.
    """
    out = Path(cfg.out)
    if (out / "config.json").exists() and not resume:
        raise FileExistsError(f"{out} already holds a run; pass --resume or choose a new --out")
    if resume and (out / "config.json").exists():
        saved = TrainConfig.load(out)
        if saved != cfg:
            raise ValueError(f"{out}/config.json differs from the given options; resume with "
                             f"the same options (saved: {saved})")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(cfg.to_json())
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    ds = read_dataset(cfg.data, check_masks=False)
    split = split_by_patient(ds, cfg.split, cfg.split_seed)
    (out / "split.json").write_text(json.dumps(split, indent=1))
    table = table if table is not None else build_table(ds, cfg.cache_dir, progress)
    train_ds, val_ds = _loaders(cfg, table, split)
    model = build_model(cfg.model)
    if cfg.init_from:
        warm_start(model, cfg.init_from)
    if cfg.init_loc_from and warm_start(model, cfg.init_loc_from, only_loc=True) == 0:
        raise ValueError(f"--init-loc-from {cfg.init_loc_from}: no localisation-trunk "
                         f"tensor matched; {cfg.model} needs a localisation net")
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(param_groups(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
    decay_epoch = max(1, round(cfg.decay_at * cfg.epochs))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=decay_epoch, gamma=0.1)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    start, best = 0, -1.0
    if resume and (out / "last.pt").exists():
        ck = torch.load(out / "last.pt", map_location=device, weights_only=True)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        start, best = int(ck["epoch"]) + 1, float(ck["best"])
        log.info("resumed %s at epoch %d (best val micro F1 %.4f)", out, start + 1, best)
    n_per_epoch = cfg.frames_per_epoch or len(train_ds)
    val_loader = DataLoader(val_ds, batch_size=max(cfg.batch, 32), shuffle=False)
    kw = _sord_kwargs(cfg)
    tb = _tensorboard(out)
    end = cfg.epochs if stop_after is None else min(cfg.epochs, start + stop_after)
    for epoch in range(start, end):
        seed_everything(cfg.seed * 100_003 + epoch)  # epoch-local RNG: resume == no resume
        g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        sampler = balanced_sampler(train_ds.table.scores[train_ds.rows], n_per_epoch, g)
        loader = DataLoader(train_ds, batch_size=cfg.batch, sampler=sampler, drop_last=False)
        lr = opt.param_groups[0]["lr"]
        row = train_one_epoch(model, loader, opt, scaler, cfg, device, epoch)
        sched.step()
        row.update(validate(model, val_loader, device, kw))
        row.update({"epoch": epoch + 1, "lr": lr})
        _append_csv(out / "metrics.csv", row)
        if tb is not None:
            for k, v in row.items():
                if k != "epoch" and isinstance(v, (int, float)):
                    tb.add_scalar(k, v, epoch + 1)
        improved = row["val_micro_f1"] > best
        if improved:
            best = row["val_micro_f1"]
        keep = improved if cfg.select == "val" else epoch == cfg.epochs - 1
        if keep:
            torch.save({"model": model.state_dict(), "epoch": epoch, "val": row}, out / "best.pt")
        torch.save(_checkpoint(model, opt, sched, scaler, epoch, best), out / "last.pt")
        if progress:
            print(f"epoch {epoch + 1}/{cfg.epochs} loss {row['train_loss']:.4f} "
                  f"acc {row['train_acc']:.3f} val F1micro {row['val_micro_f1']:.4f} "
                  f"σ {row['val_sigma1']:.3f}/{row['val_sigma2']:.3f} "
                  f"{row['frames_per_s']:.2f} fr/s{' *' if improved else ''}", flush=True)
    if tb is not None:
        tb.close()
    return out


def validate(model: nn.Module, loader: DataLoader, device: torch.device, kw: dict,
             ) -> dict[str, float]:
    """Validation loss (classification part), micro/weighted F1 and mean crop scales."""
    p = predict(model, loader, device)
    y = p["scores"]
    probs = torch.from_numpy(p["probs"]).clamp_min(1e-8)
    out = {"logits": probs.log(), "logits2": None, "sigma": None}
    loss, _ = total_loss(out, torch.from_numpy(y), kw["loss"], False, False,
                         kw["multiplier"], kw["zero_gap"])
    rep = classification_report(y, p["probs"].argmax(1))
    return {"val_loss": float(loss), "val_micro_f1": rep["micro_f1"],
            "val_weighted_f1": rep["weighted_f1"],
            "val_sigma1": float(np.mean(p["theta1"][:, 0, 0])),
            "val_sigma2": float(np.mean(p["theta2"][:, 0, 0]))}


def _tensorboard(out: Path):
    """A TensorBoard writer when the ``tensorboard`` package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # optional: metrics.csv always has everything
        return None
    return SummaryWriter(str(out / "tb"))


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()
                    if k in FIELDS})
