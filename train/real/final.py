"""The final real-scan model: trained on every clip, uninorm fitted on the same clips."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from train.data.pocus import PocusClip
from train.real.clips import bundle_licence, check_trainable, trainable
from train.real.cv import UNINORM_FIT, load_train_clips
from train.real.fit import RealConfig, predict, save_weights, score_counts, train_model
from train.real.model import set_prior
from train.video.fit import fit_uninorm


def train_final(clips: Sequence[PocusClip], cfg: RealConfig, out: str | Path,
                commercial_only: bool = False,
                cache_dir: str | None = None) -> dict[str, Any]:
    """Train on every trainable clip; write ``frame-weights.npz`` and ``real_run.json``.

    ``real_run.json`` lists every training clip with its licence and group, the bundle's
    licence (the most restrictive), the config and the fitted uninorm e: what
    ``pleura export`` puts in the manifest and model card.
    """
    out = Path(out)
    use = trainable(clips, commercial_only)
    data = load_train_clips(use, cache_dir, cfg.max_frames)
    if not cfg.unlabelled or cfg.findings_weight <= 0:
        data = {n: c for n, c in data.items() if c.score >= 0}
    model, summary = train_model(list(data.values()), cfg, out)
    if cfg.prior_adjust:
        set_prior(model, score_counts(list(data.values())))
        save_weights(model, out / "frame-weights.npz")
    labelled = [n for n, c in data.items() if c.score >= 0]
    probs = {n: predict(model, data[n].images)[0] for n in labelled}
    fit = fit_uninorm([probs[n] for n in labelled], [data[n].score for n in labelled],
                      UNINORM_FIT)
    used = [c for c in use if c.filename in data]
    meta = {
        "kind": "real-frame",
        "config": asdict(cfg),
        "uninorm_e": fit.e.tolist(),
        "uninorm_head": UNINORM_FIT.head,
        "logit_adjust": model.logit_adjust.tolist(),
        "n_clips": len(used),
        "n_labelled": len(labelled),
        "licence": bundle_licence(used),
        "research_only": any(check_trainable(c) in ("CC BY-NC", "CC BY-NC-SA") for c in used),
        "clips": [{"file": c.filename, "license": c.license, "score": c.severity,
                   "source": c.source_url or c.source} for c in used],
        "train": summary,
    }
    (out / "real_run.json").write_text(json.dumps(meta, indent=2))
    return meta
