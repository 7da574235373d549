"""The wire protocol (version 2): round trips of several named arrays in one part, one copy at
most, old versions refused, and fuzz tests that garbage never crashes or allocates."""

from __future__ import annotations

import struct
import tracemalloc

import numpy as np
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.wire import (
    ENTRY,
    HEADER,
    MAGIC,
    MAX_ARRAYS,
    STAGES,
    VERSION,
    Kind,
    Message,
    WireError,
    WireVersionError,
    decode,
    encode,
)


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
                                         ((1, 2, 3, 4), np.int16), ((0, 3), np.uint8),
                                         ((), np.int32)])
def test_round_trip(shape, dtype):
    m = _frame_msg(shape, dtype)
    out = decode(encode(m))
    assert out.kind == Kind.FRAME and out.stream_id == 3 and out.seq == 12345
    assert out.meta == m.meta and out.arrays == {}
    np.testing.assert_array_equal(out.stamps, m.stamps)
    assert out.at("sent") == 1.7e9 + 0.5
    assert out.array.dtype == dtype and out.array.shape == shape
    np.testing.assert_array_equal(out.array, m.array)


def test_several_named_arrays_round_trip_in_one_part():
    rng = np.random.default_rng(1)
    display = rng.integers(0, 255, (45, 61), dtype=np.uint8)       # odd sizes: padding
    labels = rng.integers(0, 5, (45, 61), dtype=np.uint8)
    unc = rng.random((45, 61)).astype(np.float32)
    m = Message(Kind.RESULT, 2, 7, meta={"score": 2}, array=display,
                arrays={"mask": labels, "unc": unc, "probs": np.arange(4.0)})
    raw = encode(m)
    assert isinstance(raw, bytearray) and len(raw) % 8 == 0
    out = decode(bytes(raw))
    assert out.meta == {"score": 2} and list(out.arrays) == ["mask", "unc", "probs"]
    np.testing.assert_array_equal(out.array, display)
    for k, v in m.arrays.items():
        assert out.arrays[k].dtype == v.dtype
        np.testing.assert_array_equal(out.arrays[k], v)
    arrays_only = decode(encode(Message(Kind.RESULT, arrays={"mask": labels})))
    assert arrays_only.array is None and list(arrays_only.arrays) == ["mask"]


def test_arrays_start_on_8_byte_offsets():
    m = Message(Kind.RESULT, meta={"k": "abc"}, array=np.zeros((3, 3), np.uint8),
                arrays={"unc": np.ones(5, np.float64)})
    raw = bytes(encode(m))
    out = decode(raw)
    base = np.frombuffer(raw, np.uint8).ctypes.data
    for a in (out.array, out.arrays["unc"]):
        assert (a.ctypes.data - base) % 8 == 0


def test_encode_copies_each_array_once():
    """Old v1 encode: arr.tobytes() + b"".join() = 2 copies; v2: one, into the sent buffer."""
    img = np.random.default_rng(0).integers(0, 255, (480, 640), dtype=np.uint8)
    m = Message(Kind.FRAME, meta={"source": "x"}, array=img)
    encode(m)  # warm up
    tracemalloc.start()
    try:
        raw = encode(m)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < img.nbytes * 1.1, f"encode allocated {peak} bytes for a {img.nbytes} B frame"
    # a strided view (a crop) is copied once too, straight into the buffer
    crop = img[10:300, 20:400]
    tracemalloc.start()
    try:
        encode(Message(Kind.FRAME, array=crop))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < crop.nbytes * 1.1 + 4096
    np.testing.assert_array_equal(decode(raw).array, img)


def test_zero_copy_send_shares_the_encoded_buffer():
    """``send(encode(m), copy=False)`` hands ZeroMQ the encoded buffer itself."""
    img = np.random.default_rng(2).integers(0, 255, (480, 640), dtype=np.uint8)
    raw = encode(Message(Kind.FRAME, array=img))
    frame = zmq.Frame(raw, copy=False)
    assert np.shares_memory(np.frombuffer(frame.buffer, np.uint8), np.frombuffer(raw, np.uint8))
    ctx = zmq.Context()
    try:
        a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
        a.bind("inproc://wire-test")
        b.connect("inproc://wire-test")
        a.send(raw, copy=False)
        got = b.recv(copy=False)
        np.testing.assert_array_equal(decode(got.buffer).array, img)
        a.close(0)
        b.close(0)
    finally:
        ctx.term()


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
    with pytest.raises(WireError, match="name"):
        encode(Message(Kind.RESULT, arrays={"Bad Name": np.zeros(2, np.uint8)}))
    with pytest.raises(WireError, match="name"):
        encode(Message(Kind.RESULT, arrays={"image": np.zeros(2, np.uint8)}))
    with pytest.raises(WireError, match="arrays"):
        encode(Message(Kind.RESULT, arrays={f"a{i}": np.zeros(1, np.uint8)
                                            for i in range(MAX_ARRAYS + 1)}))
    big = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), (8193, 8192, 4), (0, 0, 0))
    with pytest.raises(WireError, match="too large"):  # refused before any copy
        encode(Message(Kind.FRAME, array=big))


def _header(**over) -> bytes:
    f = dict(magic=MAGIC, version=VERSION, kind=1, n=1, flags=0, sid=0, res=0, seq=0,
             json_len=0)
    f.update(over)
    return HEADER.pack(f["magic"], f["version"], f["kind"], f["n"], f["flags"], f["sid"],
                       f["res"], f["seq"], *([0.0] * len(STAGES)), f["json_len"])


def _entry(name=b"image", code=1, ndim=2, dims=(10, 10, 0, 0), r1=0, r2=0) -> bytes:
    return ENTRY.pack(name, code, ndim, r1, r2, *dims)


def _msg(body=b"", n=None, entries=(None,), **over) -> bytes:
    ents = [e if e is not None else _entry() for e in entries]
    return _header(n=len(ents) if n is None else n, **over) + b"".join(ents) + body


V1_HEADER = struct.Struct("<4sBBBBHHQ8d4II")  # the version 1 layout (one array)


@pytest.mark.parametrize("buf,match", [
    (b"", "too short"),
    (b"PLRA\x02", "too short"),
    (_msg(bytes(104), magic=b"XXXX"), "magic"),
    (_msg(bytes(104), version=99), "version 99"),
    (_msg(bytes(104), kind=42), "kind"),
    (_msg(bytes(104), n=9), "arrays declared"),
    (_msg(bytes(104), flags=1), "reserved"),
    (_header(n=2) + _entry(), "table"),
    (_msg(bytes(104), entries=[_entry(code=200)]), "dtype"),
    (_msg(bytes(104), entries=[_entry(code=0)]), "dtype"),
    (_msg(bytes(104), entries=[_entry(ndim=9)]), "ndim"),
    (_msg(bytes(104), entries=[_entry(dims=(10, 10, 5, 0))]), "shape"),
    (_msg(bytes(104), entries=[_entry(r2=1)]), "shape"),
    (_msg(bytes(104), entries=[_entry(name=b"Bad!")]), "name"),
    (_msg(bytes(208), entries=[_entry(), _entry()]), "repeated"),
    (_msg(bytes(103)), "do not match"),
    (_msg(bytes(112)), "do not match"),
    (_msg(b"[1]     " + bytes(104), json_len=8), "object"),
    (_msg(b"{x}     " + bytes(104), json_len=8), "JSON"),
    (_msg(b"\xff\xfe      " + bytes(104), json_len=8), "JSON"),
    # sizes far larger than the payload: rejected before any allocation
    (_msg(bytes(100), entries=[_entry(code=6, dims=(65536, 65536, 0, 0))]), "array size"),
    (_msg(bytes(100), entries=[_entry(dims=(4000, 4000, 0, 0))]), "do not match"),
    (_msg(bytes(100), json_len=0xFFFFFFFF), "JSON length"),
])
def test_rejects_bad_messages(buf, match):
    with pytest.raises(WireError, match=match):
        decode(buf)


def test_version_1_message_is_refused_with_a_clear_error():
    v1 = V1_HEADER.pack(MAGIC, 1, 1, 1, 2, 0, 0, 5, *([0.0] * 8), 4, 4, 0, 0, 2) + b"{}" + bytes(16)
    with pytest.raises(WireVersionError, match=r"wire version 1 message refused: this build "
                                               r"speaks version 2; run the same pleura version"):
        decode(v1)
    assert issubclass(WireVersionError, WireError)  # every receiver already drops WireErrors


def test_truncations_of_a_valid_message_are_rejected():
    good = encode(Message(Kind.RESULT, meta={"a": 1}, array=np.ones((20, 30), np.uint8),
                          arrays={"mask": np.zeros((20, 30), np.uint8)}))
    for cut in list(range(0, HEADER.size + 2 * ENTRY.size + 40)) + [len(good) - 1]:
        with pytest.raises(WireError):
            decode(good[:cut])
    with pytest.raises(WireError, match="do not match"):
        decode(bytes(good) + bytes(8))  # oversized: trailing bytes


def test_huge_declared_size_allocates_nothing():
    bad = _msg(bytes(64), entries=[_entry(dims=(60000, 60000, 0, 0))] * 1)
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
@given(st.binary(min_size=1, max_size=64), st.integers(0, HEADER.size + 2 * ENTRY.size + 200))
def test_fuzz_mutated_valid_message(patch, pos):
    good = bytearray(encode(Message(Kind.RESULT, meta={"s": 1}, array=np.ones((6, 8), np.uint8),
                                    arrays={"unc": np.ones((3, 5), np.float32)})))
    pos = min(pos, len(good) - 1)
    good[pos:pos + len(patch)] = patch
    try:
        m = decode(bytes(good))
    except WireError:
        return
    assert isinstance(m.meta, dict)
    n = sum(a.nbytes for a in [m.array, *m.arrays.values()] if a is not None)
    assert n + HEADER.size <= len(good)


def test_header_and_table_are_packed_fixed_size():
    assert HEADER.size == struct.calcsize("<4sBBBBHHQ8dI") == 4 + 4 + 4 + 8 + 64 + 4 == 88
    assert ENTRY.size == 16 + 1 + 1 + 2 + 4 + 16 == 40
    assert HEADER.size % 8 == 0 and ENTRY.size % 8 == 0
