"""Video files of the dataset layout: an mp4 (any container PyAV reads) or a folder of PNGs."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import av
import cv2
import numpy as np

from stream.sources import IMAGE_SUFFIXES


def _image_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    # Numeric stems sort numerically (2.png before 10.png); others by name.
    return sorted(files, key=lambda p: (0, int(p.stem), "") if p.stem.isdigit() else (1, 0, p.name))


def count_frames(path: str | Path) -> int:
    """Number of frames, from the container header when it has one (cheap), else by decoding."""
    path = Path(path)
    if path.is_dir():
        return len(_image_files(path))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        return sum(1 for _ in container.decode(stream))


def read_video(path: str | Path) -> np.ndarray:
    """Decode every frame to grey.

    Args:
        path: a video file or a folder of images (frames in numeric/name order).

    Returns:
        (N, H, W) uint8 grey frames.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: no frames could be decoded.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: video not found")
    if path.is_dir():
        frames = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in _image_files(path)]
        if any(f is None for f in frames):
            bad = next(p for p, f in zip(_image_files(path), frames, strict=True) if f is None)
            raise ValueError(f"{bad}: not a readable image")
    else:
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="gray") for f in container.decode(video=0)]
    if not frames:
        raise ValueError(f"{path}: no frames decoded")
    return np.stack(frames)


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: int = 20,
                crf: int = 20) -> int:
    """Encode grey frames as H.264 mp4 (yuv420p, so every player decodes it).

    Args:
        path: output ``.mp4``.
        frames: (H, W) uint8 grey frames, H and W even.
        fps: frame rate.
        crf: x264 quality (lower is better, 18-28 sensible).

    Returns:
        Number of frames written.
    """
    n = 0
    with av.open(str(path), mode="w") as container:
        stream = None
        for frame in frames:
            if stream is None:
                stream = container.add_stream("libx264", rate=fps)
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(crf), "preset": "veryfast", "tune": "grain"}
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="gray")
            for packet in stream.encode(vf):
                container.mux(packet)
            n += 1
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    return n
