"""Recording one zone clip: a playable MP4 (PyAV) plus per-frame lines (JSONL) beside it.

Codecs (``codec``):

- ``"auto"``: H.264 (libx264, yuv420p, CRF 23, preset veryfast) where the FFmpeg build has it,
  else MPEG-4 part 2 (``mpeg4``, ~0.04 bit per pixel); plays in browsers and every video player;
- ``"lossless"``: H.264 RGB at QP 0 (``libx264rgb``): bit-exact frames, ~10x larger; plays in
  FFmpeg-based players (VLC, mpv), not in browsers;
- or any encoder name PyAV knows (``"mpeg4"``, ``"libx264"``).

The clip runs at the source's frame rate (constant frame rate, one tick per frame). yuv420p needs
even sizes, so an odd width or height is padded by one black column / row (right / bottom).

Crash safety: frames go to ``.<name>.part.mp4`` and ``.<name>.part.jsonl``; :meth:`finish`
closes the MP4 (its index is written at the end), fsyncs both and renames them to their final
names, the JSONL first. So a final ``.mp4`` is always complete and playable; a SIGKILL while
recording leaves only ``.part`` files, which :func:`stale_parts` lists and the exam ignores.
JSONL lines: a header ``{"kind": "clip", "fps", "codec", "width", "height", "started"}``, then
per frame ``{"i", "pts_s", ...result}`` (the live worker's result for the frame when given);
flushed and fsync'ed at least once a second.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

import numpy as np

from stream.exam.store import now_iso

CODECS = ("auto", "lossless")


def pick_codec(codec: str = "auto") -> tuple[str, str, dict[str, str]]:
    """(encoder, pixel format, options) for a codec choice; see the module docstring.

    Raises:
        ValueError: an encoder this FFmpeg build does not have, naming the ones that work.
    """
    import av

    have = av.codecs_available
    if codec == "auto":
        if "libx264" in have:
            return "libx264", "yuv420p", {"crf": "23", "preset": "veryfast"}
        return "mpeg4", "yuv420p", {}
    if codec == "lossless":
        if "libx264rgb" in have:
            return "libx264rgb", "rgb24", {"qp": "0", "preset": "veryfast"}
        raise ValueError("lossless recording needs the libx264rgb encoder, which this FFmpeg "
                         "build lacks; record with codec 'auto'")
    if codec not in have:
        raise ValueError(f"encoder {codec!r} is not in this FFmpeg build; use one of "
                         f"{', '.join(CODECS)} or libx264 / mpeg4")
    return codec, "yuv420p", {}


def part_name(final: Path, suffix: str) -> Path:
    return final.with_name(f".{final.stem}.part{suffix}")


def stale_parts(folder: str | Path) -> list[Path]:
    """Unfinished recordings (``.part`` files) left by a crash under ``folder``."""
    return sorted(Path(folder).rglob(".*.part.*"))


class ClipWriter:
    """Write frames to ``path`` (an ``.mp4``) at ``fps``; :meth:`finish` makes it final.

    Args:
        path: final clip path, e.g. ``EXAM/clips/R1-001.mp4``.
        fps: the source's frame rate.
        codec: ``"auto"``, ``"lossless"`` or an encoder name (see :func:`pick_codec`).
        flush_s: longest time between JSONL flushes.
    """

    def __init__(self, path: str | Path, fps: float, codec: str = "auto",
                 flush_s: float = 1.0) -> None:
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.path = Path(path)
        self.jsonl_path = self.path.with_suffix(".jsonl")
        self.fps = float(fps)
        self.encoder, self.pix_fmt, self.options = pick_codec(codec)
        self.codec = codec
        self.flush_s = flush_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._mp4_part = part_name(self.path, ".mp4")
        self._jsonl_part = part_name(self.path, ".jsonl")
        self._container = None
        self._stream = None
        self._jsonl: IO[str] = open(self._jsonl_part, "w", encoding="utf-8")  # noqa: SIM115
        self._last_flush = time.monotonic()
        self.n_frames = 0
        self.size: tuple[int, int] | None = None

    def _open(self, h: int, w: int) -> None:
        import av

        self._container = av.open(str(self._mp4_part), mode="w", format="mp4")
        rate = Fraction(self.fps).limit_denominator(1001)
        s = self._container.add_stream(self.encoder, rate=rate, options=self.options)
        if self.pix_fmt == "yuv420p":
            h, w = h + h % 2, w + w % 2
        s.height, s.width = h, w
        s.pix_fmt = self.pix_fmt
        if self.encoder == "mpeg4":  # its default 200 kb/s smears speckle; ~4 bits per 100 px
            s.bit_rate = max(500_000, int(h * w * self.fps * 0.04))
        s.codec_context.time_base = Fraction(1, 1) / rate
        self._stream = s
        self.size = (h, w)
        self._jsonl.write(json.dumps({"kind": "clip", "fps": self.fps, "codec": self.encoder,
                                      "width": w, "height": h, "started": now_iso()}) + "\n")

    def write(self, image: np.ndarray, pts_s: float | None = None,
              result: dict[str, Any] | None = None) -> None:
        """Append one frame: (H, W) grey or (H, W, 3) RGB uint8; ``result`` goes to the JSONL."""
        import av

        img = np.asarray(image, dtype=np.uint8)
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        if self._container is None:
            self._open(*img.shape[:2])
        h, w = self.size
        if img.shape[:2] != (h, w):
            pad = np.zeros((h, w, 3), np.uint8)
            ch, cw = min(h, img.shape[0]), min(w, img.shape[1])
            pad[:ch, :cw] = img[:ch, :cw]
            img = pad
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
        frame.pts = self.n_frames
        self._container.mux(self._stream.encode(frame))
        line = {"i": self.n_frames,
                "pts_s": round(self.n_frames / self.fps if pts_s is None else pts_s, 4)}
        if result:
            line.update(result)
        self._jsonl.write(json.dumps(line) + "\n")
        self.n_frames += 1
        now = time.monotonic()
        if now - self._last_flush >= self.flush_s:
            self._sync_jsonl()
            self._last_flush = now

    def _sync_jsonl(self) -> None:
        self._jsonl.flush()
        os.fsync(self._jsonl.fileno())

    def finish(self) -> Path:
        """Close the MP4, fsync, rename the parts to their final names; returns the clip path.

        Raises:
            ValueError: no frame was written (the parts are removed).
        """
        if self._container is None:
            self.abort()
            raise ValueError(f"{self.path.name}: no frame recorded")
        self._container.mux(self._stream.encode())
        self._container.close()
        self._container = None
        self._sync_jsonl()
        self._jsonl.close()
        with open(self._mp4_part, "rb") as f:
            os.fsync(f.fileno())
        os.replace(self._jsonl_part, self.jsonl_path)
        os.replace(self._mp4_part, self.path)
        return self.path

    def abort(self) -> None:
        """Stop without keeping anything."""
        if self._container is not None:
            with contextlib.suppress(Exception):  # half-written: it is deleted anyway
                self._container.close()
            self._container = None
        if not self._jsonl.closed:
            self._jsonl.close()
        for p in (self._mp4_part, self._jsonl_part):
            p.unlink(missing_ok=True)
