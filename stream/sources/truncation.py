"""Does a video file, read to its end, look cut short? Pure judgement, no decoding.

:func:`stream.sources.decode_file` (the one decoding path, offline and live) gathers what the
container announces and what was decoded, and asks :func:`truncation`; a reason means the file
is truncated (``pleura score`` then reports ``truncated: true``, a live file source enters the
``truncated`` state). Checked on the 124 POCUS clips (mp4, mov, avi, mpeg, gif): no false
positives (``scripts/truncation_scan.py``).
"""

from __future__ import annotations

from pathlib import Path


def truncation(decoded: int, expected: int | None, decoded_s: float, expected_s: float | None,
               rate: float, tail_error: bool, *, time_only: bool = False,
               trailer: bool = True) -> str | None:
    """Why a file read to its end looks cut short, or None when it looks complete (pure).

    Two signals must agree for a container that announces a frame count (mp4/mov ``stsz``,
    avi header): fewer frames than announced, *and* either the last frame ending more than
    1.5 frame intervals before the announced duration or the last data packet failing to
    decode (a frame cut in half). One signal alone is not enough: an edit list hides frames
    the container counts without shortening the duration. Where no count is announced,
    ``time_only`` (a one-stream container whose duration comes from its header, e.g. mkv)
    allows the duration alone, with a 5 % margin. A GIF without its trailer byte is cut short.
    Formats whose duration is estimated from the data (MPEG-PS) cannot be judged this way.

    Args:
        decoded: frames decoded.
        expected: frames the container announces, or None.
        decoded_s: first frame's start to last frame's end, seconds.
        expected_s: the container's duration of the stream, seconds, or None.
        rate: frames per second (the length of one frame interval).
        tail_error: the last packet with data failed to decode.
        time_only: judge by duration alone when no count is announced.
        trailer: False when the format's end marker is missing (GIF ``;``).

    Returns:
        None, or a short reason such as ``"60 of 131 frames (2.40 of 5.24 s)"``.
    """
    if not trailer:
        return f"{decoded} frames, then the file stops without its GIF trailer"
    missing_s = None if expected_s is None else expected_s - decoded_s
    span = "" if expected_s is None else f" ({decoded_s:.2f} of {expected_s:.2f} s)"
    if expected and decoded < expected:
        if tail_error or (missing_s is not None and missing_s > 1.5 / rate):
            return f"{decoded} of {expected} frames{span}"
        return None
    if (not expected and time_only and missing_s is not None
            and missing_s > max(1.5 / rate, 0.05 * expected_s)):
        return f"{decoded} frames{span}"
    return None


def gif_trailer_ok(path: Path) -> bool:
    """A complete GIF ends with its trailer byte ``;`` (0x3B)."""
    with open(path, "rb") as f:
        f.seek(-1, 2)
        return f.read(1) == b";"
