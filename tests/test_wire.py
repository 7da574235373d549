"""The wire protocol: round trips, and a fuzz test that garbage never crashes or allocates."""

from __future__ import annotations

import struct
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.wire import HEADER, MAGIC, STAGES, VERSION, Kind, Message, WireError, decode, encode


def _frame_msg(shape=(48, 64, 3), dtype=np.uint8) -> Message:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, size=shape).astype(dtype)
    m = Message(Kind.FRAME, stream_id=3, seq=12345, meta={"source": "x.mp4", "pts_s": 0.5},
                array=arr)
    m.stamp("grabbed", 1.7e9 + 0.25)
    m.stamp("sent", 1.7e9 + 0.5)
    return m


@pytest.mark.parametrize("shape,dtype", [((48, 64, 3), np.uint8), ((31, 17), np.uint8),
                                         ((2, 4), np.float32), ((5,), np.float64),
                                         ((1, 2, 3, 4), np.int16), ((0, 3), np.uint8)])
def test_round_trip(shape, dtype):
    m = _frame_msg(shape, dtype)
    out = decode(encode(m))
    assert out.kind == Kind.FRAME and out.stream_id == 3 and out.seq == 12345
    assert out.meta == m.meta
    np.testing.assert_array_equal(out.stamps, m.stamps)
    assert out.at("sent") == 1.7e9 + 0.5
    assert out.array.dtype == dtype and out.array.shape == shape
    np.testing.assert_array_equal(out.array, m.array)


def test_no_array_and_all_kinds():
    for kind in Kind:
        out = decode(encode(Message(kind, meta={"cmd": "reset"})))
        assert out.kind == kind and out.array is None and out.meta == {"cmd": "reset"}


def test_encode_rejects_unsupported():
    with pytest.raises(WireError, match="dtype"):
        encode(Message(Kind.FRAME, array=np.zeros(3, dtype=np.complex64)))
    with pytest.raises(WireError, match="JSON"):
        encode(Message(Kind.FRAME, meta={"x": object()}))
    with pytest.raises(WireError, match="stream_id"):
        encode(Message(Kind.FRAME, stream_id=70000))


def _header(**over) -> bytes:
    f = dict(magic=MAGIC, version=VERSION, kind=1, code=1, ndim=2, sid=0, res=0, seq=0,
             dims=(10, 10, 0, 0), json_len=0)
    f.update(over)
    return HEADER.pack(f["magic"], f["version"], f["kind"], f["code"], f["ndim"], f["sid"],
                       f["res"], f["seq"], *([0.0] * len(STAGES)), *f["dims"], f["json_len"])


@pytest.mark.parametrize("buf,match", [
    (b"", "too short"),
    (b"PLRA\x01", "too short"),
    (_header(magic=b"XXXX") + bytes(100), "magic"),
    (_header(version=99) + bytes(100), "version"),
    (_header(kind=42) + bytes(100), "kind"),
    (_header(code=200) + bytes(100), "dtype"),
    (_header(ndim=9) + bytes(100), "ndim"),
    (_header(dims=(10, 10, 5, 0)) + bytes(100), "shape"),
    (_header() + bytes(99), "do not match"),
    (_header() + bytes(101), "do not match"),
    (_header(json_len=3) + b"[1]" + bytes(100), "object"),
    (_header(json_len=3) + b"{x}" + bytes(100), "JSON"),
    (_header(json_len=2) + b"\xff\xfe" + bytes(100), "JSON"),
    # sizes far larger than the payload: rejected before any allocation
    (_header(dims=(65536, 65536, 0, 0), code=6) + bytes(100), "array size"),
    (_header(dims=(4000, 4000, 0, 0)) + bytes(100), "do not match"),
    (_header(json_len=0xFFFFFFFF) + bytes(100), "JSON length"),
])
def test_rejects_bad_messages(buf, match):
    with pytest.raises(WireError, match=match):
        decode(buf)


def test_truncations_of_a_valid_message_are_rejected():
    good = encode(_frame_msg((20, 30, 3)))
    for cut in list(range(0, HEADER.size + 40)) + [len(good) - 1]:
        with pytest.raises(WireError):
            decode(good[:cut])


def test_huge_declared_size_allocates_nothing():
    bad = _header(dims=(60000, 60000, 0, 0), code=1, ndim=2) + bytes(64)
    tracemalloc.start()
    try:
        for _ in range(100):
            with pytest.raises(WireError):
                decode(bad)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"decode allocated {peak} bytes for a garbage header"


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_random_bytes(data):
    try:
        m = decode(data)
    except WireError:
        return
    # Anything accepted must re-encode to the same bytes.
    assert encode(m) == bytes(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.integers(0, HEADER.size + 200))
def test_fuzz_mutated_valid_message(patch, pos):
    good = bytearray(encode(_frame_msg((6, 8, 3))))
    pos = min(pos, len(good) - 1)
    good[pos:pos + len(patch)] = patch
    try:
        m = decode(bytes(good))
    except WireError:
        return
    assert isinstance(m.meta, dict)
    if m.array is not None:
        assert m.array.nbytes + HEADER.size <= len(good)


def test_header_is_packed_fixed_size():
    assert HEADER.size == struct.calcsize("<4sBBBBHHQ8d4II") == 4 + 4 + 4 + 8 + 64 + 16 + 4
