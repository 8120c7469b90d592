"""Sources: every kind reads the same regions as numpy, pickles (cheaply where it should), and fails clearly."""
import concurrent.futures
import multiprocessing
import os
import pathlib
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from inr_codecs.sources import (
    NpySource,
    Source,
    TensorStoreSource,
    TiffSource,
    ZarrPathSource,
    clear_cache,
    open_source,
)

SHAPE = (10, 20, 30)
REGIONS = [
    (slice(0, 10), slice(0, 20), slice(0, 30)),     # everything
    (slice(0, 1), slice(0, 1), slice(0, 1)),        # one voxel
    (slice(3, 7), slice(5, 17), slice(11, 29)),     # inside
    (slice(9, 10), slice(0, 20), slice(29, 30)),    # along the far edges
    (slice(None), slice(None, 4), slice(2, None)),  # open bounds
]
DTYPES = ["uint16", "int16", "float32", "uint8"]


@pytest.fixture(autouse=True)
def _fresh_cache():
    yield
    clear_cache()   # decoded images stay in the per-process cache otherwise


def reference(dtype, shape=SHAPE, seed=0) -> np.ndarray:
    """Random values over the dtype's range: any transposed or shifted read shows."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return rng.normal(0, 100, shape).astype(dt)
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, shape, dtype=dt, endpoint=True)


class ArrayLike:
    """Not an ndarray, but converts to one."""

    def __init__(self, a):
        self.a = a

    def __array__(self, dtype=None, copy=None):
        return self.a if dtype is None else self.a.astype(dtype)


def _zarr(tmp_path, x, zarr_format, store=None):
    zarr = pytest.importorskip("zarr")
    z = zarr.create_array(store if store is not None else str(tmp_path / "a.zarr"), shape=x.shape, dtype=x.dtype,
                          chunks=(4, 8, 16), zarr_format=zarr_format)
    z[...] = x
    return z


def _tif(tmp_path, x, **kw):
    tifffile = pytest.importorskip("tifffile")
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, x, **kw)
    return str(path)


def _nii(tmp_path, x, name):
    nibabel = pytest.importorskip("nibabel")
    path = tmp_path / name
    nibabel.Nifti1Image(x, np.eye(4)).to_filename(path)
    return str(path)


def _npy(tmp_path, x):
    path = tmp_path / "a.npy"
    np.save(path, x)
    return path   # a pathlib.Path: os.PathLike is accepted


def _ts(tmp_path, x, origin=0):
    """A zarr3 TensorStore holding ``x`` at ``origin`` along axis 0 (returned as the store sliced to it)."""
    ts = pytest.importorskip("tensorstore")
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(tmp_path / "ts.zarr")}}
    store = ts.open(spec, create=True, dtype=x.dtype.name, shape=(origin + x.shape[0], *x.shape[1:])).result()
    store[origin:] = x
    return spec, store[origin:]


def _dask(tmp_path, x):
    da = pytest.importorskip("dask.array")
    return da.from_array(x, chunks=(4, 8, 16))


#: kind -> function(tmp_path, reference) -> what is passed to open_source
KINDS = {
    "numpy": lambda tmp, x: x,
    "numpy-fortran": lambda tmp, x: np.asfortranarray(x),
    "array-like": lambda tmp, x: ArrayLike(x),
    "dask": _dask,
    "zarr2": lambda tmp, x: _zarr(tmp, x, 2),
    "zarr3": lambda tmp, x: _zarr(tmp, x, 3),
    "zarr3-memory": lambda tmp, x: _zarr(tmp, x, 3, store=pytest.importorskip("zarr").storage.MemoryStore()),
    "zarr2-path": lambda tmp, x: str(_zarr(tmp, x, 2).store_path.store.root),
    "zarr3-path": lambda tmp, x: str(_zarr(tmp, x, 3).store_path.store.root) + "/",
    "npy": _npy,
    "npy-fortran": lambda tmp, x: _npy(tmp, np.asfortranarray(x)),
    "tif": lambda tmp, x: _tif(tmp, x),
    "tif-zlib": lambda tmp, x: _tif(tmp, x, compression="zlib"),
    "tif-tiled": lambda tmp, x: _tif(tmp, x, tile=(16, 16)),
    "nii": lambda tmp, x: _nii(tmp, x, "a.nii"),
    "nii.gz": lambda tmp, x: _nii(tmp, x, "a.nii.gz"),
    "tensorstore-spec": lambda tmp, x: _ts(tmp, x)[0],
    "tensorstore": lambda tmp, x: _ts(tmp, x)[1],
    "tensorstore-origin": lambda tmp, x: _ts(tmp, x, origin=3)[1],
}
#: kinds whose pickle carries the data itself
IN_MEMORY = {"numpy", "numpy-fortran", "array-like", "dask", "zarr3-memory"}


def make(kind, tmp_path, x):
    return open_source(KINDS[kind](tmp_path, x))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_reads_match_numpy(kind, dtype, tmp_path):
    x = reference(dtype)
    src = make(kind, tmp_path, x)
    assert isinstance(src, Source)
    assert src.shape == SHAPE and src.ndim == 3
    assert src.dtype == x.dtype and src.dtype.isnative
    assert src.nbytes == x.nbytes
    for region in REGIONS:
        out = src.read(region)
        assert type(out) is np.ndarray
        assert out.dtype == src.dtype
        assert out.flags.c_contiguous and out.flags.writeable
        np.testing.assert_array_equal(out, x[region])


@pytest.mark.parametrize("kind", KINDS)
def test_read_returns_a_private_array(kind, tmp_path):
    x = reference("uint16")
    keep = x.copy()
    src = make(kind, tmp_path, x)
    region = REGIONS[2]
    for r in (REGIONS[0], region):
        out = src.read(r)
        out[...] = 7
    np.testing.assert_array_equal(src.read(region), keep[region])
    np.testing.assert_array_equal(x, keep)


@pytest.mark.parametrize("kind", KINDS)
def test_pickles(kind, tmp_path):
    x = reference("uint16")
    region = REGIONS[2]
    src = make(kind, tmp_path, x)
    if kind == "zarr3-memory":
        src.read(region)
    else:
        np.testing.assert_array_equal(src.read(region), x[region])   # opens (and for some, decodes) the data
    data = pickle.dumps(src)
    if kind not in IN_MEMORY:
        assert len(data) < 10_000, f"{kind} pickles to {len(data)} bytes"
    clear_cache()   # as in a new process
    back = pickle.loads(data)
    assert (back.shape, back.dtype, back.name) == (src.shape, src.dtype, src.name)
    np.testing.assert_array_equal(back.read(region), x[region])
    if kind not in IN_MEMORY:
        assert len(pickle.dumps(back)) < 10_000, "what a source opened to read must not be pickled"


def test_empty_region(tmp_path):
    src = make("tif-zlib", tmp_path, reference("uint16"))
    out = src.read((slice(4, 4), slice(None), slice(2, 3)))
    assert out.shape == (0, 20, 1) and out.dtype == np.uint16


def test_names_and_repr(tmp_path):
    x = reference("uint8")
    assert open_source(x).name == "numpy array"
    assert make("npy", tmp_path, x).name == "a.npy"
    assert make("nii.gz", tmp_path, x).name == "a.nii.gz"
    src = make("zarr3-path", tmp_path, x)
    assert isinstance(src, ZarrPathSource) and src.name == "zarr array a.zarr"
    assert repr(src) == "ZarrPathSource('zarr array a.zarr', shape=(10, 20, 30), dtype=uint8)"
    assert str(tmp_path / "ts.zarr") in make("tensorstore-spec", tmp_path, x).name


def test_open_source_returns_a_source_unchanged():
    src = open_source(reference("uint8"))
    assert open_source(src) is src


def test_tiff_read_path(tmp_path):
    x = reference("uint16")
    assert make("tif", tmp_path, x).memmapped
    for kind in ("tif-zlib", "tif-tiled"):
        src = make(kind, tmp_path, x)
        assert isinstance(src, TiffSource) and not src.memmapped
        assert "_held" not in vars(src), "opening reads the header only; the first read decodes"


@pytest.mark.parametrize("kind", ["numpy", "npy", "zarr2", "tif", "tif-zlib", "tensorstore-spec"])
def test_big_endian_reads_native(kind, tmp_path):
    x = reference("int16")
    big = x.astype(">i2")
    if kind.startswith("tif"):
        src = open_source(_tif(tmp_path, x, byteorder=">", **({"compression": "zlib"} if "zlib" in kind else {})))
    elif kind == "tensorstore-spec":
        ts = pytest.importorskip("tensorstore")
        spec = {"driver": "zarr", "kvstore": {"driver": "file", "path": str(tmp_path / "be.zarr")}}
        store = ts.open({**spec, "metadata": {"dtype": ">i2", "shape": list(SHAPE), "chunks": [4, 8, 16]}},
                        create=True).result()
        store[...] = x
        src = open_source(spec)
    else:
        src = make(kind, tmp_path, big)
    assert src.dtype == np.dtype("int16") and src.dtype.isnative
    for region in REGIONS:
        out = src.read(region)
        assert out.dtype == np.dtype("int16") and out.dtype.isnative
        np.testing.assert_array_equal(out, x[region])


def test_scaled_nifti_reads_float(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    values = reference("float32") + 500
    img = nibabel.Nifti1Image(values, np.eye(4))
    img.set_data_dtype(np.int16)   # stored as int16 with scl_slope / scl_inter
    for name in ("s.nii", "s.nii.gz"):
        img.to_filename(tmp_path / name)
        expected = np.asarray(nibabel.load(tmp_path / name).dataobj)
        assert expected.dtype.kind == "f"
        src = open_source(tmp_path / name)
        assert src.dtype == expected.dtype
        for region in REGIONS:
            out = src.read(region)
            assert out.dtype == src.dtype
            np.testing.assert_array_equal(out, expected[region])
        np.testing.assert_allclose(src.read(REGIONS[0]), values, atol=0.05)


def test_threads_share_one_decode(tmp_path):
    x = reference("uint16")
    src = make("tif-zlib", tmp_path, x)
    regions = [(slice(i, i + 1), slice(None), slice(None)) for i in range(10)] * 4
    copies = [pickle.loads(pickle.dumps(src)) for _ in regions]   # as each task of a distributed worker gets it
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(lambda s, r: s.read(r), copies, regions))
    for r, out in zip(regions, outs):
        np.testing.assert_array_equal(out, x[r])
    handles = {id(vars(c)["_held"][1]) for c in copies}
    assert len(handles) == 1, "the image was decoded more than once in this process"


def test_read_in_spawned_processes(tmp_path):
    x = reference("float32")
    kinds = ["npy", "tif-zlib", "nii.gz", "zarr3-path", "zarr2", "tensorstore-spec", "dask"]
    sources = []
    for kind in kinds:
        (tmp_path / kind).mkdir()
        sources.append(make(kind, tmp_path / kind, x))
    region = REGIONS[2]
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        outs = list(pool.map(Source.read, sources, [region] * len(sources)))
    for kind, out in zip(kinds, outs):
        np.testing.assert_array_equal(out, x[region], err_msg=kind)


def test_file_changed_after_opening(tmp_path):
    path = _npy(tmp_path, reference("uint16"))
    data = pickle.dumps(open_source(path))
    np.save(path, reference("uint16", shape=(4, 4)))
    with pytest.raises(RuntimeError, match=r"changed since it was opened.*\(4, 4\)"):
        pickle.loads(data).read(REGIONS[0])


def test_light_imports(tmp_path):
    """The module imports with numpy only; a missing reader is named with how to install it."""
    np.save(tmp_path / "a.npy", reference("uint8"))
    (tmp_path / "a.tif").write_bytes(b"")
    code = textwrap.dedent(f"""
        import sys
        blocked = ("dask", "zarr", "tifffile", "nibabel", "tensorstore")
        for m in blocked:
            sys.modules[m] = None          # any import of them now raises ImportError
        import numpy as np
        from inr_codecs.sources import open_source
        src = open_source({str(tmp_path / "a.npy")!r})
        assert src.read((slice(0, 2), slice(0, 3), slice(0, 4))).shape == (2, 3, 4)
        assert open_source(np.ones((3, 4))).read((slice(1, 2), slice(0, 4))).shape == (1, 4)
        try:
            open_source({str(tmp_path / "a.tif")!r})
        except ImportError as e:
            assert "pip install tifffile" in str(e), e
        else:
            raise AssertionError("a .tif without tifffile should fail clearly")
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# -- errors -----------------------------------------------------------------------------------------------------

def test_missing_path(tmp_path):
    for name in ("missing.npy", "missing.zarr", "missing.tif"):
        with pytest.raises(FileNotFoundError, match=name):
            open_source(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        NpySource(tmp_path / "missing.npy")


def test_unknown_file_type(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"a\.txt.*\.npy, \.tif/\.tiff, \.nii/\.nii\.gz, or a Zarr array"):
        open_source(tmp_path / "a.txt")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match=r"plain.*not a Zarr array.*\.npy"):
        open_source(tmp_path / "plain")


def test_zarr_group_is_not_an_array(tmp_path):
    zarr = pytest.importorskip("zarr")
    for fmt in (2, 3):
        g = zarr.open_group(str(tmp_path / f"g{fmt}.zarr"), mode="w", zarr_format=fmt)
        g.create_array("raw", shape=(4, 4), dtype="uint8")
        with pytest.raises(ValueError, match=rf"g{fmt}\.zarr.* is a Zarr group.*arrays: raw"):
            open_source(tmp_path / f"g{fmt}.zarr")
        assert open_source(tmp_path / f"g{fmt}.zarr" / "raw").shape == (4, 4)


@pytest.mark.parametrize("suffix", [".npy", ".tif", ".nii"])
def test_corrupt_file_named(tmp_path, suffix):
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(b"this is not image data at all" * 20)
    if suffix != ".npy":
        pytest.importorskip({".tif": "tifffile", ".nii": "nibabel"}[suffix])
    with pytest.raises(ValueError, match=f"cannot read .*bad{suffix}"):
        open_source(path)


@pytest.mark.parametrize("value", [np.array(3, np.uint16), np.float32(1.5)])
def test_zero_dimensional(value, tmp_path):
    with pytest.raises(ValueError, match="0-dimensional"):
        open_source(value)
    np.save(tmp_path / "scalar.npy", value)
    with pytest.raises(ValueError, match="scalar.npy is 0-dimensional"):
        open_source(tmp_path / "scalar.npy")


def test_zero_size_axis(tmp_path):
    with pytest.raises(ValueError, match=r"shape \(4, 0\).*size 0"):
        open_source(np.zeros((4, 0), np.uint8))
    np.save(tmp_path / "empty.npy", np.zeros((0, 3), np.uint16))
    with pytest.raises(ValueError, match=r"empty\.npy has shape \(0, 3\)"):
        open_source(tmp_path / "empty.npy")


@pytest.mark.parametrize("dtype", ["bool", "complex64", "int64", "float16"])
def test_unsupported_dtype(dtype, tmp_path):
    x = np.zeros((4, 5), dtype)
    with pytest.raises(TypeError, match=f"numpy array: inr-codecs cannot store dtype {dtype}.*supported: uint8"):
        open_source(x)
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(TypeError, match=f"x.npy: .*{dtype}"):
        open_source(tmp_path / "x.npy")


def test_unsupported_object():
    for obj in (42, [1, 2, 3], b"a.npy", None):
        with pytest.raises(TypeError, match="expected a numpy array"):
            open_source(obj)
    with pytest.raises(TypeError, match="'driver' key"):
        open_source({"kvstore": "file:///tmp/x"})


@pytest.mark.parametrize("region, error, message", [
    ((slice(0, 2), slice(0, 3)), ValueError, r"tuple of 3 slices, one per axis of shape \(10, 20, 30\); got 2"),
    ((slice(0, 2), slice(0, 3), slice(0, 4), slice(0, 1)), ValueError, "tuple of 3 slices"),
    ((slice(0, 2), slice(0, 3), slice(0, 30, 2)), ValueError, r"region\[2\].*step"),
    ((slice(0, 11), slice(0, 3), slice(0, 4)), ValueError, r"region\[0\].*out of bounds for axis 0 of size 10"),
    ((slice(0, 2), slice(-3, 20), slice(0, 4)), ValueError, r"region\[1\].*out of bounds"),
    ((slice(5, 4), slice(0, 3), slice(0, 4)), ValueError, r"region\[0\].*out of bounds"),
    (slice(0, 2), TypeError, "tuple of 3 slices"),
    ((slice(0, 2), 3, slice(0, 4)), TypeError, r"region\[1\] must be a slice"),
    ((slice(0, 2), slice(0.5, 3), slice(0, 4)), TypeError, r"region\[1\].*integer"),
])
def test_bad_region(region, error, message, tmp_path):
    for src in (open_source(reference("uint8")), make("npy", tmp_path, reference("uint8"))):
        with pytest.raises(error, match=message):
            src.read(region)


def test_numpy_integer_bounds():
    x = reference("uint8")
    region = (slice(np.int64(2), np.int32(5)), slice(None), slice(np.uint8(1), 4))
    np.testing.assert_array_equal(open_source(x).read(region), x[2:5, :, 1:4])


def test_unknown_dask_chunks():
    da = pytest.importorskip("dask.array")
    x = da.from_array(np.arange(10, dtype=np.uint8), chunks=5)
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        open_source(x[x > 3])


def test_tensorstore_spec_must_not_create(tmp_path):
    spec, _ = _ts(tmp_path, reference("uint8"))
    for option in ("create", "delete_existing"):
        with pytest.raises(ValueError, match=option):
            open_source({**spec, option: True})
    assert open_source(spec).read(REGIONS[1]).shape == (1, 1, 1)   # still there


def test_tensorstore_in_memory_refuses_to_pickle():
    ts = pytest.importorskip("tensorstore")
    x = reference("uint16")
    store = ts.open({"driver": "zarr3", "kvstore": "memory://"}, create=True, dtype="uint16", shape=SHAPE).result()
    store[...] = x
    src = open_source(store)
    assert isinstance(src, TensorStoreSource)
    np.testing.assert_array_equal(src.read(REGIONS[2]), x[REGIONS[2]])   # fine within this process
    with pytest.raises(TypeError, match="in-memory kvstore"):
        pickle.dumps(src)


def test_tensorstore_missing_array(tmp_path):
    pytest.importorskip("tensorstore")
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(tmp_path / "none.zarr")}}
    with pytest.raises(ValueError, match=r"cannot read TensorStore spec .*none\.zarr"):
        open_source(spec)


def test_path_kinds_accept_pathlib(tmp_path):
    x = reference("uint8")
    path = pathlib.Path(_tif(tmp_path, x))
    assert os.fspath(path).endswith(".tif")
    np.testing.assert_array_equal(open_source(path).read(REGIONS[2]), x[REGIONS[2]])
