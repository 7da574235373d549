"""Where the page's "uncertain" thresholds come from (``ui/certainty.py``).

Reads the out-of-fold predictions of a cross-validation run of ``pleura train real`` (each
fold's ``predictions.npz``), keeps the clips each fold held out, applies the training folds'
prior correction (as the exported model does) and fits the uninorm on the training folds; then
prints, per bin of top probability and of margin to the second score, how often the frame score
(truth: the clip's severity, the labels' resolution) and the video score were right::

    python scripts/certainty_thresholds.py runs/real/loso-base [--split source]

A bin whose score was right at most half the time is a close call: the threshold is the upper
edge of the last such bin (printed as "threshold"); ``ui/certainty.py`` holds the figures.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

FRAME_EDGES = (0.25, 0.35, 0.40, 0.45, 0.50, 0.55, 0.60, 0.70, 0.80, 0.90, 1.01)
MARGIN_EDGES = (0.0, 0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.40, 0.50, 0.70, 1.01)


def held_out_rows(run: Path, manifest: Path, split: str
                  ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(frames: (N, 3) top, margin, right; clips: (M, 3) the same for the video score; the
    folds read)."""
    from engines.uninorm import RunningUninorm
    from train.data.pocus import read_pocus_manifest
    from train.real.cv import UNINORM_FIT
    from train.real.fit import adjust_probs
    from train.real.sources import folds_for
    from train.video.fit import fit_uninorm

    clips = read_pocus_manifest(manifest)
    sev = {c.filename: c.severity for c in clips}
    folds = folds_for(clips, split)
    frames, videos, read = [], [], []
    for k in range(folds.k):
        path = run / f"fold{k}" / "predictions.npz"
        if not path.is_file():
            continue
        read.append(f"fold{k} ({folds.names[k]})")
        with np.load(path) as z:
            probs = {n[6:]: z[n] for n in z.files if n.startswith("probs/")}
        train = [n for n in folds.train(k) if n in probs and sev.get(n) is not None]
        counts = np.bincount([sev[n] for n in train], minlength=4)
        probs = {n: adjust_probs(v, counts) for n, v in probs.items()}
        e = fit_uninorm([probs[n] for n in train], [sev[n] for n in train], UNINORM_FIT).e
        for n in folds.test(k):
            if n not in probs or sev.get(n) is None:
                continue
            p = probs[n]
            s = np.sort(p, axis=1)
            frames += [(a, a - b, float(np.argmax(r) == sev[n]))
                       for r, a, b in zip(p, s[:, -1], s[:, -2], strict=True)]
            agg = RunningUninorm(e)
            for r in p:
                agg.update(r)
            ev = np.sort(agg.evidence)
            videos.append((ev[-1], ev[-1] - ev[-2], float(agg.score == sev[n])))
    return np.array(frames).reshape(-1, 3), np.array(videos).reshape(-1, 3), read


def table(rows: np.ndarray, col: int, edges: Sequence[float], title: str) -> float:
    """Print the bins; returns the threshold (upper edge of the last bin right <= 1/2)."""
    print(f"{title}:")
    threshold = edges[0]
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (rows[:, col] >= lo) & (rows[:, col] < hi)
        if sel.any():
            right = rows[sel, 2].mean()
            print(f"  [{lo:.2f}, {hi:.2f})  n={int(sel.sum()):5d}  right {right:.2f}")
            if right <= 0.5:
                threshold = hi
    print(f"  threshold {threshold:.2f}")
    return threshold


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a `pleura train real --cv-by ...` output folder")
    p.add_argument("--manifest", type=Path, default=Path("../shared/data/pocus/MANIFEST.csv"))
    p.add_argument("--split", default="source", choices=("source", "group"),
                   help="the run's --cv-by (default source)")
    args = p.parse_args(argv)
    frames, videos, read = held_out_rows(args.run, args.manifest, args.split)
    if not len(frames):
        print(f"no fold predictions under {args.run}")
        return 1
    print(f"{args.run}: {', '.join(read)}; {len(frames)} held-out frames (right "
          f"{frames[:, 2].mean():.2f}), {len(videos)} clips (right {videos[:, 2].mean():.2f})")
    table(frames, 0, FRAME_EDGES, "frame: top probability")
    table(frames, 1, MARGIN_EDGES, "frame: margin to the second score")
    table(videos, 0, FRAME_EDGES, "video: top evidence share")
    table(videos, 1, MARGIN_EDGES, "video: margin to the second score")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
