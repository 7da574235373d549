"""One training run of :class:`train.real.model.RealFrameNet` on real clips.

Frames inherit their clip's score as soft SORD targets (Roy et al. 2020, eq. 3; a clip scored 2
may contain healthy-looking frames, and SORD's soft targets tolerate that better than one-hot);
the findings head learns the clips' flags with binary cross-entropy. Sampling is balanced over
scores (a score uniformly, then a clip of it uniformly, then a frame of it), so the 48 healthy
clips do not drown the 6 of score 3 and long clips do not outweigh short ones.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from train.losses import sord_loss
from train.real.model import FINDING_NAMES, RealFrameNet


@dataclass(frozen=True)
class RealConfig:
    """Everything that defines a real-scan training run (saved as ``config.json``).

    Attributes:
        norm: "frame" (per-frame standardisation in the model) or "none".
        width: trunk channel multiplier (:class:`RealFrameNet`).
        findings_weight: weight of the findings BCE (0: no findings head).
        augment: "strong" (geometry + gain/gamma/blur/speckle), "device" (strong + device
            randomisation: TGC curve, dynamic range, resolution, JPEG, haze, depth, burned-in
            text), "geometric" or "none".
        steps, batch, lr, weight_decay: Adam with a cosine decay to 5 % over ``steps``.
        unlabelled: clips without a score still train the findings head.
        max_frames: frames kept per clip (evenly spaced).
        init_from: warm start: a bundle or run folder holding ``frame-weights.npz``.
        sim_data: a simulated dataset (``pleura synth``) mixed into every batch, frames with
            their own ground-truth scores; ``sim_share`` of the samples come from it.
        balance: within a score, draw a recording/patient group uniformly, then a clip of it
            ("group"; one device or patient with many clips does not dominate a score), a
            source uniformly, then a clip of it ("source"; the sources that hold a score weigh
            alike in it), or a clip uniformly ("clip").
        prior_adjust: in eval mode, correct the logits from the balanced training prior to the
            training clips' score prior (:func:`train.real.model.set_prior`).
        adversary: weight of a source classifier on the penultimate features behind gradient
            reversal (domain-adversarial training, Ganin & Lempitsky 2015): the trunk is pushed
            to features that do not tell the clip's source (0: off). Training only: the
            exported model has no such head.
        class_weight: weight of an auxiliary head predicting the clip's diagnosis class
            (``class_label``: regular / COVID-19 / bacterial / viral, known for every POCUS
            clip, also the unscored ones) (0: off; training only).
        seed, threads: torch/numpy seeds and CPU threads.
    """

    norm: str = "frame"
    width: float = 0.5
    findings_weight: float = 0.5
    augment: str = "strong"
    steps: int = 700
    batch: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    unlabelled: bool = True
    max_frames: int = 64
    init_from: str | None = None
    sim_data: str | None = None
    sim_share: float = 0.25
    balance: str = "clip"
    prior_adjust: bool = True
    adversary: float = 0.0
    class_weight: float = 0.0
    sord_multiplier: float = 2.0
    seed: int = 0
    threads: int = 1

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RealConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; valid: {sorted(known)}")
        return cls(**d)


@dataclass
class TrainClip:
    """One clip's training material: frames (N, 224, 224) uint8, score (−1 = unknown),
    finding flags (5,) float (NaN = unknown)."""

    name: str
    images: np.ndarray
    score: int
    flags: np.ndarray
    domain: str = "real"
    group: str = ""
    source: str = ""
    klass: int = -1


# --------------------------------------------------------------------------- augmentation

def augment(img: np.ndarray, rng: np.random.Generator, kind: str) -> np.ndarray:
    """(H, W) uint8 → (H, W) float32 in [0, 1], randomly transformed.

    geometric: flip (p 0.5), scale 0.85–1.15, rotation ±12°, shift ±8 %.
    strong: geometric + zoom into the sector's middle (p 0.25: a convex fan then looks like
    a linear probe's rectangle, so the probe's outline cannot stand in for the score) + gain
    0.6–1.6, gamma 0.6–1.7, Gaussian blur (p 0.3, σ 0.3–1.5), multiplicative speckle
    (p 0.3, σ ≤ 0.15) — device and preset differences.
    """
    x = img
    if kind == "device":
        x = device_look(x, rng)
    if kind in ("strong", "device") and rng.random() < 0.25:
        x = zoom_middle(x, rng)
    if kind in ("geometric", "strong", "device"):
        h, w = img.shape
        if rng.random() < 0.5:
            x = x[:, ::-1]
        m = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-12, 12), rng.uniform(0.85, 1.15))
        m[:, 2] += rng.uniform(-0.08, 0.08, 2) * (w, h)
        x = cv2.warpAffine(np.ascontiguousarray(x), m, (w, h), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    y = x.astype(np.float32) * (1.0 / 255.0)
    if kind in ("strong", "device"):
        y = np.clip(y * rng.uniform(0.6, 1.6), 0.0, 1.0) ** rng.uniform(0.6, 1.7)
        if rng.random() < 0.3:
            y = cv2.GaussianBlur(y, (0, 0), rng.uniform(0.3, 1.5))
        if rng.random() < 0.3:
            y = y * (1.0 + rng.normal(0.0, rng.uniform(0.02, 0.15), y.shape).astype(np.float32))
        y = np.clip(y, 0.0, 1.0)
    return y


DEVICE_CLASSES = ("regular", "covid-19", "bacterial pneumonia", "viral pneumonia")
"""The POCUS ``class_label`` values, in the order of the auxiliary class head."""


def device_look(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(H, W) uint8 → (H, W) uint8 as another scanner, preset and export path might show it.

    Each with its own probability: a time-gain-compensation curve (smooth depth gain
    0.55–1.6, p 0.5), another dynamic range (log compression, p 0.4), a coarser resolution
    (down 1.5–3× and back, p 0.3), a shallower depth (the bottom 10–30 % black, p 0.2),
    near-field haze (p 0.2), burned-in text and markers (p 0.3) and JPEG compression
    (quality 15–70, p 0.3). The scanned area (> 8) stays where it was.
    """
    h, w = img.shape
    y = img.astype(np.float32)
    scanned = img > 8
    if rng.random() < 0.5:
        knots = rng.uniform(0.55, 1.6, 4)
        gain = np.interp(np.linspace(0, 1, h), np.linspace(0, 1, 4), knots).astype(np.float32)
        y = y * gain[:, None]
    if rng.random() < 0.4:
        a = rng.uniform(2.0, 30.0)
        y = 255.0 * np.log1p(a * np.clip(y, 0, 255) / 255.0) / np.log1p(a)
    if rng.random() < 0.3:
        f = rng.uniform(1.5, 3.0)
        small = cv2.resize(y, (max(8, int(w / f)), max(8, int(h / f))),
                           interpolation=cv2.INTER_AREA)
        y = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.2:
        y[int(h * (1 - rng.uniform(0.1, 0.3))):] = 0
    if rng.random() < 0.2:
        depth = np.linspace(0, 1, h, dtype=np.float32)[:, None]
        y = y + rng.uniform(10, 50) * np.exp(-depth / rng.uniform(0.05, 0.2))
    y = np.where(scanned, y, 0.0)
    out = np.clip(y, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        for _ in range(int(rng.integers(1, 4))):
            text = "".join(rng.choice(list("ABCDEFGHKLMNPRSTUVXYZ0123456789.:- "),
                                      int(rng.integers(2, 9))))
            org = (int(rng.integers(0, max(1, w - 40))), int(rng.integers(10, h)))
            cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, rng.uniform(0.3, 0.7),
                        int(rng.integers(120, 256)), 1, cv2.LINE_AA)
    if rng.random() < 0.3:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(15, 71))])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return out


def class_index(class_label: str) -> int:
    """Index of a POCUS ``class_label`` in :data:`DEVICE_CLASSES` (-1: unknown)."""
    label = (class_label or "").strip().lower()
    return DEVICE_CLASSES.index(label) if label in DEVICE_CLASSES else -1


def zoom_middle(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Crop a box of 45–70 % of the scanned area's width from its middle, resized to the
    scanned area's bounding box (a rectangle with no fan edges)."""
    ys, xs = np.nonzero(img > 8)
    if len(xs) < 100:
        return img
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    bw, bh = x1 - x0, y1 - y0
    cw = max(8, int(bw * rng.uniform(0.45, 0.7)))
    ch = max(8, int(bh * rng.uniform(0.6, 0.9)))
    cx = int(x0 + (bw - cw) / 2 + rng.uniform(-0.1, 0.1) * bw)
    cy = int(y0 + rng.uniform(0.0, 0.1) * bh)
    cx, cy = int(np.clip(cx, 0, img.shape[1] - cw)), int(np.clip(cy, 0, img.shape[0] - ch))
    crop = img[cy:cy + ch, cx:cx + cw]
    out = np.zeros_like(img)
    out[y0:y1, x0:x1] = cv2.resize(crop, (int(bw), int(bh)), interpolation=cv2.INTER_LINEAR)
    return out


# --------------------------------------------------------------------------- sampling

class BalancedSampler:
    """Draws (clip, frame) pairs: a score uniformly, a clip of that score, a frame of it.

    A share ``p_unlabelled`` of draws come from unlabelled real clips (findings only) and a
    share ``p_sim`` from simulated clips (score-balanced the same way)."""

    def __init__(self, clips: list[TrainClip], rng: np.random.Generator,
                 p_unlabelled: float = 0.2, p_sim: float = 0.0, balance: str = "clip") -> None:
        if balance not in ("clip", "group", "source"):
            raise ValueError(f"balance must be 'clip', 'group' or 'source', got {balance!r}")
        self.clips, self.rng, self.balance = clips, rng, balance
        self.real = self._by_score([i for i, c in enumerate(clips) if c.domain == "real"])
        self.sim = self._by_score([i for i, c in enumerate(clips) if c.domain == "sim"])
        self.unlabelled = [i for i, c in enumerate(clips) if c.score < 0]
        self.p_unlabelled = p_unlabelled if self.unlabelled else 0.0
        self.p_sim = p_sim if self.sim else 0.0
        if not self.real:
            raise ValueError("no labelled real clip to train on")

    def _by_score(self, idx: list[int]) -> dict[int, list[int]]:
        out = {s: [i for i in idx if self.clips[i].score == s] for s in range(4)}
        return {s: v for s, v in out.items() if v}

    def draw(self) -> tuple[int, int]:
        u = self.rng.random()
        if u < self.p_unlabelled:
            ci = int(self.rng.choice(self.unlabelled))
        else:
            pool = self.sim if u < self.p_unlabelled + self.p_sim else self.real
            s = int(self.rng.choice(list(pool)))
            members = pool[s]
            if self.balance in ("group", "source"):
                key = ((lambda c: c.group or c.name) if self.balance == "group"
                       else (lambda c: c.source or c.group or c.name))
                units = sorted({key(self.clips[i]) for i in members})
                u = units[int(self.rng.integers(len(units)))]
                members = [i for i in members if key(self.clips[i]) == u]
            ci = int(self.rng.choice(members))
        return ci, int(self.rng.integers(len(self.clips[ci].images)))


# --------------------------------------------------------------------------- weights

def save_weights(model: torch.nn.Module, path: str | Path) -> Path:
    """State dict → ``.npz`` (numpy arrays, no pickle: safe to ship in a bundle)."""
    arrays = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    np.savez(path, **arrays)
    return Path(path)


def load_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load :func:`save_weights` output; shapes must match (a clear error otherwise)."""
    with np.load(path, allow_pickle=False) as z:
        state = {k: torch.from_numpy(z[k]) for k in z.files}
    own = model.state_dict()
    bad = [k for k in own if k not in state or tuple(state[k].shape) != tuple(own[k].shape)]
    if bad:
        raise ValueError(f"{path}: weights do not fit this model (missing or reshaped: "
                         f"{bad[:5]}{' …' if len(bad) > 5 else ''}); was it made with the same "
                         "--norm and findings head?")
    model.load_state_dict(state)


def resolve_init(init_from: str | Path) -> Path:
    """A bundle or run folder (or the file itself) → its ``frame-weights.npz``."""
    p = Path(init_from)
    cand = p / "frame-weights.npz" if p.is_dir() else p
    if not cand.is_file():
        raise FileNotFoundError(f"{cand}: no frame-weights.npz to start from (bundles made by "
                                "`pleura train real` carry one)")
    return cand


# --------------------------------------------------------------------------- training

def sim_clips(root: str | Path, size: tuple[int, int] = (224, 224),
              exclude_clips: frozenset[str] | set[str] = frozenset()) -> list[TrainClip]:
    """A simulated (or composite, ``pleura synth --on-real``) dataset as training clips: one
    per (video, score), frames letterboxed.

    ``exclude_clips``: leave out the composite videos drawn on these real clips (the
    ``source_clip`` column of a composite dataset's ``videos.csv``), so a CV fold never trains
    on composites made from its own test clips (under leave-one-source-out: on no composite of
    the held-out source).
    """
    import csv

    from engines.preprocess import letterbox, to_grey
    from train.data.layout import read_dataset

    ds = read_dataset(root, check_masks=False)
    drawn_on: dict[str, str] = {}
    if exclude_clips:
        with open(Path(root) / "videos.csv", newline="", encoding="utf-8") as f:
            drawn_on = {r["video_id"]: r.get("source_clip") or "" for r in csv.DictReader(f)}
    out = []
    for vid in sorted({f.video_id for f in ds.frames}):
        if drawn_on.get(vid) in exclude_clips:
            continue
        recs = ds.frames_of(vid)
        frames = ds.read_frames(vid)
        for s in sorted({r.score for r in recs}):
            imgs = [letterbox(to_grey(frames[r.frame]), size)[0] for r in recs if r.score == s]
            out.append(TrainClip(f"sim:{vid}:{s}", np.stack(imgs), s,
                                 np.full(len(FINDING_NAMES), np.nan, np.float32), "sim"))
    return out


def model_from_weights(path: str | Path, norm: str = "frame") -> RealFrameNet:
    """A :class:`RealFrameNet` rebuilt from a ``frame-weights.npz`` alone: the width and the
    findings head read from the array shapes (the input normalisation is not in the weights:
    the caller says it).

    Raises:
        ValueError: the file is not a real-scan frame network's state dict.
    """
    from train.real.model import CHANNELS

    with np.load(path, allow_pickle=False) as z:
        if "trunk.blocks.0.0.weight" not in z.files:
            raise ValueError(f"{Path(path).name} is not a real-scan frame network's state dict")
        first = z["trunk.blocks.0.0.weight"].shape[0]
        n_find = z["findings.weight"].shape[0] if "findings.weight" in z.files else 0
    model = RealFrameNet(norm=norm, n_findings=n_find, width=first / CHANNELS[0])
    load_weights(model, path)
    return model


def build(cfg: RealConfig) -> RealFrameNet:
    n_find = len(FINDING_NAMES) if cfg.findings_weight > 0 else 0
    model = RealFrameNet(norm=cfg.norm, n_findings=n_find, width=cfg.width)
    if cfg.init_from:
        load_weights(model, resolve_init(cfg.init_from))
    return model


def _batch(clips: list[TrainClip], sampler: BalancedSampler, cfg: RealConfig,
           rng: np.random.Generator, sources: Sequence[str] = ()
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch: images, scores, finding flags, source index (-1: none), class (-1: unknown)."""
    xs, ys, fs, ss, ks = [], [], [], [], []
    for _ in range(cfg.batch):
        ci, fi = sampler.draw()
        c = clips[ci]
        xs.append(augment(c.images[fi], rng, cfg.augment))
        ys.append(c.score)
        fs.append(c.flags)
        ss.append(sources.index(c.source) if c.domain == "real" and c.source in sources else -1)
        ks.append(c.klass if c.domain == "real" else -1)
    x = torch.from_numpy(np.stack(xs))[:, None].expand(-1, 3, -1, -1).contiguous()
    return (x, torch.tensor(ys), torch.from_numpy(np.stack(fs).astype(np.float32)),
            torch.tensor(ss), torch.tensor(ks))


class _GradReverse(torch.autograd.Function):
    """Identity forward, gradient times ``-lam`` backward (gradient reversal)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, lam: float) -> torch.Tensor:
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        return -ctx.lam * g, None


def grad_reverse(x: torch.Tensor, lam: float) -> torch.Tensor:
    return _GradReverse.apply(x, lam)


def aux_heads(cfg: RealConfig, clips: Sequence[TrainClip]) -> tuple[torch.nn.ModuleDict, list[str]]:
    """The training-only heads on the penultimate features: the source adversary and the
    diagnosis class head (each only when its weight is > 0), and the sources it knows."""
    sources = sorted({c.source for c in clips if c.domain == "real" and c.source})
    heads = torch.nn.ModuleDict()
    if cfg.adversary > 0 and len(sources) >= 2:
        heads["source"] = torch.nn.Sequential(torch.nn.Linear(256, 64), torch.nn.ReLU(),
                                              torch.nn.Linear(64, len(sources)))
    if cfg.class_weight > 0:
        heads["klass"] = torch.nn.Linear(256, len(DEVICE_CLASSES))
    return heads, sources


def aux_loss(heads: torch.nn.ModuleDict, h: torch.Tensor, src: torch.Tensor,
             klass: torch.Tensor, cfg: RealConfig, progress: float
             ) -> tuple[torch.Tensor, dict[str, float]]:
    """Adversarial source loss (reversal strength ramped 0 → 1 as in Ganin & Lempitsky) and
    the diagnosis class loss, on the samples that know their source / class."""
    total = h.sum() * 0.0
    parts: dict[str, float] = {}
    if "source" in heads and (src >= 0).any():
        lam = 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0
        k = src >= 0
        l_s = F.cross_entropy(heads["source"](grad_reverse(h[k], lam)), src[k])
        total = total + cfg.adversary * l_s
        parts["source"] = float(l_s.detach())
    if "klass" in heads and (klass >= 0).any():
        k = klass >= 0
        l_k = F.cross_entropy(heads["klass"](h[k]), klass[k])
        total = total + cfg.class_weight * l_k
        parts["class"] = float(l_k.detach())
    return total, parts


def loss_terms(out: dict, y: torch.Tensor, flags: torch.Tensor, cfg: RealConfig
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """SORD on labelled samples + weighted BCE on known flags."""
    lab = y >= 0
    total = out["logits"].sum() * 0.0
    parts: dict[str, float] = {}
    if lab.any():
        l_sord = sord_loss(out["logits"][lab], y[lab], cfg.sord_multiplier)
        total = total + l_sord
        parts["sord"] = float(l_sord.detach())
    if out.get("findings_logits") is not None and cfg.findings_weight > 0:
        known = torch.isfinite(flags)
        if known.any():
            l_f = F.binary_cross_entropy_with_logits(out["findings_logits"][known], flags[known])
            total = total + cfg.findings_weight * l_f
            parts["findings"] = float(l_f.detach())
    return total, parts


def train_model(clips: list[TrainClip], cfg: RealConfig, out: str | Path | None = None,
                log_every: int = 50, sim_exclude: frozenset[str] | set[str] = frozenset()
                ) -> tuple[RealFrameNet, dict[str, Any]]:
    """Train from scratch (or ``cfg.init_from``) for ``cfg.steps`` steps.

    Writes ``config.json``, ``log.jsonl`` and ``frame-weights.npz`` to ``out`` when given.
    ``sim_exclude``: real clips whose composites in ``cfg.sim_data`` are left out
    (:func:`sim_clips`).

    Returns:
        The model (eval mode) and a summary (steps, seconds, frames/s, last losses).
    """
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    model = build(cfg).train()
    heads, sources = aux_heads(cfg, clips)
    heads.train()
    opt = torch.optim.Adam(list(model.parameters()) + list(heads.parameters()), lr=cfg.lr,
                           weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps)))
    if cfg.sim_data:
        clips = list(clips) + sim_clips(cfg.sim_data, exclude_clips=sim_exclude)
    sampler = BalancedSampler(clips, rng, 0.2 if (cfg.unlabelled and cfg.findings_weight > 0)
                              else 0.0, cfg.sim_share if cfg.sim_data else 0.0, cfg.balance)
    out_dir = Path(out) if out else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
        log_f = (out_dir / "log.jsonl").open("w")
    t0, recent = time.perf_counter(), []
    for step in range(cfg.steps):
        x, y, flags, src, klass = _batch(clips, sampler, cfg, rng, sources)
        out = model(x)
        loss, parts = loss_terms(out, y, flags, cfg)
        if len(heads):
            extra, more = aux_loss(heads, out["features"], src, klass, cfg, step / cfg.steps)
            loss = loss + extra
            parts.update(more)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        recent.append(parts)
        if out_dir and ((step + 1) % log_every == 0 or step + 1 == cfg.steps):
            mean = {k: float(np.mean([p[k] for p in recent if k in p]))
                    for k in {k for p in recent for k in p}}
            rec = {"step": step + 1, "seconds": round(time.perf_counter() - t0, 1), **mean}
            log_f.write(json.dumps(rec) + "\n")
            log_f.flush()
            recent = []
    secs = time.perf_counter() - t0
    model.eval()
    if out_dir:
        log_f.close()
        save_weights(model, out_dir / "frame-weights.npz")
    return model, {"steps": cfg.steps, "seconds": round(secs, 1),
                   "frames_per_s": round(cfg.steps * cfg.batch / secs, 1)}


def score_counts(clips: list[TrainClip]) -> np.ndarray:
    """(4,) labelled real clips per score."""
    return np.bincount([c.score for c in clips if c.score >= 0 and c.domain == "real"],
                       minlength=4)


def adjust_probs(probs: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Apply :func:`train.real.model.prior_adjustment` to softmax outputs (N, 4)."""
    from train.real.model import prior_adjustment

    q = probs * np.exp(prior_adjustment(counts).numpy())[None]
    return q / q.sum(axis=1, keepdims=True)


@torch.no_grad()
def predict(model: RealFrameNet, images: np.ndarray, batch: int = 64
            ) -> tuple[np.ndarray, np.ndarray | None]:
    """(N, H, W) uint8 letterboxed frames → probs (N, 4) and findings (N, 5) or None
    (with the model's current ``logit_adjust``)."""
    probs, finds, _ = predict_with_features(model, images, batch)
    return probs, finds


@torch.no_grad()
def predict_with_features(model: RealFrameNet, images: np.ndarray, batch: int = 64
                          ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """As :func:`predict`, plus the clip's mean penultimate features (256,) (one pass)."""
    model.eval()
    probs, finds, feats = [], [], []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(images[i:i + batch].astype(np.float32) / 255.0)
        out = model(x[:, None].expand(-1, 3, -1, -1))
        probs.append(out["probs"].numpy())
        feats.append(out["features"].numpy())
        if out["findings"] is not None:
            finds.append(out["findings"].numpy())
    return (np.concatenate(probs), (np.concatenate(finds) if finds else None),
            np.concatenate(feats).mean(axis=0))
