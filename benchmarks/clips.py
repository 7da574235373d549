"""Source clips for the benchmark: the default real clip, resized copies, and decode speed.

The default source is a real lung-ultrasound clip from ``../shared/data/pocus`` (CC BY 4.0,
30 fps); without that folder (a bare CI checkout) a clip is synthesised. Model speed does not
depend on the pixels, decode and resize speed depend on the size, so the resolution sweep
re-encodes the source at each size.
"""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

DEFAULT_CLIP = "Reg_Image_181602_trimmed_crop.mp4"
"""POCUS dataset clip (Born et al. 2021): 386x386, 29 fps, 374 frames, CC BY 4.0."""

RESOLUTIONS: dict[str, tuple[int, int]] = {
    "256": (256, 256), "480p": (480, 640), "720p": (720, 1280), "1080p": (1080, 1920),
}
"""Resolution-sweep names -> source frame (height, width)."""


def shared_data() -> Path:
    """``../shared/data`` next to the repository (how tests and CI find the real clips)."""
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def default_clip(tmp: Path) -> Path:
    """The default real clip, or a synthesised 30-fps clip in ``tmp`` when it is absent."""
    real = shared_data() / "pocus" / DEFAULT_CLIP
    if real.is_file():
        return real
    return write_clip(tmp / "synthetic-386.mp4", synthetic_frames(90, (386, 386)), 30.0)


def synthetic_frames(n: int, hw: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    """``n`` (H, W) uint8 frames of moving speckle (a stand-in when no real clip exists)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (hw[0] // 4 + 8, hw[1] // 4 + 8), dtype=np.uint8)
    frames = []
    for i in range(n):
        crop = base[i % 8:i % 8 + hw[0] // 4, :hw[1] // 4]
        frames.append(cv2.resize(crop, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR))
    return frames


def read_frames(path: Path, max_frames: int = 120) -> list[np.ndarray]:
    """Decode up to ``max_frames`` frames (H, W, 3) uint8 RGB with the runtime's decoder."""
    from stream.sources import decode_file

    return [f.image for f in decode_file(path, max_frames=max_frames)]


def write_clip(out: Path, frames: list[np.ndarray], fps: float, codec: str = "libx264") -> Path:
    """Encode frames (grey or RGB uint8, all the same size) as an H.264 mp4 (yuv420p).

    Odd sizes are padded by one pixel (yuv420p needs even sizes). Falls back to MPEG-4 Part 2
    when this FFmpeg build has no libx264.
    """
    import av

    out.parent.mkdir(parents=True, exist_ok=True)
    if codec not in av.codecs_available:
        codec = "mpeg4"
    h, w = frames[0].shape[:2]
    h2, w2 = h + h % 2, w + w % 2
    with av.open(str(out), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = w2, h2, "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "veryfast", "crf": "23"}
        for f in frames:
            rgb = f if f.ndim == 3 else cv2.cvtColor(f, cv2.COLOR_GRAY2RGB)
            if (h2, w2) != (h, w):
                rgb = cv2.copyMakeBorder(rgb, 0, h2 - h, 0, w2 - w, cv2.BORDER_CONSTANT)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out


def resized_clip(src_frames: list[np.ndarray], hw: tuple[int, int], out: Path,
                 fps: float = 30.0) -> Path:
    """The source frames stretched to ``hw`` = (height, width) and re-encoded (30 fps)."""
    frames = [cv2.resize(f, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR) for f in src_frames]
    return write_clip(out, frames, fps)


def clip_info(path: Path) -> dict[str, object]:
    """{"path", "frames", "fps", "width", "height", "codec"} from the container."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        fps = float(s.average_rate or s.guessed_rate or 0) or 30.0
        return {"path": str(path), "frames": int(s.frames or 0), "fps": round(fps, 2),
                "width": s.codec_context.width, "height": s.codec_context.height,
                "codec": s.codec_context.name}


def decode_fps(path: Path, seconds: float) -> dict[str, float | int]:
    """Frames per second of PyAV decoding to RGB arrays (the runtime's decoder), looping.

    Args:
        path: video file.
        seconds: how long to decode (at least one full pass of a short clip is not required).

    Returns:
        {"frames", "seconds", "fps", "ms_per_frame"}.
    """
    from stream.sources import decode_file

    n, t0 = 0, time.perf_counter()
    deadline = t0 + seconds
    while time.perf_counter() < deadline:
        for _ in decode_file(path):
            n += 1
            if time.perf_counter() >= deadline:
                break
    dt = time.perf_counter() - t0
    return {"frames": n, "seconds": round(dt, 3), "fps": round(n / dt, 1),
            "ms_per_frame": round(1000 * dt / max(n, 1), 3)}
