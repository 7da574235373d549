"""``docs/img/stn-crops.png``: Reg-STN crops (crop 1 red, crop 2 green) beside Grad-CAM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from engines.preprocess import FRAME_SPEC
from train.data.layout import read_dataset
from train.frame.data import build_table
from train.frame.localisation import GradCAM, heat_box, theta_box, video_sector
from train.frame.run import load_run


def _pick(ds, table, probe: str, n: int) -> list[int]:
    """Up to ``n`` rows of ``probe`` frames, preferring distinct scores ≥ 1, spread over videos."""
    rows = []
    for score in (3, 2, 1, 0):
        cand = [i for i in range(len(table.scores)) if table.scores[i] == score
                and ds.videos[str(table.video_ids[i])].probe == probe]
        if cand:
            rows.append(cand[len(cand) // 2])
        if len(rows) == n:
            break
    return rows


def crops_figure(run: str | Path, data: str | Path, out: str | Path, per_probe: int = 2,
                 cache_dir: str | None = "runs/.cache") -> Path:
    """Draw convex and linear frames: the frame with both crops, crop 1, and Grad-CAM."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model, cfg = load_run(run)
    ds = read_dataset(data, check_masks=False)
    table = build_table(ds, cache_dir)
    rows = _pick(ds, table, "convex", per_probe) + _pick(ds, table, "linear", per_probe)
    x = torch.from_numpy(table.images[rows]).float().div(255)[:, None].repeat(1, 3, 1, 1)
    with torch.no_grad():
        o = model(x)
    cnn = getattr(model, "cnn", None)
    heats = None
    if cnn is not None:
        gc = GradCAM(cnn, cnn.trunk.blocks[-1])
        heats = gc(x)
        gc.close()
    hw = (FRAME_SPEC.height, FRAME_SPEC.width)
    fig, axes = plt.subplots(len(rows), 2, figsize=(6, 3 * len(rows)))
    axes = np.atleast_2d(axes)
    for k, r in enumerate(rows):
        img = table.images[r]
        probe = ds.videos[str(table.video_ids[r])].probe
        ax = axes[k, 0]
        ax.imshow(img, cmap="gray", vmin=0, vmax=255)
        for th, colour in ((o["theta1"][k], "red"), (o["theta2"][k], "lime")):
            c = theta_box(th.numpy(), hw)
            ax.plot(*np.vstack([c, c[:1]]).T, color=colour, lw=1.5)
        ax.set_title(f"{probe}, score {table.scores[r]}, pred "
                     f"{int(o['probs'][k].argmax())}", fontsize=8)
        ax = axes[k, 1]
        ax.imshow(img, cmap="gray", vmin=0, vmax=255)
        if heats is not None:
            vid = table.video_ids[r]
            heat = heats[k] * video_sector(table.images[table.video_ids == vid])
            ax.imshow(heat, cmap="jet", alpha=0.4, vmin=0, vmax=1)
            c = heat_box(heat)
            ax.plot(*np.vstack([c, c[:1]]).T, color="yellow", lw=1.5)
        ax.set_title("Grad-CAM of the same CNN (box: ≥ 0.5 max)", fontsize=8)
        for a in axes[k]:
            a.set_xlim(0, hw[1])
            a.set_ylim(hw[0], 0)
            a.axis("off")
    fig.suptitle(f"{cfg.model}: crop 1 red, crop 2 green", fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
