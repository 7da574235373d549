"""``pleura synth``: write a simulated lung-ultrasound dataset (videos, labels, masks)."""

from __future__ import annotations

import argparse
import json

from train.synth.writer import PROBE_CHOICES, SynthConfig, write_dataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = SynthConfig()
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    parser.epilog = ("Writes videos/<id>.mp4, frames.csv, videos.csv (annotator_1..5), "
                     "masks/<id>/<frame>.json (LabelMe) and synth.json; see docs/simulator.md.")
    parser.add_argument("--out", help="output folder (must not hold a dataset)")
    parser.add_argument("--patients", type=int, default=d.patients, help="simulated patients")
    parser.add_argument("--videos-per-patient", type=int, default=d.videos_per_patient,
                        help="videos per patient")
    parser.add_argument("--frames", type=int, default=d.frames, help="frames per video")
    parser.add_argument("--probe", choices=PROBE_CHOICES, default=d.probe,
                        help="probe of every video (mixed: about 65 %% convex)")
    parser.add_argument("--size", type=int, default=d.size, help="frame side in pixels (even)")
    parser.add_argument("--fps", type=int, default=d.fps, help="frame rate of the videos")
    parser.add_argument("--seed", type=int, default=d.seed,
                        help="everything follows from it: same seed, same dataset")
    parser.add_argument("--transition-p", type=float, default=d.transition_p,
                        help="probability that a video drifts across a score border")
    parser.add_argument("--acquisition", action="store_true",
                        help="also randomise the acquisition chain per video: resolution loss, "
                        "JPEG round trip, fan-edge fading, raised floor (labels unchanged)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes rendering videos in parallel (same output for any value)")
    parser.add_argument("--export-demo", metavar="DIR",
                        help="instead of a dataset, write the runtime's demo clips "
                        "demo-convex.mp4 / demo-linear.mp4 (15 s, 20 fps, 256 px, all four "
                        "scores) to DIR, e.g. stream/demo")


def run(args: argparse.Namespace) -> int:
    if args.export_demo:
        from train.synth.demo import export_demo

        for path in export_demo(args.export_demo, seed=args.seed, size=args.size, fps=args.fps):
            print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
        return 0
    if not args.out:
        raise SystemExit("pleura synth: --out DIR is required (or --export-demo DIR)")
    cfg = SynthConfig(patients=args.patients, videos_per_patient=args.videos_per_patient,
                      frames=args.frames, probe=args.probe, size=args.size, fps=args.fps,
                      seed=args.seed, transition_p=args.transition_p,
                      acquisition=args.acquisition)
    summary = write_dataset(args.out, cfg, progress=not args.no_progress,
                            workers=max(1, args.workers))
    print(json.dumps(summary))
    return 0
