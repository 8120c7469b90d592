"""Payload framing: header round trips, corruption and truncation always raise PayloadError."""
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
    h = payload.Header(method, dtype, order, tuple(shape))
    h2, body2 = payload.unpack(payload.pack(h, body))
    assert h2 == h and bytes(body2) == body


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
    """Payloads written by format v1 keep decoding to the same values."""
    got = decode((DATA / f"golden_v1_{method}.bin").read_bytes())
    want = np.load(DATA / f"golden_v1_{method}_decoded.npy")
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_unsupported_dtype_is_named():
    with pytest.raises(TypeError, match="complex128"):
        fast_codec().encode(np.zeros((4, 4), complex))
