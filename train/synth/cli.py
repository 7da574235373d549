"""``pleura synth``: write a simulated lung-ultrasound dataset (videos, labels, masks), or,
with ``--on-real``, pathology composited onto real healthy clips (:mod:`.composite_data`)."""

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
    g = parser.add_argument_group(
        "composites on real clips (--on-real)",
        "Instead of simulating, draw pathology at the four levels onto real healthy clips, with "
        "exact pixel masks (docs/simulator.md, 'Composites on real clips'). --frames, --size, "
        "--seed, --workers, --probe and --no-progress apply; the other simulator options do not.")
    g.add_argument("--on-real", nargs="+", metavar="CLIPS_OR_MANIFEST",
                   help="clip files, folders of clips, or a POCUS MANIFEST.csv (its labelled "
                   "healthy clips, severity 0); --probe convex|linear sets the probe of clips "
                   "outside a manifest (mixed: guessed from the sector)")
    g.add_argument("--variants", type=int, default=4,
                   help="composites per clip (target levels in turn from a per-clip offset)")
    g.add_argument("--levels", default="0,1,2,3", help="target scores to draw, comma-separated")
    g.add_argument("--sources", default="",
                   help="only clips of these sources (comma-separated, e.g. charlotte)")
    g.add_argument("--exclude-sources", default="",
                   help="leave out clips of these sources (e.g. a held-out LOSO source)")
    g.add_argument("--commercial-only", action="store_true",
                   help="only clips whose licence allows commercial use (CC BY)")
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
    if args.on_real:
        return _run_on_real(args)
    cfg = SynthConfig(patients=args.patients, videos_per_patient=args.videos_per_patient,
                      frames=args.frames, probe=args.probe, size=args.size, fps=args.fps,
                      seed=args.seed, transition_p=args.transition_p,
                      acquisition=args.acquisition)
    summary = write_dataset(args.out, cfg, progress=not args.no_progress,
                            workers=max(1, args.workers))
    print(json.dumps(summary))
    return 0


#: Simulator options that mean nothing for composites (their values come from the real clip).
_SIM_ONLY = ("patients", "videos_per_patient", "fps", "transition_p", "acquisition")


def _csv_list(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _run_on_real(args: argparse.Namespace) -> int:
    from train.synth.composite_data import CompositeConfig, write_composites

    d = SynthConfig()
    given = [f"--{k.replace('_', '-')}" for k in _SIM_ONLY if getattr(args, k) != getattr(d, k)]
    if given:
        raise SystemExit(f"pleura synth --on-real: {', '.join(given)} apply to the simulator "
                         "only (a composite keeps its real clip's frames, probe and rate)")
    try:
        levels = tuple(int(v) for v in _csv_list(args.levels))
    except ValueError:
        raise SystemExit(f"pleura synth --on-real: --levels {args.levels!r} must be "
                         "comma-separated scores 0..3, e.g. 1,2,3") from None
    try:
        cfg = CompositeConfig(on_real=tuple(args.on_real), variants=args.variants,
                              frames=args.frames, size=args.size, seed=args.seed,
                              levels=levels, sources=_csv_list(args.sources),
                              exclude_sources=_csv_list(args.exclude_sources),
                              commercial_only=args.commercial_only, probe=args.probe)
        summary = write_composites(args.out, cfg, progress=not args.no_progress,
                                   workers=max(1, args.workers))
    except (ValueError, FileExistsError) as exc:
        raise SystemExit(f"pleura synth --on-real: {exc}") from None
    print(json.dumps(summary))
    return 0
