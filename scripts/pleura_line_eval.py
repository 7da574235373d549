"""Pleural-line detector against the CVAT polygon of the device-screen clip (issue #26).

Mean vertical distance (screen pixels) between the tracked pleura and the mid-line of the
annotated ``lungslidingpresent`` quadrilateral, over every annotated frame among the first
``--frames`` (all by default), beside the naive brightest-row-per-column baseline.

Usage::

    .venv/bin/python scripts/pleura_line_eval.py [--data ../shared/data] [--frames N]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--frames", type=int, default=None)
    args = p.parse_args(argv)
    from engines.preprocess import to_grey
    from stream.roi import detect_roi
    from stream.sources import decode_file
    from train.synth.pleura_line import track_pleura

    screen = Path(args.data) / "device-screen" / "cit_linear_image_93029618565613.mp4"
    annot = screen.with_suffix(".annotations.json")
    frames = np.stack([to_grey(f.image) for f in decode_file(screen, max_frames=args.frames)])
    roi = detect_roi(list(frames[:8]))
    crop = frames[:, roi.y:roi.y + roi.h, roi.x:roi.x + roi.w]
    track = track_pleura(crop, "linear")
    ours, naive = [], []
    for s in json.loads(annot.read_text())[0]["shapes"]:
        if s["label"] != "lungslidingpresent" or s["frame"] >= len(crop):
            continue
        q = np.asarray(s["points"], float).reshape(-1, 2)
        left, right = (q[0] + q[1]) / 2, (q[2] + q[3]) / 2
        xy, _ = track.image_curve(s["frame"])
        xy = xy + [roi.x, roi.y]
        inside = (xy[:, 0] >= left[0]) & (xy[:, 0] <= right[0])
        ref = left[1] + (xy[inside, 0] - left[0]) * (right[1] - left[1]) / (right[0] - left[0])
        ours.append(float(np.abs(xy[inside, 1] - ref).mean()))
        cols = xy[inside, 0].astype(int) - roi.x
        bright = crop[s["frame"]][:, cols].argmax(axis=0) + roi.y
        naive.append(float(np.abs(bright - ref).mean()))
    print(f"{len(crop)} frames tracked, {len(ours)} annotated frames: detector "
          f"{np.mean(ours):.2f} px mean distance, brightest row per column {np.mean(naive):.1f} px")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
