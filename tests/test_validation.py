"""Hardening (issue 13, item 6): every constructor argument is checked when the codec is made,
with a message naming it; chunks that cannot be stored faithfully are refused with a clear error
before any fitting (float64 ranges beyond what normalisation handles, empty and 0-d chunks);
constant chunks and float32 configuration values behave as documented."""
import numcodecs
import numpy as np
import pytest
from conftest import fast_codec, fast_sci

from inr_codecs import LatentGridCodec, SCICodec, SIRENCodec, decode
from inr_codecs import payload as payload_mod
from inr_codecs.codec import check_range
from inr_codecs.methods.sci import format as sci_format
from inr_codecs.methods.siren import format as siren_format

# --- integer arguments ----------------------------------------------------------------------

FRACTIONAL = [
    (SIRENCodec, "depth", 2.9), (SIRENCodec, "steps", 1.7), (SIRENCodec, "bits", 8.7), (SIRENCodec, "width", 16.5),
    (SIRENCodec, "batch_size", 100.5), (SIRENCodec, "seed", 0.5), (SIRENCodec, "plateau_steps", 20.5),
    (SCICodec, "depth", 3.5), (SCICodec, "M", 1.5), (SCICodec, "a_max", 2.5), (SCICodec, "levels", 1.5),
    (SCICodec, "bits", 7.9),
    (LatentGridCodec, "levels", 2.5), (LatentGridCodec, "first_level", 0.5), (LatentGridCodec, "latent_max", 3.5),
    (LatentGridCodec, "context_width", 4.5), (LatentGridCodec, "steps", np.float32(1.5)),
]


@pytest.mark.parametrize("cls, key, value", FRACTIONAL)
def test_fractional_integer_arguments_are_refused_not_truncated(cls, key, value):
    with pytest.raises(ValueError, match=rf"^{key} must be an integer, not .*fractional"):
        cls(8, **{key: value})


@pytest.mark.parametrize("key", ["depth", "steps", "bits", "width", "batch_size", "seed", "plateau_steps"])
@pytest.mark.parametrize("value", [True, np.bool_(False), "12", None, [12]])
def test_integer_arguments_refuse_bools_strings_and_containers(key, value):
    if value is None and key in ("width", "bits", "plateau_steps"):
        pytest.skip(f"{key}=None is a valid setting")
    with pytest.raises(ValueError, match=rf"^{key} must be an integer, not "):
        SIRENCodec(8, **{key: value})


def test_latent_grid_hidden_widths_must_be_integers():
    with pytest.raises(ValueError, match="hidden widths must be an integer, not 8.5"):
        LatentGridCodec(8, hidden=[16, 8.5])
    with pytest.raises(ValueError, match="hidden must be a sequence"):
        LatentGridCodec(8, hidden=16)
    assert LatentGridCodec(8, hidden=(np.int64(16), 8.0)).hidden == [16, 8]


def test_integral_values_of_any_numeric_type_are_stored_as_int():
    c = SIRENCodec(8, depth=3.0, steps=1e3, bits=np.int16(7), width=np.uint8(16), seed=np.int64(3))
    assert (c.depth, c.steps, c.bits, c.width, c.seed) == (3, 1000, 7, 16, 3)
    assert all(type(v) is int for v in (c.depth, c.steps, c.bits, c.width, c.seed))
    s = SCICodec(8, M=2.0, a_max=np.int32(4), levels=1.0)
    assert (s.M, s.a_max, s.levels) == (2, 4, 1) and all(type(v) is int for v in (s.M, s.a_max, s.levels))


def test_seed_is_checked_at_construction():
    for bad in (-1, 2 ** 63, True):
        with pytest.raises(ValueError, match="^seed must be an integer"):
            SIRENCodec(8, seed=bad)
    with pytest.raises(ValueError, match="^seed must be an integer in 0..9223372036854775807, not -1"):
        LatentGridCodec(8, seed=-1)
    assert SCICodec(8, seed=2 ** 63 - 1).seed == 2 ** 63 - 1


# --- real arguments -------------------------------------------------------------------------

@pytest.mark.parametrize("value", [True, np.bool_(True), "64", None, [64], float("nan"), float("inf"), 0.5])
def test_ratio_must_be_a_real_number_at_least_one(value):
    with pytest.raises(ValueError, match="^ratio must be"):
        SIRENCodec(value)


def test_ratio_accepts_numpy_numbers():
    assert SIRENCodec(np.float32(8)).ratio == 8.0 and SCICodec(np.int64(16)).ratio == 16.0


@pytest.mark.parametrize("cls, key, value, match", [
    (SIRENCodec, "w0", 1e39, "w0 must be at most 3.4028235e\\+38 in magnitude .payloads store it as float32"),
    (SIRENCodec, "w0", 1e-50, "w0 must be > 0, not 1e-50 .0 as float32"),
    (SIRENCodec, "w0", True, "w0 must be a real number, not True"),
    (SIRENCodec, "w0", "20", "w0 must be a real number"),
    (SCICodec, "w0", 3.5e38, "w0 must be at most"),
    (SCICodec, "fr", 1e39, "fr must be at most 3.4028235e\\+38"),
    (SCICodec, "fr", -1.0, "fr must be > 0"),
    (SCICodec, "deblock", 1e39, "deblock must be 'auto', 'off' or a strength >= 0 .* not 1e\\+39"),
    (SCICodec, "deblock", True, "deblock must be 'auto', 'off' or a strength >= 0 .* not True"),
    (SCICodec, "deblock", -0.1, "deblock must be"),
    (SCICodec, "deblock", "on", "deblock must be"),
    (SIRENCodec, "lr", float("inf"), "lr must be a finite number"),
    (SIRENCodec, "lr", 0, "lr must be > 0"),
    (SIRENCodec, "lr", True, "lr must be a real number"),
    (SIRENCodec, "qat_fraction", 1.0, "qat_fraction must be < 1"),
    (SIRENCodec, "target_psnr", float("inf"), "target_psnr must be a finite number"),
    (SIRENCodec, "target_psnr", True, "target_psnr must be a real number"),
    (LatentGridCodec, "psnr", True, "psnr must be a real number, not True"),
    (LatentGridCodec, "psnr", float("inf"), "psnr must be a finite number"),
])
def test_real_arguments(cls, key, value, match):
    with pytest.raises(ValueError, match=match):
        cls(8, **{key: value})


def test_flags_and_device_are_checked():
    with pytest.raises(ValueError, match="shared must be True or False, not 'no'"):
        LatentGridCodec(8, shared="no")
    with pytest.raises(ValueError, match="conv_stage must be True or False, not 1"):
        LatentGridCodec(8, conv_stage=1)
    for bad in ("cuda:x", "cuda0", 0):
        with pytest.raises(ValueError, match="device must be"):
            SIRENCodec(8, device=bad)


def test_configuration_keeps_the_value_given_and_payloads_store_float32(tmp_path):
    """w0, fr and deblock are stored as float32 in payloads; the configuration (metadata, repr)
    keeps the user's value, and the fit and the payload use its float32 value."""
    s = SCICodec(8, fr=2.2, w0=20.1, deblock=0.3)
    assert s.get_config()["fr"] == 2.2 and "fr=2.2," in repr(s) and s.get_config()["w0"] == 20.1
    assert s.get_config()["deblock"] == 0.3
    assert numcodecs.get_codec(s.get_config()) == s
    c = SIRENCodec(4, w0=20.1, steps=2, device="cpu")
    assert c.get_config()["w0"] == 20.1 and "w0=20.1," in repr(c)
    x = np.linspace(0, 1, 1024, dtype=np.float32).reshape(32, 32)
    assert siren_format.describe(c.encode(x)).w0 == float(np.float32(20.1))
    body = sci_format.describe(fast_sci(4, steps=2, w0=20.1, fr=2.2, deblock=0.3).encode(x))
    assert (body.w0, body.fr, body.deblock) == tuple(float(np.float32(v)) for v in (20.1, 2.2, 0.3))
    # same payload as the float32 value given directly: the fit uses what is stored
    assert c.encode(x) == fast_codec(4, w0=float(np.float32(20.1)), steps=2, device="cpu").encode(x)


# --- chunks -------------------------------------------------------------------------------------

@pytest.mark.parametrize("values, why", [
    ([-1.7e308, 1.7e308], "hi - lo overflows float64"),
    ([1e308, 1.5e308], "lo \\+ hi overflows float64"),
    ([-1.5e308, -1e308], "lo \\+ hi overflows float64"),
    ([0.0, 5e-324], "\\(hi - lo\\) / 2 = 0 is below the smallest normal float64"),
    ([1e-310, 3e-310], "\\(hi - lo\\) / 2 = 1e-310 is below the smallest normal float64"),
])
@pytest.mark.parametrize("make", [fast_codec, fast_sci, lambda: LatentGridCodec(4, steps=2, device="cpu")])
def test_float64_ranges_that_do_not_normalise_are_refused(values, why, make):
    x = np.resize(np.array(values, np.float64), (8, 8))
    with pytest.raises(ValueError, match=f"chunk values span .*: {why}.*rescale the data"):
        make().encode(x)


def test_the_widest_and_narrowest_float64_ranges_that_normalise_round_trip():
    check_range(-8e307, 8e307)
    check_range(0.0, 2 * float(np.finfo(np.float64).tiny))
    x = np.linspace(-8e307, 8e307, 1024).reshape(32, 32)
    y = decode(fast_codec(4, steps=30).encode(x))
    assert np.isfinite(y).all() and np.corrcoef(x.ravel() / 1e307, y.ravel() / 1e307)[0, 1] > 0.9
    assert not np.isin(y, [x.min(), x.max()]).all()


def test_constant_chunks_are_exact_and_zeros_of_both_signs_take_the_first_ones_sign():
    """Documented: a chunk whose values all compare equal is a constant chunk, stored as its
    first element (index (0, ..., 0)); zeros of both signs compare equal, so they come back with
    that element's sign."""
    for first in (-0.0, 0.0):
        x = np.zeros((8, 8), np.float32)
        x[1::2] = -0.0
        x[0, 0] = first
        p = fast_codec().encode(x)
        assert payload_mod.unpack(p)[0].method == 0
        y = decode(p)
        assert np.array_equal(np.signbit(y), np.full(x.shape, np.signbit(first)))
    for value in (np.float64(-1.2345e-300), np.float32(3.4e38), np.int32(-7), np.uint16(65535)):
        x = np.full((4, 5), value)
        assert decode(fast_sci().encode(x)).tobytes() == x.tobytes()


@pytest.mark.parametrize("shape", [(0,), (4, 0), (0, 3, 3)])
def test_empty_chunks_are_refused_clearly(shape):
    for codec in (fast_codec(), fast_sci(), LatentGridCodec(4)):
        with pytest.raises(ValueError, match=rf"chunk of shape \({shape[0]}, ?.*\) is empty"):
            codec.encode(np.zeros(shape, np.uint16))
        with pytest.raises(ValueError, match="is empty"):
            codec.check_chunk(shape, "uint16")


def test_zero_dimensional_chunks_are_refused():
    """Payloads hold chunks of 1 to 32 axes: a 0-d chunk would come back as shape (1,)."""
    for codec in (fast_codec(), fast_sci(), LatentGridCodec(4)):
        with pytest.raises(ValueError, match="chunk is 0-d .* 1 to 32 axes"):
            codec.encode(np.float32(3))
        with pytest.raises(ValueError, match="chunk is 0-d"):
            codec.encode_batch([np.ones(4, np.float32), np.array(5, np.uint8)])
        with pytest.raises(ValueError, match="chunk is 0-d"):
            codec.check_chunk((), "uint8")
    with pytest.raises(ValueError, match="33 axes"):
        fast_codec().encode(np.zeros((1,) * 33, np.uint8))
