"""Typed definitions of the JSON parts the worker reads (FRAME and source-state HEARTBEAT).

:func:`stream.wire.decode` checks a message's framing; these check its content. The worker
copies some FRAME / HEARTBEAT fields into every RESULT it publishes, so each such field is
checked here for type and size when the message arrives: a 4 MiB ``source`` would otherwise make
the RESULT too large to encode. A message that fails is dropped (and counted) by the worker.
Fields the worker does not use are ignored, so older or newer senders still interoperate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from stream.wire import MAX_DIM, WireError

MAX_SOURCE_CHARS = 4096
"""Longest ``source`` (a file path or URL; PATH_MAX on Linux)."""
MAX_STATE_CHARS = 32
"""Longest source ``state`` ("connecting", "reconnecting", "stalled", ...)."""
MAX_DETAIL_CHARS = 1024
"""Longest state ``detail`` (capture cuts longer exception texts to this)."""
MAX_SESSION_CHARS = 64


class MetaError(WireError):
    """A well-framed message whose JSON part has a field of the wrong type or size."""


def _text(meta: dict[str, Any], key: str, limit: int, default: str | None) -> str | None:
    v = meta.get(key)
    if v is None:
        return default
    if not isinstance(v, str):
        raise MetaError(f"{key} must be a string, got {type(v).__name__}")
    if len(v) > limit:
        raise MetaError(f"{key} too long ({len(v)} > {limit} characters)")
    return v


def _int(meta: dict[str, Any], key: str, lo: int = 0, hi: int = 1 << 63) -> int | None:
    v = meta.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise MetaError(f"{key} must be an integer, got {type(v).__name__}")
    if not lo <= v <= hi:
        raise MetaError(f"{key} {v} out of range {lo}..{hi}")
    return v


def _ints(meta: dict[str, Any], key: str, n: int, lo: int) -> tuple[int, ...] | None:
    v = meta.get(key)
    if v is None:
        return None
    if not isinstance(v, list) or len(v) != n:
        raise MetaError(f"{key} must be a list of {n} integers")
    if not all(isinstance(x, int) and not isinstance(x, bool) and lo <= x <= MAX_DIM
               for x in v):
        raise MetaError(f"{key} must be {n} integers in {lo}..{MAX_DIM}, got {v!r:.80}")
    return tuple(v)


@dataclass(frozen=True)
class FrameMeta:
    """The JSON part of a FRAME as the worker uses it (all fields optional).

    Attributes:
        source: the capture's source URI (<= :data:`MAX_SOURCE_CHARS`).
        index: frame index within the current pass of the source.
        pts_s: presentation time in seconds (non-finite values become None).
        epoch: loop pass / reconnection count; a new epoch is a new video.
        session: the capture process's start time (a restarted capture is a new video).
        state: the source state when the frame was sent.
        sent: frames the capture sent before this one (for consistent run statistics).
        full_hw: (H, W) of the frame before the scan-region crop.
        roi: (x, y, w, h) of the crop in the full frame.
    """

    source: str = ""
    index: int | None = None
    pts_s: float | None = None
    epoch: int | None = None
    session: float | int | str | None = None
    state: str = "playing"
    sent: int | None = None
    full_hw: tuple[int, ...] | None = None
    roi: tuple[int, ...] | None = None

    @classmethod
    def parse(cls, meta: dict[str, Any]) -> FrameMeta:
        """Check and copy the fields the worker uses.

        Raises:
            MetaError: naming the first field of the wrong type or size.
        """
        pts = meta.get("pts_s")
        if pts is not None:
            if isinstance(pts, bool) or not isinstance(pts, (int, float)):
                raise MetaError(f"pts_s must be a number, got {type(pts).__name__}")
            pts = float(pts) if math.isfinite(pts) else None
        session = meta.get("session")
        if isinstance(session, str):
            _text(meta, "session", MAX_SESSION_CHARS, None)
        elif session is not None and (isinstance(session, bool)
                                      or not isinstance(session, (int, float))):
            raise MetaError(f"session must be a number or a string, got "
                            f"{type(session).__name__}")
        return cls(source=_text(meta, "source", MAX_SOURCE_CHARS, "") or "",
                   index=_int(meta, "index"), pts_s=pts, epoch=_int(meta, "epoch"),
                   session=session,
                   state=_text(meta, "state", MAX_STATE_CHARS, "playing") or "playing",
                   sent=_int(meta, "sent"), full_hw=_ints(meta, "full_hw", 2, 1),
                   roi=_ints(meta, "roi", 4, 0))

    @property
    def video_key(self) -> tuple:
        """Frames with another key belong to another video (new source, capture or pass)."""
        return (self.source, self.session, self.epoch)


@dataclass(frozen=True)
class SourceState:
    """A capture's source-state HEARTBEAT on the frames socket.

    Attributes:
        state: "connecting", "playing", "stalled", "reconnecting", "ended", "error", ... or
            None (no change).
        source: the source URI, or None.
        detail: why (e.g. the connection error), or "".
    """

    state: str | None = None
    source: str | None = None
    detail: str = ""

    @classmethod
    def parse(cls, meta: dict[str, Any]) -> SourceState:
        """Raises: MetaError naming the first field of the wrong type or size."""
        return cls(state=_text(meta, "state", MAX_STATE_CHARS, None),
                   source=_text(meta, "source", MAX_SOURCE_CHARS, None),
                   detail=_text(meta, "detail", MAX_DETAIL_CHARS, "") or "")
