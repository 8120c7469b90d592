"""Payload framing: header round trips, corruption and truncation always raise PayloadError."""
import math
import struct
import zlib

import numpy as np
import pytest
from conftest import DATA, fast_codec, fast_sci
from hypothesis import given
from hypothesis import strategies as st

from inr_codecs import PayloadError, decode, payload

DTYPES = [np.dtype(o + k) for k in payload.SUPPORTED_DTYPES for o in "<>" if k[1] != "1"] + [
    np.dtype("u1"), np.dtype("i1")]


@given(method=st.integers(0, 255), dtype=st.sampled_from(DTYPES),
       order=st.sampled_from("CF"), shape=st.lists(st.integers(1, 2**31), min_size=1, max_size=8),
       body=st.binary(max_size=200))
def test_header_round_trip(method, dtype, order, shape, body):
    """Headers round-trip; a chunk beyond MAX_CHUNK_BYTES is refused by the writer, and by a reader
    before it decodes anything (sizes in Python integers: 8 axes of 2**31 do not wrap around)."""
    h = payload.Header(method, dtype, order, tuple(shape))
    if math.prod(shape) * dtype.itemsize <= payload.MAX_CHUNK_BYTES:
        h2, body2 = payload.unpack(payload.pack(h, body))
        assert h2 == h and bytes(body2) == body
        return
    with pytest.raises(ValueError, match="MAX_CHUNK_BYTES"):
        payload.pack(h, body)
    limit, payload.MAX_CHUNK_BYTES = payload.MAX_CHUNK_BYTES, 2 ** 300     # a forged payload
    try:
        data = payload.pack(h, body)
    finally:
        payload.MAX_CHUNK_BYTES = limit
    with pytest.raises(payload.PayloadError, match="beyond the limit"):
        payload.unpack(data)


@pytest.fixture(scope="module", params=["siren", "sci", "latent_grid"])
def any_payload(request):
    """A payload of each method (SCI with four blocks, one of them constant)."""
    x = np.linspace(0, 1, 8 * 16 * 16, dtype=np.float32).reshape(8, 16, 16) ** 2
    if request.param == "siren":
        return fast_codec(ratio=4).encode(x)
    if request.param == "latent_grid":
        from inr_codecs import LatentGridCodec
        return LatentGridCodec(4, steps=20, device="cpu").encode(x)
    x[:4, :8] = 0
    return fast_sci(ratio=1.5, a_max=4, partition="equidistant").encode(x)


def test_decodes(any_payload):
    assert decode(any_payload).shape == (8, 16, 16)


@given(data=st.data())
def test_any_corruption_is_detected(any_payload, data):
    buf = bytearray(any_payload)
    positions = data.draw(st.lists(st.integers(0, len(buf) - 1), min_size=1, max_size=4, unique=True))
    for p in positions:
        buf[p] ^= data.draw(st.integers(1, 255))
    with pytest.raises(PayloadError):
        decode(bytes(buf))


@given(cut=st.integers(0, 10**6))
def test_any_truncation_is_detected(any_payload, cut):
    n = cut % len(any_payload)
    with pytest.raises(PayloadError):
        decode(any_payload[:n])


@given(extra=st.binary(min_size=1, max_size=16))
def test_trailing_bytes_are_detected(any_payload, extra):
    with pytest.raises(PayloadError):
        decode(any_payload + extra)


def test_clear_messages(any_payload):
    with pytest.raises(PayloadError, match="not an inr-codecs payload"):
        decode(b"XXXX" + any_payload[4:])
    bumped = bytearray(any_payload)
    bumped[4] = 9
    with pytest.raises(PayloadError, match="version 9"):
        decode(bytes(bumped))
    with pytest.raises(PayloadError, match="checksum"):
        decode(any_payload[:-5] + bytes([any_payload[-5] ^ 1]) + any_payload[-4:])
    with pytest.raises(PayloadError, match="too short"):
        decode(b"INRC")


@pytest.mark.parametrize("method", ["siren", "sci"])
def test_golden_payload(method):
    """Payloads written by format v1 keep decoding to the same values, bit for bit (the
    decoder's arithmetic is exact, format.md 3.2)."""
    got = decode((DATA / f"golden_v1_{method}.bin").read_bytes())
    want = np.load(DATA / f"golden_v1_{method}_decoded.npy")
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_unsupported_dtype_is_named():
    with pytest.raises(TypeError, match="complex128"):
        fast_codec().encode(np.zeros((4, 4), complex))


def _with_field(data: bytes, offset: int, field: bytes) -> bytes:
    """``data`` with bytes at ``offset`` replaced and the checksum recomputed (a forged payload)."""
    body = data[:offset] + field + data[offset + len(field):-4]
    return body + struct.pack("<I", zlib.crc32(body))


def test_dtype_field_has_one_spelling_per_dtype():
    """Only numpy's dtype.str of the supported dtypes is read (14 spellings), by lookup: any other
    3 bytes (e.g. "=u2", "u\t2", ",u2", which numpy would parse) are a PayloadError, nothing else."""
    data = payload.pack(payload.Header(0, np.dtype("<u2"), "C", (2, 3)), b"\x01\x00")
    alphabet = "<>|=!@ ,()[]'uifcbBHdU0123456789\t"
    accepted = {}
    for a in alphabet:
        for b in alphabet:
            for c in alphabet:
                field = (a + b + c).encode()
                try:
                    accepted[field] = payload.unpack(_with_field(data, 6, field))[0].dtype
                except PayloadError:
                    pass
    assert accepted == payload.DTYPE_FIELDS
    assert len(accepted) == 14 and all(dt.str.encode() == f for f, dt in accepted.items())


@pytest.mark.parametrize("shape", [(4096, 1024, 1024), (9,) * 32, (2 ** 32 - 1,) * 3, (1, 0, 5)])
def test_forged_shapes_are_refused_before_decoding(shape):
    """A 32-byte constant payload declaring a huge (or empty) chunk is refused unread."""
    forged = struct.pack("<4sBB3scB", b"INRC", 1, 0, b"|u1", b"C", len(shape)) + struct.pack(
        f"<{len(shape)}I", *shape) + struct.pack("<I", 1) + b"\x07"
    forged += struct.pack("<I", zlib.crc32(forged))
    with pytest.raises(PayloadError, match="beyond the limit|empty chunk"):
        decode(forged)


def test_chunk_byte_limit_is_configurable(monkeypatch):
    data = payload.pack(payload.Header(0, np.dtype("<u2"), "C", (4, 4)), b"\x01\x00")
    assert decode(data).shape == (4, 4)
    monkeypatch.setattr(payload, "MAX_CHUNK_BYTES", 31)
    with pytest.raises(PayloadError, match="32 bytes, beyond the limit of 31"):
        decode(data)
    monkeypatch.setenv("INR_CODECS_MAX_CHUNK_BYTES", "4096")
    assert payload._max_chunk_bytes() == 4096
    for bad in ("0", "2GB", "-5"):
        monkeypatch.setenv("INR_CODECS_MAX_CHUNK_BYTES", bad)
        with pytest.raises(ValueError, match="INR_CODECS_MAX_CHUNK_BYTES"):
            payload._max_chunk_bytes()


def test_numcodecs_decode_into_out_refuses_another_dtype_or_shape():
    """numcodecs' decode(buf, out=...) checks the header against ``out`` before decoding (a
    uint16 chunk would otherwise be bit-cast into an int16 or float32 buffer of its size)."""
    from inr_codecs import SIRENCodec
    codec = SIRENCodec(4)
    data = payload.pack(payload.Header(0, np.dtype("<u2"), "C", (4, 8)), struct.pack("<H", 33625))
    out = np.empty((4, 8), np.uint16)
    codec.decode(data, out=out)
    assert (out == 33625).all()
    flat = bytearray(64)
    codec.decode(data, out=flat)                        # a raw buffer of its size
    assert np.frombuffer(flat, np.uint16).tolist() == [33625] * 32
    for wrong in (np.empty((4, 8), np.int16), np.empty((8, 4), np.uint16), np.empty(16, np.float32),
                  np.empty(32, np.int16), bytearray(63)):
        with pytest.raises(PayloadError, match="payload holds a"):
            codec.decode(data, out=wrong)
