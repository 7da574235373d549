"""``pleura eval seg``: Table IV for each member and the ensemble, plus MC-dropout uncertainty.

For every run: pixel accuracy, binary Dice of the COVID union (scores 1-3) and categorical Dice
(mean over scores 0, 2, 3), averaged over frames (``train.seg.metrics``). The ensemble is the
unweighted mean of its members' softmax (PAPER.md section 3; by default the members trained
with augmentation). MC dropout: ``--mc`` stochastic passes per member on ``--mc-frames``
frames give a mean softmax and a per-pixel std, whose mean is reported inside predicted regions
and on their boundaries.

The command line is in :mod:`train.seg.eval_cli`.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from train.seg import metrics as M
from train.seg.models import enable_mc_dropout


@torch.no_grad()
def predict_probs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) in [-1, 1] -> softmax (B, 5, H, W) with the model as it is (eval or MC)."""
    return F.softmax(model(x), dim=1)


def frame_metrics(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(B, H, W) predicted and true labels -> (B, 3) [accuracy, binary Dice, categorical Dice]."""
    return np.array([[M.pixel_accuracy(p, g), M.binary_covid_dice(p, g),
                      M.categorical_dice(p, g)] for p, g in zip(pred, gt, strict=True)])


def _nanmean(values) -> float:
    a = np.asarray(values, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")


def _summary(rows: np.ndarray) -> dict[str, float]:
    with np.errstate(all="ignore"):
        mean = np.nanmean(rows, axis=0) if len(rows) else np.full(3, np.nan)
    return {"acc": float(mean[0]), "dice": float(mean[1]), "cat_dice": float(mean[2])}


def _batches(dataset: Dataset, batch_size: int):
    for i in range(0, len(dataset), batch_size):
        items = [dataset[j] for j in range(i, min(i + batch_size, len(dataset)))]
        yield torch.stack([a for a, _ in items]), torch.stack([b for _, b in items])


def evaluate_frames(model: nn.Module, dataset: Dataset, batch_size: int = 8) -> dict[str, float]:
    """Plain (dropout off) metrics and mean cross-entropy of one model on a dataset."""
    model.eval()
    rows, losses = [], []
    with torch.no_grad():
        for x, y in _batches(dataset, batch_size):
            logits = model(x)
            losses.append(F.cross_entropy(logits, y).item() * len(x))
            rows.append(frame_metrics(logits.argmax(1).numpy(), y.numpy()))
    out = _summary(np.concatenate(rows))
    out["loss"] = float(np.sum(losses) / len(dataset))
    return out


def mc_uncertainty(models: list[nn.Module], x: torch.Tensor, passes: int, chunk: int = 16,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """MC dropout over one or more members: ``passes`` stochastic passes each.

    Args:
        models: members (put in MC mode here, eval mode afterwards).
        x: (B, 1, H, W) input.
        passes: stochastic passes per member; ``chunk``: images per forward (passes are
            batched: each copy of ``x`` in a batch draws its own dropout masks).

    Returns:
        mean softmax (B, 5, H, W) and per-pixel std (B, H, W) (:func:`metrics.mc_summary`).
    """
    samples = []
    reps = max(1, chunk // len(x))           # passes per forward: the batch is x repeated
    for m in models:
        enable_mc_dropout(m)
        done = 0
        while done < passes:
            k = min(reps, passes - done)
            p = predict_probs(m, x.repeat(k, 1, 1, 1)).numpy()
            samples += list(p.reshape(k, *x.shape[:1], *p.shape[1:]))   # k x (B, 5, H, W)
            done += k
        m.eval()
    s = np.stack(samples)                                      # (T, B, 5, H, W)
    out = [M.mc_summary(s[:, b]) for b in range(x.shape[0])]
    return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])


def run_label(config: dict) -> str:
    names = {"unet": "U-Net", "unetpp": "U-Net++", "deeplabv3p": "DeepLabv3+"}
    arch = config["model"]["arch"]
    return names.get(arch, arch) + (" + aug" if config["train"].get("augment") else "")


def evaluate_runs(runs: list[str], data: str, ensemble: list[str] | None = None,
                  mc: int = 40, mc_frames: int = 32, max_frames: int | None = 500,
                  batch_size: int = 8, seed: int = 0) -> dict:
    """Table IV + uncertainty for ``runs`` on every masked frame of ``data`` (capped, seeded)."""
    from train.data.layout import read_dataset
    from train.seg.data import load_masked_frames
    from train.seg.run import load_run

    ds = read_dataset(data, check_masks=False)
    test = load_masked_frames(ds, list(ds.videos), max_frames, seed)
    loaded = {r: load_run(r) for r in runs}
    if ensemble is None:
        ensemble = [r for r in runs if loaded[r][1]["train"].get("augment")] or list(runs)
    rows: dict[str, list[np.ndarray]] = {r: [] for r in runs}
    rows["ensemble"] = []
    seconds = dict.fromkeys(runs, 0.0)
    with torch.no_grad():
        for x, y in _batches(test, batch_size):
            ens = 0.0
            for r in runs:
                t = time.perf_counter()
                p = predict_probs(loaded[r][0], x)
                seconds[r] += time.perf_counter() - t
                rows[r].append(frame_metrics(p.argmax(1).numpy(), y.numpy()))
                if r in ensemble:
                    ens = ens + p / len(ensemble)
            rows["ensemble"].append(frame_metrics(ens.argmax(1).numpy(), y.numpy()))
    table = []
    for r in runs:
        table.append({"name": run_label(loaded[r][1]), "run": r,
                      **_summary(np.concatenate(rows[r])),
                      "torch_ms_per_frame": 1000 * seconds[r] / len(test)})
    table.append({"name": "Ensemble", "run": ensemble,
                  **_summary(np.concatenate(rows["ensemble"]))})
    result = {"data": data, "n_frames": len(test), "table": table}
    if mc > 0:
        result["uncertainty"] = _uncertainty(test, loaded, ensemble, runs, mc, mc_frames, seed)
    return result


def _uncertainty(test, loaded, ensemble, runs, passes, n_frames, seed) -> list[dict]:
    """Mean MC std inside vs on the boundary of predicted regions, per member and ensemble."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(test), min(n_frames, len(test)), replace=False)
    x = torch.stack([test[int(i)][0] for i in idx])
    groups = [(run_label(loaded[r][1]), [r]) for r in runs]
    if len(ensemble) > 1:
        groups.append(("Ensemble", list(ensemble)))
    out = []
    for name, members in groups:
        inside, bnd = [], []
        for b in range(0, len(x), 4):
            mean, std = mc_uncertainty([loaded[r][0] for r in members], x[b:b + 4], passes)
            for m, s in zip(mean, std, strict=True):
                mi, mb = M.uncertainty_inside_vs_boundary(s, m.argmax(0))
                inside.append(mi)
                bnd.append(mb)
        i, o = _nanmean(inside), _nanmean(bnd)
        out.append({"name": name, "passes": passes, "frames": len(x), "inside": i,
                    "boundary": o, "ratio": o / i if i > 0 else float("inf")})
    return out


def format_table(result: dict) -> str:
    """Markdown Table IV (and the uncertainty table) of :func:`evaluate_runs`' result."""
    lines = [f"Table IV on {result['data']} ({result['n_frames']} frames)", "",
             "| Model | Acc | Dice (COVID 1-3) | Cat. Dice (0, 2, 3) |", "|---|---|---|---|"]
    for r in result["table"]:
        lines.append(f"| {r['name']} | {r['acc']:.3f} | {r['dice']:.3f} | {r['cat_dice']:.3f} |")
    if "uncertainty" in result:
        u0 = result["uncertainty"][0]
        lines += ["", f"MC dropout ({u0['passes']} passes per member, {u0['frames']} frames): "
                  "mean per-pixel std", "", "| Model | inside regions | on boundaries | ratio |",
                  "|---|---|---|---|"]
        for u in result["uncertainty"]:
            lines.append(f"| {u['name']} | {u['inside']:.4f} | {u['boundary']:.4f} | "
                         f"{u['ratio']:.2f} |")
    if "onnx_timing" in result:
        t0 = result["onnx_timing"][0]
        lines += ["", f"ONNX Runtime CPU, 1 frame 1x1x200x260, {t0['threads']} thread(s), "
                  f"{t0['runs']} runs", "", "| Model | median ms | p90 ms |", "|---|---|---|"]
        for t in result["onnx_timing"]:
            lines.append(f"| {t['name']} | {t['median_ms']:.1f} | {t['p90_ms']:.1f} |")
    return "\n".join(lines)
