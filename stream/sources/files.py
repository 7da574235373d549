"""Video files and image folders: decoded (PyAV, OpenCV, DICOM), checked for truncation, paced.

- file paths (any container FFmpeg reads, through PyAV; GIFs; DICOM cine through
  :mod:`stream.sources.dicom`) are paced by the stream's own timestamps divided by ``speed``;
  ``loop`` restarts at the end (a new *epoch*: the video score restarts).
- a folder of images plays at ``fps``.

:func:`decode_file` is the plain, unpaced decoder used for offline scoring (``pleura score``);
:class:`FileSource` is the paced source capture plays.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from stream.sources import dicom
from stream.sources.base import (
    DecodedFrame,
    Event,
    Source,
    SourceError,
    SourceOptions,
    StateChange,
    TruncatedError,
    check_frame_size,
)
from stream.sources.truncation import gif_trailer_ok, truncation

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# --------------------------------------------------------------------------- decoding


def _open_container(path: Path):
    import av

    if not path.exists():
        raise SourceError(f"{path}: no such file; give a video file, an image folder, "
                          "v4l2:///dev/videoN or a stream URL")
    if not path.is_file():  # a FIFO or device would block in open() until a writer comes
        raise SourceError(f"{path}: not a regular file (a FIFO, device or socket); pleura "
                          "reads video files: copy the clip to a file, or give a live source "
                          "as v4l2:///dev/videoN or a stream URL")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise SourceError(f"{path}: FFmpeg cannot read this file ({exc}); is it a video "
                          "(mp4, mov, avi, mpeg, mkv, gif, ...) and complete?") from None
    if not container.streams.video:
        container.close()
        raise SourceError(f"{path}: has no video stream")
    cc = container.streams.video[0].codec_context
    try:
        check_frame_size(path, int(cc.width or 0), int(cc.height or 0))
    except SourceError:
        container.close()
        raise
    return container


def _frame_array(frame) -> np.ndarray:
    """A PyAV VideoFrame -> (H, W, 3) uint8 RGB (any pixel format, odd sizes included)."""
    return frame.to_ndarray(format="rgb24")


def _check_complete(path: Path, container, stream, decoded: int, span_s: float, rate: float,
                    tail_error: bool) -> None:
    """Raise :class:`TruncatedError` when the file, read to its end, looks cut short."""
    expected = int(stream.frames or 0) or None
    if stream.duration is not None and stream.time_base is not None:
        expected_s, time_only = float(stream.duration * stream.time_base), False
    elif container.duration is not None:
        expected_s = container.duration / 1e6
        time_only = len(container.streams) == 1  # the container's duration is this stream's
    else:
        expected_s, time_only = None, False
    trailer = gif_trailer_ok(path) if container.format.name == "gif" else True
    reason = truncation(decoded, expected, span_s + 1.0 / rate, expected_s, rate, tail_error,
                        time_only=time_only, trailer=trailer)
    if reason is not None:
        raise TruncatedError(
            f"{path}: truncated: decoded {reason}. The file was cut short (an interrupted "
            "copy or download, or it is still being written); the frames before the cut were "
            "used. Copy the complete file again.", decoded, expected)


def _decode_container(path: Path, max_frames: int | None = None) -> Iterator[DecodedFrame]:
    import av

    container = _open_container(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or stream.guessed_rate or 0) or 30.0
        index, bad, t0, t_last, tail_error = 0, 0, None, 0.0, False
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError as exc:  # a corrupt packet: skip it, keep going
                bad += 1
                tail_error = True
                log.warning("%s: dropped an undecodable packet (%s)", path, exc)
                if bad > 50 and index == 0:
                    raise SourceError(f"{path}: no frame could be decoded; the file is "
                                      "corrupt or not a video") from None
                continue
            if packet.size:
                tail_error = False
            for frame in frames:
                check_frame_size(path, frame.width, frame.height)  # a size change mid-stream
                t = frame.time
                if t is None:
                    t = index / rate
                if t0 is None:
                    t0 = t
                t_last = max(0.0, float(t - t0))
                yield DecodedFrame(_frame_array(frame), index, t_last)
                index += 1
                if max_frames is not None and index >= max_frames:
                    return
        if index == 0:
            raise SourceError(f"{path}: no frame could be decoded; the file is corrupt or "
                              "not a video")
        _check_complete(path, container, stream, index, t_last, rate, tail_error)
    except av.error.FFmpegError as exc:
        raise SourceError(f"{path}: decoding failed after {index} frames ({exc}); "
                          "the file looks corrupt or truncated") from None
    finally:
        container.close()


def list_images(folder: Path) -> list[Path]:
    """Image files of a folder, in name order."""
    files = sorted(p for p in folder.iterdir()
                   if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise SourceError(f"{folder}: folder has no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _decode_folder(folder: Path, fps: float, max_frames: int | None) -> Iterator[DecodedFrame]:
    for i, f in enumerate(list_images(folder)):
        if max_frames is not None and i >= max_frames:
            return
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if img is None:
            log.warning("%s: not a readable image, skipped", f)
            continue
        yield DecodedFrame(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), i, i / fps)


def decode_file(path: str | Path, max_frames: int | None = None,
                fps: float = 30.0) -> Iterator[DecodedFrame]:
    """Decode every frame of a video file (or image folder) as fast as possible, unpaced.

    Args:
        path: any container FFmpeg reads (mp4, mov, avi, mpeg, mkv, gif, ...), a DICOM cine
            (:mod:`stream.sources.dicom`) or a folder of images (played at ``fps``).
        max_frames: stop after this many frames.
        fps: frame rate assigned to image folders.

    Yields:
        :class:`DecodedFrame` with ``image`` (H, W, 3) uint8 RGB, ``index`` 0.., ``pts_s``
        seconds from the first frame.

    Raises:
        SourceError: missing file, unreadable / corrupt file, no video stream, empty folder.
    """
    p = Path(path)
    if not p.exists():
        raise SourceError(f"{p}: no such file or folder")
    if p.is_dir():
        return _decode_folder(p, fps, max_frames)
    if dicom.is_dicom(p):
        return dicom.decode_dicom(p, max_frames, fps)
    return _decode_container(p, max_frames)


# --------------------------------------------------------------------------- pacing


def paced(frames: Iterator[DecodedFrame], speed: float = 1.0, max_late_s: float = 0.5,
          clock=time.monotonic, sleep=time.sleep) -> Iterator[DecodedFrame]:
    """Release frames at ``t0 + pts_s / speed`` (the stream's own timestamps, not a fixed sleep).

    When decoding falls more than ``max_late_s`` behind, the schedule is re-anchored so the
    source never bursts a backlog.
    """
    t0 = None
    for f in frames:
        now = clock()
        if t0 is None:
            t0 = now - f.pts_s / speed
        due = t0 + f.pts_s / speed
        if due > now:
            sleep(due - now)
        elif now - due > max_late_s:
            t0 = now - f.pts_s / speed
        yield f


class FileSource(Source):
    """A video file or an image folder, played at its own rate (``speed``), optionally looped.

    Attributes:
        truncated: None, or why the last pass ended before the container said it would
            (also sent as the ``truncated`` state, which the page shows as the source state).
    """

    def __init__(self, uri: str, options: SourceOptions | None = None) -> None:
        super().__init__(uri, options)
        self.path = Path(uri[len("file://"):] if uri.startswith("file://") else uri)
        if not self.path.exists():
            raise SourceError(f"{self.path}: no such file or folder; give a video file, an "
                              "image folder, v4l2:///dev/videoN or a stream URL")
        if self.path.is_dir():
            list_images(self.path)  # fail now, not in the stream
        else:
            if dicom.is_dicom(self.path):
                dicom.read_header(self.path)
            else:
                _open_container(self.path).close()
        self.truncated: str | None = None

    def events(self) -> Iterator[Event]:
        """Passes over the file; a pass that ends early yields ``truncated`` (and logs it).

        While the file stays truncated, each later pass starts in the ``truncated`` state
        too, so the page keeps showing it rather than ``playing``.
        """
        epoch = 0
        while True:
            more = f"pass {epoch + 1}" if epoch else ""
            if self.truncated:
                yield StateChange("truncated", "; ".join(filter(None, [more, self.truncated])))
            else:
                yield StateChange("playing", more)
            n = 0
            try:
                for f in paced(decode_file(self.path, fps=self.options.fps), self.options.speed):
                    n += 1
                    yield DecodedFrame(f.image, f.index, f.pts_s, epoch)
                self.truncated = None
            except TruncatedError as exc:
                self.truncated = str(exc)
                log.warning("%s", exc)
                yield StateChange("truncated", str(exc))
            except SourceError as exc:
                yield StateChange("error", str(exc))
                return
            if not self.options.loop or n == 0:
                yield StateChange("ended", f"{n} frames" + ("; truncated" if self.truncated
                                                             else ""))
                return
            epoch += 1
