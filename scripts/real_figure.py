"""Real POCUS frames with a bundle's outputs: frame score, findings, segmentation mask.

Usage::

    .venv/bin/python scripts/real_figure.py --bundle engines/bundles/default \
        --manifest ../shared/data/pocus/MANIFEST.csv --out docs/img/real-frames.png

One middle frame per chosen clip (healthy and sick, convex and linear), through the runtime's
own decoder, preprocessing and ONNX Runtime engine. Titles: clip (severity label), predicted
frame probabilities, findings above 0.5. Clips are credited by file name (see the manifest).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from engines import create_engine  # noqa: E402
from engines.bundle import load_bundle  # noqa: E402
from engines.postprocess import label_map  # noqa: E402
from engines.preprocess import preprocess_frame  # noqa: E402
from stream.sources import decode_file  # noqa: E402
from ui.overlay import blend_mask, to_rgb  # noqa: E402

CLIPS = ("Reg-NormalLungs.mp4", "Reg_Image_181206_crop.mp4", "Cov-Atlas-suspectedCovid.mp4",
         "Vir_prospective_file1.mp4", "Cov_combatting_Image3.mp4", "Cov-Atlas-pleural2.mp4")


def middle_frame(path: Path) -> np.ndarray:
    frames = [f.image for f in decode_file(path)]
    return frames[len(frames) // 2]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", default="engines/bundles/default")
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", default="docs/img/real-frames.png")
    p.add_argument("--clips", nargs="*", default=list(CLIPS))
    args = p.parse_args(argv)

    import csv

    with open(args.manifest, newline="") as f:
        rows = {r["file"]: r for r in csv.DictReader(f)}
    b = load_bundle(args.bundle)
    eng = create_engine(b, "onnxruntime")
    fig, axes = plt.subplots(2, (len(args.clips) + 1) // 2, figsize=(4 * ((len(args.clips) + 1)
                                                                         // 2), 9.4))
    for ax, name in zip(axes.ravel(), args.clips, strict=False):
        img = middle_frame(Path(args.manifest).parent / name)
        x, _ = preprocess_frame(img, b.frame_spec)
        out = eng.frame(x[None])
        rgb = to_rgb(img)
        if eng.has_segmentation():
            xs, lb = preprocess_frame(img, b.seg_spec)
            seg = eng.segment(xs[None])
            rgb = blend_mask(rgb, lb.unletterbox(label_map(seg.probs)[0]))
        ax.imshow(rgb)
        ax.axis("off")
        probs = " ".join(f"{v:.2f}" for v in out.probs[0])
        found = ""
        if out.findings is not None:
            found = ", ".join(n.replace("_", " ") for n, v in zip(b.finding_names, out.findings[0],
                                                                   strict=True) if v >= 0.5)
        ax.set_title(f"{name[:30]}\nlabel {rows[name]['severity'] or '?'} · frame score "
                     f"{int(out.probs[0].argmax())} ({probs})\nfindings: {found or 'none'}",
                     fontsize=8)
    for ax in axes.ravel()[len(args.clips):]:
        ax.axis("off")
    fig.suptitle(f"bundle {b.name}: real POCUS frames (mask colours: segmentation member)",
                 fontsize=10)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
