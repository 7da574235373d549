"""Where a real clip came from, and evaluation that holds a whole source out (issue #25).

In the POCUS data the source nearly decides the label (30 of the 31 labelled ``charlotte``
clips and all 11 labelled Northumbria clips are healthy; the sick ones come from the web atlases
and journals), so folds that share sources can be won by recognising the source. Every user
brings a scanner we never saw: **leave-one-source-out (LOSO)** is the headline protocol.

**Source rule** (:func:`clip_source`), from the manifest's ``source_url``:

1. a URL → its host, lower-cased, without ``www.`` (``www.thepocusatlas.com`` →
   ``thepocusatlas.com``; ``theultrasoundjournal.springeropen.com`` and ``link.springer.com``
   are two journals, two sources);
2. text ``Data contributed by <name>[, <file>]`` → ``<name>`` as a lower-case slug
   (``northumbria-specialist-emergency-care-hospital``);
3. any other text → that text as a slug (``charlotte``);
4. your own clips (``pleura train real --clips … --labels CSV``) → the CSV's ``source`` column
   (site or device) when given, else ``own`` (one source).

On the POCUS manifest that gives 8 sources, 7 of them with labelled clips.

**Folds** (:func:`source_folds`): one fold per source that has labelled clips; a source without
labelled clips has nothing to test, so its clips train every fold (fold ``-1``). Recording /
patient groups (:func:`train.real.clips.clip_groups`) never straddle folds either: if a group
spanned two sources, the two would be held out together (none does on the POCUS manifest; the
test checks it).

**Reference rows**: :func:`source_lookup` answers the most common training score of the clip's
own source (the shortcut a source detector can take; under LOSO the held-out source is never in
training, so it falls back to the majority), :func:`within_source_auroc` asks whether a model
ranks sick above healthy *inside* one source (a source detector scores 0.5 there), and
:func:`source_probe` how well a linear classifier on a model's frozen penultimate features
tells the source (lower is better).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from train.data.pocus import PocusClip
from train.real.clips import Folds, clip_groups, components
from train.real.metrics import video_metrics

OWN_SOURCE = "own"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def source_of_url(source_url: str, own_source: str = "") -> str:
    """The source of one manifest ``source_url`` value (the module's rule)."""
    url = (source_url or "").strip()
    if url.startswith("group:") or not url:  # own clips (label CSV)
        return _slug(own_source) if own_source else OWN_SOURCE
    m = re.match(r"^https?://([^/\s#?]+)", url, re.I)
    if m:
        host = m.group(1).lower().split(":")[0]
        return re.sub(r"^www\.", "", host)
    m = re.match(r"^data contributed by\s+([^,]+)", url, re.I)
    return _slug(m.group(1) if m else url)


def clip_source(clip: PocusClip) -> str:
    """The source of a clip (see the module docstring)."""
    url = (clip.source_url or "").strip()
    if url and not url.startswith("group:"):
        return source_of_url(url)
    return _slug(clip.source) if clip.source not in ("", "own") else OWN_SOURCE


def clip_sources(clips: Sequence[PocusClip]) -> dict[str, str]:
    """file name → source."""
    return {c.filename: clip_source(c) for c in clips}


def source_folds(clips: Sequence[PocusClip]) -> Folds:
    """Leave-one-source-out folds over every clip of the manifest.

    Fold ``i`` holds out the ``i``-th labelled source (sorted by name; ``Folds.names[i]``);
    clips of sources without labelled clips get fold ``-1`` (always trained on, never tested).

    Raises:
        ValueError: no clip has a label, or fewer than two sources have labelled clips.
    """
    group_of = clip_groups(clips)
    src = clip_sources(clips)
    # sources joined by a recording group that spans them are held out together
    by_group: dict[str, set[str]] = defaultdict(set)
    for c in clips:
        by_group[group_of[c.filename]].add(src[c.filename])
    unit_of = components(set(src.values()), (sorted(m) for m in by_group.values()))
    unit_members: dict[str, set[str]] = defaultdict(set)
    for s, u in unit_of.items():
        unit_members[u].add(s)
    labelled_units = sorted({unit_of[src[c.filename]] for c in clips if c.severity is not None})
    if len(labelled_units) < 2:
        raise ValueError(f"leave-one-source-out needs labelled clips from two or more sources; "
                         f"found {len(labelled_units)} ({', '.join(labelled_units) or 'none'})")
    fold_of_unit = {u: i for i, u in enumerate(labelled_units)}
    names = tuple("+".join(sorted(unit_members[u])) for u in labelled_units)
    fold_of = {c.filename: fold_of_unit.get(unit_of[src[c.filename]], -1) for c in clips}
    return Folds(len(labelled_units), fold_of, group_of, names)


def folds_for(clips: Sequence[PocusClip], split: str, k: int = 5, seed: int = 0) -> Folds:
    """The folds of a protocol: ``"source"`` (LOSO) or ``"group"`` (grouped k-fold)."""
    from train.real.clips import grouped_folds

    if split == "source":
        return source_folds(clips)
    if split == "group":
        return grouped_folds(clips, k, seed)
    raise ValueError(f"split must be 'source' or 'group', got {split!r}")


# --------------------------------------------------------------------------- reference rows

Pred = tuple[int, float]


def source_lookup(source_of: Mapping[str, str], score_of: Mapping[str, int]):
    """Predictor ``(train, test) -> [(score, sick-ness)]``: the most common training score of
    the test clip's own source (ties: the lower score), and for ranking the share of training
    clips of that source with a score >= 1; a source unseen in training gets the training
    majority and the overall sick share."""

    def predict(train: Sequence[str], test: Sequence[str]) -> list[Pred]:
        by_src: dict[str, list[int]] = defaultdict(list)
        for n in train:
            by_src[source_of[n]].append(score_of[n])
        everything = [score_of[n] for n in train]
        out = []
        for n in test:
            seen = by_src.get(source_of[n]) or everything
            counts = np.bincount(seen, minlength=4)
            out.append((int(counts.argmax()), float(np.mean(np.asarray(seen) >= 1))))
        return out
    return predict


def leave_one_clip_out_lookup(clips: Sequence[PocusClip]) -> tuple[list[int], list[Pred]]:
    """The source-lookup baseline with every other labelled clip as training (leave one clip
    out): the upper bound of what the source alone tells about the label."""
    lab = [c for c in clips if c.severity is not None]
    src = clip_sources(lab)
    score = {c.filename: int(c.severity) for c in lab}
    predict = source_lookup(src, score)
    names = [c.filename for c in lab]
    preds = [predict([m for m in names if m != n], [n])[0] for n in names]
    return [score[n] for n in names], preds


def within_source_auroc(y: Sequence[int], preds: Sequence[Pred], sources: Sequence[str]
                        ) -> dict[str, dict[str, Any]]:
    """AUROC healthy (0) vs findings (>= 1) inside each source that has both, from held-out
    predictions; with the pooled mean over those sources (each source weighs one)."""
    by: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(sources):
        by[s].append(i)
    from train.video.metrics import auroc

    out: dict[str, dict[str, Any]] = {}
    for s, idx in sorted(by.items()):
        yy = np.asarray([int(y[i] >= 1) for i in idx])
        if 0 < yy.sum() < len(yy):
            out[s] = {"auroc": auroc(yy, [preds[i][1] for i in idx]),
                      "n_healthy": int((yy == 0).sum()), "n_findings": int(yy.sum())}
    if out:
        out["mean"] = {"auroc": float(np.mean([v["auroc"] for v in out.values()])),
                       "n_sources": len(out)}
    return out


def per_source(y: Sequence[int], preds: Sequence[Pred], sources: Sequence[str]
               ) -> dict[str, dict[str, Any]]:
    """Held-out clip metrics of each source (a source may hold one class only: QWK and AUROC
    are then NaN, accuracy and the confusion still tell)."""
    by: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(sources):
        by[s].append(i)
    out = {}
    for s, idx in sorted(by.items()):
        m = video_metrics([y[i] for i in idx], [preds[i] for i in idx])
        m["label_counts"] = np.bincount([y[i] for i in idx], minlength=4).tolist()
        out[s] = m
    return out


# --------------------------------------------------------------------------- source probe


def _fit_softmax(x: np.ndarray, y: np.ndarray, n_classes: int, l2: float = 1e-2,
                 steps: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression by full-batch gradient descent (Nesterov momentum)."""
    n, d = x.shape
    w = np.zeros((d, n_classes))
    b = np.zeros(n_classes)
    vw, vb = np.zeros_like(w), np.zeros_like(b)
    onehot = np.eye(n_classes)[y]
    lr, mom = 0.5, 0.9
    for _ in range(steps):
        wl, bl = w + mom * vw, b + mom * vb
        z = x @ wl + bl
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        g = (p - onehot) / n
        gw, gb = x.T @ g + l2 * wl, g.sum(axis=0)
        vw, vb = mom * vw - lr * gw, mom * vb - lr * gb
        w, b = w + vw, b + vb
    return w, b


def source_probe(features: Mapping[str, np.ndarray], source_of: Mapping[str, str],
                 group_of: Mapping[str, str], k: int = 5, seed: int = 0) -> dict[str, Any]:
    """How well a linear classifier on clip features (mean of a model's frozen penultimate
    features over the clip's frames) predicts the clip's source, grouped k-fold (a recording
    group never in train and test). Lower is better: a model that reads the lung and not the
    device should leave little of the source in its features.

    Returns:
        ``accuracy``, ``balanced_accuracy`` (mean recall over sources), the chance levels
        (``chance_majority``: share of the largest source; ``chance_uniform``: 1 / sources),
        ``n_clips``, ``n_sources``.
    """
    names = sorted(features)
    srcs = sorted({source_of[n] for n in names})
    y = np.array([srcs.index(source_of[n]) for n in names])
    x = np.stack([np.asarray(features[n], dtype=np.float64).reshape(-1) for n in names])
    groups = sorted({group_of.get(n, n) for n in names})
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(groups))
    fold_of_group = {groups[j]: i % k for i, j in enumerate(order)}
    fold = np.array([fold_of_group[group_of.get(n, n)] for n in names])
    pred = np.full(len(names), -1)
    for f in range(k):
        tr, te = fold != f, fold == f
        if not te.any() or not tr.any():
            continue
        mu, sd = x[tr].mean(axis=0), x[tr].std(axis=0) + 1e-6
        w, b = _fit_softmax((x[tr] - mu) / sd, y[tr], len(srcs))
        pred[te] = np.argmax(((x[te] - mu) / sd) @ w + b, axis=1)
    recalls = [float(np.mean(pred[y == c] == c)) for c in range(len(srcs)) if (y == c).any()]
    counts = Counter(y.tolist())
    return {"accuracy": float(np.mean(pred == y)), "balanced_accuracy": float(np.mean(recalls)),
            "chance_majority": max(counts.values()) / len(y), "chance_uniform": 1 / len(srcs),
            "n_clips": len(names), "n_sources": len(srcs), "k": k}
