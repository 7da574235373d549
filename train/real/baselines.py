"""Reference rows of the real-clip ablation, on the same grouped folds as the CV.

- ``majority``: always the most frequent training score (0, healthy).
- ``source_lookup``: the most common training score of the clip's own source
  (:func:`train.real.sources.source_lookup`): what recognising the source alone is worth.
- ``brightness``: nearest class mean of one number per clip, the mean grey level of its
  scanned pixels (the shortcut the issue warns about: 34.7 / 59.1 / 73.3 / 44.9 for scores
  0–3). Fitted on the training folds only.
- ``bundle``: a fixed bundle (e.g. a shipped one) through its ONNX Runtime engine on the same
  cached frames, with its own uninorm; nothing is fitted, so every fold is an honest hold-out
  unless the bundle was trained on these clips (then say so).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from train.real.clips import Folds
from train.real.cv import summarise, video_metrics
from train.real.fit import TrainClip
from train.real.sources import per_source, within_source_auroc
from train.real.sources import source_lookup as lookup
from train.video.baselines import predict_all

Predictor = Callable[[list[str], list[str]], list[tuple[int, float]]]


def fold_report(folds: Folds, data: dict[str, TrainClip], predictor: Predictor,
                source_of: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run ``predictor(train_names, test_names)`` per fold; clip metrics as in the CV; with
    ``source_of`` also the per-source metrics and within-source AUROC (keys ``by_source``,
    ``within_source``)."""
    per_fold, ys, preds, names = [], [], [], []
    for k in range(folds.k):
        train = [n for n in folds.train(k) if n in data and data[n].score >= 0]
        test = [n for n in folds.test(k) if n in data and data[n].score >= 0]
        p = predictor(train, test)
        y = [data[n].score for n in test]
        per_fold.append(video_metrics(y, p))
        ys += y
        preds += p
        names += test
    rep = summarise(per_fold, video_metrics(ys, preds))
    if source_of is not None:
        srcs = [source_of[n] for n in names]
        rep["by_source"] = per_source(ys, preds, srcs)
        rep["within_source"] = within_source_auroc(ys, preds, srcs)
    return rep


def source_lookup(data: dict[str, TrainClip], source_of: Mapping[str, str]) -> Predictor:
    """The source-lookup reference row on the folds (fitted on the training folds only)."""
    return lookup({n: source_of[n] for n in data}, {n: c.score for n, c in data.items()})


def clip_brightness(images: np.ndarray) -> float:
    """Mean grey level (0–255) of a clip's scanned pixels (> 8), over its frames."""
    px = images[images > 8]
    return float(px.mean()) if px.size else 0.0


def majority(data: dict[str, TrainClip]) -> Predictor:
    def predict(train: list[str], test: list[str]) -> list[tuple[int, float]]:
        s = int(np.bincount([data[n].score for n in train], minlength=4).argmax())
        return [(s, 0.0)] * len(test)
    return predict


def brightness(data: dict[str, TrainClip]) -> Predictor:
    feat = {n: clip_brightness(c.images) for n, c in data.items()}

    def predict(train: list[str], test: list[str]) -> list[tuple[int, float]]:
        means = {s: np.mean([feat[n] for n in train if data[n].score == s])
                 for s in range(4) if any(data[n].score == s for n in train)}
        out = []
        for n in test:
            d = {s: abs(feat[n] - m) for s, m in means.items()}
            pred = min(d, key=d.get)
            sick = min((v for s, v in d.items() if s >= 1), default=np.inf)
            out.append((int(pred), float(d.get(0, np.inf) - sick)))
        return out
    return predict


def bundle_predictor(bundle: str, data: dict[str, TrainClip],
                     batch: int = 32) -> tuple[Predictor, dict[str, np.ndarray]]:
    """A fixed bundle's video predictions (uninorm with its own e) on the cached frames."""
    from engines import create_engine
    from engines.bundle import load_bundle

    b = load_bundle(bundle)
    eng = create_engine(b, "onnxruntime")
    e = np.asarray(b.uninorm_e if b.uninorm_e is not None else [0.5] * 4)
    probs: dict[str, np.ndarray] = {}
    for n, c in data.items():
        if c.score < 0:
            continue
        x = c.images.astype(np.float32) / 255.0
        x = np.repeat(x[:, None], b.frame_spec.channels, axis=1)
        probs[n] = np.concatenate([eng.frame(x[i:i + batch]).probs
                                   for i in range(0, len(x), batch)])

    def predict(train: Sequence[str], test: Sequence[str]) -> list[tuple[int, float]]:
        return [predict_all(probs[n], e)["uninorms"] for n in test]
    return predict, probs
