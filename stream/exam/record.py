"""Record a zone's clip from any source into an exam, then score it.

    python -m stream.exam.record EXAM --zone R1 --source v4l2:///dev/video0 --seconds 6 \\
        [--patient P07 --protocol 14] [--codec auto|lossless] [--bundle DIR]

The source is opened as on the live page (:func:`stream.sources.open_source`: a file plays at
its own rate, a capture card or stream live). Recording stops after ``--seconds`` of source
time (auto-stop) or when the source ends. The clip is written by
:class:`stream.exam.clipwriter.ClipWriter` at the source's frame rate (measured from the first
frames' timestamps), made final atomically, then scored by the offline path and added to the
zone in ``exam.json`` (atomic). A crash or SIGKILL while recording loses only the clip being
recorded: finished clips stay playable and the exam reopens.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from stream.exam.clipwriter import ClipWriter, stale_parts
from stream.exam.store import ClipRecord, Exam, ExamError
from stream.sources import DecodedFrame, SourceError, SourceOptions, StateChange, open_source

log = logging.getLogger(__name__)
RATE_PROBE = 8
"""Frames buffered to measure the source's frame rate before the clip is opened."""


def next_clip_path(exam: Exam, zone: str) -> Path:
    """``EXAM/clips/<zone>-<k>.mp4`` with the next free ``k`` (001, 002, ...)."""
    clips = exam.folder / "clips"
    k = 1
    while (clips / f"{zone}-{k:03d}.mp4").exists() or (clips / f".{zone}-{k:03d}.part.mp4"
                                                          ).exists():
        k += 1
    return clips / f"{zone}-{k:03d}.mp4"


def measured_rate(pts: list[float], default: float = 30.0) -> float:
    """Frames per second from timestamps: 1 / the median frame interval."""
    d = np.diff(np.asarray(pts, dtype=np.float64))
    d = d[d > 0]
    return round(float(1.0 / np.median(d)), 3) if d.size else default


def frames_of(events: Iterable) -> Iterator[DecodedFrame]:
    """The frames of one pass of a source (stops at its end, its error or a new epoch)."""
    epoch = None
    for ev in events:
        if isinstance(ev, StateChange):
            if ev.state in ("ended", "error"):
                if ev.state == "error":
                    log.warning("source error: %s", ev.detail)
                return
            continue
        if epoch is None:
            epoch = ev.epoch
        elif ev.epoch != epoch:
            return
        yield ev


def record_clip(path: Path, frames: Iterable[DecodedFrame | tuple[DecodedFrame, dict | None]],
                seconds: float, codec: str = "auto", fps: float | None = None) -> Path:
    """Write ``frames`` (at most ``seconds`` of source time) to ``path``; returns it when final.

    Args:
        frames: decoded frames, or (frame, live result) pairs whose result goes to the JSONL.
        fps: the clip's rate; None measures it from the first frames' timestamps.

    Raises:
        ValueError: no frame came; any exception of the source (the part files are removed).
    """
    items = ((x if isinstance(x, tuple) else (x, None)) for x in frames)
    head = list(itertools.islice(items, RATE_PROBE))
    if not head:
        raise ValueError("the source gave no frame")
    rate = fps or measured_rate([f.pts_s for f, _ in head])
    writer = ClipWriter(path, rate, codec)
    t0 = head[0][0].pts_s
    try:
        for f, result in itertools.chain(head, items):
            if f.pts_s - t0 >= seconds:
                break
            writer.write(f.image, f.pts_s - t0, result)
    except BaseException:
        writer.abort()
        raise
    return writer.finish()


def record_zone(exam: Exam, zone: str, source: str, seconds: float, scorer=None,
                codec: str = "auto", speed: float = 1.0) -> ClipRecord | Path:
    """Record ``zone`` from ``source`` and (with a scorer) score it into the exam.

    Returns:
        the zone's new :class:`ClipRecord` when scored, else the finished clip's path.
    """
    exam._zone(zone)  # an unknown zone fails before the source is opened
    src = open_source(source, SourceOptions(speed=speed))
    try:
        clip = record_clip(next_clip_path(exam, zone), frames_of(src.events()), seconds, codec)
    finally:
        src.close()
    if scorer is None:
        return clip
    from stream.exam.scoring import score_into_exam

    entry, _ = score_into_exam(exam, zone, clip, scorer)
    return entry


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m stream.exam.record",
                                description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("exam", help="exam folder (created with --patient when new)")
    p.add_argument("--zone", required=True, help="zone ID, e.g. R1")
    p.add_argument("--source", required=True, help="file, image folder, v4l2://, rtsp://, ...")
    p.add_argument("--seconds", type=float, default=6.0, help="auto-stop after this long")
    p.add_argument("--patient", default=None, help="patient pseudonym for a new exam")
    p.add_argument("--protocol", type=int, default=14, help="zones of a new exam")
    p.add_argument("--codec", default="auto", help="auto (H.264), lossless, or an encoder")
    p.add_argument("--speed", type=float, default=1.0, help="file playback speed")
    p.add_argument("--bundle", default=None, help="model bundle for scoring")
    p.add_argument("--no-score", action="store_true", help="record only")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if (Path(args.exam) / "exam.json").exists() or not args.patient:
            exam = Exam.open(args.exam)
        else:
            exam = Exam.create(args.exam, args.patient, args.protocol)
        for part in stale_parts(exam.folder):
            print(f"ignored unfinished recording {part} (interrupted)")
        scorer = None
        if not args.no_score:
            from engines.scorer import load_scorer
            from stream.exam.scoring import model_info

            scorer = load_scorer(args.bundle)
            exam.set_model(model_info(scorer, args.bundle), save=False)
        out = record_zone(exam, args.zone.upper(), args.source, args.seconds, scorer,
                          args.codec, args.speed)
    except (ExamError, SourceError, ValueError, OSError) as exc:
        print(f"record: {exc}", file=sys.stderr)
        return 2
    if isinstance(out, ClipRecord):
        print(f"{args.zone.upper()}: {out.file} video score {out.video_score} "
              f"({out.n_frames} frames); {exam.total_text()}")
    else:
        print(f"{args.zone.upper()}: recorded {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
