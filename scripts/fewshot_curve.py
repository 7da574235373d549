"""Few-shot learning curve of the fine-tune path under leave-one-source-out (issue #25 §4).

For each held-out source of a LOSO run (``pleura train real --cv-by source``) with more than
``max(k)`` labelled clips: draw ``k`` of its labelled clips (several draws), fine-tune that
fold's model on them as ``docs/fine-tune.md`` does (``--init-from``, the documented steps,
score prior and uninorm from the fine-tuning clips; the uninorm falls back to the fold's when
the k clips hold one score only), and score the source's *other* labelled clips, beside the
fold's model as it is (k = 0) on the same clips. Pooled over sources and draws per k.

Usage::

    .venv/bin/python scripts/fewshot_curve.py runs/real/loso-base \\
        --manifest ../shared/data/pocus/MANIFEST.csv --k 2,5,10 --draws 2 --steps 300 \\
        --json runs/real/fewshot.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a LOSO run folder (cv.json with split: source)")
    p.add_argument("--manifest", required=True)
    p.add_argument("--k", default="2,5,10")
    p.add_argument("--draws", type=int, default=2)
    p.add_argument("--steps", type=int, default=300, help="fine-tune steps (docs: 300)")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--sources", default="", help="only these held-out sources (comma list)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    from train.data.pocus import read_pocus_manifest
    from train.real.cv import UNINORM_FIT, load_train_clips, video_metrics
    from train.real.fit import RealConfig, predict, score_counts, train_model
    from train.real.frames import default_cache_dir
    from train.real.model import set_prior
    from train.real.sources import source_folds
    from train.video.baselines import predict_all
    from train.video.fit import fit_uninorm

    run = Path(args.run)
    done = json.loads((run / "cv.json").read_text())
    if done.get("split") != "source":
        print(f"{run}: not a leave-one-source-out run (split {done.get('split')!r})")
        return 2
    ks = [int(k) for k in args.k.split(",")]
    clips = read_pocus_manifest(args.manifest)
    folds = source_folds(clips)
    cfg = RealConfig.from_dict(json.loads((run / "fold0" / "config.json").read_text()))
    cache = default_cache_dir() if args.cache_dir is None else (args.cache_dir or None)
    data = load_train_clips([c for c in clips if c.severity is not None], cache, cfg.max_frames,
                            folds.group_of)
    rows, t0 = [], time.perf_counter()
    only = {s for s in args.sources.split(",") if s}
    for fold, name in enumerate(folds.names):
        if only and name not in only:
            continue
        labelled = [n for n in folds.test(fold) if n in data]
        if len(labelled) <= max(ks):
            continue
        fold_dir = run / f"fold{fold}"
        train = [n for n in folds.train(fold) if n in data]
        e_fold = np.asarray(done["uninorm_e"][fold])
        for draw in range(args.draws):
            rng = np.random.default_rng(1000 * fold + draw)
            order = list(rng.permutation(labelled))
            for k in ks:
                shots, test = order[:k], order[k:]
                base = build_fold_model(cfg, fold_dir, score_counts([data[n] for n in train]))
                y = [data[n].score for n in test]
                before = [predict_all(predict(base, data[n].images)[0], e_fold)["uninorms"]
                          for n in test]
                ft_cfg = replace(cfg, init_from=str(fold_dir), steps=args.steps,
                                 seed=cfg.seed + draw, unlabelled=False)
                model, summary = train_model([data[n] for n in shots], ft_cfg)
                set_prior(model, score_counts([data[n] for n in shots]))
                shot_probs = [predict(model, data[n].images)[0] for n in shots]
                shot_y = [data[n].score for n in shots]
                if len(set(shot_y)) >= 2:
                    e, e_from = fit_uninorm(shot_probs, shot_y, UNINORM_FIT).e, "shots"
                else:
                    e, e_from = e_fold, "fold"
                after = [predict_all(predict(model, data[n].images)[0], e)["uninorms"]
                         for n in test]
                rows.append({"source": name, "k": k, "draw": draw, "test": test, "y": y,
                             "before": before, "after": after, "uninorm_from": e_from,
                             "train_s": summary["seconds"]})
                print(f"{name} k={k} draw={draw}: {len(test)} test clips, "
                      f"acc {np.mean(np.equal(y, [a[0] for a in before])):.2f} -> "
                      f"{np.mean(np.equal(y, [a[0] for a in after])):.2f} "
                      f"({summary['seconds']:.0f} s)", flush=True)
    curve = {}
    for k in ks:
        sel = [r for r in rows if r["k"] == k]
        if not sel:
            continue
        y = [v for r in sel for v in r["y"]]
        curve[str(k)] = {
            "fine_tuned": _metrics(video_metrics, y, [v for r in sel for v in r["after"]]),
            "k0_same_clips": _metrics(video_metrics, y, [v for r in sel for v in r["before"]]),
            "sources": sorted({r["source"] for r in sel}), "n_runs": len(sel)}
    out = {"run": str(run), "steps": args.steps, "draws": args.draws, "k": ks,
           "curve": curve, "rows": rows, "wall_s": round(time.perf_counter() - t0, 1)}
    for k, c in curve.items():
        f, b = c["fine_tuned"], c["k0_same_clips"]
        print(f"k={k}: weighted F1 {b['weighted_f1']:.3f} -> {f['weighted_f1']:.3f}, "
              f"QWK {b['qwk']:.3f} -> {f['qwk']:.3f}, AUROC {b['auroc_0_vs_1plus']:.3f} -> "
              f"{f['auroc_0_vs_1plus']:.3f} ({c['n_runs']} runs, {', '.join(c['sources'])})")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))
    return 0


def build_fold_model(cfg, fold_dir: Path, counts):
    from train.real.fit import build, load_weights
    from train.real.model import set_prior

    model = build(replace(cfg, init_from=None))
    load_weights(model, fold_dir / "frame-weights.npz")
    set_prior(model, counts)
    return model.eval()


def _metrics(video_metrics, y, preds):
    m = video_metrics(y, preds)
    return {k: m[k] for k in ("weighted_f1", "accuracy", "qwk", "auroc_0_vs_1plus",
                              "specificity_healthy", "confusion", "n")}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
