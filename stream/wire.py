"""The wire protocol: one single-part ZeroMQ message per frame, result, control or heartbeat.

Version 2 layout (little endian, no padding inside a struct; every part starts on a multiple
of 8 bytes)::

    header  (HEADER.size = 88 bytes)
      magic        4s   b"PLRA"
      version      B    VERSION (2)
      kind         B    Kind (FRAME, RESULT, CONTROL, HEARTBEAT)
      n_arrays     B    0..MAX_ARRAYS entries in the array table
      flags        B    0 (reserved)
      stream_id    H    which source (several sources can feed one worker)
      reserved     H    0
      seq          Q    sequence number, per stream, set by capture
      stamps       8d   STAGES timestamps, time.time() seconds, 0.0 = not reached
      json_len     I    length of the JSON part (a multiple of 8: padded with spaces)
    table   n_arrays x ENTRY (40 bytes each)
      name         16s  ASCII [a-z0-9_], NUL padded; unique; "image" is :attr:`Message.array`
      dtype        B    index into DTYPES (1..)
      ndim         B    0..MAX_NDIM
      reserved     H    0
      reserved     I    0
      shape        4I   array shape, unused dims 0
    json    json_len bytes, UTF-8, a JSON object (trailing spaces are JSON whitespace)
    arrays  each prod(shape) * itemsize bytes, C order, zero padded to a multiple of 8

Single-part messages are what lets subscribers use ``CONFLATE`` (latest wins), so several
arrays (a RESULT's display frame, label map and uncertainty map) travel in one part, each
named in the table. Nothing is ever unpickled: the header and table say exactly how many
bytes follow, and :func:`decode` checks every declared size against the real payload
*before* it allocates or parses anything, so a garbage or hostile message costs at most a few
failed ``struct.unpack`` calls. A message of another version (e.g. version 1, which carried
one array and a mask as base64 PNG inside the JSON) raises :class:`WireVersionError`.

:func:`encode` copies each array exactly once, straight into the outgoing buffer (no
``tobytes`` / ``join`` round), so ``socket.send(encode(msg), copy=False)`` sends it with that
one copy (pyzmq still copies messages under its ``copy_threshold``, 64 KiB).
"""

from __future__ import annotations

import enum
import json
import re
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAGIC = b"PLRA"
VERSION = 2
"""Wire (and message schema) version: both ends must speak the same one."""
MAX_NDIM = 4
MAX_DIM = 1 << 16
"""Largest allowed size of one array dimension (8K video is 7680)."""
MAX_ARRAYS = 8
MAX_ARRAY_BYTES = 256 << 20
"""Largest total size of a message's arrays."""
MAX_JSON_BYTES = 4 << 20
IMAGE = "image"
"""Table name of :attr:`Message.array` (FRAME: the frame, RESULT: the display frame)."""
ALIGN = 8

STAGES = ("grabbed", "sent", "received", "preprocessed", "inferred", "postprocessed",
          "published", "shown")
"""The 8 stage timestamps every message carries: capture grabbed the frame from the source,
capture sent it, the worker received it, finished preprocessing, inference, postprocessing,
published the result, and a display (UI or stats collector) received it."""
STAGE = {name: i for i, name in enumerate(STAGES)}

DTYPES: tuple[str | None, ...] = (None, "uint8", "uint16", "int16", "int32", "float32",
                                  "float64")
"""Array dtype codes (index = code). Code 0 is never a valid array."""

HEADER = struct.Struct("<4sBBBBHHQ8dI")
ENTRY = struct.Struct("<16sBBHI4I")
NAME = re.compile(r"^[a-z0-9_]{1,16}$")


class Kind(enum.IntEnum):
    """Message kinds."""

    FRAME = 1      # capture -> worker: decoded frame (H, W) or (H, W, 3) uint8
    RESULT = 2     # worker -> UI: display frame (H, W) uint8 [+ "mask", "unc"] + result JSON
    CONTROL = 3    # anyone -> worker/capture: {"cmd": "reset" | ...}
    HEARTBEAT = 4  # process -> supervisor: {"role": ..., "pid": ..., counters}


class WireError(ValueError):
    """A message that is not a valid pleura message; the text says which check failed."""


class WireVersionError(WireError):
    """A pleura message of another wire version (an older or newer pleura on the other end)."""


@dataclass
class Message:
    """One decoded (or to-be-encoded) message.

    Attributes:
        kind: :class:`Kind`.
        stream_id: source index, 0..65535.
        seq: sequence number (per stream, assigned by capture).
        stamps: (8,) float64 stage timestamps, see :data:`STAGES`; 0 = not reached.
        meta: the JSON part (a dict; :mod:`stream.messages` defines it per kind).
        array: the message's image, or None; FRAME: (H, W[, 3]) uint8, RESULT: (H, W) uint8.
        arrays: further named arrays (name -> array), e.g. a RESULT's ``"mask"`` and
            ``"unc"`` (:class:`stream.messages.Result`).
    """

    kind: Kind
    stream_id: int = 0
    seq: int = 0
    stamps: np.ndarray = field(default_factory=lambda: np.zeros(len(STAGES)))
    meta: dict[str, Any] = field(default_factory=dict)
    array: np.ndarray | None = None
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def stamp(self, stage: str, t: float) -> None:
        """Set one stage timestamp, e.g. ``msg.stamp("received", time.time())``."""
        if not self.stamps.flags.writeable:
            self.stamps = self.stamps.copy()
        self.stamps[STAGE[stage]] = t

    def at(self, stage: str) -> float:
        return float(self.stamps[STAGE[stage]])


def _pad(n: int) -> int:
    return -n % ALIGN


def _checked_arrays(msg: Message) -> list[tuple[str, np.ndarray]]:
    """The message's arrays as (name, array) in table order, each checked against the limits."""
    named = ([(IMAGE, msg.array)] if msg.array is not None else []) + list(msg.arrays.items())
    if len(named) > MAX_ARRAYS:
        raise WireError(f"{len(named)} arrays > {MAX_ARRAYS} per message")
    out, total = [], 0
    for name, arr in named:
        if not isinstance(name, str) or not NAME.match(name) or (name == IMAGE and
                                                                 arr is not msg.array):
            raise WireError(f"array name {name!r} is not valid: use 1..16 characters of "
                            f"[a-z0-9_], not {IMAGE!r} (that is Message.array)")
        arr = np.asarray(arr)
        if arr.dtype.name not in DTYPES[1:]:
            raise WireError(f"dtype {arr.dtype.name} of array {name!r} is not supported on "
                            f"the wire; use one of {list(DTYPES[1:])}")
        if arr.ndim > MAX_NDIM or any(s > MAX_DIM for s in arr.shape):
            raise WireError(f"array {name!r} shape {arr.shape} exceeds the wire limits "
                            f"(ndim <= {MAX_NDIM}, dims <= {MAX_DIM})")
        total += arr.nbytes
        out.append((name, arr))
    if total > MAX_ARRAY_BYTES:
        raise WireError(f"arrays too large ({total} bytes > {MAX_ARRAY_BYTES})")
    return out


def _json_part(meta: dict[str, Any]) -> bytes:
    try:
        body = json.dumps(meta, separators=(",", ":"), allow_nan=True).encode()
    except (TypeError, ValueError) as exc:
        raise WireError(f"message meta is not JSON-serialisable: {exc}") from None
    body += b" " * _pad(len(body))
    if len(body) > MAX_JSON_BYTES:
        raise WireError(f"JSON part too large ({len(body)} > {MAX_JSON_BYTES} bytes)")
    return body


def encode(msg: Message) -> bytearray:
    """Pack a message into one buffer (header + table + JSON + arrays).

    Each array is copied once, into the returned buffer; send it with ``copy=False``.

    Raises:
        WireError: an array of unsupported dtype / rank / size / name, a non-JSON-able
            ``meta``, or out-of-range ids.
    """
    if not 0 <= int(msg.stream_id) < 1 << 16:
        raise WireError(f"stream_id {msg.stream_id} out of range 0..65535")
    if not 0 <= int(msg.seq) < 1 << 64:
        raise WireError(f"seq {msg.seq} out of range")
    stamps = np.asarray(msg.stamps, dtype=np.float64).reshape(-1)
    if stamps.shape != (len(STAGES),):
        raise WireError(f"stamps must have {len(STAGES)} values, got {stamps.shape}")
    body = _json_part(msg.meta)
    named = _checked_arrays(msg)
    j0 = HEADER.size + ENTRY.size * len(named)
    offsets, end = [], j0 + len(body)
    for _, arr in named:
        offsets.append(end)
        end += arr.nbytes + _pad(arr.nbytes)
    buf = bytearray(end)  # zeroed: the padding and reserved fields are 0
    HEADER.pack_into(buf, 0, MAGIC, VERSION, int(Kind(msg.kind)), len(named), 0,
                     int(msg.stream_id), 0, int(msg.seq), *stamps.tolist(), len(body))
    for i, (name, arr) in enumerate(named):
        dims = tuple(arr.shape) + (0,) * (MAX_NDIM - arr.ndim)
        ENTRY.pack_into(buf, HEADER.size + i * ENTRY.size, name.encode(),
                        DTYPES.index(arr.dtype.name), arr.ndim, 0, 0, *dims)
    buf[j0:j0 + len(body)] = body
    for (_, arr), off in zip(named, offsets, strict=True):
        dst = np.frombuffer(buf, np.dtype(arr.dtype.name).newbyteorder("<"), arr.size, off)
        np.copyto(dst.reshape(arr.shape), arr)  # the one copy (also of a strided view)
    return buf


def _header(view: memoryview) -> tuple:
    n = len(view)
    if n < HEADER.size:
        raise WireError(f"message too short: {n} bytes < header {HEADER.size}")
    fields = HEADER.unpack_from(view, 0)
    magic, version, kind, n_arrays, flags, stream_id, reserved, seq = fields[:8]
    if magic != MAGIC:
        raise WireError(f"bad magic {bytes(magic)!r} (expected {MAGIC!r}): not a pleura message")
    if version != VERSION:
        raise WireVersionError(
            f"wire version {version} message refused: this build speaks version {VERSION}; "
            "run the same pleura version in every process (capture, worker, UI)")
    try:
        kind = Kind(kind)
    except ValueError:
        raise WireError(f"unknown message kind {kind}") from None
    if n_arrays > MAX_ARRAYS:
        raise WireError(f"{n_arrays} arrays declared > {MAX_ARRAYS}")
    if flags or reserved:
        raise WireError(f"reserved header fields must be 0, got {flags}, {reserved}")
    json_len = fields[16]
    if json_len > MAX_JSON_BYTES:
        raise WireError(f"declared JSON length {json_len} > {MAX_JSON_BYTES}")
    return kind, n_arrays, stream_id, seq, fields[8:16], json_len


def _table(view: memoryview, n_arrays: int) -> list[tuple[str, str, tuple[int, ...], int]]:
    """(name, dtype, shape, nbytes) of each declared array, checked, nothing allocated."""
    if len(view) < HEADER.size + ENTRY.size * n_arrays:
        raise WireError(f"message too short for its {n_arrays}-array table")
    out, total, names = [], 0, set()
    for i in range(n_arrays):
        raw, code, ndim, r1, r2, *dims = ENTRY.unpack_from(view, HEADER.size + i * ENTRY.size)
        name = raw.rstrip(b"\0").decode("ascii", "replace")
        if not NAME.match(name) or name in names or b"\0" in raw.rstrip(b"\0"):
            raise WireError(f"array {i}: bad or repeated name {raw!r}")
        names.add(name)
        if not 1 <= code < len(DTYPES):
            raise WireError(f"array {name!r}: unknown dtype code {code}")
        if ndim > MAX_NDIM:
            raise WireError(f"array {name!r}: ndim {ndim} > {MAX_NDIM}")
        if r1 or r2 or any(d > MAX_DIM for d in dims) or any(d != 0 for d in dims[ndim:]):
            raise WireError(f"array {name!r}: bad shape field {dims} for ndim {ndim}")
        shape = tuple(int(d) for d in dims[:ndim])
        nbytes = np.dtype(DTYPES[code]).itemsize
        for d in shape:
            nbytes *= d
        total += nbytes
        if total > MAX_ARRAY_BYTES:
            raise WireError(f"declared array size {total} bytes > {MAX_ARRAY_BYTES}")
        out.append((name, DTYPES[code], shape, nbytes))
    return out


def decode(buf: bytes | bytearray | memoryview) -> Message:
    """Unpack and validate one message. The arrays are read-only views into ``buf`` (a
    ``bytes`` or zmq frame buffer; writable views for a ``bytearray``).

    Every size the header and table declare is checked against ``len(buf)`` before anything
    is allocated, so a message claiming a huge array is rejected in O(1).

    Raises:
        WireVersionError: a pleura message of another version.
        WireError: naming the first failed check (length, magic, kind, table, sizes, JSON).
    """
    view = memoryview(buf).cast("B")
    kind, n_arrays, stream_id, seq, stamps, json_len = _header(view)
    table = _table(view, n_arrays)
    j0 = HEADER.size + ENTRY.size * n_arrays
    expected = j0 + json_len + sum(nb + _pad(nb) for *_, nb in table)
    if expected != len(view):
        raise WireError(f"declared sizes ({expected} bytes) do not match the message "
                        f"({len(view)} bytes)")
    try:
        meta = json.loads(bytes(view[j0:j0 + json_len]).decode("utf-8")) if json_len else {}
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise WireError(f"JSON part is not valid: {exc}") from None
    if not isinstance(meta, dict):
        raise WireError(f"JSON part must be an object, got {type(meta).__name__}")
    arrays, off = {}, j0 + json_len
    for name, dtype, shape, nbytes in table:
        dt = np.dtype(dtype).newbyteorder("<")
        arrays[name] = np.frombuffer(view, dt, nbytes // dt.itemsize, off).reshape(shape)
        off += nbytes + _pad(nbytes)
    image = arrays.pop(IMAGE, None)
    return Message(kind=kind, stream_id=stream_id, seq=seq,
                   stamps=np.array(stamps, dtype=np.float64), meta=meta, array=image,
                   arrays=arrays)
