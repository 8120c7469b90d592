"""Zarr v2 and v3 integration: round trips, sharding, config, entry points, partial reads, threads."""
import json
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import zarr
from conftest import fast_codec, fast_sci, fast_serializer, smooth_volume

from inr_codecs import BudgetError, LatentGridCodec, SIRENCodec, registry
from inr_codecs.metrics import psnr
from inr_codecs.zarr3 import LatentGridSerializer, SCISerializer, SIRENSerializer

SHAPE, CHUNKS = (20, 40, 36), (16, 32, 32)   # edge chunks on every axis


@pytest.fixture(scope="module")
def volume():
    return smooth_volume(SHAPE, "uint16")


def _write(path, volume, fmt, method="siren"):
    """Write ``volume`` with a codec as Zarr v2 (compressor) or v3 (serializer)."""
    if method == "sci":   # 4 equidistant blocks per full chunk
        codec = fast_sci(ratio=4, steps=60, a_max=4, partition="equidistant")
        serializer = SCISerializer(**{k: v for k, v in codec.get_config().items() if k != "id"})
    elif method == "latent_grid":
        codec = LatentGridCodec(16, steps=60, device="cpu")
        serializer = LatentGridSerializer(**{k: v for k, v in codec.get_config().items() if k != "id"})
    else:
        codec, serializer = fast_codec(ratio=8, steps=60), fast_serializer(ratio=8, steps=60)
    if fmt == 2:
        z = zarr.create(shape=SHAPE, chunks=CHUNKS, dtype=volume.dtype, zarr_format=2,
                        compressor=codec, store=path)
    else:
        z = zarr.create_array(path, shape=SHAPE, chunks=CHUNKS, dtype=volume.dtype, compressors=None,
                              serializer=serializer)
    z[:] = volume
    return z


def _check(z, x):
    y = z[:]
    assert y.dtype == x.dtype and y.shape == x.shape
    assert psnr(x, y) > psnr(x, np.full_like(x, x.mean())) + 3


@pytest.mark.parametrize("order", ["C", "F"])
def test_v2_compressor(tmp_path, volume, order):
    z = zarr.create(shape=SHAPE, chunks=CHUNKS, dtype=volume.dtype, order=order, zarr_format=2,
                    compressor=fast_codec(ratio=8, steps=60), store=str(tmp_path / "a.zarr"))
    z[:] = volume
    _check(zarr.open_array(str(tmp_path / "a.zarr"), mode="r"), volume)


def test_v3_serializer_and_sharding(tmp_path, volume):
    for name, kw in [("plain", {}), ("sharded", {"shards": (16, 64, 64)})]:
        path = str(tmp_path / f"{name}.zarr")
        z = zarr.create_array(path, shape=SHAPE, chunks=CHUNKS, dtype=volume.dtype,
                              serializer=fast_serializer(ratio=8, steps=60),
                              compressors=None, **kw)
        z[:] = volume
        _check(zarr.open_array(path, mode="r"), volume)


def test_latent_grid_v3_sharded(tmp_path, volume):
    path = str(tmp_path / "s.zarr")
    z = zarr.create_array(path, shape=SHAPE, chunks=CHUNKS, dtype=volume.dtype, compressors=None,
                          serializer=LatentGridSerializer(ratio=16, steps=60, device="cpu"), shards=(16, 64, 64))
    z[:] = volume
    _check(zarr.open_array(path, mode="r"), volume)
    d = json.loads(json.dumps(z.metadata.to_dict()))
    assert any(c.get("name") == "sharding_indexed" for c in d["codecs"])


def test_v3_validate_refuses_at_creation(tmp_path):
    with pytest.raises(BudgetError, match="ratio 512"):
        zarr.create_array(str(tmp_path / "x.zarr"), shape=(64, 64), chunks=(16, 16), dtype="uint16",
                          serializer=SIRENSerializer(ratio=512), compressors=None)
    assert not (tmp_path / "x.zarr" / "zarr.json").exists()
    with pytest.raises(TypeError, match="complex"):
        zarr.create_array(str(tmp_path / "y.zarr"), shape=(64, 64), chunks=(64, 64), dtype="complex64",
                          serializer=SIRENSerializer(ratio=4), compressors=None)


def test_v2_refuses_at_encode_and_keeps_written_data(tmp_path, volume):
    path = str(tmp_path / "a.zarr")
    z = zarr.create(shape=SHAPE, chunks=CHUNKS, dtype=volume.dtype, zarr_format=2,
                    compressor=fast_codec(ratio=8, steps=60), store=path)
    z[:16, :32, :32] = volume[:16, :32, :32]
    before = z[:16, :32, :32]
    bad = np.zeros_like(volume[:16, :32, :32]).astype(np.float32)
    zf = zarr.create(shape=SHAPE, chunks=CHUNKS, dtype="float32", zarr_format=2,
                     compressor=fast_codec(ratio=8, steps=60), store=str(tmp_path / "f.zarr"))
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        zf[:16, :32, :32] = bad
    assert np.array_equal(zarr.open_array(path)[:16, :32, :32], before)
    zb = zarr.create(shape=SHAPE, chunks=CHUNKS, dtype=volume.dtype, zarr_format=2,
                     compressor=fast_codec(ratio=2048), store=str(tmp_path / "b.zarr"))
    with pytest.raises(BudgetError, match="ratio 2048"):
        zb[:16, :32, :32] = volume[:16, :32, :32]


def test_sci_json_config_round_trip():
    v3 = SCISerializer(ratio=100, fr=1.0, a_max=9, allocation="equal", deblock=0.1)
    d = json.loads(json.dumps(v3.to_dict()))
    assert d["name"] == "inr_codecs.sci" and SCISerializer.from_dict(d) == v3
    assert zarr.registry.get_codec_class("inr_codecs.sci") is SCISerializer


def test_json_config_round_trip():
    v3 = SIRENSerializer(ratio=48, depth=5, bits=7, steps=99)
    d = json.loads(json.dumps(v3.to_dict()))
    assert d["name"] == "inr_codecs.siren"
    assert SIRENSerializer.from_dict(d) == v3 and hash(SIRENSerializer.from_dict(d)) == hash(v3)
    assert SIRENSerializer(ratio=48, depth=5, bits=6, steps=99) != v3
    v2 = SIRENCodec(ratio=48, depth=5, bits=7, steps=99)
    from numcodecs import get_codec
    assert get_codec(json.loads(json.dumps(v2.get_config()))) == v2
    assert d["configuration"] == {k: v for k, v in v2.get_config().items() if k != "id"}


@pytest.mark.parametrize("method", ["siren", "sci", "latent_grid"])
@pytest.mark.parametrize("fmt", [2, 3])
def test_fresh_process_reads_via_entry_points(tmp_path, volume, fmt, method):
    path = str(tmp_path / "a.zarr")
    z = _write(path, volume, fmt, method)
    _check(z, volume)
    expected = z[:]
    np.save(tmp_path / "expected.npy", expected)
    code = textwrap.dedent(f"""
        import sys, numpy as np, zarr, dask.array as da
        x = zarr.open_array({path!r}, mode="r")[:]
        assert np.array_equal(x, np.load({str(tmp_path / 'expected.npy')!r}))
        assert np.array_equal(da.from_zarr({path!r}).compute(scheduler="processes"), x)
        print("ok", "torch" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ok", "False"]


@pytest.mark.parametrize("fmt", [2, 3])
def test_slices_decode_only_touched_chunks(tmp_path, volume, monkeypatch, fmt):
    import dask.array as da
    path = str(tmp_path / "a.zarr")
    _write(path, volume, fmt)
    calls = []
    real = registry.decode

    def counting(buf):
        calls.append(1)
        return real(buf)
    monkeypatch.setattr(registry, "decode", counting)      # v2 and v3 both decode through it
    r = zarr.open_array(path, mode="r")
    r[2:5, 3:9, 1]                      # one chunk
    assert len(calls) == 1
    calls.clear()
    da.from_zarr(path)[10:14, 30:34, 0].compute(scheduler="threads")   # 2 chunks of 8
    assert len(calls) == 2
    calls.clear()
    r[:]
    assert len(calls) == 8


def test_concurrent_use_of_one_instance_matches_sequential():
    codec = fast_codec(ratio=8, steps=15)
    chunks = [smooth_volume((8, 24, 24), "uint16", seed=s) for s in range(4)]
    sequential = [codec.encode(c) for c in chunks]
    with ThreadPoolExecutor(4) as ex:
        parallel = list(ex.map(codec.encode, chunks))
        decoded = list(ex.map(codec.decode, parallel))
    assert parallel == sequential
    for p, d in zip(sequential, decoded):
        assert np.array_equal(codec.decode(p), d)


@pytest.mark.parametrize("fmt", [2, 3])
def test_zarr_reads_decode_at_most_decode_threads_chunks_at_once(tmp_path, volume, monkeypatch, fmt):
    """Decoding is CPU-bound: however many threads zarr reads with, at most DECODE_THREADS chunk
    decodes run at once (the others wait), and the read is complete."""
    import threading
    import time

    from inr_codecs import codec as codec_module
    path = str(tmp_path / "a.zarr")
    _write(path, volume, fmt)
    monkeypatch.setattr(codec_module, "decode_slots", threading.BoundedSemaphore(2))
    monkeypatch.setattr(sys.modules["inr_codecs.zarr3"], "decode_slots", codec_module.decode_slots)
    lock, running, peak = threading.Lock(), [0], [0]
    real = registry.decode

    def tracking(buf):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.02)                # long enough for zarr's other threads to start theirs
        try:
            return real(buf)
        finally:
            with lock:
                running[0] -= 1
    monkeypatch.setattr(registry, "decode", tracking)
    got = zarr.open_array(path, mode="r")[:]      # zarr's pool: cores + 4 threads, at least 5
    assert peak[0] == 2
    assert np.array_equal(got, zarr.open_array(path, mode="r")[:])


def test_decode_threads_setting_is_checked(monkeypatch):
    from inr_codecs.codec import _decode_threads
    monkeypatch.setenv("INR_CODECS_DECODE_THREADS", "3")
    assert _decode_threads() == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("INR_CODECS_DECODE_THREADS", bad)
        with pytest.raises(ValueError, match="INR_CODECS_DECODE_THREADS"):
            _decode_threads()


def test_v3_refuses_a_chunk_of_another_dtype_or_shape_before_decoding(tmp_path, monkeypatch):
    """A valid payload of another array (same byte count, other dtype or shape) in a v3 chunk is a
    PayloadError, raised from its header: the chunk is never decoded (nor bit-cast)."""
    import os

    from inr_codecs import PayloadError, payload
    path = str(tmp_path / "a.zarr")
    z = zarr.create_array(path, shape=(8, 16, 16), chunks=(8, 16, 16), dtype="uint16", compressors=None,
                          serializer=fast_serializer(ratio=4, steps=5))
    calls = []
    real = registry.decode
    monkeypatch.setattr(registry, "decode", lambda buf: calls.append(1) or real(buf))
    key = os.path.join(path, "c", "0", "0", "0")
    os.makedirs(os.path.dirname(key), exist_ok=True)
    for dtype, shape in (("<i2", (8, 16, 16)), ("<u2", (16, 8, 16)), ("<f4", (4, 16, 16))):
        with open(key, "wb") as f:
            f.write(payload.pack(payload.Header(0, np.dtype(dtype), "C", shape), np.ones(1, dtype).tobytes()))
        with pytest.raises(PayloadError, match="this array's chunks are"):
            z[:]
    assert not calls
    with open(key, "wb") as f:
        f.write(payload.pack(payload.Header(0, np.dtype("<u2"), "C", (8, 16, 16)), np.ones(1, "<u2").tobytes()))
    assert (z[:] == 1).all() and calls


def test_a_numcodecs_codec_in_v3_compressors_or_filters_says_where_it_goes(tmp_path):
    """zarr.create_array iterates over compressors= and filters= of a v3 array: a numcodecs
    codec there says to use its serializer (not zarr's "object is not iterable")."""
    for key in ("compressors", "filters"):
        with pytest.raises(TypeError, match=r"SIRENCodec is a numcodecs codec .* serializer=SIRENSerializer"):
            zarr.create_array(str(tmp_path / f"{key}.zarr"), shape=(32, 32), chunks=(32, 32), dtype="uint16",
                              **{key: SIRENCodec(ratio=4)})
    with pytest.raises(TypeError, match=r"serializer=SCISerializer\(\.\.\.same parameters\)"):
        zarr.create_array(str(tmp_path / "s.zarr"), shape=(32, 32), chunks=(32, 32), dtype="uint16",
                          compressors=fast_sci(ratio=4))
    # a bare codec stays a valid Zarr v2 compressor (a codec with __iter__ would be refused there)
    z = zarr.create_array(str(tmp_path / "v2.zarr"), shape=(32, 32), chunks=(32, 32), dtype="uint16",
                          zarr_format=2, compressors=fast_codec(ratio=2, steps=5))
    assert isinstance(z.metadata.compressor, SIRENCodec)
    z[:] = smooth_volume((32, 32), "uint16")


def test_v2_budget_error_at_the_first_write_says_the_metadata_exists(tmp_path, volume):
    """zarr gives a v2 compressor no chunk shape at creation (no validate hook for v2 arrays), so
    a ratio too high for the chunks shows at the first write, after .zarray is stored: the error
    says so and what to do."""
    path = tmp_path / "a.zarr"
    z = zarr.create_array(str(path), shape=SHAPE, chunks=CHUNKS, dtype=volume.dtype, zarr_format=2,
                          compressors=SIRENCodec(ratio=2000))
    assert (path / ".zarray").exists()
    with pytest.raises(BudgetError, match=r"ratio 2000 .*Zarr v2 array.*\(\.zarray\) is already stored.*"
                                          r"overwrite=True.*codec\.check_chunk\(chunks, dtype\)"):
        z[:16, :32, :32] = volume[:16, :32, :32]
    with pytest.raises(BudgetError, match="ratio 2000") as e:     # the check the message points to
        SIRENCodec(ratio=2000).check_chunk(CHUNKS, volume.dtype)
    assert ".zarray" not in str(e.value)


@pytest.mark.filterwarnings("ignore:Numcodecs codecs are not in the Zarr version 3 specification")
def test_v3_serializer_refuses_chunks_reshaped_by_filters(tmp_path, volume):
    """zarr's numcodecs filters (Delta, FixedScaleOffset, ...) hand the serializer flattened
    chunks: refused at the first write (the network would fit the filter's output, and the
    chunks would not read back); a transpose, which keeps the chunk whole, is fine."""
    from zarr.codecs import TransposeCodec
    from zarr.codecs.numcodecs import Delta
    x = smooth_volume((16, 32, 32), "uint16")
    z = zarr.create_array(str(tmp_path / "d.zarr"), shape=x.shape, chunks=x.shape, dtype=x.dtype,
                          serializer=fast_serializer(ratio=8, steps=5), compressors=None, filters=[Delta(dtype="u2")])
    with pytest.raises(ValueError, match=r"received a chunk of shape \(16384,\) for chunks of shape \(16, 32, 32\)"
                                         r".*filters=None"):
        z[:] = x
    z = zarr.create_array(str(tmp_path / "t.zarr"), shape=x.shape, chunks=x.shape, dtype=x.dtype,
                          serializer=fast_serializer(ratio=8, steps=60), compressors=None,
                          filters=[TransposeCodec(order=(2, 1, 0))])
    z[:] = x
    _check(z, x)


def test_zero_dimensional_arrays_are_refused(tmp_path):
    """Payloads hold chunks of 1 to 32 axes: a 0-d v3 array is refused when it is created, a 0-d
    v2 array (no creation hook) at its first write."""
    with pytest.raises(ValueError, match="chunk is 0-d"):
        zarr.create_array(str(tmp_path / "a.zarr"), shape=(), dtype="float32", serializer=SIRENSerializer(ratio=4),
                          compressors=None)
    z = zarr.create_array(str(tmp_path / "b.zarr"), shape=(), dtype="float32", zarr_format=2,
                          compressors=SIRENCodec(ratio=4))
    with pytest.raises(ValueError, match="chunk is 0-d"):
        z[()] = 3.0


def test_v2_filters_hand_the_compressor_flattened_values(tmp_path, monkeypatch):
    """Why a Zarr v2 filter cannot be detected by the codec (docs/guides/zarr-v2.md): zarr hands
    the compressor the last filter's output, a 1-D array of the array's dtype, the same as a
    chunk of a 1-D array, and nothing else (no metadata, no filters). Pins the documented
    behaviour: if zarr ever passes the chunk's shape, the codec could refuse filtered chunks."""
    import numcodecs

    from inr_codecs.codec import InrCodec
    seen = []
    real = InrCodec.encode_batch
    monkeypatch.setattr(InrCodec, "encode_batch", lambda self, chunks, **kw: seen.extend(
        (np.shape(c), np.asarray(c).dtype) for c in chunks) or real(self, chunks, **kw))
    x = smooth_volume((16, 32, 32), "uint16")
    for filters in (None, [numcodecs.Delta(dtype="u2")]):
        z = zarr.create_array(str(tmp_path / f"{filters is None}.zarr"), shape=x.shape, chunks=x.shape, dtype=x.dtype,
                              zarr_format=2, compressors=fast_codec(ratio=8, steps=5), filters=filters)
        z[:] = x
    assert seen == [((16, 32, 32), np.dtype("u2")), ((16384,), np.dtype("u2"))]
