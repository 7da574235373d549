"""How real do the composites look? A classifier that tells them from real sick frames.

Usage (from the repository root; the composites made with ``pleura synth --on-real``)::

    .venv/bin/pleura synth --on-real ../shared/data/pocus/MANIFEST.csv --out /tmp/comp \\
        --frames 30 --variants 4 --seed 0
    .venv/bin/python scripts/composite_realism.py --composites /tmp/comp \\
        --sheet docs/img/composite-vs-real.png --json /tmp/comp-realism.json

Frames: up to ``--per-video`` frames, evenly spaced, of every composite of level 1-3, of every
level-0 composite (the real healthy clips, unchanged) and of every real clip with a severity
label >= 1 in the POCUS manifest. The real sick frames get the composites' treatment (resized
to the same longer side and round-tripped through the same H.264 encoder), so re-encoding is
no clue. Each frame becomes 39 image statistics on its letterboxed 128 x 128 version (grey
level quantiles, speckle contrast, vertical vs horizontal gradient energy, column and row
profiles: the things B-lines, white lung and consolidations change). An L2 logistic regression
is cross-validated in 5 folds **grouped by real clip** (a composite's group is the healthy clip
it was drawn on), and the out-of-fold scores give the AUROC (frame level and clip level: the
mean score of a clip's frames). Three pairs:

- composite (1-3) vs real sick: 0.5 = indistinguishable (the issue's measure);
- real healthy vs real sick: the same frames before compositing - how much of the answer is
  the clips' sources and devices, not the drawn findings (the two sets come from different
  sources in this data);
- composite (1-3) vs real healthy: can these features see the drawn findings at all?
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import textwrap
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from engines.preprocess import letterbox  # noqa: E402
from train.data.layout import read_dataset  # noqa: E402
from train.data.pocus import read_pocus_manifest  # noqa: E402
from train.data.video import read_video, write_video  # noqa: E402
from train.synth.composite_data import fit_size  # noqa: E402

POCUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "pocus"
COLOURS = np.array([[0, 0, 0], [60, 200, 60], [230, 220, 40], [255, 140, 0], [230, 40, 230]])


def features(frame: np.ndarray) -> np.ndarray:
    """39 image statistics of one grey frame (inside its lit sector, 128 x 128 letterbox)."""
    img, _ = letterbox(frame, (128, 128))
    x = img.astype(np.float32)
    sector = cv2.erode((cv2.blur(x, (5, 5)) > 3).astype(np.uint8), np.ones((5, 5), np.uint8))
    m = sector.astype(bool)
    if m.sum() < 100:
        m = np.ones_like(m)
    v = x[m]
    q = np.percentile(v, [5, 25, 50, 75, 95, 99]) / 255
    mu = cv2.GaussianBlur(x, (0, 0), 1.5)
    sd = np.sqrt(np.maximum(cv2.GaussianBlur(x * x, (0, 0), 1.5) - mu * mu, 0))
    contrast = (sd / np.maximum(mu, 4))[m]
    gx = cv2.Sobel(x, cv2.CV_32F, 1, 0)[m]
    gy = cv2.Sobel(x, cv2.CV_32F, 0, 1)[m]
    lap = cv2.Laplacian(x, cv2.CV_32F)[m]
    rows = np.array([x[i][m[i]].mean() if m[i].any() else 0 for i in range(128)]) / 255
    cols = np.array([x[:, j][m[:, j]].mean() if m[:, j].any() else 0 for j in range(128)]) / 255
    deep = x[64:][m[64:]].mean() / (x[:64][m[:64]].mean() + 1)
    depth_bins = rows.reshape(8, 16).mean(axis=1)
    col_var = [cols.std(), np.abs(np.diff(cols)).mean() * 10]
    dark = [(v < 20).mean(), (v > 200).mean()]
    grads = [np.log1p(np.abs(gx).mean()), np.log1p(np.abs(gy).mean()),
             np.log1p(np.abs(gx).mean()) - np.log1p(np.abs(gy).mean()), np.log1p(lap.var()) / 10]
    spec = np.abs(np.fft.rfft(cols - cols.mean()))
    bands = [np.log1p(spec[a:b].sum()) for a, b in ((1, 4), (4, 12), (12, 40))]
    return np.concatenate([q, [v.mean() / 255, v.std() / 255], np.percentile(contrast,
                           [10, 50, 90]), grads, depth_bins, col_var, dark, bands,
                           [deep, m.mean()], np.histogram(v, 8, (0, 256))[0] / len(v)])


def auroc(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U; ties get their average rank)."""
    n1, n0 = int((y == 1).sum()), int((y == 0).sum())
    if not n1 or not n0:
        return float("nan")
    _, inv, counts = np.unique(s, return_inverse=True, return_counts=True)
    start = np.cumsum(counts) - counts  # 0-based first rank of each distinct value
    ranks = (start + (counts + 1) / 2)[inv]
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2,
                 steps: int = 400) -> tuple[np.ndarray, float]:
    """Binary L2 logistic regression, full-batch gradient descent with Nesterov momentum;
    classes weighted to balance."""
    w, b = np.zeros(x.shape[1]), 0.0
    vw, vb = np.zeros_like(w), 0.0
    cw = np.where(y == 1, 0.5 / max(y.mean(), 1e-6), 0.5 / max(1 - y.mean(), 1e-6))
    for _ in range(steps):
        wl, bl = w + 0.9 * vw, b + 0.9 * vb
        p = 1 / (1 + np.exp(-(x @ wl + bl)))
        g = cw * (p - y) / len(y)
        vw, vb = 0.9 * vw - 0.5 * (x.T @ g + l2 * wl), 0.9 * vb - 0.5 * g.sum()
        w, b = w + vw, b + vb
    return w, b


def grouped_oof(x: np.ndarray, y: np.ndarray, groups: np.ndarray, k: int = 5,
                seed: int = 0) -> np.ndarray:
    """Out-of-fold scores, folds grouped (a group never on both sides)."""
    uniq = np.unique(groups)
    fold_of = dict(zip(uniq, np.random.default_rng(seed).permutation(len(uniq)) % k,
                       strict=True))
    fold = np.array([fold_of[g] for g in groups])
    out = np.zeros(len(y))
    for f in range(k):
        tr, te = fold != f, fold == f
        if not te.any() or len(np.unique(y[tr])) < 2:
            continue
        mu, sd = x[tr].mean(axis=0), x[tr].std(axis=0) + 1e-6
        w, b = fit_logistic((x[tr] - mu) / sd, y[tr])
        out[te] = (x[te] - mu) / sd @ w + b
    return out


def evaluate(pos: list, neg: list) -> dict:
    """AUROC of ``pos`` (label 1) vs ``neg`` frames: lists of (features, group)."""
    x = np.stack([f for f, _ in pos + neg])
    y = np.array([1] * len(pos) + [0] * len(neg))
    groups = np.array([g for _, g in pos + neg])
    s = grouped_oof(x, y, groups)
    keys = sorted({(g, int(c)) for g, c in zip(groups, y, strict=True)})  # a clip per class
    cs = np.array([s[(groups == g) & (y == c)].mean() for g, c in keys])
    cy = np.array([c for _, c in keys])
    return {"frames": [int((y == 1).sum()), int((y == 0).sum())],
            "clips": [int((cy == 1).sum()), int((cy == 0).sum())],
            "auroc_frame": round(auroc(y, s), 3), "auroc_clip": round(auroc(cy, cs), 3)}


def _spaced(n: int, k: int) -> list[int]:
    return sorted(set(np.linspace(0, n - 1, min(n, k)).round().astype(int).tolist()))


def composite_frames(root: Path, per_video: int) -> dict[int, list]:
    """level -> [(frame, mask, source clip, video_id, source)] of the composite dataset."""
    ds = read_dataset(root, check_masks=False)
    with (root / "videos.csv").open(newline="") as f:
        meta = {r["video_id"]: r for r in csv.DictReader(f)}
    out: dict[int, list] = {s: [] for s in range(4)}
    for vid in sorted(ds.videos):
        frames = ds.read_frames(vid)
        for i in _spaced(len(frames), per_video):
            out[int(meta[vid]["level"])].append(
                (frames[i], ds.read_mask(vid, i), meta[vid]["source_clip"], vid,
                 meta[vid]["source"]))
    return out


def real_sick_frames(manifest: Path, per_video: int, size: int) -> dict[int, list]:
    """severity -> [(frame, clip)] of labelled sick clips, resized and H.264 round-tripped."""
    out: dict[int, list] = {s: [] for s in range(1, 4)}
    with tempfile.TemporaryDirectory() as tmp:
        for c in read_pocus_manifest(manifest):
            if not c.severity:
                continue
            frames = fit_size(read_video(c.path), size)
            path = Path(tmp) / "clip.mp4"
            write_video(path, frames[_spaced(len(frames), per_video)], fps=20)
            out[c.severity] += [(f, c) for f in read_video(path)]
    return out


def contact_sheet(comp: dict[int, list], real: dict[int, list], credits: dict[str, str],
                  path: Path) -> None:
    """Per level: three composites, the first one's mask, three real frames of that score."""
    fig, axes = plt.subplots(4, 7, figsize=(15.4, 10.6))
    lines = []
    for s in range(4):
        picks = []
        for src in sorted({it[4] for it in comp[s]}, key=lambda x: -sum(
                it[4] == x for it in comp[s]))[:3]:  # the three biggest sources
            items = [it for it in comp[s] if it[4] == src]
            vid = items[len(items) // 2][3]
            same = [it for it in items if it[3] == vid]
            picks.append(same[len(same) // 2])  # a middle frame of a middle video
        reals = []
        for f, c in real.get(s, []):
            if c.filename not in {r[1].filename for r in reals}:
                reals.append((f, c))
        reals = reals[:: max(1, len(reals) // 3)][:3]
        cells = [(p[0], f"composite {s}: {p[2][:17]}") for p in picks]
        if picks:
            f, m = picks[0][0], picks[0][1]
            over = np.repeat(f[..., None], 3, axis=2).astype(float)
            over[m > 0] = 0.45 * over[m > 0] + 0.55 * COLOURS[m[m > 0]]
            cells.append((over.astype(np.uint8), "its mask (green = score 0)"))
        cells += [(f, f"real {s}: {c.filename[:19]}") for f, c in reals]
        for ax in axes[s]:
            ax.axis("off")
        for ax, (img, title) in zip(axes[s], cells, strict=False):
            ax.imshow(img, cmap="gray", vmin=0, vmax=255)
            ax.set_title(title, fontsize=7)
        lines += [f"{p[2]}: {credits.get(p[2], '')}" for p in picks]
        lines += [f"{c.filename}: {c.source_url or c.source} ({c.license})" for _, c in reals]
    note = "\n".join(textwrap.shorten(t, 120) for t in dict.fromkeys(lines))
    fig.text(0.01, 0.005, "Composites: pleura synth --on-real on healthy POCUS clips (Born et "
             "al. 2021; severity by Gare et al. 2022). Clips shown:\n" + note, fontsize=5.2,
             va="bottom", family="monospace")
    fig.tight_layout(rect=(0, 0.17, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--composites", required=True, help="a pleura synth --on-real dataset")
    ap.add_argument("--manifest", default=str(POCUS / "MANIFEST.csv"))
    ap.add_argument("--per-video", type=int, default=8, help="frames per video")
    ap.add_argument("--sheet", help="write the contact sheet here (PNG)")
    ap.add_argument("--json", help="write the AUROCs here")
    args = ap.parse_args()
    root = Path(args.composites)
    size = json.loads((root / "synth.json").read_text())["config"]["size"]
    comp = composite_frames(root, args.per_video)
    real = real_sick_frames(Path(args.manifest), args.per_video, size)
    sick_c = [(features(f), "c:" + g) for s in (1, 2, 3) for f, _, g, _, _ in comp[s]]
    healthy = [(features(f), "c:" + g) for f, _, g, _, _ in comp[0]]
    sick_r = [(features(f), "r:" + c.filename) for s in (1, 2, 3) for f, c in real[s]]
    report = {"composite_vs_real_sick": evaluate(sick_c, sick_r),
              "real_healthy_vs_real_sick": evaluate(healthy, sick_r),
              "composite_vs_real_healthy": evaluate(sick_c, healthy)}
    for s in (1, 2, 3):
        report[f"level_{s}_vs_real_sick"] = evaluate(
            [(features(f), "c:" + g) for f, _, g, _, _ in comp[s]], sick_r)
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    if args.sheet:
        clips = {c.filename: f"{c.source_url or c.source} ({c.license})"
                 for c in read_pocus_manifest(args.manifest)}
        contact_sheet(comp, real, clips, Path(args.sheet))
        print(f"wrote {args.sheet}")


if __name__ == "__main__":
    main()
