"""Make docs/img/synth-vs-real.png: simulated frames per score beside real POCUS frames.

Usage (from the repository root)::

    .venv/bin/python scripts/synth_vs_real.py --out docs/img/synth-vs-real.png --seed 0

Real frames come from ``../shared/data/pocus`` (Born et al. 2021, POCUS dataset; severity
labels of Gare et al. 2022), the middle frame of the first clips of each severity, preferring
clips whose licence allows commercial use; each is credited under the figure.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

import av
import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from train.data.pocus import read_pocus_manifest  # noqa: E402
from train.synth.writer import SynthConfig, synth_video  # noqa: E402

POCUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "pocus"
N_EACH = 3


def sim_frames(score: int, n: int, seed: int) -> list[tuple[np.ndarray, str]]:
    """``n`` simulated frames whose ground-truth score is ``score`` (alternating probes)."""
    cfg = SynthConfig(frames=12, size=256, seed=seed, transition_p=0.0)
    out: list[tuple[np.ndarray, str]] = []
    v = 0
    while len(out) < n and v < 40:
        probe = ("convex", "linear")[len(out) % 2] if len(out) < n - 1 else "convex"
        frames, _, _, scores, _ = synth_video(cfg, 100 + score, v, score, probe)
        hits = np.flatnonzero(scores == score)
        if len(hits):
            out.append((frames[hits[len(hits) // 2]], f"simulated, {probe}"))
        v += 1
    return out


def real_frames(score: int, n: int, manifest: Path) -> list[tuple[np.ndarray, str, str]]:
    clips = [c for c in read_pocus_manifest(manifest) if c.severity == score]
    clips.sort(key=lambda c: (not c.commercial_use, c.filename))
    out = []
    for c in clips[:n]:
        with av.open(str(c.path)) as container:
            frames = [f.to_ndarray(format="gray") for f in container.decode(video=0)]
        credit = f"{c.filename}: {c.source_url or c.source} ({c.license})"
        out.append((frames[len(frames) // 2], f"real, {c.probe}", credit))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/img/synth-vs-real.png")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--manifest", default=str(POCUS / "MANIFEST.csv"))
    args = ap.parse_args()
    fig, axes = plt.subplots(4, 2 * N_EACH, figsize=(2.2 * 2 * N_EACH, 2.35 * 4 + 1.6))
    credits = []
    for s in range(4):
        sims = sim_frames(s, N_EACH, args.seed)
        reals = real_frames(s, N_EACH, Path(args.manifest))
        cells = [(f, t) for f, t in sims] + [(f, t) for f, t, _ in reals]
        credits += [f"score {s}, real {i + 1}: {c}" for i, (_, _, c) in enumerate(reals)]
        for j, ax in enumerate(axes[s]):
            ax.axis("off")
            if j < len(cells):
                img, title = cells[j]
                h, w = img.shape
                k = 256 / max(h, w)
                ax.imshow(cv2.resize(img, (round(w * k), round(h * k))), cmap="gray",
                          vmin=0, vmax=255)
                ax.set_title(f"score {s}: {title}", fontsize=8)
    note = "\n".join(textwrap.shorten(c, 150) for c in credits)
    fig.text(0.01, 0.005, f"Left: pleura synth (seed {args.seed}). Right: POCUS dataset (Born "
             f"et al. 2021), severity by Gare et al. 2022. Credits:\n{note}",
             fontsize=5.5, va="bottom", family="monospace")
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
