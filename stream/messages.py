"""Typed messages: the JSON part of every wire message, one frozen dataclass per kind.

:func:`stream.wire.decode` checks a message's framing (header, array table, sizes); these
check its content. Each definition says which fields exist, their types and limits, and how it
travels (``to_json`` / ``parse``); the arrays travel beside the JSON in the same single-part
message (:class:`stream.wire.Message` ``array`` / ``arrays``).

============  ===========================  ============================================
kind          JSON part                     arrays
============  ===========================  ============================================
FRAME         :class:`FrameMeta`            ``image``: (H, W[, 3]) uint8 frame
HEARTBEAT     :class:`SourceState` (capture on a frames socket) or :class:`ProcessBeat`
RESULT        :class:`Result`               ``image``: (h, w) uint8 display frame,
                                            ``mask``: (h, w) uint8 label map, ``unc``:
                                            (h, w) uint8 uncertainty (both optional)
CONTROL       :class:`Control`              none
============  ===========================  ============================================

Versioning: each definition has a ``version`` field, the schema version it follows; it is
the wire header's version (:data:`stream.wire.VERSION`, one number for framing and content)
and is not repeated inside the JSON. A receiver refuses another version in
:func:`stream.wire.decode` (:class:`stream.wire.WireVersionError`), so a field can be added
or changed by bumping :data:`stream.wire.VERSION`. Within a version, ``parse`` ignores keys it
does not know.

The worker copies some FRAME / HEARTBEAT fields into every RESULT it publishes, so each such
field is checked here for type and size when the message arrives: a 4 MiB ``source`` would
otherwise make the RESULT too large to encode. A message that fails is dropped (and counted)
by its receiver.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np

from stream.wire import MAX_DIM, VERSION, Kind, Message, WireError, encode

MAX_SOURCE_CHARS = 4096
"""Longest ``source`` (a file path or URL; PATH_MAX on Linux)."""
MAX_STATE_CHARS = 32
"""Longest source ``state`` ("connecting", "reconnecting", "stalled", ...)."""
MAX_DETAIL_CHARS = 1024
"""Longest state ``detail`` (capture cuts longer exception texts to this)."""
MAX_SESSION_CHARS = 64
MAX_NAME_CHARS = 256
"""Longest short text of a RESULT or heartbeat (backend, bundle name, role, command)."""
MAX_CLASSES = 16
"""Most entries of a probability vector (the paper's scores are 4)."""
MAX_FIELDS = 64
"""Most entries of a RESULT dict field (``timing_ms``, ``findings``) or heartbeat counters."""
MASK_LABELS = 5
"""Values of a RESULT ``mask`` label map: 0 = background, s + 1 = score s (0..3)."""
COMMANDS = ("reset", "pause", "resume", "start", "stop", "source", "loop", "record", "bundle")
"""CONTROL commands: ``reset`` is the worker's, pause..loop the capture's, record and bundle
the supervisor's (each process ignores the others')."""


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
    if not isinstance(v, (list, tuple)) or len(v) != n:
        raise MetaError(f"{key} must be a list of {n} integers")
    if not all(isinstance(x, int) and not isinstance(x, bool) and lo <= x <= MAX_DIM
               for x in v):
        raise MetaError(f"{key} must be {n} integers in {lo}..{MAX_DIM}, got {v!r:.80}")
    return tuple(v)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _num(meta: dict[str, Any], key: str) -> float | None:
    v = meta.get(key)
    if v is None:
        return None
    if not _is_num(v):
        raise MetaError(f"{key} must be a number, got {type(v).__name__}")
    return float(v)


def _nums(meta: dict[str, Any], key: str, most: int) -> list[float] | None:
    v = meta.get(key)
    if v is None:
        return None
    if not isinstance(v, (list, tuple)) or len(v) > most or not all(_is_num(x) for x in v):
        raise MetaError(f"{key} must be a list of at most {most} numbers, got {v!r:.80}")
    return [float(x) for x in v]


def _dict(meta: dict[str, Any], key: str, values=None) -> dict[str, Any] | None:
    """A JSON object field (None if absent); ``values``: a check every value must pass."""
    v = meta.get(key)
    if v is None:
        return None
    if not isinstance(v, dict) or len(v) > MAX_FIELDS:
        raise MetaError(f"{key} must be an object of at most {MAX_FIELDS} fields, got "
                        f"{type(v).__name__}")
    if values is not None and not all(isinstance(k, str) and values(x) for k, x in v.items()):
        raise MetaError(f"{key} has a value of the wrong type: {v!r:.120}")
    return v


def _check_version(obj: Any) -> None:
    if obj.version != VERSION:
        raise MetaError(f"{type(obj).__name__} version {obj.version!r} is not supported: this "
                        f"build speaks message version {VERSION}")


@dataclass(frozen=True)
class FrameMeta:
    """The JSON part of a FRAME (capture -> worker; all fields optional).

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
        version: message schema version (:data:`stream.wire.VERSION`).
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
    version: int = VERSION

    def __post_init__(self) -> None:
        _check_version(self)

    @classmethod
    def parse(cls, meta: dict[str, Any]) -> FrameMeta:
        """Check and copy the fields the worker uses.

        Raises:
            MetaError: naming the first field of the wrong type or size.
        """
        pts = _num(meta, "pts_s")
        if pts is not None and not math.isfinite(pts):
            pts = None
        session = meta.get("session")
        if isinstance(session, str):
            _text(meta, "session", MAX_SESSION_CHARS, None)
        elif session is not None and not _is_num(session):
            raise MetaError(f"session must be a number or a string, got "
                            f"{type(session).__name__}")
        return cls(source=_text(meta, "source", MAX_SOURCE_CHARS, "") or "",
                   index=_int(meta, "index"), pts_s=pts, epoch=_int(meta, "epoch"),
                   session=session,
                   state=_text(meta, "state", MAX_STATE_CHARS, "playing") or "playing",
                   sent=_int(meta, "sent"), full_hw=_ints(meta, "full_hw", 2, 1),
                   roi=_ints(meta, "roi", 4, 0))

    def to_json(self) -> dict[str, Any]:
        """The FRAME's JSON part (what :meth:`parse` reads back)."""
        return {"source": self.source, "index": self.index, "pts_s": self.pts_s,
                "epoch": self.epoch, "session": self.session, "state": self.state,
                "full_hw": list(self.full_hw) if self.full_hw else None,
                "roi": list(self.roi) if self.roi else None, "sent": self.sent}

    @property
    def video_key(self) -> tuple:
        """Frames with another key belong to another video (new source, capture or pass)."""
        return (self.source, self.session, self.epoch)


@dataclass(frozen=True)
class SourceState:
    """A capture's source-state HEARTBEAT on the frames socket (capture -> worker).

    Attributes:
        state: "connecting", "playing", "stalled", "reconnecting", "ended", "error", ... or
            None (no change).
        source: the source URI, or None.
        detail: why (e.g. the connection error), or "".
        session: the capture process's start time (as in :class:`FrameMeta`), or None.
        version: message schema version.
    """

    state: str | None = None
    source: str | None = None
    detail: str = ""
    session: float | int | str | None = None
    version: int = VERSION

    def __post_init__(self) -> None:
        _check_version(self)

    @classmethod
    def parse(cls, meta: dict[str, Any]) -> SourceState:
        """Raises: MetaError naming the first field of the wrong type or size."""
        return cls(state=_text(meta, "state", MAX_STATE_CHARS, None),
                   source=_text(meta, "source", MAX_SOURCE_CHARS, None),
                   detail=_text(meta, "detail", MAX_DETAIL_CHARS, "") or "",
                   session=FrameMeta.parse({"session": meta.get("session")}).session)

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "state": self.state,
                "detail": self.detail[:MAX_DETAIL_CHARS], "session": self.session}


@dataclass(frozen=True)
class ProcessBeat:
    """A process's HEARTBEAT to the supervisor's status socket (every ~0.25 s).

    Attributes:
        role: "capture", "worker", "ui", "recorder", ...
        pid: the process id.
        t: ``time.time()`` when it was sent.
        counters: everything else the process reports (flat JSON: ``sent``, ``state``,
            ``dropped``, ``ready``, ...; read by :mod:`stream.supervisor` and
            :class:`stream.stats.RunStats`).
        version: message schema version.
    """

    role: str
    pid: int
    t: float = 0.0
    counters: dict[str, Any] = field(default_factory=dict)
    version: int = VERSION

    def __post_init__(self) -> None:
        _check_version(self)
        _text({"role": self.role}, "role", MAX_NAME_CHARS, None)
        _int({"pid": self.pid}, "pid")
        if len(self.counters) > MAX_FIELDS or {"role", "pid", "t"} & set(self.counters):
            raise MetaError(f"heartbeat counters must be at most {MAX_FIELDS} fields other "
                            "than role, pid and t")

    @classmethod
    def parse(cls, meta: dict[str, Any]) -> ProcessBeat:
        """Raises: MetaError when role, pid or t is missing or of the wrong type."""
        if meta.get("role") is None or meta.get("pid") is None:
            raise MetaError("a heartbeat needs role and pid")
        rest = {k: v for k, v in meta.items() if k not in ("role", "pid", "t")}
        return cls(role=str(meta["role"]), pid=meta["pid"], t=_num(meta, "t") or 0.0,
                   counters=rest)

    def to_json(self) -> dict[str, Any]:
        return {"role": self.role, "pid": self.pid, "t": self.t, **self.counters}


@dataclass(frozen=True)
class Control:
    """A CONTROL message (UI / scripts -> worker, capture, supervisor).

    Attributes:
        cmd: one of :data:`COMMANDS`.
        stream_id: the stream a ``reset`` is for (None: every stream); the worker refuses
            (and counts) one that is not an integer or not a stream it holds.
        params: the command's other fields (``uri`` of ``source``, ``on`` of ``loop`` /
            ``record``, ``dir`` of ``record``, ``path`` of ``bundle``).
        version: message schema version.
    """

    cmd: str
    stream_id: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    version: int = VERSION

    def __post_init__(self) -> None:
        _check_version(self)
        if self.cmd not in COMMANDS:
            raise MetaError(f"unknown control command {self.cmd!r:.40}; use one of {COMMANDS}")
        if len(self.params) > MAX_FIELDS or {"cmd", "stream_id"} & set(self.params):
            raise MetaError("control params must be at most 64 fields other than cmd and "
                            "stream_id")

    @classmethod
    def parse(cls, meta: dict[str, Any]) -> Control:
        """Raises: MetaError for a missing or unknown ``cmd``."""
        cmd = meta.get("cmd")
        if not isinstance(cmd, str):
            raise MetaError(f"control cmd must be a string, got {type(cmd).__name__}")
        params = {k: v for k, v in meta.items() if k not in ("cmd", "stream_id")}
        return cls(cmd=cmd, stream_id=meta.get("stream_id"), params=params)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cmd": self.cmd}
        if self.stream_id is not None:
            out["stream_id"] = self.stream_id
        return {**out, **self.params}

    def message(self) -> Message:
        """The CONTROL wire message (stamp ``sent`` before encoding)."""
        return Message(Kind.CONTROL, meta=self.to_json())


def _boxes(meta: dict[str, Any]) -> list:
    v = meta.get("boxes")
    if v is None:
        return []
    ok = isinstance(v, list) and len(v) <= 2 and all(
        isinstance(b, list) and len(b) == 4 and all(
            isinstance(c, list) and len(c) == 2 and all(_is_num(x) for x in c) for c in b)
        for b in v)
    if not ok:
        raise MetaError(f"boxes must be up to 2 crops of 4 [x, y] corners, got {v!r:.80}")
    return v


def _video(meta: dict[str, Any]) -> dict[str, Any] | None:
    v = _dict(meta, "video")
    if v is not None:
        _int(v, "n_frames")
        _int(v, "score", 0, MAX_CLASSES - 1)
        for k in ("probs", "evidence", "frame_share"):
            _nums(v, k, MAX_CLASSES)
        _dict(v, "findings")
    return v


@dataclass(frozen=True)
class Result:
    """The JSON part of a RESULT (worker -> UI, recorder, supervisor statistics).

    One per scored frame; also a *status* result (``status_only``: a stream's source state
    before its first scored frame) and *re-sends* (``resent``: the last result again with a
    new ``source_state``). Its arrays (see :meth:`message`): ``image`` the (h, w) uint8 grey
    display frame (the scored frame shrunk to ``display_hw``), and when the bundle has a
    segmentation model ``mask``, an (h, w) uint8 label map (0 = background, s + 1 = score
    s, Roy et al. 2020 Sec. III-C), and ``unc``, an (h, w) uint8 MC-dropout std map
    (:func:`engines.postprocess.uncertainty_u8`), both of frame ``mask_seq``. All geometry is
    in display-frame pixels, so the UI only draws.

    Attributes:
        seq: the frame's capture sequence number.
        stream_id: source index.
        source: the source URI.
        status_only: no scores (a status result).
        resent: the stream's last result sent again (statistics skip it).
        source_state: the capture's source state ("playing", "paused", "reconnecting", ...).
        source_detail: why (e.g. the connection error), or "".
        frame_hw: (H, W) of the scored frame (after the scan-region crop).
        display_hw: (h, w) of the display frame.
        index: frame index within the source pass; pts_s: its time in seconds.
        roi: (x, y, w, h) scan-region crop in the full frame; full_hw: (H, W) before it.
        probs: (4,) frame score probabilities; score: their argmax 0..3.
        boxes: the Reg-STN's two crops as [[x, y] x 4] (TL, TR, BR, BL), crop 1 first; []
            for a whole-frame model.
        crops: {"whole_frame", "show", "note"} (:func:`stream.result_fields.crops_meta`).
        mask_display: {"show", "note"} (:func:`stream.result_fields.mask_display_meta`).
        video: the running video score (:func:`stream.result_fields.video_meta`: probs, score,
            n_frames, restarted, evidence, log_aggregate, frame_share, findings).
        findings: {name: probability} of a bundle with a findings head, else None.
        mask_seq: the frame seq the ``mask`` / ``unc`` arrays belong to (None: no mask).
        batch: frames scored together in this engine call.
        worker_pid, capture_session, capture_sent: who made it (run statistics).
        skipped: frames of this stream the worker never scored (latest-wins gaps).
        fps: the worker's rate on this stream; backend, bundle: what scored it.
        timing_ms: per-stage durations (:func:`stream.result_fields.timing_ms`, plus ``seg``).
        latency_ms: published - grabbed.
        version: message schema version.
    """

    ARRAYS: ClassVar[tuple[str, ...]] = ("mask", "unc")

    seq: int
    stream_id: int
    source: str = ""
    status_only: bool = False
    resent: bool = False
    source_state: str | None = None
    source_detail: str = ""
    frame_hw: list[int] | None = None
    display_hw: list[int] | None = None
    index: int | None = None
    pts_s: float | None = None
    roi: list[int] | None = None
    full_hw: list[int] | None = None
    probs: list[float] | None = None
    score: int | None = None
    boxes: list = field(default_factory=list)
    crops: dict[str, Any] | None = None
    mask_display: dict[str, Any] | None = None
    video: dict[str, Any] | None = None
    findings: dict[str, Any] | None = None
    mask_seq: int | None = None
    batch: int | None = None
    worker_pid: int | None = None
    capture_session: float | int | str | None = None
    capture_sent: int | None = None
    skipped: int = 0
    fps: float = 0.0
    backend: str | None = None
    bundle: str | None = None
    timing_ms: dict[str, float] = field(default_factory=dict)
    latency_ms: float | None = None
    version: int = VERSION

    def __post_init__(self) -> None:
        _check_version(self)
        self.check(self.to_json())

    @staticmethod
    def check(m: dict[str, Any]) -> None:
        """Raises: MetaError naming the first field of ``m`` of the wrong type or size."""
        _int(m, "seq")
        _int(m, "stream_id", 0, (1 << 16) - 1)
        _text(m, "source", MAX_SOURCE_CHARS, "")
        _text(m, "source_state", MAX_STATE_CHARS, None)
        _text(m, "source_detail", MAX_DETAIL_CHARS, "")
        for k in ("backend", "bundle"):
            _text(m, k, MAX_NAME_CHARS, None)
        for k in ("status_only", "resent"):
            if not isinstance(m.get(k, False), bool):
                raise MetaError(f"{k} must be true or false")
        for k in ("frame_hw", "display_hw", "full_hw"):
            _ints(m, k, 2, 0)
        _ints(m, "roi", 4, 0)
        for k in ("index", "mask_seq", "batch", "worker_pid", "capture_sent", "skipped"):
            _int(m, k)
        for k in ("pts_s", "fps", "latency_ms"):
            _num(m, k)
        _nums(m, "probs", MAX_CLASSES)
        _int(m, "score", 0, MAX_CLASSES - 1)
        _boxes(m)
        _dict(m, "crops")
        _dict(m, "mask_display")
        _video(m)
        _dict(m, "findings", lambda x: x is None or _is_num(x))
        _dict(m, "timing_ms", _is_num)
        FrameMeta.parse({"session": m.get("capture_session")})

    @classmethod
    def parse(cls, meta: dict[str, Any]) -> Result:
        """A received RESULT's JSON -> Result; keys it does not define are ignored.

        Raises:
            MetaError: a missing ``seq`` / ``stream_id`` or a field of the wrong type or size.
        """
        if meta.get("seq") is None or meta.get("stream_id") is None:
            raise MetaError("a RESULT needs seq and stream_id")
        known = {f.name for f in fields(cls)} - {"version"}
        kw = {k: v for k, v in meta.items() if k in known and v is not None}
        return cls(**kw)

    @classmethod
    def build(cls, meta: dict[str, Any]) -> Result:
        """The worker's side: like :meth:`parse`, but a key this definition lacks is an error
        (add the field here first, with its type and meaning)."""
        unknown = set(meta) - {f.name for f in fields(cls)}
        if unknown:
            raise MetaError(f"RESULT fields {sorted(unknown)} are not defined: add them to "
                            "stream.messages.Result")
        return cls.parse(meta)

    def to_json(self) -> dict[str, Any]:
        """The RESULT's JSON part (every field but ``version``, which is the header's)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "version"}

    def message(self, display: np.ndarray, stamps: np.ndarray | None = None,
                mask: np.ndarray | None = None, unc: np.ndarray | None = None) -> Message:
        """The RESULT wire message: this JSON + the display frame, label map and uncertainty.

        Raises:
            MetaError: arrays of the wrong dtype or shape (see :meth:`check_arrays`).
        """
        arrays = {k: a for k, a in (("mask", mask), ("unc", unc)) if a is not None}
        self.check_arrays(display, arrays)
        msg = Message(Kind.RESULT, self.stream_id, self.seq, meta=self.to_json(),
                      array=display, arrays=arrays)
        if stamps is not None:
            msg.stamps = np.array(stamps, dtype=np.float64)
        return msg

    @staticmethod
    def check_arrays(display: np.ndarray | None, arrays: dict[str, np.ndarray]) -> None:
        """Raises: MetaError unless display is (h, w) uint8 and every other array is one of
        :attr:`ARRAYS`, (h, w) uint8, with ``mask`` values < :data:`MASK_LABELS`."""
        if display is None or display.dtype != np.uint8 or display.ndim != 2:
            raise MetaError("a RESULT's image must be an (h, w) uint8 display frame, got "
                            f"{None if display is None else (display.dtype, display.shape)}")
        for name, a in arrays.items():
            if name not in Result.ARRAYS:
                raise MetaError(f"unknown RESULT array {name!r}; known: {Result.ARRAYS}")
            if a.dtype != np.uint8 or a.shape != display.shape:
                raise MetaError(f"RESULT {name} must be uint8 of the display frame's shape "
                                f"{display.shape}, got {a.dtype} {a.shape}")
        mask = arrays.get("mask")
        if mask is not None and mask.size and int(mask.max()) >= MASK_LABELS:
            raise MetaError(f"RESULT mask labels must be 0..{MASK_LABELS - 1}, got "
                            f"{int(mask.max())}")

    @classmethod
    def from_message(cls, msg: Message) -> Result:
        """Check a decoded RESULT (JSON and arrays); ``seq`` / ``stream_id`` missing from the
        JSON are the header's.

        Raises:
            MetaError: wrong kind, fields or arrays.
        """
        if msg.kind != Kind.RESULT:
            raise MetaError(f"expected a RESULT, got {Kind(msg.kind).name}")
        cls.check_arrays(msg.array, msg.arrays)
        return cls.parse({"seq": msg.seq, "stream_id": msg.stream_id, **msg.meta})


def encode_result(msg: Message) -> bytearray:
    """The worker's last step: check a RESULT message against :class:`Result` and encode it.

    ``msg.meta`` is normalised to the definition (every field present, in its order).

    Raises:
        MetaError: a field :class:`Result` does not define, or of the wrong type; arrays of
            the wrong shape. WireError: the message does not fit the wire.
    """
    res = Result.build(msg.meta)
    Result.check_arrays(msg.array, msg.arrays)
    msg.meta = res.to_json()
    return encode(msg)
