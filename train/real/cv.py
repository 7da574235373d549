"""Cross-validation on the labelled real clips, at clip level (issues #13, #25).

Two protocols (``split``): **leave-one-source-out** (``"source"``, one fold per source,
:mod:`train.real.sources`; the headline since #25, because in the POCUS data the source nearly
decides the label) and **grouped k-fold** (``"group"``, recording/patient groups never straddle
folds, but folds share sources, so a source detector scores about as well as the model).
Metrics are pooled over the held-out predictions (a held-out source may hold one class only)
and given per source, with the AUROC healthy vs findings inside each source that has both and
the source probe of each fold's model (how well its features tell the source).

Per fold: train :class:`RealFrameNet` on the clips of the other folds (labelled ones for the
score, every clip for the findings head), score every frame kept of every clip, fit the uninorm
neutral elements on the *training* clips' frame probabilities only, then score the test clips.
Nothing is fitted or selected on the fold it is evaluated on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from train.data.pocus import PocusClip
from train.real.clips import Folds, clip_groups, trainable
from train.real.fit import (
    RealConfig,
    TrainClip,
    adjust_probs,
    class_index,
    predict,
    predict_with_features,
    score_counts,
    train_model,
)
from train.real.frames import load_clip
from train.real.metrics import video_metrics
from train.real.model import FINDING_NAMES
from train.real.sources import (
    clip_sources,
    folds_for,
    per_source,
    source_probe,
    within_source_auroc,
)
from train.video.baselines import METHODS, predict_all
from train.video.fit import fit_uninorm
from train.video.fit_config import FitConfig
from train.video.metrics import auroc, mean_sd

UNINORM_FIT = FitConfig(head="log")
"""The video head, fixed before any real-data evaluation (the simulator CV chose "log")."""


def clip_flags(clip: PocusClip) -> np.ndarray:
    """(5,) float finding flags in FINDING_NAMES order; NaN where not given."""
    return np.array([float(clip.findings[k]) if k in clip.findings else np.nan
                     for k in FINDING_NAMES], dtype=np.float32)


def load_train_clips(clips: Sequence[PocusClip], cache_dir: str | None, max_frames: int,
                     group_of: dict[str, str] | None = None) -> dict[str, TrainClip]:
    """Decoded (cached) frames, score, flags and group of each clip."""
    group_of = group_of or clip_groups(clips)
    source_of = clip_sources(clips)
    out = {}
    for c in clips:
        fr = load_clip(c.path, cache_dir, max_frames=max_frames)
        out[c.filename] = TrainClip(c.filename, fr.images,
                                    -1 if c.severity is None else c.severity, clip_flags(c),
                                    group=group_of.get(c.filename, c.filename),
                                    source=source_of[c.filename],
                                    klass=class_index(c.class_label))
    return out


def summarise(per_fold: Sequence[dict[str, Any]], pooled: dict[str, Any]) -> dict[str, Any]:
    keys = ("weighted_f1", "accuracy", "qwk", "within_one", "auroc_0_vs_1plus",
            "specificity_healthy")
    out: dict[str, Any] = {k: dict(zip(("mean", "sd"), mean_sd([f[k] for f in per_fold]),
                                       strict=True)) for k in keys}
    out["pooled"] = pooled
    out["folds"] = list(per_fold)
    return out


def run_fold(fold: int, folds: Folds, data: dict[str, TrainClip], cfg: RealConfig,
             out: Path) -> dict[str, Any]:
    """Train on the other folds, predict every clip; returns the fold's raw predictions
    (no prior correction: :func:`evaluate_folds` applies it)."""
    train_names = [n for n in folds.train(fold) if n in data]
    held_out = set(folds.test(fold))  # whole groups: no composite drawn on a test clip
    model, summary = train_model([data[n] for n in train_names], cfg, out / f"fold{fold}",
                                 sim_exclude=held_out)
    probs, finds, feats = {}, {}, {}
    for name, c in data.items():
        p, f, h = predict_with_features(model, c.images)
        probs[name], feats[name] = p, h
        if f is not None:
            finds[name] = f
    np.savez(out / f"fold{fold}" / "predictions.npz",
             **{f"probs/{k}": v for k, v in probs.items()},
             **{f"findings/{k}": v for k, v in finds.items()},
             **{f"features/{k}": v for k, v in feats.items()})
    return {"train": train_names, "test": [n for n in folds.test(fold) if n in data],
            "probs": probs, "findings": finds, "features": feats, "summary": summary}


def evaluate_folds(results: Sequence[dict[str, Any]], data: dict[str, TrainClip],
                   prior_adjust: bool = True, source_of: Mapping[str, str] | None = None
                   ) -> dict[str, Any]:
    """Uninorm fitted per fold on training clips; every method's clip metrics; findings AUROC;
    with ``source_of`` (clip → source) also per-source metrics, the within-source AUROC and
    the source probe of each fold's features.

    ``prior_adjust``: the frame probabilities are first corrected to the training folds'
    score prior (what the exported model does in eval mode); ``results`` hold raw outputs.
    """
    if prior_adjust:
        results = [dict(r, probs={n: adjust_probs(p, score_counts([data[t] for t in r["train"]]))
                                  for n, p in r["probs"].items()}) for r in results]
    per_method: dict[str, list] = {m: [] for m in METHODS}
    pooled_y: list[int] = []
    pooled_names: list[str] = []
    pooled: dict[str, list] = {m: [] for m in METHODS}
    find_true: list[np.ndarray] = []
    find_score: list[np.ndarray] = []
    es = []
    for r in results:
        lab_train = [n for n in r["train"] if data[n].score >= 0]
        fit = fit_uninorm([r["probs"][n] for n in lab_train],
                          [data[n].score for n in lab_train], UNINORM_FIT)
        es.append(fit.e.tolist())
        test = [n for n in r["test"] if data[n].score >= 0]
        y = [data[n].score for n in test]
        preds = {m: [] for m in METHODS}
        for n in test:
            for m, pr in predict_all(r["probs"][n], fit.e).items():
                preds[m].append(pr)
        for m in METHODS:
            per_method[m].append(video_metrics(y, preds[m]))
            pooled[m] += preds[m]
        pooled_y += y
        pooled_names += test
        for n in r["test"]:
            if n in r["findings"]:
                find_true.append(data[n].flags)
                find_score.append(r["findings"][n].mean(axis=0))
    report = {m: summarise(per_method[m], video_metrics(pooled_y, pooled[m])) for m in METHODS}
    findings = {}
    if find_true:
        t, s = np.stack(find_true), np.stack(find_score)
        for j, name in enumerate(FINDING_NAMES):
            known = np.isfinite(t[:, j])
            findings[name] = {"auroc": auroc(t[known, j].astype(int), s[known, j]),
                              "positives": int(t[known, j].sum()), "n": int(known.sum())}
    rep = {"methods": report, "findings": findings, "uninorm_e": es,
           "label_counts": np.bincount(pooled_y, minlength=4).tolist()}
    if source_of is not None:
        rep.update(source_views(pooled_y, pooled, [source_of[n] for n in pooled_names]))
        probes = [source_probe(r["features"], source_of, {n: data[n].group for n in data})
                  for r in results if r.get("features")]
        if probes:
            rep["source_probe"] = {k: float(np.mean([p[k] for p in probes]))
                                   for k in ("accuracy", "balanced_accuracy", "chance_majority",
                                             "chance_uniform")}
            rep["source_probe"]["n_models"] = len(probes)
    return rep


def source_views(y: Sequence[int], preds: Mapping[str, Sequence[tuple[int, float]]],
                 sources: Sequence[str]) -> dict[str, Any]:
    """Per-source metrics and within-source AUROC of every method's held-out predictions."""
    return {"by_source": {m: per_source(y, p, sources) for m, p in preds.items()},
            "within_source": {m: within_source_auroc(y, p, sources) for m, p in preds.items()}}


def cross_validate(clips: Sequence[PocusClip], cfg: RealConfig, out: str | Path, k: int = 5,
                   fold_seed: int = 0, commercial_only: bool = False,
                   cache_dir: str | None = None,
                   only_folds: Sequence[int] | None = None, split: str = "group"
                   ) -> dict[str, Any]:
    """Cross-validation; writes ``cv.json`` (and per-fold weights/predictions) to ``out``.

    ``split``: ``"group"`` (grouped ``k``-fold) or ``"source"`` (leave-one-source-out: one
    fold per labelled source, ``k`` unused). Groups and folds are computed on every clip of
    the manifest (so the folds are the same for every row of the ablation);
    ``commercial_only`` then drops the non-commercial clips from training *and* evaluation.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    folds = folds_for(clips, split, k, fold_seed)
    k = folds.k
    use = trainable(clips, commercial_only)
    t0 = time.perf_counter()
    data = load_train_clips(use, cache_dir, cfg.max_frames, folds.group_of)
    if not cfg.unlabelled or cfg.findings_weight <= 0:
        data = {n: c for n, c in data.items() if c.score >= 0}
    results = []
    for fold in (only_folds if only_folds is not None else range(k)):
        results.append(run_fold(fold, folds, data, replace(cfg, seed=cfg.seed + fold), out))
    source_of = clip_sources(clips)
    rep = evaluate_folds(results, data, cfg.prior_adjust, source_of)
    rep["methods_other_prior"] = evaluate_folds(results, data, not cfg.prior_adjust)["methods"]
    rep.update({"config": asdict(cfg), "k": k, "fold_seed": fold_seed, "split": split,
                "fold_names": list(folds.names),
                "commercial_only": commercial_only, "n_clips_used": len(data),
                "train_summaries": [r["summary"] for r in results],
                "wall_s": round(time.perf_counter() - t0, 1),
                "folds": {n: folds.fold_of[n] for n in data}})
    (out / "cv.json").write_text(json.dumps(rep, indent=2))
    return rep


def _cell(s: dict[str, float]) -> str:
    return "  n/a" if not np.isfinite(s["mean"]) else f"{s['mean']:.3f} ± {s['sd']:.3f}"


def reevaluate(run: str | Path, clips: Sequence[PocusClip], prior_adjust: bool = True,
               cache_dir: str | None = None, test_all: bool = False,
               adapt: Sequence[str] = ()) -> dict[str, Any]:
    """The report of a CV run folder from its saved raw predictions (no retraining).

    ``test_all``: also score, with each fold's saved weights, the test-fold clips the run did
    not train on for another reason (e.g. the non-commercial clips of a ``--commercial-only``
    run), so its figures are on the same clips as every other row.

    ``adapt``: parts of :func:`train.real.adapt.adapt_model` (``prior``, ``bn``) applied to
    each fold's model on that fold's held-out clips *without their labels* (under LOSO: the
    held-out source, as ``pleura adapt`` would at a new site) before they are scored; the
    training clips' probabilities and the uninorm stay as without adaptation.
    """
    run = Path(run)
    cfg = RealConfig.from_dict(json.loads((run / "fold0" / "config.json").read_text()))
    done = json.loads((run / "cv.json").read_text()) if (run / "cv.json").is_file() else {}
    split = done.get("split", "group")
    folds = folds_for(clips, split, done.get("k", 5), done.get("fold_seed", 0))
    use = trainable(clips, done.get("commercial_only", False) and not test_all)
    data = load_train_clips(use, cache_dir, cfg.max_frames, folds.group_of)
    results = []
    for k in range(folds.k):
        path = run / f"fold{k}" / "predictions.npz"
        if not path.is_file():
            continue
        with np.load(path) as z:
            probs = {n[6:]: z[n] for n in z.files if n.startswith("probs/")}
            finds = {n[9:]: z[n] for n in z.files if n.startswith("findings/")}
            feats = {n[9:]: z[n] for n in z.files if n.startswith("features/")}
        train = [n for n in folds.train(k) if n in probs]
        if test_all:
            _predict_missing(run / f"fold{k}", cfg, data, folds.test(k), probs, finds)
        results.append({"train": train, "test": [n for n in folds.test(k) if n in probs],
                        "probs": probs, "findings": finds, "fold_dir": str(run / f"fold{k}"),
                        "features": {n: v for n, v in feats.items() if n in probs}})
    seen = {n for r in results for n in r["probs"]}
    data = {n: c for n, c in data.items() if n in seen}
    if adapt:
        results = [_adapted(r, cfg, data, adapt, prior_adjust) for r in results]
        prior_adjust = False  # the adapted results already carry their priors
    rep = evaluate_folds(results, data, prior_adjust, clip_sources(clips))
    if adapt:
        rep["adaptation"] = [r["adaptation"] for r in results]
    rep.update({"k": len(results), "wall_s": 0.0, "config": asdict(cfg),
                "prior_adjust": prior_adjust, "split": split,
                "fold_names": list(folds.names)})
    return rep


def _adapted(r: dict[str, Any], cfg: RealConfig, data: dict[str, TrainClip],
             parts: Sequence[str], prior_adjust: bool) -> dict[str, Any]:
    """One fold's results with its held-out clips scored by its model adapted on them."""
    from dataclasses import replace as dc_replace

    from train.real.adapt import adapt_model
    from train.real.fit import build, load_weights
    from train.real.model import set_prior

    counts = score_counts([data[t] for t in r["train"]])
    model = build(dc_replace(cfg, init_from=None))
    fold_dir = Path(r["fold_dir"])
    load_weights(model, fold_dir / "frame-weights.npz")
    if prior_adjust:
        set_prior(model, counts)
    test = [n for n in r["test"] if n in data]
    report = adapt_model(model, [data[n].images for n in test], parts)
    probs = {n: (adjust_probs(p, counts) if prior_adjust else p) for n, p in r["probs"].items()}
    for n in test:
        probs[n] = predict(model, data[n].images)[0]
    return dict(r, probs=probs, adaptation={k: v for k, v in report.items() if k != "clips"})


def _predict_missing(fold_dir: Path, cfg: RealConfig, data: dict[str, TrainClip],
                     names: Sequence[str], probs: dict, finds: dict) -> None:
    """Raw predictions of a fold's saved model for ``names`` it has none for (in place)."""
    from dataclasses import replace as dc_replace

    from train.real.fit import build, load_weights

    missing = [n for n in names if n in data and n not in probs]
    if not missing:
        return
    model = build(dc_replace(cfg, init_from=None))
    load_weights(model, fold_dir / "frame-weights.npz")
    for n in missing:
        p, f = predict(model, data[n].images)
        probs[n] = p
        if f is not None:
            finds[n] = f


def format_report(rep: dict[str, Any]) -> str:
    """The CV result as a text table: pooled held-out metrics per video method (the headline;
    mean ± sd over folds beside them), findings AUROC, within-source AUROC, source probe."""
    keys = ("weighted_f1", "accuracy", "qwk", "within_one", "auroc_0_vs_1plus",
            "specificity_healthy")
    loso = rep.get("split") == "source"
    what = (f"leave-one-source-out ({rep['k']} sources held out in turn)" if loso
            else f"grouped {rep['k']}-fold CV (folds share sources)")
    lines = [f"{what}, {sum(rep['label_counts'])} labelled clips "
             f"(0/1/2/3: {rep['label_counts']}), {rep['wall_s']} s",
             "pooled over the held-out clips",
             "method        " + "  ".join(f"{k[:13]:>13}" for k in keys)]
    for m, r in rep["methods"].items():
        pooled = r.get("pooled") or {}
        lines.append(f"{m:<13} " + "  ".join(f"{_num(pooled.get(k)):>13}" for k in keys))
    lines += ["mean ± sd over folds" + (" (a fold is one source; many hold one class only)"
                                         if loso else ""),
              "method        " + "  ".join(f"{k[:13]:>13}" for k in keys)]
    for m, r in rep["methods"].items():
        lines.append(f"{m:<13} " + "  ".join(f"{_cell(r[k]):>13}" for k in keys))
    if rep.get("findings"):
        lines.append("findings AUROC (clip mean of frame outputs): " + ", ".join(
            f"{k} {v['auroc']:.2f} ({v['positives']}/{v['n']})"
            for k, v in rep["findings"].items()))
    for m, ws in (rep.get("within_source") or {}).items():
        if ws and (m == "uninorms" or m not in METHODS):
            lines.append(f"within-source AUROC 0 vs >=1 ({m}; healthy/findings clips): "
                         + ", ".join(f"{s} {v['auroc']:.2f} ({v['n_healthy']}/"
                                     f"{v['n_findings']})" for s, v in ws.items()
                                     if s != "mean") + f"; mean {ws['mean']['auroc']:.2f}")
    sp = rep.get("source_probe")
    if sp:
        lines.append(f"source probe (linear, frozen features, grouped 5-fold): accuracy "
                     f"{sp['accuracy']:.2f}, balanced {sp['balanced_accuracy']:.2f} (chance "
                     f"{sp['chance_majority']:.2f} majority / {sp['chance_uniform']:.2f} "
                     f"uniform), mean of {sp.get('n_models', 1)} model(s)")
    return "\n".join(lines)


def _num(v: Any) -> str:
    return "  n/a" if v is None or not np.isfinite(v) else f"{v:.3f}"
