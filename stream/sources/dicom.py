"""DICOM cine clips as a source: multi-frame ultrasound DICOM -> :class:`DecodedFrame` s.

Used by :func:`stream.sources.decode_file` (so ``pleura score``, ``pleura exam`` and a file
played on the page all read DICOM) for files ending in ``.dcm`` / ``.dicom`` or carrying the
``DICM`` preamble. pydicom reads the dataset; frames are decoded one at a time
(``pydicom.pixels.iter_pixels``, pydicom >= 3) so a long cine never sits in memory whole.

- Photometric interpretation: MONOCHROME2 as is, MONOCHROME1 inverted, RGB as is, YBR_* turned
  into RGB by pydicom. Grey frames are repeated into three channels, exactly as a grey PNG is
  read by the image-folder path, so a DICOM clip and its frames as PNGs score the same.
- Bit depth: 8-bit as is; deeper samples are scaled to 0-255 by ``BitsStored``.
- Frame rate: ``FrameTime`` (0018,1063, ms), else ``CineRate`` (0018,0040), else
  ``RecommendedDisplayFrameRate`` (0008,2144), else the caller's default.
- Compressed transfer syntaxes decode with the plugins pydicom finds (Pillow for JPEG
  baseline and JPEG 2000; ``pip install pylibjpeg pylibjpeg-libjpeg`` for JPEG lossless / LS);
  a missing decoder is a :class:`SourceError` that names the transfer syntax and the fix.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from stream.sources.base import DecodedFrame, SourceError, TruncatedError, check_frame_size

DICOM_SUFFIXES = (".dcm", ".dicom")


def is_dicom(path: str | Path) -> bool:
    """A ``.dcm`` / ``.dicom`` file, or any file with the DICOM preamble (``DICM`` at 128)."""
    p = Path(path)
    if p.suffix.lower() in DICOM_SUFFIXES:
        return True
    if not p.is_file():  # never open a FIFO or device to peek: open() would wait for a writer
        return False
    try:
        with open(p, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def frame_rate(ds: Any, default: float = 30.0) -> float:
    """Frames per second from the cine attributes (see the module docstring)."""
    ft = ds.get("FrameTime")
    if ft is not None and float(ft) > 0:
        return 1000.0 / float(ft)
    for key in ("CineRate", "RecommendedDisplayFrameRate"):
        v = ds.get(key)
        if v is not None and float(v) > 0:
            return float(v)
    return default


def read_header(path: str | Path):
    """The dataset without pixel data (cheap); raises :class:`SourceError` when unreadable."""
    import pydicom

    p = Path(path)
    if not p.is_file():
        raise SourceError(f"{p}: no such file (or not a regular file)")
    try:
        ds = pydicom.dcmread(str(p), stop_before_pixels=True)
    except Exception as exc:  # pydicom raises several types for a bad file
        raise SourceError(f"{p}: not a readable DICOM file ({exc})") from None
    if "Rows" not in ds or "Columns" not in ds:
        raise SourceError(f"{p}: DICOM file without an image (no Rows/Columns)")
    return ds


def to_rgb8(frame: np.ndarray, photometric: str, bits_stored: int) -> np.ndarray:
    """One decoded DICOM frame -> (H, W, 3) uint8 RGB."""
    a = np.asarray(frame)
    if a.dtype != np.uint8:
        shift = max(0, int(bits_stored) - 8)
        a = np.clip(a.astype(np.int64) >> shift, 0, 255).astype(np.uint8)
    if photometric == "MONOCHROME1":
        a = 255 - a
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    return np.ascontiguousarray(a)


def decode_dicom(path: str | Path, max_frames: int | None = None,
                 fps: float = 30.0) -> Iterator[DecodedFrame]:
    """Decode a (multi-frame) DICOM clip frame by frame.

    Yields:
        :class:`DecodedFrame` with ``image`` (H, W, 3) uint8 RGB, ``pts_s = index / rate``.

    Raises:
        SourceError: unreadable file, no image, or no decoder for its transfer syntax.
        TruncatedError: uncompressed pixel data shorter than its header says (after the
            complete frames before the cut were yielded).
    """
    from pydicom.pixels import iter_pixels

    p = Path(path)
    ds = read_header(p)
    check_frame_size(p, int(ds.get("Columns", 0) or 0), int(ds.get("Rows", 0) or 0))
    rate = frame_rate(ds, fps)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    bits = int(ds.get("BitsStored", 8))
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    raw = syntax is not None and not (syntax.is_compressed or syntax.is_deflated)
    index = 0
    try:
        for arr in iter_pixels(str(p)):
            yield DecodedFrame(to_rgb8(arr, photometric, bits), index, index / rate)
            index += 1
            if max_frames is not None and index >= max_frames:
                return
    except (RuntimeError, NotImplementedError, ValueError, AttributeError) as exc:
        if raw:  # no decoder involved: the bytes do not match the header
            raise uncompressed_error(p, ds, index, exc) from None
        name = getattr(syntax, "name", syntax)
        raise SourceError(
            f"{p}: DICOM pixel data could not be decoded after {index} frames (transfer "
            f"syntax {name}: {exc}); for JPEG lossless / JPEG-LS install a decoder "
            "(pip install pylibjpeg pylibjpeg-libjpeg), or export the cine uncompressed"
        ) from None
    if raw and index < announced_frames(ds):
        raise uncompressed_error(p, ds, index, None)
    if index == 0:
        raise SourceError(f"{p}: DICOM file has no frames")


def announced_frames(ds: Any) -> int:
    """``NumberOfFrames`` of the header (1 when absent)."""
    return int(ds.get("NumberOfFrames", 1) or 1)


def uncompressed_error(p: Path, ds: Any, decoded: int, exc: Exception | None) -> SourceError:
    """Why uncompressed pixel data did not decode: a file shorter than its header says is
    :class:`TruncatedError` (an interrupted copy, not a missing decoder); otherwise the header's
    image size and the data disagree."""
    expected = announced_frames(ds)
    frame_bytes = (int(ds.get("Rows", 0)) * int(ds.get("Columns", 0))
                   * int(ds.get("SamplesPerPixel", 1)) * -(-int(ds.get("BitsAllocated", 8)) // 8))
    if p.stat().st_size < frame_bytes * expected:
        used = "the frames before the cut were used" if decoded else "no frame is complete"
        return TruncatedError(
            f"{p}: truncated: the DICOM pixel data holds {decoded} of the {expected} frames its "
            "header announces. The file was cut short (an interrupted copy or download, or it is "
            f"still being written); {used}. Copy the complete file again.", decoded, expected)
    why = f" ({exc})" if exc is not None else ""
    return SourceError(
        f"{p}: DICOM pixel data does not match its header ({ds.get('Rows')}x{ds.get('Columns')}, "
        f"{ds.get('SamplesPerPixel', 1)} samples of {ds.get('BitsAllocated', 8)} bits, {expected} "
        f"frames; {decoded} decoded){why}; export the cine again")
