"""The wire protocol: one single-part ZeroMQ message per frame, result, control or heartbeat.

Layout (little endian, no padding)::

    header  (HEADER.size = 128 bytes)
      magic        4s   b"PLRA"
      version      B    VERSION
      kind         B    Kind (FRAME, RESULT, CONTROL, HEARTBEAT)
      dtype        B    index into DTYPES (0 = no array)
      ndim         B    0..MAX_NDIM
      stream_id    H    which source (several sources can feed one worker)
      reserved     H    0
      seq          Q    sequence number, per stream, set by capture
      stamps       8d   STAGES timestamps, time.time() seconds, 0.0 = not reached
      shape        4I   array shape, unused dims 0
      json_len     I    length of the JSON part
    json    json_len bytes, UTF-8, a JSON object
    array   prod(shape) * itemsize bytes, C order

Single-part messages are what lets subscribers use ``CONFLATE`` (latest wins). Nothing is ever
unpickled: the header says exactly how many bytes follow, and :func:`decode` checks every
declared size against the real payload *before* it allocates or parses anything, so a garbage
or hostile message costs at most one failed ``struct.unpack``.
"""

from __future__ import annotations

import enum
import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAGIC = b"PLRA"
VERSION = 1
MAX_NDIM = 4
MAX_DIM = 1 << 16
"""Largest allowed size of one array dimension (8K video is 7680)."""
MAX_ARRAY_BYTES = 256 << 20
MAX_JSON_BYTES = 4 << 20

STAGES = ("grabbed", "sent", "received", "preprocessed", "inferred", "postprocessed",
          "published", "shown")
"""The 8 stage timestamps every message carries: capture grabbed the frame from the source,
capture sent it, the worker received it, finished preprocessing, inference, postprocessing,
published the result, and a display (UI or stats collector) received it."""
STAGE = {name: i for i, name in enumerate(STAGES)}

DTYPES: tuple[str | None, ...] = (None, "uint8", "uint16", "int16", "int32", "float32",
                                  "float64")
"""Array dtype codes (index = code). Code 0 means "no array"."""

HEADER = struct.Struct("<4sBBBBHHQ8d4II")


class Kind(enum.IntEnum):
    """Message kinds."""

    FRAME = 1      # capture -> worker: decoded frame (H, W) or (H, W, 3) uint8
    RESULT = 2     # worker -> UI: display frame (H, W) uint8 + result JSON
    CONTROL = 3    # anyone -> worker/capture: {"cmd": "reset" | ...}
    HEARTBEAT = 4  # process -> supervisor: {"role": ..., "pid": ..., counters}


class WireError(ValueError):
    """A message that is not a valid pleura message; the text says which check failed."""


@dataclass
class Message:
    """One decoded (or to-be-encoded) message.

    Attributes:
        kind: :class:`Kind`.
        stream_id: source index, 0..65535.
        seq: sequence number (per stream, assigned by capture).
        stamps: (8,) float64 stage timestamps, see :data:`STAGES`; 0 = not reached.
        meta: the JSON part (a dict).
        array: optional array; FRAME: (H, W[, 3]) uint8, RESULT: (H, W) uint8.
    """

    kind: Kind
    stream_id: int = 0
    seq: int = 0
    stamps: np.ndarray = field(default_factory=lambda: np.zeros(len(STAGES)))
    meta: dict[str, Any] = field(default_factory=dict)
    array: np.ndarray | None = None

    def stamp(self, stage: str, t: float) -> None:
        """Set one stage timestamp, e.g. ``msg.stamp("received", time.time())``."""
        if not self.stamps.flags.writeable:
            self.stamps = self.stamps.copy()
        self.stamps[STAGE[stage]] = t

    def at(self, stage: str) -> float:
        return float(self.stamps[STAGE[stage]])


def encode(msg: Message) -> bytes:
    """Pack a message into one bytes object (header + JSON + raw array).

    Raises:
        WireError: an array of unsupported dtype / rank / size, a non-JSON-able ``meta``,
            or out-of-range ids.
    """
    try:
        body = json.dumps(msg.meta, separators=(",", ":"), allow_nan=True).encode()
    except (TypeError, ValueError) as exc:
        raise WireError(f"message meta is not JSON-serialisable: {exc}") from None
    if len(body) > MAX_JSON_BYTES:
        raise WireError(f"JSON part too large ({len(body)} > {MAX_JSON_BYTES} bytes)")
    arr = msg.array
    if arr is None:
        code, shape, raw = 0, (), b""
    else:
        arr = np.ascontiguousarray(arr)
        name = arr.dtype.name
        if name not in DTYPES:
            raise WireError(f"dtype {name} is not supported on the wire; use one of "
                            f"{[d for d in DTYPES if d]}")
        if arr.ndim > MAX_NDIM or any(s > MAX_DIM for s in arr.shape):
            raise WireError(f"array shape {arr.shape} exceeds the wire limits "
                            f"(ndim <= {MAX_NDIM}, dims <= {MAX_DIM})")
        if arr.nbytes > MAX_ARRAY_BYTES:
            raise WireError(f"array too large ({arr.nbytes} bytes > {MAX_ARRAY_BYTES})")
        code, shape, raw = DTYPES.index(name), arr.shape, arr.tobytes()
    if not 0 <= int(msg.stream_id) < 1 << 16:
        raise WireError(f"stream_id {msg.stream_id} out of range 0..65535")
    if not 0 <= int(msg.seq) < 1 << 64:
        raise WireError(f"seq {msg.seq} out of range")
    stamps = np.asarray(msg.stamps, dtype=np.float64).reshape(-1)
    if stamps.shape != (len(STAGES),):
        raise WireError(f"stamps must have {len(STAGES)} values, got {stamps.shape}")
    dims = tuple(shape) + (0,) * (MAX_NDIM - len(shape))
    header = HEADER.pack(MAGIC, VERSION, int(Kind(msg.kind)), code, len(shape),
                         int(msg.stream_id), 0, int(msg.seq), *stamps.tolist(), *dims, len(body))
    return b"".join((header, body, raw))


def decode(buf: bytes | bytearray | memoryview) -> Message:
    """Unpack and validate one message. The array is a read-only view into ``buf``.

    Every size the header declares is checked against ``len(buf)`` before anything is
    allocated, so a message claiming a huge array is rejected in O(1).

    Raises:
        WireError: naming the first failed check (length, magic, version, kind, dtype, ndim,
            sizes, JSON).
    """
    view = memoryview(buf).cast("B")
    n = len(view)
    if n < HEADER.size:
        raise WireError(f"message too short: {n} bytes < header {HEADER.size}")
    fields = HEADER.unpack_from(view, 0)
    magic, version, kind, code, ndim, stream_id, _reserved, seq = fields[:8]
    stamps = fields[8:16]
    dims = fields[16:20]
    json_len = fields[20]
    if magic != MAGIC:
        raise WireError(f"bad magic {bytes(magic)!r} (expected {MAGIC!r}): not a pleura message")
    if version != VERSION:
        raise WireError(f"unsupported wire version {version} (this build speaks {VERSION}); "
                        "run the same pleura version on both ends")
    try:
        kind = Kind(kind)
    except ValueError:
        raise WireError(f"unknown message kind {kind}") from None
    if code >= len(DTYPES):
        raise WireError(f"unknown dtype code {code}")
    if ndim > MAX_NDIM:
        raise WireError(f"ndim {ndim} > {MAX_NDIM}")
    shape = tuple(int(d) for d in dims[:ndim])
    if any(d > MAX_DIM for d in dims) or any(d != 0 for d in dims[ndim:]):
        raise WireError(f"bad shape field {dims} for ndim {ndim}")
    if code == 0 and ndim != 0:
        raise WireError("shape given but no dtype")
    if json_len > MAX_JSON_BYTES:
        raise WireError(f"declared JSON length {json_len} > {MAX_JSON_BYTES}")
    itemsize = np.dtype(DTYPES[code]).itemsize if code else 0
    nbytes = itemsize
    for d in shape:
        nbytes *= d
    if code and nbytes > MAX_ARRAY_BYTES:
        raise WireError(f"declared array size {nbytes} bytes > {MAX_ARRAY_BYTES}")
    expected = HEADER.size + json_len + (nbytes if code else 0)
    if expected != n:
        raise WireError(f"declared sizes ({expected} bytes) do not match the message ({n} bytes)")
    j0 = HEADER.size
    try:
        meta = json.loads(bytes(view[j0:j0 + json_len]).decode("utf-8")) if json_len else {}
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise WireError(f"JSON part is not valid: {exc}") from None
    if not isinstance(meta, dict):
        raise WireError(f"JSON part must be an object, got {type(meta).__name__}")
    array = None
    if code:
        array = np.frombuffer(view, dtype=DTYPES[code], count=nbytes // itemsize,
                              offset=j0 + json_len).reshape(shape)
    return Message(kind=kind, stream_id=stream_id, seq=seq,
                   stamps=np.array(stamps, dtype=np.float64), meta=meta, array=array)
