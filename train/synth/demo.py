"""Demo clips for the runtime: one probe sweeping across all four scores.

``pleura synth --export-demo DIR`` writes ``demo-convex.mp4`` and ``demo-linear.mp4`` (15 s at
20 fps, 256 px) and a ``.json`` beside each with the per-frame ground-truth scores. The world
holds one zone per score in the order 0, 1, 2, 3; the probe dwells over each, slides to the
next (transition frames, ribs passing by) and finally sweeps back to the start, so the clip
loops without a jump in score.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from train.data.video import write_video
from train.synth.annotators import frame_score
from train.synth.render import VideoPlan, plan_video, render_video, smoothstep

DEMO_SCORES = (0, 1, 2, 3)


def sweep_plan(rng: np.random.Generator, probe: str, beam_hw: tuple[int, int], n_frames: int,
               fps: float, scores: tuple[int, ...] = DEMO_SCORES) -> VideoPlan:
    """A plan whose probe visits zones of ``scores`` in order, then returns to the first."""
    D, L = beam_hw
    base = plan_video(rng, probe, scores[0], beam_hw, n_frames, fps, transition_p=0.0)
    Z = int(1.3 * L)
    Uw = len(scores) * Z + L
    edges = [0] + [L // 2 + (i + 1) * Z for i in range(len(scores) - 1)] + [Uw]
    zones = [(edges[i], edges[i + 1], s) for i, s in enumerate(scores)]
    centres = [L // 2 + i * Z + Z // 2 - L // 2 for i in range(len(scores))] + [Z // 2]
    # Dwell 60 % of each leg, move during the rest; the last leg sweeps back to the start.
    legs = len(centres) - 1
    t = np.arange(n_frames) / n_frames * legs
    leg = np.minimum(t.astype(int), legs - 1)
    frac = smoothstep((t - leg - 0.6) / 0.4)
    xs = np.round(np.take(centres, leg) + frac * (np.take(centres, leg + 1)
                                                   - np.take(centres, leg))).astype(np.int64)
    slides = np.clip(base.slides, -xs, Uw - L - xs)
    ribs = [(float(e), rng.uniform(0.06, 0.12) * L) for e in edges[1:-1]]
    return dataclasses.replace(base, target=scores[0], zones=zones, xs=xs, slides=slides,
                               ribs=ribs)


def export_demo(out: str | Path, seed: int = 0, size: int = 256, fps: int = 20,
                seconds: float = 15.0, crf: int = 27) -> list[Path]:
    """Write ``demo-convex.mp4`` / ``demo-linear.mp4`` (+ ``.json`` scores) under ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n = int(round(seconds * fps))
    beam_hw = (size, 2 * round(0.375 * size))
    written = []
    for i, probe in enumerate(("convex", "linear")):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 7_777, i]))
        plan = sweep_plan(rng, probe, beam_hw, n, fps)
        geom, frames_it = render_video(plan, size, rng, beam_hw)
        area = int(geom.sector.sum())
        frames, scores = [], []
        for img, lab in frames_it:
            frames.append(img)
            scores.append(frame_score(lab, area))
        path = out / f"demo-{probe}.mp4"
        write_video(path, frames, fps=fps, crf=crf)
        path.with_suffix(".json").write_text(json.dumps({
            "probe": probe, "fps": fps, "frames": n, "size": size, "seed": seed,
            "command": f"pleura synth --export-demo {out} --seed {seed}",
            "scores": scores}))
        written.append(path)
    return written
