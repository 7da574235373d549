"""Truncation detection over a folder of clips: false positives on the originals, and how many
copies cut short are caught.

Usage:
    python scripts/truncation_scan.py ../shared/data/pocus [--cut 0.5 --cut 0.9]

Every clip is decoded with :func:`stream.sources.decode_file` (the one decoding path of
``pleura score`` and live files) and classed as complete, truncated or unreadable. With
``--cut F`` a copy holding the first ``F`` of each clip's bytes (``head -c``) is decoded as
well, in a temporary folder. The numbers in docs/reliability.md were made this way. A line is
printed for each original not called complete (a false positive) and each cut copy that lost
frames yet decodes as complete (a miss); the summary counts all of them.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections import Counter
from pathlib import Path

from stream.score import find_clips
from stream.sources import SourceError, TruncatedError, decode_file


def verdict(path: Path) -> tuple[str, int]:
    """(``complete``, ``truncated`` or ``unreadable``, frames decoded) for one clip."""
    n = 0
    try:
        for _ in decode_file(path):
            n += 1
    except TruncatedError:
        return "truncated", n
    except SourceError:
        return "unreadable", n
    return "complete", n


def scan(clips: list[Path], cuts: list[float]) -> dict[str, Counter]:
    """{"original": Counter(verdict), "cut 0.5": Counter(verdict), ...}; prints surprises.

    A cut copy that decodes as complete is a ``missed`` cut when it has fewer frames than
    the original, and ``complete (all frames)`` when the cut took only non-video bytes (an
    index, audio, padding).
    """
    out: dict[str, Counter] = {"original": Counter()}
    with tempfile.TemporaryDirectory(prefix="pleura-cut-") as tmp:
        for clip in clips:
            v, n_full = verdict(clip)
            out["original"][v] += 1
            if v != "complete":
                print(f"original {clip.name}: {v}")
            data = clip.read_bytes()
            for f in cuts:
                cut = Path(tmp) / clip.name
                cut.write_bytes(data[: int(len(data) * f)])
                v, n = verdict(cut)
                if v == "complete":
                    v = "complete (all frames)" if n >= n_full else "missed"
                if v == "missed":
                    print(f"cut {f:g} {clip.name}: {n} of {n_full} frames, decodes as complete")
                out.setdefault(f"cut {f:g}", Counter())[v] += 1
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--cut", type=float, action="append", default=[],
                   help="also decode copies cut to this fraction of their bytes (repeatable)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the decoder's per-packet warnings are expected
    clips = find_clips([args.folder])
    for name, counts in scan(clips, args.cut).items():
        print(f"{name}: {len(clips)} clips, " + ", ".join(f"{k} {v}" for k, v in
                                                         sorted(counts.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
