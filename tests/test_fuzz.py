"""Untrusted payloads (issue 13, ``docs/format.md`` 7): what a forged or corrupt payload can do.

The crafted cases are those of the fuzzing report (``shared/notes/fuzzing.md``), each of which
decoded silently, hung, exhausted memory or raised another exception type before; the mutation
run is a short version of ``tests/fuzz/run.py``.
"""
import hashlib
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
from conftest import DATA
from fuzzing import check, decode_seeds, fix_crc, header_end, make_seeds, mutate, outcome

from inr_codecs import PayloadError, decode, payload, quant
from inr_codecs.codec import pack_range
from inr_codecs.methods.sci import format as sci
from inr_codecs.methods.siren import format as siren
from inr_codecs.nn import ACT_BITS, FixedSiren, fixed_cos, siren_forward, siren_init, siren_shapes


def _payload(method, dtype, shape, body, order="C"):
    return payload.pack(payload.Header(method, np.dtype(dtype), order, tuple(shape)), body)


def _siren_body(depth, width, encoding=0, bits=8, w0=30.0, lo=0.0, hi=1.0, tensors=None):
    """A SIREN body with the given fields; ``tensors`` its raw tensor bytes (default: quantised
    side information of steps 0.01 and sigmas 0.25, and an empty stream)."""
    if tensors is None:
        n = 2 * (depth + 1)
        tensors = struct.pack(f"<{2 * n}f", *[0.01, 0.25] * n) + struct.pack("<I", 0)
    return pack_range(lo, hi) + siren.FIXED.pack(0, w0, depth, width, encoding, bits) + tensors


@pytest.mark.parametrize("width, depth", [(1024, 6), (4096, 8), (65535, 255)])
def test_network_larger_than_its_stream_is_refused_unread(width, depth):
    """5.2 M, 117 M and 1.1 G weights declared with an empty stream: decoded silently, MemoryError
    after 5 s, or MemoryError; now refused before anything is decoded or allocated."""
    data = _payload(1, "<u2", (16, 32, 32), _siren_body(depth, width))
    with pytest.raises(PayloadError, match="more than a stream of 0 words can hold"):
        decode(data)


def test_stream_bound_admits_every_valid_stream():
    """The bound of format.md 6 never refuses what constriction writes: cheapest symbols, the
    model's own distribution, uniform symbols, sigma far off the data, and runs of -Q at the end."""
    import constriction
    rng = np.random.default_rng(0)
    for trial in range(300):
        bits = int(rng.integers(2, 17))
        q_max = quant.levels(bits)
        n = int(rng.integers(1, 3000))
        sigma = float(np.float32(rng.choice([0.25, rng.uniform(0.25, 3), rng.uniform(0.25, q_max),
                                             rng.uniform(q_max, 4 * q_max + 1)])))
        sym = [np.zeros(n), np.rint(rng.normal(0, sigma, n)), rng.integers(-q_max, q_max + 1, n),
               np.concatenate([rng.integers(-q_max, q_max + 1, n), np.full(quant.FREE_SYMBOLS, -q_max)])][trial % 4]
        sym = np.clip(sym, -q_max, q_max).astype(np.int32)
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(sym, constriction.stream.model.QuantizedGaussian(-q_max, q_max),
                             np.zeros(sym.size, np.float32), np.full(sym.size, sigma, np.float32))
        words = coder.get_compressed().size
        assert quant.stream_bits_needed([sym.size], [sigma], q_max) <= 32 * (words + 2), (bits, sigma, trial)


def test_invalid_stream_and_left_over_data_are_payload_errors():
    """constriction's own ValueError (a stream not ending in a zero word) and words left over
    after the last weight are PayloadErrors."""
    n = 2 * 2
    side = struct.pack(f"<{2 * n}f", *[0.01, 30.0] * n)
    for words, match in (([0], "corrupt"), ([5, 0, 7], "corrupt|left over")):
        data = _payload(1, "<u2", (8, 8), _siren_body(1, 1, tensors=side + struct.pack(
            f"<I{len(words)}I", len(words), *words)))
        with pytest.raises(PayloadError, match=match):
            decode(data)


@pytest.mark.parametrize("shape", [(9,) * 32, (8,) * 20])
def test_sci_split_bomb_is_refused_before_making_children(shape, monkeypatch):
    """One split flag on a node of 32 (or 20) splittable axes asked for 2**32 children (and np.prod
    wrapped around); the size limit refuses such shapes, and past it (a huge limit) the split is
    refused before any child is made."""
    body = (pack_range(0, 1) + sci.FIXED.pack(0, 30.0, 2, 1.0, 0, 8, 0.0, 1) + b"\x80")
    limit = payload.MAX_CHUNK_BYTES
    monkeypatch.setattr(payload, "MAX_CHUNK_BYTES", 2 ** 300)
    data = _payload(2, "u1", shape, body)              # forged: no writer makes it
    with pytest.raises(PayloadError, match="partition flags end before the tree does"):
        decode(data)
    monkeypatch.setattr(payload, "MAX_CHUNK_BYTES", limit)
    with pytest.raises(PayloadError, match="beyond the limit"):
        decode(data)


def test_non_finite_weights_constants_and_ranges_are_refused():
    """float16 inf weights gave 16,384 NaN voxels, lo/hi = -/+1e300 in a float32 chunk gave inf,
    a NaN constant decoded as NaN: refused."""
    shapes = siren_shapes(2, 4, 1)
    inf16 = b"".join(np.full(int(np.prod(s)), np.inf if i == 0 else 0.5, "<f2").tobytes()
                     for i, s in enumerate(shapes))
    with pytest.raises(PayloadError, match="non-finite float16"):
        decode(_payload(1, "<f4", (8, 8), _siren_body(1, 4, encoding=1, bits=0, tensors=inf16)))
    ok16 = inf16.replace(np.array(np.inf, "<f2").tobytes(), np.array(0.5, "<f2").tobytes())
    assert np.isfinite(decode(_payload(1, "<f4", (8, 8), _siren_body(1, 4, encoding=1, bits=0, tensors=ok16)))).all()
    with pytest.raises(PayloadError, match="beyond the range of its dtype"):
        decode(_payload(1, "<f4", (8, 8), _siren_body(1, 4, encoding=1, bits=0, lo=-1e300, hi=1e300, tensors=ok16)))
    with pytest.raises(PayloadError, match="beyond the range of its dtype"):
        decode(_payload(1, "u1", (8, 8), _siren_body(1, 4, encoding=1, bits=0, lo=0, hi=300, tensors=ok16)))
    with pytest.raises(PayloadError, match="bad value range"):
        decode(_payload(1, "<f8", (8, 8), _siren_body(1, 4, encoding=1, bits=0, lo=-1.7e308, hi=1.7e308,
                                                      tensors=ok16)))
    with pytest.raises(PayloadError, match="non-finite value"):
        decode(_payload(0, "<f4", (4, 4), np.array(np.nan, "<f4").tobytes()))


def test_huge_w0_decodes_to_finite_values():
    """w0 = 3e38 gave 1,514 NaN voxels (sin of inf); the exact evaluation reduces any finite phase."""
    shapes = siren_shapes(2, 4, 1)
    w = b"".join(np.full(int(np.prod(s)), 0.5, "<f2").tobytes() for s in shapes)
    out = decode(_payload(1, "<f4", (8, 8), _siren_body(1, 4, encoding=1, bits=0, w0=3e38, tensors=w)))
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_one_voxel_network_payload_is_refused():
    """A SIREN or SCI payload for a (1, 1, 1) chunk (no coordinate axis) decoded without error."""
    w = b"".join(np.full(int(np.prod(s)), 0.5, "<f2").tobytes() for s in siren_shapes(0, 4, 1))
    with pytest.raises(PayloadError, match="one-voxel chunk"):
        decode(_payload(1, "<u2", (1, 1, 1), _siren_body(1, 4, encoding=1, bits=0, tensors=w)))


def test_fixed_cos_is_the_cosine():
    turns = np.linspace(-40, 40, 400_001)
    got = fixed_cos(turns.copy(), np.empty(turns.shape, np.float32)) / 2.0 ** ACT_BITS
    assert np.abs(got - np.cos(2 * np.pi * turns)).max() < 1e-6


def test_exact_siren_agrees_with_the_float_network():
    """nn.FixedSiren (the decoder) computes the network siren_forward (the fit) computes, within
    the fixed-point and polynomial rounding (outputs in about [-1, 1])."""
    rng = np.random.default_rng(3)
    for in_dim, width, depth, w0 in ((3, 32, 3, 30.0), (2, 16, 5, 20.0), (4, 8, 1, 30.0)):
        params = siren_init(rng, siren_shapes(in_dim, width, depth), w0)
        qs = [quant.quantise(p, 12) for p in params]
        exact = FixedSiren([(qs[i][0], qs[i][1], qs[i + 1][0], qs[i + 1][1]) for i in range(0, len(qs), 2)], w0)
        x = rng.uniform(-1, 1, (5000, in_dim))
        a0 = np.rint(x * 2.0 ** ACT_BITS)
        want = siren_forward(np, [quant.dequantise(q, s).astype(np.float64) for q, s in qs], a0 / 2.0 ** ACT_BITS, w0)
        got = exact(a0, np.empty(len(x)))
        assert np.abs(got - want[:, 0]).max() < 2e-5 * (1 + np.abs(want).max())


def test_decode_is_identical_across_blas_threads_and_kernels():
    """The same payload decodes to the same bits at 1 and 2 OpenBLAS threads and with OpenBLAS's
    Prescott (SSE3) kernels and numpy without AVX-512: SIREN, SCI (golden payloads) and the
    latent grid. (The float32 evaluation before differed at 0.1-0.2 % of voxels across kernels.)"""
    files = [DATA / "golden_v1_siren.bin", DATA / "golden_v1_sci.bin", DATA / "latent_grid_v1" / "nuclei_16x64x64_r64.bin"]
    code = ("import hashlib, sys, inr_codecs\n"
            "for f in sys.argv[1:]:\n"
            "    print(hashlib.sha256(inr_codecs.decode(open(f, 'rb').read()).tobytes()).hexdigest())\n")
    want = [hashlib.sha256(decode(f.read_bytes()).tobytes()).hexdigest() for f in files]
    for env in ({"OPENBLAS_NUM_THREADS": "1"}, {"OPENBLAS_NUM_THREADS": "2"},
                {"OPENBLAS_NUM_THREADS": "2", "OPENBLAS_CORETYPE": "Prescott",
                 "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR"}):
        out = subprocess.run([sys.executable, "-c", code, *map(str, files)], env={**os.environ, **env},
                             capture_output=True, text=True, check=True).stdout.split()
        assert out == want, env


@pytest.fixture(scope="module")
def seeds():
    pytest.importorskip("torch")
    s = make_seeds(small=True)
    return s, decode_seeds(s)


def test_mutated_payloads_raise_payload_error_or_decode_as_declared(seeds, monkeypatch):
    """600 mutants of valid payloads (every method, CRC fixed up or not), each decoded three ways:
    a PayloadError or an array of the declared shape and dtype with finite values, nothing else.
    (The chunk limit is set low, as a reader of small chunks would, to keep the run short.)"""
    monkeypatch.setattr(payload, "MAX_CHUNK_BYTES", 1 << 20)
    payloads, decoded = seeds
    names = sorted(payloads)
    others = [payloads[n] for n in names]
    rng = np.random.default_rng(13)
    results = {}
    for i in range(600):
        name = names[i % len(names)]
        kind, crc, data = mutate(rng, payloads[name], others)
        for way, res in outcome(data, decoded[name]).items():
            assert res["result"] in ("PayloadError", "ok"), (name, kind, crc, way, res)
            assert res.get("problem") is None, (name, kind, crc, way, res)
            results[res["result"]] = results.get(res["result"], 0) + 1
    assert results["PayloadError"] > 0 and results["ok"] > 0


def test_seeds_decode_cleanly(seeds):
    payloads, decoded = seeds
    for name, data in payloads.items():
        assert check(decoded[name], data) is None, name
        assert header_end(data) < len(data)
        assert fix_crc(data) == data


def test_zarr_v2_refuses_a_chunk_of_another_array(tmp_path):
    """A Zarr v2 array read a valid payload of another dtype, byte order or shape with the same
    byte count bit-cast (uint16 33625 as int16 -31911); the decoded chunk now refuses the view
    or reshape zarr applies. numcodecs' decode(out=) converts another byte order."""
    import shutil

    import zarr

    from inr_codecs import SIRENCodec
    x = (np.linspace(0, 3000, 16 * 32 * 32).reshape(16, 32, 32) + 30000).astype("<u2")
    arrays = {}
    for name, dtype, shape in (("a", "<u2", (16, 32, 32)), ("i2", "<i2", (16, 32, 32)), ("be", ">u2", (16, 32, 32)),
                               ("perm", "<u2", (32, 16, 32))):
        arrays[name] = zarr.create(store=str(tmp_path / name), shape=shape, chunks=shape, dtype=dtype,
                                   compressor=SIRENCodec(8, steps=3, device="cpu"), zarr_format=2)
    arrays["a"][...] = x
    good = arrays["a"][...]
    for name in ("i2", "be", "perm"):
        shutil.copy(tmp_path / "a" / "0.0.0", tmp_path / name / "0.0.0")
        with pytest.raises(PayloadError, match="refusing to read it as"):
            zarr.open_array(str(tmp_path / name))[...]
    data = (tmp_path / "a" / "0.0.0").read_bytes()
    codec = SIRENCodec(8)
    chunk = codec.decode(data)
    assert np.array_equal(chunk, good) and type(np.asarray(chunk)) is np.ndarray
    with pytest.raises(PayloadError):
        chunk.view(">u2")
    assert chunk[3:5].reshape(2, -1).shape == (2, 1024)         # slices are plain
    out = np.empty((16, 32, 32), ">u2")
    codec.decode(data, out=out)
    assert np.array_equal(out, good)
