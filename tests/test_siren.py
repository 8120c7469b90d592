"""SIRENCodec: round trips, budget, inputs, quality on real data."""
import dataclasses

import numpy as np
import pytest
from conftest import fast_codec, smooth_volume
from hypothesis import assume, given
from hypothesis import strategies as st

from inr_codecs import BudgetError, SIRENCodec, decode, payload, registry
from inr_codecs.methods import siren
from inr_codecs.metrics import psnr
from inr_codecs.methods.siren import describe
from inr_codecs.methods.siren.encoder import MIN_WIDTH

DTYPES = ["uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("order", ["C", "F"])
def test_round_trip_dtype_and_order(dtype, order):
    x = np.asarray(smooth_volume((8, 24, 24), dtype), order=order)
    codec = fast_codec(ratio=4, steps=60)
    p = codec.encode(x)
    y = codec.decode(p)
    assert y.dtype == x.dtype and y.shape == x.shape
    assert y.flags.f_contiguous if order == "F" else y.flags.c_contiguous
    # clipped to the chunk's range; integers are the rounded (not truncated) network values
    assert y.min() >= x.min() and y.max() <= x.max()
    if x.dtype.kind in "iu":
        header, body = payload.unpack(p)
        as_float = siren.decode_body(dataclasses.replace(header, dtype=np.dtype("f8")), payload.Reader(body))
        assert np.array_equal(np.ravel(y, order="C"), np.rint(as_float).astype(x.dtype))
        assert not np.array_equal(np.ravel(y, order="C"), np.trunc(as_float).astype(x.dtype))
    # the fit is a fit, not noise: clearly better than predicting the mean
    assert psnr(x, y) > psnr(x, np.full_like(x, x.mean())) + 3
    assert len(p) <= x.nbytes // 4


def test_decoded_values_round_half_even_and_clip():
    from inr_codecs.codec import denormalise
    y = np.array([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0], np.float32)
    out = denormalise(y, 0.0, 10.0, np.dtype("uint8"))
    assert out.tolist() == [0, 0, 5, 8, 10, 10]  # 7.5 -> 8 (half to even), clipped at 0 and 10


@pytest.mark.parametrize("shape", [(64, 48), (1, 1, 16, 16, 16), (4, 6, 8, 8), (1, 3, 1, 32, 32)])
def test_round_trip_nd_and_singleton_axes(shape):
    x = smooth_volume(shape, "uint16")
    codec = fast_codec(ratio=4, steps=60)
    y = codec.decode(codec.encode(x))
    assert y.shape == x.shape
    assert psnr(x, y) > psnr(x, np.full_like(x, x.mean())) + 3


@pytest.mark.parametrize("dtype", DTYPES)
def test_constant_chunks_are_exact_without_a_network(dtype):
    x = np.full((8, 16, 16), np.array(7, dtype=dtype) if dtype != "int8" else -3, dtype=dtype)
    p = fast_codec().encode(x)
    header, _ = payload.unpack(p)
    assert registry.get(header.method).name == "constant"
    assert np.array_equal(decode(p), x) and decode(p).dtype == x.dtype


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused(bad):
    x = np.ones((8, 16, 16), np.float32)
    x[3, 4, 5] = bad
    with pytest.raises(ValueError, match="NaN/Inf"):
        fast_codec().encode(x)


def test_budget_refusal_names_what_would_work():
    with pytest.raises(BudgetError) as e:
        SIRENCodec(ratio=256).check_chunk((16, 16, 16), "uint16")
    msg = str(e.value)
    assert "ratio 256" in msg and "ratio <=" in msg and "voxels" in msg
    # ... and what it names does work
    max_ratio = float(msg.split("ratio <= ")[1].split(",")[0])
    SIRENCodec(ratio=max_ratio).check_chunk((16, 16, 16), "uint16")
    with pytest.raises(BudgetError, match="chunks of >="):
        SIRENCodec(ratio=2).check_chunk((4, 4), "uint8")


@given(shape=st.lists(st.integers(4, 24), min_size=2, max_size=4),
       ratio=st.floats(1, 32), dtype=st.sampled_from(["uint8", "uint16", "float32", "float64"]),
       encoding=st.sampled_from(["quantised", "float16"]), bits=st.sampled_from([None, 4, 8, 12]))
def test_ratio_is_a_hard_ceiling(shape, ratio, dtype, encoding, bits):
    x = smooth_volume(tuple(shape), dtype, seed=len(shape))
    codec = fast_codec(ratio=ratio, steps=2, encoding=encoding, bits=bits)
    try:
        codec.check_chunk(x.shape, x.dtype)
        feasible = True
    except BudgetError:
        feasible = False
    assume(feasible)   # refusals are tested above; half of these draws are storable
    p = codec.encode(x)
    assert len(p) <= int(x.nbytes // ratio)
    assert codec.decode(p).shape == x.shape


def test_width_is_solved_from_the_budget():
    x = smooth_volume((16, 32, 32), "uint16")
    small, large = (describe(fast_codec(ratio=r).encode(x)).width for r in (32, 8))
    assert MIN_WIDTH <= small < large


def test_same_seed_same_payload_and_seed_matters():
    x = smooth_volume((8, 16, 16), "float32")
    assert fast_codec(seed=1).encode(x) == fast_codec(seed=1).encode(x)
    assert fast_codec(seed=1).encode(x) != fast_codec(seed=2).encode(x)


def test_auto_bits_picks_a_candidate_and_fits():
    x = smooth_volume((16, 32, 32), "uint16")
    codec = fast_codec(ratio=16, bits=None, steps=20)
    p = codec.encode(x)
    assert 6 <= describe(p).bits <= 16 and len(p) <= x.nbytes // 16


def test_config_round_trip_and_validation():
    c = SIRENCodec(ratio=32, depth=4, w0=25, bits=7, steps=10)
    cfg = c.get_config()
    assert cfg["id"] == "inr_codecs.siren"
    from numcodecs import get_codec
    assert get_codec(cfg) == c
    for bad in [dict(ratio=0.5), dict(ratio="x"), dict(ratio=8, bits=1), dict(ratio=8, steps=0),
                dict(ratio=8, device="tpu"), dict(ratio=8, encoding="png"), dict(ratio=8, optimizer="sgd")]:
        with pytest.raises(ValueError):
            SIRENCodec(**bad)


def test_quality_floor_on_real_confocal_crop(nuclei_crop):
    """16x64x64 real nuclei at 16x, 300 CPU steps, default 8 bits.

    Measured 29.3 dB on 2 CPU cores (29.7 dB with bits=None). On this crop a mean predictor
    gets 16.5 dB and downsampling to the same 16x (2x4x2 block means, trilinear back) 26.5 dB;
    8x downsampling 28.6 dB. The 28 dB floor needs a fit that beats equal-rate downsampling,
    with 1.3 dB of margin for BLAS and platform differences.
    """
    codec = SIRENCodec(ratio=16, steps=300, device="cpu")
    p = codec.encode(nuclei_crop)
    assert len(p) <= nuclei_crop.nbytes // 16
    assert psnr(nuclei_crop, codec.decode(p)) > 28.0


def _cuda():
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.skipif(_cuda(), reason="checks the refusal on machines without CUDA")
def test_cuda_requested_without_cuda_is_a_clear_error():
    with pytest.raises(RuntimeError, match="no CUDA device"):
        fast_codec(device="cuda").encode(smooth_volume((8, 24, 24), "uint16"))


@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
def test_cuda_fit_decodes_on_numpy():
    x = smooth_volume((16, 32, 32), "uint16")
    p = fast_codec(ratio=8, steps=200, device="cuda").encode(x)
    y = decode(p)
    assert len(p) <= x.nbytes // 8
    assert psnr(x, y) > psnr(x, np.full_like(x, x.mean())) + 3
