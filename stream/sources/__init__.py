"""Frame sources, chosen by URI scheme: files, image folders, capture cards, network streams.

``open_source(uri, options)`` looks the scheme up in :data:`SOURCES` (an unknown scheme gets an
error listing the valid ones). Every source yields *events* (:mod:`stream.sources.base`): a
:class:`DecodedFrame`, or a :class:`StateChange` ("playing", "ended", "stalled",
"reconnecting", "error", "truncated") that capture forwards so the UI can show it.

- file paths and image folders: :mod:`stream.sources.files` (DICOM cine:
  :mod:`stream.sources.dicom`; cut-short files: :mod:`stream.sources.truncation`).
- ``v4l2:///dev/videoN`` and ``rtsp:// udp:// http(s):// srt:// rtmp://`` are real-time
  (:mod:`stream.sources.realtime`): newest frame only, stalls reported, reopened with backoff.

A new kind of source: a :class:`Source` subclass in its own module here, and its scheme in
:data:`SOURCES`. The names below are re-exported so callers write
``from stream.sources import decode_file``.
"""

from __future__ import annotations

from urllib.parse import urlparse

from stream.sources.base import (
    STATES,
    DecodedFrame,
    Event,
    Source,
    SourceError,
    SourceOptions,
    StateChange,
    TruncatedError,
)
from stream.sources.files import IMAGE_SUFFIXES, FileSource, decode_file, list_images, paced
from stream.sources.realtime import NetworkSource, V4L2Source

__all__ = ["IMAGE_SUFFIXES", "SOURCES", "STATES", "DecodedFrame", "Event", "FileSource",
           "NetworkSource", "Source", "SourceError", "SourceOptions", "StateChange",
           "TruncatedError", "V4L2Source", "decode_file", "list_images", "open_source", "paced",
           "scheme_of"]

# --------------------------------------------------------------------------- registry


SOURCES: dict[str, type[Source]] = {
    "file": FileSource,
    "v4l2": V4L2Source,
    **{scheme: NetworkSource
       for scheme in ("rtsp", "rtsps", "rtmp", "udp", "rtp", "tcp", "http", "https", "srt")},
}
"""URI scheme -> source class. A bare path is a file (or image folder)."""


def scheme_of(uri: str) -> str:
    parsed = urlparse(uri)
    # "C:\x" or a bare path has no (or a one-letter) scheme.
    return parsed.scheme.lower() if len(parsed.scheme) > 1 else "file"


def open_source(uri: str, options: SourceOptions | None = None) -> Source:
    """Open a source by URI.

    Raises:
        SourceError: unknown scheme (listing the valid ones), missing file / device.
    """
    scheme = scheme_of(uri)
    if scheme not in SOURCES:
        raise SourceError(f"unknown source scheme {scheme!r} in {uri!r}; valid: a file path, "
                          f"an image folder or one of {sorted(SOURCES)}")
    return SOURCES[scheme](uri, options)
