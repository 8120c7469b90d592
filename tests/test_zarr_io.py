"""inr_codecs.zarr_io: payloads written straight into the store read back as zarr's own writes.

Every layout is checked against the same array written by zarr (``z[:] = vol``, same codec,
CPU, fixed seed: encoding is deterministic): the store must hold the same bytes key by key,
shards included (zarr lays inner chunks out in Morton order after or before the index; so does
Layout), and zarr must decode both alike.
"""
import math
import pickle
import re
import shutil

import numcodecs
import numpy as np
import pytest
import zarr
from conftest import fast_codec, fast_serializer, smooth_volume
from zarr.codecs import (
    BytesCodec,
    Crc32cCodec,
    ShardingCodec,
    TransposeCodec,
    ZstdCodec,
)

from inr_codecs import PayloadError, decode
from inr_codecs.zarr_io import EMPTY, ChunkError, Layout, _morton_order, check_array, read_chunk

SHAPE, CHUNKS, SHARDS = (6, 20, 40), (4, 16, 16), (4, 32, 32)   # edge chunks on every axis
# Shards: grid (2, 1, 2) of 1x2x2 chunks; shards (., 0, 1) hold an inner chunk (x 48..64)
# entirely outside the array.
FILL = 7
CODEC = {"ratio": 4, "depth": 3}          # (4, 16, 16) uint16 fits; ~0.05 s per chunk


def _volume():
    """A smooth volume with empty chunks: chunk (0, 0, 0) (so shard (0, 0, 0) is partly
    empty) and chunks (1, ., 2) (so shard (1, 0, 1) is entirely empty)."""
    vol = smooth_volume(SHAPE, "uint16")
    vol[0:4, 0:16, 0:16] = FILL
    vol[4:6, :, 32:40] = FILL
    return vol


EMPTY_CHUNKS = {(0, 0, 0), (1, 0, 2), (1, 1, 2)}

LAYOUTS = {
    "v2-C-dot": {"zarr_format": 2, "order": "C", "dimension_separator": "."},
    "v2-C-slash": {"zarr_format": 2, "order": "C", "dimension_separator": "/"},
    "v2-F-dot": {"zarr_format": 2, "order": "F", "dimension_separator": "."},
    "v2-F-slash": {"zarr_format": 2, "order": "F", "dimension_separator": "/", "dtype": ">u2"},
    "v3": {"zarr_format": 3},
    "v3-sharded": {"zarr_format": 3, "shards": SHARDS},
    "v3-sharded-start": {"zarr_format": 3, "shards": SHARDS, "index_location": "start"},
}


def _create(root, path, kind, shape=SHAPE, chunks=CHUNKS, dtype="uint16", fill=FILL, codec=CODEC):
    """An empty INR-coded array at ``root``/``path`` laid out as ``LAYOUTS[kind]``."""
    kw = dict(LAYOUTS[kind])
    store = zarr.storage.LocalStore(root)
    common = {"shape": shape, "chunks": chunks, "dtype": kw.pop("dtype", dtype), "fill_value": fill}
    if kw.pop("zarr_format") == 2:
        return zarr.create(store=store, path=path, zarr_format=2, compressor=fast_codec(**codec),
                           **common, **kw)
    serializer = fast_serializer(**codec)
    if "index_location" in kw:   # create_array has no index_location: spell out the sharding codec
        serializer = ShardingCodec(chunk_shape=chunks, codecs=[serializer],
                                   index_location=kw.pop("index_location"))
        common["chunks"] = kw.pop("shards")
    return zarr.create_array(store, name=path, serializer=serializer, compressors=None,
                             **common, **kw)


_ENCODED = {}


def _encode(layout, data):
    """``layout.codec.encode(layout.pad(data))``, memoised (layouts share chunk shapes)."""
    chunk = layout.pad(data)
    key = (chunk.tobytes(order="A"), chunk.dtype.str, chunk.flags.f_contiguous,
           layout.codec.get_config()["ratio"])
    if key not in _ENCODED:
        _ENCODED[key] = layout.codec.encode(chunk)
    return _ENCODED[key]


def _write_all(layout, vol):
    """Write every unit of ``vol`` through ``layout``; return the chunks found empty."""
    empty = set()
    for unit in layout.units():
        payloads = []
        for chunk in layout.unit_chunks(unit):
            data = vol[layout.chunk_region(chunk)]
            payloads.append(None if layout.is_empty(data) else _encode(layout, data))
            if payloads[-1] is None:
                empty.add(chunk)
        layout.write(unit, payloads)
    return empty


def _stored(root, path):
    """{key: bytes} of every chunk or shard of the array at ``root``/``path``."""
    base = root / path
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*"))
            if p.is_file() and p.name not in (".zarray", ".zattrs", "zarr.json")}


@pytest.fixture(scope="module", params=list(LAYOUTS))
def written(request, tmp_path_factory):
    """(layout, store root, kind): ``vol`` written via Layout at "ours", via zarr at "ref"."""
    root = tmp_path_factory.mktemp(request.param)
    vol = _volume()
    _create(root, "ref", request.param)[:] = vol
    layout = Layout.from_array(_create(root, "ours", request.param))
    assert _write_all(layout, vol) == EMPTY_CHUNKS
    return layout, root, request.param


def test_layout_attributes(written):
    layout, _, kind = written
    assert layout.shape == SHAPE and layout.chunks == CHUNKS
    assert layout.dtype == np.dtype(LAYOUTS[kind].get("dtype", "uint16"))   # byte order kept
    assert layout.fill_value == FILL and layout.fill_value.dtype == np.uint16
    assert layout.order == LAYOUTS[kind].get("order", "C")
    assert layout.sharded == ("shards" in LAYOUTS[kind])
    assert layout.write_shape == (SHARDS if layout.sharded else CHUNKS)
    assert layout.zarr_format == LAYOUTS[kind]["zarr_format"] and not layout.in_memory
    assert layout.codec.get_config() == fast_codec(**CODEC).get_config()
    units = layout.units()
    assert units == sorted(units) and len(units) == (4 if layout.sharded else 12)
    chunks = [c for u in units for c in layout.unit_chunks(u)]
    assert sorted(chunks) == [tuple(c) for c in np.ndindex(2, 2, 3)]   # each chunk once
    for unit in units:
        region = layout.unit_region(unit)
        for chunk in layout.unit_chunks(unit):
            r = layout.chunk_region(chunk)
            assert all(u.start <= c.start and c.stop <= u.stop for u, c in zip(region, r))
    assert layout.chunk_region((1, 1, 2)) == (slice(4, 6), slice(16, 20), slice(32, 40))
    if layout.sharded:
        assert layout.unit_region((1, 0, 1)) == (slice(4, 6), slice(0, 20), slice(32, 40))
        assert layout.unit_chunks((1, 0, 1)) == [(1, 0, 2), (1, 1, 2)]   # not (., ., 3)


def test_matches_zarr_writes(written):
    layout, root, kind = written
    ours, ref = _stored(root, "ours"), _stored(root, "ref")
    sep = LAYOUTS[kind].get("dimension_separator", "/")
    expected_keys = {layout.unit_key(u)[len("ours/"):] for u in layout.units()
                     if not set(layout.unit_chunks(u)) <= EMPTY_CHUNKS}
    assert set(ours) == set(ref) == expected_keys
    assert all(sep in k for k in ours) and all(k.startswith("c/") == (layout.zarr_format == 3)
                                               for k in ours)
    for key in ref:   # identical bytes: payloads, and for shards their layout, index and crc32c
        assert ours[key] == ref[key], key
    decoded = zarr.open_array(str(root / "ours"), mode="r")[:]
    assert np.array_equal(decoded, zarr.open_array(str(root / "ref"), mode="r")[:])
    if layout.order == "F":   # F payloads decode to F chunks; still the same values
        assert zarr.open_array(str(root / "ours"), mode="r").order == "F"


def test_empty_chunks_are_not_stored(written):
    layout, root, _ = written
    vol = _volume()
    decoded = zarr.open_array(str(root / "ours"), mode="r")[:]
    assert sum(len(layout.unit_chunks(u)) for u in layout.units()) == math.prod(layout.chunk_grid)
    for unit in layout.units():
        stored = layout.read_payloads(unit)
        for chunk, p in zip(layout.unit_chunks(unit), stored):
            if chunk in EMPTY_CHUNKS:
                assert p is None
                assert (decoded[layout.chunk_region(chunk)] == FILL).all()
            else:
                assert p == _encode(layout, vol[layout.chunk_region(chunk)])
        assert layout.status(unit) == ("missing" if all(p is None for p in stored) else "ok")
    if layout.sharded:   # one inner chunk empty in shard (0, 0, 0); its index entry says so
        shard = (root / layout.unit_key((0, 0, 0))).read_bytes()
        at = len(shard) - 68 if layout.index_location == "end" else 0   # 4x(offset, n) + crc
        index = np.frombuffer(shard[at:at + 64], "<u8").reshape(1, 2, 2, 2)
        assert (index[0, 0, 0] == EMPTY).all() and (index[0, 1, 1] != EMPTY).all()
        assert not (root / layout.unit_key((1, 0, 1))).exists()
    else:
        assert not (root / layout.unit_key((0, 0, 0))).exists()


def _copy(root, tmp_path):
    """The Layout of a copy of the "ours" array, in a new store root ``tmp_path``."""
    shutil.copytree(root / "ours", tmp_path / "ours")
    return Layout.from_array(zarr.open_array(zarr.storage.LocalStore(tmp_path), path="ours", mode="r+"))


def test_rewriting_empty_deletes_stale_key(written, tmp_path):
    copy = _copy(written[1], tmp_path)
    unit = (1, 0, 0)
    assert copy.status(unit) == "ok"
    assert copy.write(unit, [None] * len(copy.unit_chunks(unit))) == 0
    assert copy.status(unit) == "missing"
    assert (zarr.open_array(str(tmp_path / "ours"))[copy.unit_region(unit)] == FILL).all()


def _flip(path, at):
    data = bytearray(path.read_bytes())
    data[at] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncate", "flip-start", "flip-middle", "flip-end"])
def test_status_detects_corruption(written, tmp_path, damage):
    copy = _copy(written[1], tmp_path)
    unit = (0, 0, 1)
    key = tmp_path / copy.unit_key(unit)
    n = key.stat().st_size
    if damage == "truncate":
        key.write_bytes(key.read_bytes()[: n - 3])
    else:
        _flip(key, {"flip-start": 0, "flip-middle": n // 2, "flip-end": n - 1}[damage])
    assert copy.status(unit) == "corrupt"
    assert copy.status((1, 0, 0)) == "ok"   # the others are untouched
    at_index = {"start": "flip-start", "end": "flip-end"}.get(copy.index_location)
    if copy.sharded and damage in ("truncate", at_index):   # reading the shard fails too
        with pytest.raises(PayloadError, match="index"):
            copy.read_payloads(unit)


def test_status_missing_then_ok(tmp_path):
    vol = _volume()
    for kind in ("v2-C-dot", "v3-sharded"):
        layout = Layout.from_array(_create(tmp_path / kind, "", kind))
        unit = (0, 0, 1)
        assert layout.status(unit) == "missing"
        payloads = [_encode(layout, vol[layout.chunk_region(c)]) for c in layout.unit_chunks(unit)]
        assert layout.write(unit, payloads) == (tmp_path / kind / layout.unit_key(unit)).stat().st_size
        assert layout.status(unit) == "ok"
        assert layout.unit_key(unit) == ("0.0.1" if kind == "v2-C-dot" else "c/0/0/1")


def test_write_refuses_wrong_payloads(tmp_path):
    layout = Layout.from_array(_create(tmp_path, "", "v3-sharded"))
    good = _encode(layout, _volume()[layout.chunk_region((0, 0, 0))])
    with pytest.raises(ValueError, match="holds 4 chunk"):
        layout.write((0, 0, 0), [good])
    with pytest.raises(PayloadError, match="chunk .0, 0, 1.* checksum"):
        layout.write((0, 0, 0), [good, good[:-1] + b"\0", None, None])
    other = fast_codec(**CODEC).encode(smooth_volume((4, 16, 32), "uint16"))
    with pytest.raises(PayloadError, match=r"\(4, 16, 32\) uint16 chunk; this array's chunks are \(4, 16, 16\)"):
        layout.write((0, 0, 0), [other, None, None, None])
    with pytest.raises(IndexError, match=r"unit \(2, 0, 0\) is outside the unit grid of shape \(2, 1, 2\)"):
        layout.write((2, 0, 0), [None])
    read_only = Layout.from_array(zarr.open_array(str(tmp_path), mode="r"))
    with pytest.raises(ValueError, match="read-only: open the array with mode='r\\+'"):
        read_only.write((0, 0, 0), [good, None, None, None])
    assert not any(tmp_path.glob("c/*"))


def test_pad_and_is_empty():
    z = zarr.create(store=zarr.storage.MemoryStore(), shape=(5, 7), chunks=(4, 4), dtype="float32",
                    zarr_format=2, order="F", compressor=fast_codec(), fill_value=0.0)
    layout = Layout.from_array(z)
    assert layout.in_memory
    p = layout.pad(np.ones((1, 3), np.float64))
    assert p.shape == (4, 4) and p.dtype == np.float32 and p.flags.f_contiguous
    assert p.sum() == 3 and (p[1:] == 0).all() and (p[:, 3] == 0).all()
    assert layout.pad(np.ones((4, 4))).flags.f_contiguous
    with pytest.raises(ValueError, match=r"shape \(5, 4\) does not fit in chunks of shape \(4, 4\)"):
        layout.pad(np.ones((5, 4)))
    assert layout.is_empty(np.zeros((1, 3))) and not layout.is_empty(np.full((1, 3), -0.0))
    assert not layout.is_empty(np.array([0.0, 1e-30]))
    nan = Layout.from_array(zarr.create(store=zarr.storage.MemoryStore(), shape=(5,), chunks=(4,),
                                        dtype="f8", zarr_format=2, compressor=fast_codec(),
                                        fill_value=np.nan))
    assert nan.is_empty([np.nan] * 3) and not nan.is_empty([np.nan, 0.0])
    assert np.isnan(nan.pad(np.zeros(1))[1:]).all()
    null = Layout.from_array(zarr.create(store=zarr.storage.MemoryStore(), shape=(5,), chunks=(4,),
                                         dtype="u2", zarr_format=2, compressor=fast_codec(),
                                         fill_value=None))
    assert null.fill_value == 0 and null.is_empty(np.zeros(2, "u2"))   # zarr's rule for null


# --- shard index layout against zarr, with constant chunks (no fitting) ---------------------

@pytest.mark.parametrize("index_codecs", ["default", "bytes-only", "big-endian"])
@pytest.mark.parametrize("index_location", ["end", "start"])
def test_shard_layout_matches_zarr(tmp_path, index_codecs, index_location):
    """Many constant chunks (tiny payloads, no fitting) in shards of 3x5x2 chunks, with edge
    shards whose inner chunks lie partly and wholly outside the array: same bytes as zarr."""
    shape, chunks, shards = (16, 88, 20), (4, 8, 8), (12, 40, 16)
    idx = {"default": [BytesCodec(), Crc32cCodec()], "bytes-only": [BytesCodec()],
           "big-endian": [BytesCodec(endian="big"), Crc32cCodec()]}[index_codecs]
    cfg = {"ratio": 1, "depth": 2}   # small enough chunks for zarr >= 3.2's create-time check
    codec = fast_codec(**cfg)        # constant chunks are not fitted; edge chunks stay empty

    def create(name):
        sharding = ShardingCodec(chunk_shape=chunks, codecs=[fast_serializer(**cfg)],
                                 index_codecs=idx, index_location=index_location)
        return zarr.create_array(zarr.storage.LocalStore(tmp_path), name=name, shape=shape,
                                 chunks=shards, dtype="int16", serializer=sharding,
                                 compressors=None, fill_value=-1)

    rng = np.random.default_rng(0)
    n_full = tuple(s // c for s, c in zip(shape, chunks))
    values = rng.integers(0, 1000, n_full).astype("int16")
    values[rng.random(n_full) < 0.2] = -1   # empty chunks inside shards
    vol = np.full(shape, -1, "int16")
    for c in np.ndindex(*n_full):   # constant full chunks; edge chunks stay empty
        vol[tuple(slice(i * n, (i + 1) * n) for i, n in zip(c, chunks))] = values[c]
    create("ref")[:] = vol
    layout = Layout.from_array(create("ours"))
    assert layout.chunks_per_unit == (3, 5, 2) and layout.index_location == index_location
    assert layout.index_checksum == (index_codecs != "bytes-only")
    for unit in layout.units():
        data = [vol[layout.chunk_region(c)] for c in layout.unit_chunks(unit)]
        layout.write(unit, [None if layout.is_empty(d) else codec.encode(layout.pad(d)) for d in data])
    ours, ref = _stored(tmp_path, "ours"), _stored(tmp_path, "ref")
    assert set(ours) == set(ref) and len(ref) == 6   # shards (., ., 1) hold only empty chunks
    for key in ref:
        assert ours[key] == ref[key], key
    assert layout.unit_chunks((1, 2, 1)) == [(3, 10, 2)]   # 29 of its 30 lie outside the array
    assert [layout.status(u) for u in layout.units()] == [
        "ok" if u[2] == 0 else "missing" for u in layout.units()]
    assert np.array_equal(zarr.open_array(str(tmp_path / "ours"))[:], vol)


def test_morton_order_is_zarrs():
    from zarr.core import indexing
    order = getattr(indexing, "morton_order_iter", None) or indexing.morton_order_coords
    for grid in [(1, 2, 2), (3, 5, 2), (4, 4), (1,), (7,), (2, 3, 1, 5)]:
        assert list(_morton_order(grid)) == [tuple(int(i) for i in c) for c in order(grid)]


# --- from_array refusals ---------------------------------------------------------------------

def _v3(**kw):
    kw.setdefault("serializer", fast_serializer(**CODEC))
    kw.setdefault("compressors", None)
    return zarr.create_array(zarr.storage.MemoryStore(), shape=SHAPE, chunks=CHUNKS,
                             dtype="uint16", **kw)


def _v2(**kw):
    return zarr.create(store=zarr.storage.MemoryStore(), shape=SHAPE, chunks=CHUNKS, dtype="uint16",
                       zarr_format=2, **kw)


@pytest.mark.parametrize("case, found", [
    ("v3 zstd after serializer", "codecs .*ZstdCodec"),
    ("v3 default compressors", "codecs .*ZstdCodec"),
    ("v3 transpose", "codecs .*TransposeCodec"),
    ("v3 bytes serializer", "codecs .*BytesCodec"),
    ("v3 sharded bytes inner", "shards hold inner codecs .*BytesCodec"),
    ("v3 sharded zstd inner", "shards hold inner codecs .*ZstdCodec"),
    ("v2 filters", "filters .*Delta"),
    ("v2 zstd", "compressor Zstd"),
    ("v2 no compressor", "compressor None"),
])
def test_from_array_refuses_other_codecs(case, found):
    make = {
        "v3 zstd after serializer": lambda: _v3(compressors=ZstdCodec()),
        "v3 default compressors": lambda: _v3(compressors="auto"),
        "v3 transpose": lambda: _v3(filters=[TransposeCodec(order=(0, 2, 1))]),
        "v3 bytes serializer": lambda: _v3(serializer=BytesCodec()),
        "v3 sharded bytes inner": lambda: _v3(serializer=BytesCodec(), shards=SHARDS),
        "v3 sharded zstd inner": lambda: _v3(shards=SHARDS, compressors=ZstdCodec()),
        "v2 filters": lambda: _v2(compressor=fast_codec(**CODEC), filters=[numcodecs.Delta("u2")]),
        "v2 zstd": lambda: _v2(compressor=numcodecs.Zstd()),
        "v2 no compressor": lambda: _v2(compressor=None),
    }[case]
    with pytest.raises(ValueError, match="compress.. writes INR payloads") as e:
        Layout.from_array(make())
    msg = str(e.value)
    assert "compressors=None" in msg and "compressor=SIRENCodec" in msg
    assert re.search(found, msg), msg


def test_from_array_refuses_other_index_codecs():
    sharding = ShardingCodec(chunk_shape=CHUNKS, codecs=[fast_serializer(**CODEC)],
                             index_codecs=[BytesCodec(), Crc32cCodec(), Crc32cCodec()])
    z = zarr.create_array(zarr.storage.MemoryStore(), shape=SHAPE, chunks=SHARDS, dtype="uint16",
                          serializer=sharding, compressors=None)
    with pytest.raises(ValueError, match=r"shard index codecs .* \[bytes\] or \[bytes, crc32c\]"):
        Layout.from_array(z)


# --- process workers ------------------------------------------------------------------------

def test_pickled_layout_writes_to_the_same_store(tmp_path):
    vol = _volume()
    layout = Layout.from_array(_create(tmp_path, "arr", "v3-sharded-start"))
    copy = pickle.loads(pickle.dumps(layout))   # what a Dask process worker receives
    assert copy is not layout and copy.unit_key((1, 0, 0)) == "arr/c/1/0/0" and not copy.in_memory
    assert repr(copy) == repr(layout) and "shape=(6, 20, 40)" in repr(copy)
    unit = (1, 0, 0)
    payloads = [_encode(copy, vol[copy.chunk_region(c)]) for c in copy.unit_chunks(unit)]
    assert copy.write(unit, payloads) > 0
    assert layout.status(unit) == "ok" and layout.read_payloads(unit) == payloads
    z = zarr.open_array(str(tmp_path / "arr"), mode="r")
    for chunk, p in zip(copy.unit_chunks(unit), payloads):
        region = copy.chunk_region(chunk)
        assert np.array_equal(z[region], decode(p)[tuple(slice(0, r.stop - r.start) for r in region)])


def test_memory_store_is_in_memory():
    layout = Layout.from_array(_v3())
    assert layout.in_memory
    copy = pickle.loads(pickle.dumps(layout))   # a copy of the data: writes would not be seen
    assert copy.in_memory and copy.store is not layout.store


@pytest.mark.parametrize("shards", [None, (8, 16, 32)], ids=["unsharded", "sharded"])
def test_read_chunk_names_the_chunk_and_its_key(tmp_path, shards):
    """zarr's own read of a corrupt chunk raises the codec's PayloadError, which cannot name the
    chunk; read_chunk and Layout's checks name it and its store key (the shard's if sharded)."""
    z = zarr.create_array(str(tmp_path), shape=(8, 16, 32), chunks=(8, 16, 16), shards=shards, dtype="uint16",
                          serializer=fast_serializer(**CODEC), compressors=None)
    z[:] = smooth_volume((8, 16, 32), "uint16")
    key = "c/0/0/0" if shards else "c/0/0/1"
    raw = bytearray((tmp_path / key).read_bytes())
    where = len(raw) - 40 - (2 * 16 + 4 if shards else 0)    # inside chunk (0, 0, 1)'s payload (the shard's last)
    raw[where] ^= 1
    (tmp_path / key).write_bytes(bytes(raw))
    z = zarr.open_array(str(tmp_path), mode="r")
    assert read_chunk(z, (0, 0, 0)).shape == (8, 16, 16)
    with pytest.raises(ChunkError, match=rf"chunk \(0, 0, 1\) \(key '{key}'\) cannot be read: .*checksum") as e:
        read_chunk(z, (0, 0, 1))
    assert (e.value.chunk, e.value.key) == ((0, 0, 1), key) and isinstance(e.value, PayloadError)
    layout = Layout.from_array(z)
    (payload,) = [p for c, p in zip(layout.unit_chunks(layout.units()[-1]), layout.read_payloads(layout.units()[-1]))
                  if c == (0, 0, 1)]
    with pytest.raises(PayloadError, match=rf"payload for chunk \(0, 0, 1\) \(key '{key}'\): .*checksum"):
        layout.check_payload(payload, (0, 0, 1))


def test_layout_for_reading_undoes_zstd_after_the_serializer(tmp_path):
    """zarr appends zstd after the serializer unless compressors=None: such an array is read
    (payloads unwrapped), never written."""
    vol = smooth_volume((8, 16, 32), "uint16")
    z = zarr.create_array(str(tmp_path), shape=vol.shape, chunks=(8, 16, 16), dtype="uint16",
                          serializer=fast_serializer(**CODEC))
    z[:] = vol
    with pytest.raises(ValueError, match="compressors=None"):
        Layout.from_array(z)
    layout = Layout.for_reading(z)
    assert [type(c).__name__ for c in layout.wrap] == ["ZstdCodec"]
    (payload,) = layout.read_payloads((0, 0, 1))
    assert np.array_equal(decode(payload), z[:, :, 16:]) and layout.status((0, 0, 1)) == "ok"
    with pytest.raises(ValueError, match="wrapped in"):
        layout.write((0, 0, 1), [payload])
    check = check_array(z, decode=True)
    assert (check.chunks_stored, check.unreadable, check.wrap, check.methods) == (2, [], ["zstd"], {"siren": 2})
