"""What every frame source is and yields: the contract between the sources and capture.

A :class:`Source` yields *events*: a :class:`DecodedFrame`, or a :class:`StateChange` (one of
:data:`STATES`) that capture forwards so the UI can show it. :class:`SourceOptions` holds the
options of every source kind. The kinds live next to this file: :mod:`stream.sources.files`
(video files, image folders, DICOM cine through :mod:`stream.sources.dicom`) and
:mod:`stream.sources.realtime` (capture cards and network streams); :mod:`stream.sources`
chooses one by URI scheme.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

STATES = ("playing", "ended", "stalled", "reconnecting", "error", "truncated")
"""``truncated``: a file pass ended before the container said it would (see
:class:`TruncatedError`); a looping file stays in this state while it is still cut short."""


class SourceError(RuntimeError):
    """A source that cannot be opened or read; the message names it and says what to do."""


class TruncatedError(SourceError):
    """A file that ends before its container says it should: cut short by an interrupted copy
    or download, or still being written. Raised after the frames before the cut were yielded.

    Attributes:
        decoded: frames decoded.
        expected: frames the container announces (None where it does not say).
    """

    def __init__(self, message: str, decoded: int, expected: int | None) -> None:
        super().__init__(message)
        self.decoded = decoded
        self.expected = expected


@dataclass(frozen=True)
class DecodedFrame:
    """One decoded frame.

    Attributes:
        image: (H, W) or (H, W, 3) uint8, RGB.
        index: frame number within the current pass over the source (0-based).
        pts_s: presentation time in seconds from the stream start (file timestamps; for live
            sources the arrival time relative to the first frame).
        epoch: pass / connection number; changes on loop or reopen (a new video).
    """

    image: np.ndarray
    index: int
    pts_s: float
    epoch: int = 0


@dataclass(frozen=True)
class StateChange:
    """The source entered ``state`` (one of :data:`STATES`); ``detail`` says why."""

    state: str
    detail: str = ""


Event = DecodedFrame | StateChange


@dataclass(frozen=True)
class SourceOptions:
    """Options for every source kind; each uses the ones that apply to it.

    Attributes:
        loop: files / folders: start again at the end.
        speed: files / folders: playback speed factor (2.0 = twice real time).
        fps: image folders (and files without timestamps): frames per second.
        size: capture cards: "WxH" requested from the device, or None.
        device_fps: capture cards: frame rate requested from the device, or None.
        pixel_format: capture cards: e.g. "mjpeg", "yuyv422", or None (device default).
        stall_s: live: no frame for this long -> "stalled".
        max_backoff_s: live: the longest wait between reopen attempts.
    """

    loop: bool = False
    speed: float = 1.0
    fps: float = 30.0
    size: str | None = None
    device_fps: float | None = None
    pixel_format: str | None = None
    stall_s: float = 2.0
    max_backoff_s: float = 5.0

    def __post_init__(self) -> None:
        if not self.speed > 0:
            raise ValueError(f"speed must be > 0, got {self.speed}")
        if not self.fps > 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")


class Source(ABC):
    """A source of frames. Not thread-safe; one consumer."""

    live: bool = False

    def __init__(self, uri: str, options: SourceOptions | None = None) -> None:
        self.uri = uri
        self.options = options or SourceOptions()

    @abstractmethod
    def events(self) -> Iterator[Event]:
        """Frames (due now, already paced) and state changes, until the source ends."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the device / connection."""


MAX_PIXELS_ENV = "PLEURA_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 4096 * 4096
"""Frames larger than this (16.8 MP; a 4K capture is 8.3 MP, no ultrasound scanner sends more)
are refused at decode, before any is converted: a tiny file of huge frames (a "pixel bomb")
would otherwise take gigabytes. ``$PLEURA_MAX_PIXELS`` sets another limit."""


def max_pixels() -> int:
    """The frame-size limit in force (:data:`DEFAULT_MAX_PIXELS` or ``$PLEURA_MAX_PIXELS``)."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text)
    except ValueError:
        raise SourceError(f"${MAX_PIXELS_ENV}={text!r} is not an integer number of pixels "
                          f"(default {DEFAULT_MAX_PIXELS})") from None
    if value <= 0:
        raise SourceError(f"${MAX_PIXELS_ENV}={value} must be positive")
    return value


def check_frame_size(path: object, width: int, height: int) -> None:
    """Raise :class:`SourceError` for frames above :func:`max_pixels`."""
    limit = max_pixels()
    if width * height > limit:
        raise SourceError(
            f"{path}: frames of {width}x{height} ({width * height / 1e6:.1f} MP) exceed the "
            f"limit of {limit / 1e6:.1f} MP; an ultrasound clip is far smaller (this looks "
            f"like a decompression bomb). Downscale the video, or raise ${MAX_PIXELS_ENV} "
            "if it is genuine")
