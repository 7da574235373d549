"""Decoded real frames, letterboxed to the frame model's input, cached per clip.

Frames go through the runtime's own decoder (:func:`stream.sources.decode_file`) and
preprocessing (:func:`engines.preprocess.letterbox`), so training sees exactly what the worker
sees. A clip keeps at most ``max_frames`` frames, evenly spaced over the whole clip (neighbouring
frames of a 30-fps clip are near duplicates). The cache is an ``.npz`` per clip (uint8, no
pickle) keyed by the clip's size and mtime, the count and the size. It lives in the user's
cache (:func:`default_cache_dir`: ``$PLEURA_CACHE_DIR``, else ``$XDG_CACHE_HOME/pleura``, else
``~/.cache/pleura``, then ``real-frames/``), never in the working directory; delete it at will.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.preprocess import letterbox, to_grey
from stream.sources import decode_file


def default_cache_dir() -> str:
    """Where decoded training frames are cached (see the module docstring)."""
    base = (os.environ.get("PLEURA_CACHE_DIR")
            or str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pleura"))
    return str(Path(base) / "real-frames")


@dataclass(frozen=True)
class ClipFrames:
    """Frames of one clip: ``images`` (N, H, W) uint8 letterboxed grey, ``index`` (N,) frame
    numbers in the clip, ``total`` frames decoded."""

    images: np.ndarray
    index: np.ndarray
    total: int


def even_indices(total: int, max_frames: int | None) -> np.ndarray:
    """At most ``max_frames`` indices evenly spaced over 0..total-1 (all when None or fewer)."""
    if max_frames is None or total <= max_frames:
        return np.arange(total)
    return np.unique(np.round(np.linspace(0, total - 1, max_frames)).astype(np.int64))


def decode_clip(path: str | Path, size: tuple[int, int] = (224, 224),
                max_frames: int | None = 64) -> ClipFrames:
    """Decode a whole clip and keep ``max_frames`` evenly spaced letterboxed grey frames."""
    greys = [letterbox(to_grey(f.image), size)[0] for f in decode_file(path)]
    keep = even_indices(len(greys), max_frames)
    return ClipFrames(np.stack([greys[i] for i in keep]), keep, len(greys))


def _key(path: Path, size: tuple[int, int], max_frames: int | None) -> str:
    st = path.stat()
    text = f"{path.name}|{st.st_size}|{int(st.st_mtime)}|{size}|{max_frames}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_clip(path: str | Path, cache_dir: str | Path | None, size: tuple[int, int] = (224, 224),
              max_frames: int | None = 64) -> ClipFrames:
    """:func:`decode_clip` through an on-disk cache (None: no cache)."""
    path = Path(path)
    if cache_dir is None:
        return decode_clip(path, size, max_frames)
    cache = Path(cache_dir) / f"{path.stem}-{_key(path, size, max_frames)}.npz"
    if cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            return ClipFrames(z["images"], z["index"], int(z["total"]))
    clip = decode_clip(path, size, max_frames)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, images=clip.images, index=clip.index, total=np.int64(clip.total))
    tmp.replace(cache)
    return clip
