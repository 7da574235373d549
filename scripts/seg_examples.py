"""Figure like Roy et al. 2020 Figs. 5-6: frame, ground truth, prediction, MC-dropout uncertainty.

Usage::

    .venv/bin/python scripts/seg_examples.py --runs runs/seg-unet --data data/sim-test \
        --out docs/img/seg-examples.png [--mc 40] [--n 4]

Several ``--runs`` are averaged into an ensemble (mean softmax, MC passes pooled).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from train.data.layout import read_dataset  # noqa: E402
from train.seg.data import load_masked_frames  # noqa: E402
from train.seg.evaluate import mc_uncertainty, run_label  # noqa: E402
from train.seg.metrics import binary_covid_dice  # noqa: E402
from train.seg.run import load_run  # noqa: E402

# BG transparent; scores 0..3: blue, yellow, orange, red (as the paper's figures).
COLOURS = ListedColormap([(0, 0, 0, 0), (0.2, 0.45, 1, 0.55), (1, 0.9, 0.1, 0.55),
                          (1, 0.55, 0.0, 0.6), (0.95, 0.1, 0.1, 0.6)])


def pick_frames(scores: np.ndarray, n: int, seed: int) -> list[int]:
    """``n`` frame indices cycling over the scores present (one per score first)."""
    rng = np.random.default_rng(seed)
    present = sorted(set(scores.tolist()))
    out = []
    for k in range(n):
        idx = np.flatnonzero(scores == present[k % len(present)])
        out.append(int(rng.choice(idx)))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", default="docs/img/seg-examples.png")
    p.add_argument("--mc", type=int, default=40)
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--max-frames", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    ds = read_dataset(args.data, check_masks=False)
    test = load_masked_frames(ds, list(ds.videos), args.max_frames, args.seed, progress=False)
    models = [load_run(r) for r in args.runs]
    idx = pick_frames(test.scores, args.n, args.seed)
    x = torch.stack([test[i][0] for i in idx])
    mean, std = mc_uncertainty([m for m, _ in models], x, args.mc)
    pred = mean.argmax(1)
    name = " + ".join(run_label(c) for _, c in models)

    fig, axes = plt.subplots(len(idx), 4, figsize=(12, 2.5 * len(idx)), squeeze=False)
    for row, i in enumerate(idx):
        img, gt = test.images[i], test.masks[i]
        d = binary_covid_dice(pred[row], gt)
        dice_txt = "no COVID class in either" if np.isnan(d) else f"COVID Dice {d:.2f}"
        panels = [(f"frame (score {test.scores[i]})", None), ("ground truth", gt),
                  (f"prediction ({dice_txt})", pred[row]), ("MC-dropout std", None)]
        for col, (title, lab) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(img, cmap="gray", vmin=0, vmax=255)
            if lab is not None:
                ax.imshow(lab, cmap=COLOURS, vmin=0, vmax=4, interpolation="nearest")
            if col == 3:
                im = ax.imshow(std[row], cmap="magma", vmin=0, vmax=max(0.05, std.max()))
                fig.colorbar(im, ax=ax, fraction=0.035)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.suptitle(f"{name}: {args.mc} MC-dropout passes per member "
                 "(blue 0, yellow 1, orange 2, red 3)", fontsize=10)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
