"""``pleura eval frame``: Table I settings and weak localisation for one trained run.

Setting 1: all frames of the evaluation videos. Setting 2: drop K = 1, 3, 5, 7 frames on each
side of every ground-truth score change. Setting 3: only videos with video-level annotations
("video-ann.") and those where ≥ A = 3, 4 of the five annotators agree. F1 is reported both as
**micro F1** (= accuracy, the paper's released code) and **weighted F1**.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from engines.preprocess import FRAME_SPEC, letterbox, to_grey
from train.data.layout import LusDataset, read_dataset, split_by_patient
from train.frame.data import FrameDataset, FrameTable, build_table
from train.frame.localisation import GradCAM, box_scores, heat_box, theta_box, video_sector
from train.frame.run import load_run, resolve_device
from train.frame.trainer import predict
from train.metrics import classification_report, near_change_mask, setting3_videos

log = logging.getLogger(__name__)
KS = (1, 3, 5, 7)
AGREE = (3, 4)
# A predictor maps (B, 3, 224, 224) float32 in [0, 1] -> (probs, theta1, theta2) numpy.
Predictor = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


def bundle_predictor(bundle: str | Path, backend: str = "auto") -> Predictor:
    """Hook for ``--bundle``: score through an exported bundle's engine instead of a run.

    Uses ``engines.create_engine(bundle).frame(x) -> FrameOutput`` (engines/base.py).
    """
    import engines

    create = getattr(engines, "create_engine", None)
    if create is None:
        raise NotImplementedError("engines.create_engine is not available yet; evaluate the "
                                  "run folder with --run instead")
    engine = create(str(bundle), backend=backend)

    def _predict(x: np.ndarray):
        o = engine.frame(np.ascontiguousarray(x, dtype=np.float32))
        return o.probs, o.theta1, o.theta2

    return _predict


def setting_rows(ds: LusDataset, table: FrameTable, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks over ``rows`` for every Table I column.

    Returns:
        {"S1", "K=1", "K=3", "K=5", "K=7", "video-ann.", "A=3", "A=4"} -> (len(rows),) bool.
    """
    vids, frames = table.video_ids[rows], table.frames[rows]
    out = {"S1": np.ones(len(rows), bool)}
    for k in KS:
        keep = np.zeros(len(rows), bool)
        for vid in np.unique(vids):
            recs = ds.frames_of(str(vid))
            kept = {r.frame for r, m in zip(recs, near_change_mask([r.score for r in recs], k),
                                            strict=True) if m}
            sel = np.nonzero(vids == vid)[0]
            keep[sel] = [int(f) in kept for f in frames[sel]]
        out[f"K={k}"] = keep
    ann = {v: r.annotators for v, r in ds.videos.items()}
    for name, a in (("video-ann.", None), *((f"A={a}", a) for a in AGREE)):
        out[name] = np.isin(vids, np.asarray(setting3_videos(ann, a) or [""]))
    return out


def table_row(y: np.ndarray, pred: np.ndarray, masks: dict[str, np.ndarray]) -> dict:
    """Micro and weighted F1 (and frame counts) for every column, plus their averages."""
    res: dict[str, dict] = {}
    for name, m in masks.items():
        rep = classification_report(y[m], pred[m]) if m.any() else None
        res[name] = {"micro_f1": rep["micro_f1"] if rep else None,
                     "weighted_f1": rep["weighted_f1"] if rep else None, "n": int(m.sum())}
    avg = {}
    for key in ("micro_f1", "weighted_f1"):
        vals = [r[key] for r in res.values() if r[key] is not None]
        avg[key] = float(np.mean(vals)) if vals else None
    res["avg"] = avg
    return res


def _boxed_label(ds: LusDataset, vid: str, frame: int) -> tuple[np.ndarray, float] | None:
    """GT label map letterboxed to 224 (0 = background, s + 1 = score s; 255 "ignore" → 0)
    and the letterbox scale, or None when the frame has no mask."""
    if not ds.has_mask(vid, frame):
        return None
    lab = ds.read_mask(vid, frame)
    _, lb = letterbox(to_grey(np.zeros(lab.shape, np.uint8)), (FRAME_SPEC.height,
                                                               FRAME_SPEC.width))
    m = np.float32([[lb.scale, 0, lb.pad_x], [0, lb.scale, lb.pad_y]])
    boxed = cv2.warpAffine(lab, m, (FRAME_SPEC.width, FRAME_SPEC.height),
                           flags=cv2.INTER_NEAREST, borderValue=0)
    boxed[boxed == 255] = 0
    return boxed, float(lb.scale)


def _lesion(label: np.ndarray) -> np.ndarray:
    """GT pathological region of a label map: labels ≥ 2, i.e. scores ≥ 1."""
    return label >= 2


def _target_mask(ds: LusDataset, vid: str, frame: int) -> np.ndarray | None:
    """GT pathological region (:func:`_lesion`) letterboxed to 224, or None."""
    got = _boxed_label(ds, vid, frame)
    return None if got is None else _lesion(got[0])


PAPER_TRANS_INIT = (0.3, 0.3, 0.2, 0.2)
"""The paper's initial translations (τ_α¹, τ_β¹, τ_α², τ_β²) of Reg-STN's θ heads."""


def crop_spread(theta1: np.ndarray, theta2: np.ndarray) -> dict[str, float]:
    """How much the crops move with the content (normalised coordinates, frame = [-1, 1]²).

    Returns:
        sigma1_mean, sigma2_mean, sigma_gap; tx1_std, ty1_std (std over frames of crop 1's
        centre); t1_spread = sqrt(tx1_std² + ty1_std²) (RMS distance of crop-1 centres from
        their mean); the same for crop 2; tx1_mean, ty1_mean.
    """
    res = {"sigma1_mean": float(theta1[:, 0, 0].mean()),
           "sigma2_mean": float(theta2[:, 0, 0].mean())}
    res["sigma_gap"] = abs(res["sigma1_mean"] - res["sigma2_mean"])
    for k, th in (("1", theta1), ("2", theta2)):
        sx, sy = float(th[:, 0, 2].std()), float(th[:, 1, 2].std())
        res.update({f"tx{k}_mean": float(th[:, 0, 2].mean()),
                    f"ty{k}_mean": float(th[:, 1, 2].mean()),
                    f"tx{k}_std": sx, f"ty{k}_std": sy, f"t{k}_spread": float(np.hypot(sx, sy))})
    return res


def with_translation(theta: np.ndarray, tau: tuple[float, float]) -> np.ndarray:
    """(N, 2, 3) transforms with their translation column replaced by ``tau`` (scale and
    off-diagonal terms kept): the same model with frozen initial translations."""
    out = np.array(theta, dtype=np.float64, copy=True)
    out[:, 0, 2], out[:, 1, 2] = tau
    return out


def localisation(model, ds: LusDataset, table: FrameTable, rows: np.ndarray,
                 theta1: np.ndarray, theta2: np.ndarray, max_frames: int = 240,
                 batch: int = 8, device: torch.device | None = None,
                 trans_init: tuple[float, ...] = PAPER_TRANS_INIT) -> dict:
    """Crop scales and spread, crop-1 boxes inside the sector, pointing game vs Grad-CAM.

    The sector of a frame is that of its clip (:func:`video_sector`); a box is "inside" when
    ≥ 90 % of its area is. Pointing (hit) = the box overlaps the ground-truth pathological
    mask (labels ≥ 2, scores ≥ 1); frames without such a region are not counted.
    ``stn_crop1_init`` scores crop 1 with its translation frozen at ``trans_init[:2]`` (same
    σ and off-diagonal terms): what the learnt translations add; ``stn_crop1_mean`` with its
    translation fixed at its mean over the frames: what moving with the content adds.
    ``holds_score`` (frames with a score ≥ 1): the share of boxes whose markers alone give the
    frame its score (:func:`train.frame.localisation.holds_score`) — the finding that sets the
    score, not just any one.

    Grad-CAM runs ``model.cnn`` (Φ_cnn) on the full 224x224 frame (fully convolutional + GAP;
    at σ = 0.5 a 112 crop has the same pixel scale), target layer = last conv block; it is
    skipped when ``model`` is None (an exported bundle).
    """
    hw = (FRAME_SPEC.height, FRAME_SPEC.width)
    res: dict = crop_spread(theta1, theta2)
    res["trans_init"] = [float(v) for v in trans_init]
    pick = np.unique(np.linspace(0, len(rows) - 1, min(max_frames, len(rows))).astype(int))
    theta1_init = with_translation(theta1, tuple(trans_init[:2]))
    theta1_mean = with_translation(theta1, (res["tx1_mean"], res["ty1_mean"]))
    keys = ("inside_frac", "hit", "precision", "holds_score")
    stn, init, mean, cam = ({k: [] for k in keys} for _ in range(4))
    sectors = {v: video_sector(table.images[table.video_ids == v])
               for v in np.unique(table.video_ids[rows[pick]])}
    cnn = getattr(model, "cnn", None)
    gc = GradCAM(cnn, cnn.trunk.blocks[-1]) if cnn is not None else None
    for start in range(0, len(pick), batch):
        idx = pick[start:start + batch]
        imgs = table.images[rows[idx]]
        heats = None
        if gc is not None:
            x = torch.from_numpy(imgs).float().div(255)[:, None].repeat(1, 3, 1, 1)
            heats = gc(x.to(device or "cpu"))
        for j, i in enumerate(idx):
            r = rows[i]
            sector = sectors[table.video_ids[r]]
            got = _boxed_label(ds, str(table.video_ids[r]), int(table.frames[r]))
            target = None if got is None else _lesion(got[0])
            boxes = [(stn, theta_box(theta1[i], hw)), (init, theta_box(theta1_init[i], hw)),
                     (mean, theta_box(theta1_mean[i], hw))]
            if heats is not None:
                boxes.append((cam, heat_box(heats[j] * sector)))
            label, scale = got if got is not None else (None, 1.0)
            for d, corners in boxes:
                for k, v in box_scores(corners, sector, target, label, scale,
                                       int(table.scores[r])).items():
                    d[k].append(v)
    if gc is not None:
        gc.close()

    def summary(d: dict) -> dict:
        inside = np.asarray(d["inside_frac"])
        hit = np.asarray(d["hit"])
        prec = np.asarray(d["precision"])
        held = np.asarray(d["holds_score"])
        return {"holds_score": float(np.nanmean(held)) if np.isfinite(held).any() else None,
                "n_with_score": int(np.isfinite(held).sum()),
                "inside_sector": float(np.mean(inside >= 0.9)) if inside.size else None,
                "inside_frac_mean": float(inside.mean()) if inside.size else None,
                "pointing": float(np.nanmean(hit)) if np.isfinite(hit).any() else None,
                "precision": float(np.nanmean(prec)) if np.isfinite(prec).any() else None,
                "n_frames": int(inside.size), "n_with_target": int(np.isfinite(hit).sum())}

    res["stn_crop1"] = summary(stn)
    res["stn_crop1_init"] = summary(init)
    res["stn_crop1_mean"] = summary(mean)
    res["gradcam"] = summary(cam) if gc is not None else None
    return res


def _whole_frame(theta: np.ndarray) -> bool:
    """True when every transform is the identity (a model without crops)."""
    eye = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    return bool(np.allclose(theta, eye, atol=1e-4))


def evaluate(run: str | Path | None, data: str | Path, split: str = "test", stride: int = 1,
             batch: int = 32, device: str = "cpu", loc_frames: int = 240,
             bundle: str | Path | None = None, cache_dir: str | None = "runs/.cache",
             checkpoint: str = "best") -> dict:
    """Evaluate a run (or, via the hook, a bundle) on ``data``.

    Args:
        run: run folder (its config gives the patient split for ``split="test"``).
        data: dataset folder.
        split: "test" = the run's held-out patients of ``data``; "all" = every video (use it
            for a separately simulated test set).
        stride: score every ``stride``-th labelled frame (speed); Setting 2 still uses the full
            label sequence to find score changes.
        checkpoint: which of the run's checkpoints: "best" (its chosen model: best
            validation F1, or the final epoch of a ``select="last"`` run) or "last".

    Returns:
        A JSON-able dict: ``setting1`` report, ``table`` (Table I row), ``localisation``.
    """
    t0 = time.perf_counter()
    ds = read_dataset(data, check_masks=False)
    dev = resolve_device(device)
    model, cfg = load_run(run, checkpoint, str(dev)) if run is not None else (None, None)
    if split == "test":
        if cfg is None:
            raise ValueError("--split test needs --run (its config holds the patient split)")
        vids = split_by_patient(ds, cfg.split, cfg.split_seed)["test"]
    elif split == "all":
        vids = sorted(ds.videos)
    else:
        raise ValueError(f"unknown split {split!r}; use 'test' or 'all'")
    table = build_table(ds, cache_dir)
    rows = table.select(vids, stride=stride)
    if bundle is not None:
        pred_fn = bundle_predictor(bundle)
        loader = DataLoader(FrameDataset(table, rows), batch_size=batch)
        parts = [pred_fn(x.numpy()) for x, _ in loader]
        p = {"probs": np.concatenate([q[0] for q in parts]),
             "theta1": np.concatenate([q[1] for q in parts]),
             "theta2": np.concatenate([q[2] for q in parts]), "scores": table.scores[rows]}
    else:
        p = predict(model, DataLoader(FrameDataset(table, rows), batch_size=batch), dev)
    t_pred = time.perf_counter() - t0
    y, pred = p["scores"], p["probs"].argmax(1)
    masks = setting_rows(ds, table, rows)
    out = {"run": str(run) if run else None,
           "checkpoint": checkpoint if run else None, "bundle": str(bundle) if bundle else None,
           "data": str(data), "split": split, "stride": stride, "n_frames": int(len(rows)),
           "n_videos": len(vids), "model": cfg.model if cfg else None,
           "setting1": classification_report(y, pred), "table": table_row(y, pred, masks),
           "predict_seconds": t_pred}
    if model is not None or not _whole_frame(p["theta1"]):
        init = tuple(getattr(model, "trans_init", PAPER_TRANS_INIT))
        out["localisation"] = localisation(model, ds, table, rows, p["theta1"], p["theta2"],
                                           loc_frames, device=dev, trans_init=init)
    out["seconds"] = time.perf_counter() - t0
    return out
