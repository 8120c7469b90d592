"""Sources: the volumes a compression run reads, opened lazily and read region by region.

:func:`open_source` turns whatever a user calls "the data" into a :class:`Source`, an object
with ``shape``, ``dtype``, ``name`` and :meth:`Source.read`. Sources are made to be handed to
parallel workers (Dask threads, processes or distributed workers):

* Every source pickles, and all but the in-memory numpy one pickle cheaply. File and
  TensorStore sources keep only their path or JSON spec and open the data on first use in each
  process; the open handle is cached per process and never pickled (see :func:`clear_cache`).
* :meth:`Source.read` returns a new, writable, C-contiguous, native-endian array of exactly the
  region asked for: the caller may modify it without touching the source.
* Optional readers (dask, zarr, tifffile, nibabel, tensorstore) are imported only by the sources
  that need them: this module imports with numpy alone.

What :func:`open_source` accepts, and how each kind reads a region:

* a numpy array, or any object with ``__array__`` (converted with ``numpy.asarray``):
  :class:`ArraySource`, from memory;
* a dask array: :class:`DaskSource`, computed with the synchronous scheduler;
* a ``zarr.Array`` (Zarr format 2 or 3): :class:`ZarrSource`, by zarr slicing;
* a path (``str`` or ``os.PathLike``) to

  * a ``.npy`` file: :class:`NpySource`, from a memory map;
  * a ``.tif`` / ``.tiff`` file: :class:`TiffSource`, from a memory map, or for compressed and
    tiled files from the whole image, decoded once per process;
  * a ``.nii`` / ``.nii.gz`` file: :class:`NiftiSource`, by nibabel's array proxy, or for
    ``.nii.gz`` from the whole image, decoded once per process;
  * a Zarr array directory: :class:`ZarrPathSource`, by zarr slicing;

* a ``tensorstore.TensorStore``, a ``tensorstore.Spec``, or a spec dict with a ``"driver"``
  key: :class:`TensorStoreSource`, by TensorStore.

Every source has at least one axis, no axis of size 0, and a dtype inr-codecs can store
(:data:`inr_codecs.payload.SUPPORTED_DTYPES`); :func:`open_source` refuses others.
"""
from __future__ import annotations

import collections
import contextlib
import errno
import importlib
import itertools
import json
import math
import operator
import os
import sys
import threading

import numpy as np

from .payload import check_dtype

__all__ = ["ArraySource", "DaskSource", "NiftiSource", "NpySource", "Source", "TensorStoreSource", "TiffSource",
           "ZarrPathSource", "ZarrSource", "chunk_regions", "clear_cache", "open_source", "parse_ints",
           "read_source"]

_ACCEPTED = ("a numpy array (or an object with __array__), a dask array, a zarr.Array, a path to a .npy, "
             ".tif/.tiff or .nii/.nii.gz file or to a Zarr array directory, or a TensorStore "
             "(tensorstore.TensorStore, tensorstore.Spec, or a spec dict with a 'driver' key)")
_PATH_KINDS = ".npy, .tif/.tiff, .nii/.nii.gz, or a Zarr array directory (holding zarr.json or .zarray)"
_PIP = {"dask.array": "dask[array]"}


class Source:
    """A read-only N-d volume that :meth:`read` returns regions of.

    Attributes
    ----------
    shape : tuple of int
        At least one axis, none of size 0.
    dtype : numpy.dtype
        Native-endian; one of :data:`inr_codecs.payload.SUPPORTED_DTYPES`. :meth:`read` returns
        this dtype whatever the byte order of the data on disk.
    name : str
        Short description for messages and progress bars, e.g. ``"nuclei.npy"``.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    name: str

    #: True where ``_read`` returns an array nothing else refers to (no defensive copy needed).
    _fresh = False

    def __init__(self, shape, dtype, name: str):
        self.name = name
        try:
            shape = tuple(operator.index(n) for n in shape)
        except TypeError:
            raise ValueError(f"{name} has no definite shape: {tuple(shape)}") from None
        if not shape:
            raise ValueError(f"{name} is 0-dimensional (a scalar); a source needs at least one axis")
        if min(shape) <= 0:
            raise ValueError(f"{name} has shape {shape}: an axis of size 0 leaves nothing to compress")
        try:
            dt = check_dtype(dtype)
        except TypeError as e:
            raise TypeError(f"{name}: {e}") from None
        self.shape = shape
        self.dtype = dt.newbyteorder("=")

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of the whole volume in memory."""
        return math.prod(self.shape) * self.dtype.itemsize

    def read(self, region) -> np.ndarray:
        """``source[region]`` as a new, writable, C-contiguous array of dtype :attr:`dtype`.

        Parameters
        ----------
        region : tuple of slice
            One ``slice(start, stop)`` per axis with ``0 <= start <= stop <= shape[axis]``; a
            ``None`` bound means the start or end of the axis. Steps other than 1 and negative
            (from the end) bounds are refused.

        Raises
        ------
        ValueError
            ``region`` has the wrong number of entries, a step, or a bound outside the shape.
        TypeError
            ``region`` is not a tuple (or list) of slices with integer bounds.
        """
        region = self._check_region(region)
        shape = tuple(s.stop - s.start for s in region)
        if 0 in shape:
            return np.empty(shape, self.dtype)
        out = self._read(region)
        if not isinstance(out, np.ndarray):
            out = np.asarray(out)
        if out.shape != shape:
            raise RuntimeError(f"reading {_region_text(region)} of {self.name} gave shape {out.shape}, "
                               f"expected {shape}")
        if not (self._fresh and type(out) is np.ndarray and out.dtype == self.dtype
                and out.flags.c_contiguous and out.flags.writeable):
            out = np.array(out, dtype=self.dtype, order="C")   # always a copy: never a view of the source
        return out

    def _read(self, region: tuple[slice, ...]):
        """``source[region]`` as any array-like of the region's shape: ``read`` finishes it."""
        raise NotImplementedError

    def _check_region(self, region) -> tuple[slice, ...]:
        expected = f"a region of {self.name} is a tuple of {self.ndim} slices, one per axis of shape {self.shape}"
        if not isinstance(region, (tuple, list)):
            raise TypeError(f"{expected}; got {region!r}")
        if len(region) != self.ndim:
            raise ValueError(f"{expected}; got {len(region)}: {region!r}")
        out = []
        for axis, (s, n) in enumerate(zip(region, self.shape)):
            if not isinstance(s, slice):
                raise TypeError(f"region[{axis}] must be a slice, got {s!r}")
            if s.step is not None and s.step != 1:
                raise ValueError(f"region[{axis}] = {s!r} has a step; regions are contiguous boxes")
            try:
                start = 0 if s.start is None else operator.index(s.start)
                stop = n if s.stop is None else operator.index(s.stop)
            except TypeError:
                raise TypeError(f"region[{axis}] = {s!r} must have integer (or None) bounds") from None
            if not 0 <= start <= stop <= n:
                raise ValueError(f"region[{axis}] = {s!r} is out of bounds for axis {axis} of size {n} "
                                 f"({self.name} has shape {self.shape})")
            out.append(slice(start, stop))
        return tuple(out)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, shape={self.shape}, dtype={self.dtype})"


# -- in-memory and library objects ------------------------------------------------------------------------------

class ArraySource(Source):
    """A numpy array in memory, kept (not copied) as ``array``; pickling the source pickles the data."""

    def __init__(self, array, name: str = "numpy array"):
        self.array = np.asarray(array)
        super().__init__(self.array.shape, self.array.dtype, name)

    def _read(self, region):
        return self.array[region]


class DaskSource(Source):
    """A dask array; each region is computed with the synchronous scheduler.

    Synchronous, because :meth:`read` runs inside the pipeline's own tasks: a nested thread pool
    per task would oversubscribe the machine.
    """

    def __init__(self, array):
        if any(isinstance(n, float) and math.isnan(n) for n in array.shape):
            raise ValueError(f"dask array of shape {array.shape} has unknown chunk sizes; "
                             "call its .compute_chunk_sizes() first")
        self.array = array
        super().__init__(array.shape, array.dtype, "dask array")

    def _read(self, region):
        return np.asarray(self.array[region].compute(scheduler="sync"))


class ZarrSource(Source):
    """An open ``zarr.Array`` (Zarr format 2 or 3); the array object itself is what pickles.

    A file-backed array pickles as its store's location and metadata. An array in a
    ``zarr.storage.MemoryStore`` pickles with all its chunks.
    """

    _fresh = True

    def __init__(self, array):
        self.array = array
        where = getattr(array, "store_path", None)
        super().__init__(array.shape, array.dtype, f"zarr array {where}" if where is not None else "zarr array")

    def _read(self, region):
        return self.array[region]


# -- lazily opened sources --------------------------------------------------------------------------------------

class _LazySource(Source):
    """A source that keeps only what it needs to open its data, and opens it once per process.

    Subclasses define ``_key`` (what identifies the handle in the per-process cache), ``_open`` (a
    new handle), ``_describe`` (a handle's shape and dtype) and ``_what`` (the path or spec, for
    errors); ``_probe`` may learn shape and dtype without opening a handle.
    """

    def __init__(self, name: str, handle=None):
        if handle is None:
            shape, dtype, handle = self._probe()
        else:
            shape, dtype = self._describe(handle)
        super().__init__(shape, dtype, name)
        if handle is not None:
            self._held = (os.getpid(), handle)

    def _probe(self):
        """Shape, dtype, and the open handle (None where opening would be costly)."""
        handle = self._open_cached()
        return (*self._describe(handle), handle)

    def _open_cached(self):
        key = self._key()
        with _reading(self._what()):
            return _cached(key, self._open)

    def _get(self):
        """The open handle in this process: opened (and checked against shape and dtype) on first use."""
        held = self.__dict__.get("_held")
        if held is not None and held[0] == os.getpid():
            return held[1]
        handle = self._open_cached()
        shape, dtype = self._describe(handle)
        shape, dtype = tuple(shape), np.dtype(dtype).newbyteorder("=")
        if (shape, dtype) != (self.shape, self.dtype):
            raise RuntimeError(f"{self._what()} changed since it was opened: it had shape {self.shape} and dtype "
                               f"{self.dtype}, it now has {shape} and {dtype}")
        self._held = (os.getpid(), handle)
        return handle

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_held", None)   # handles are per process; this keeps the pickle small
        return state

    def _read(self, region):
        return self._get()[region]

    def _key(self):
        raise NotImplementedError

    def _open(self):
        raise NotImplementedError

    def _describe(self, handle):
        return handle.shape, handle.dtype

    def _what(self) -> str:
        raise NotImplementedError


class _PathSource(_LazySource):
    """A file or directory, identified by its absolute path."""

    _label = ""   # put before the file name in ``name``

    def __init__(self, path):
        self.path = os.path.abspath(os.fspath(path))
        if not os.path.exists(self.path):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", self.path)
        super().__init__(self._label + os.path.basename(self.path))

    def _key(self):
        st = os.stat(self.path)   # a rewritten file is opened anew
        return type(self).__name__, self.path, st.st_mtime_ns, st.st_size

    def _what(self) -> str:
        return repr(self.path)


class NpySource(_PathSource):
    """A ``.npy`` file, memory-mapped read-only (``numpy.load(path, mmap_mode="r")``)."""

    def _open(self):
        return np.load(self.path, mmap_mode="r")


class TiffSource(_PathSource):
    """The first image series of a ``.tif`` / ``.tiff`` file (pyramid level 0), as tifffile reads it.

    Uncompressed images stored contiguously are memory-mapped (``tifffile.memmap``), so a region
    costs only its own bytes. Other files (compressed, tiled, ...) cannot be read by region: the
    first read in each process decodes the whole image and keeps it in memory for later reads
    (:func:`clear_cache` releases it). Opening the source reads only the file's header, and sets
    ``memmapped`` to say which of the two ways regions are read.
    """

    def _probe(self):
        tifffile = _require("tifffile", "reading .tif files")
        with _reading(self._what()), tifffile.TiffFile(self.path) as tif:
            series = tif.series[0]
            if series.dtype is None:
                raise ValueError("tifffile finds no single dtype for its first image series")
            shape, dtype = series.shape, series.dtype
            self.memmapped = series.dataoffset is not None   # what tifffile.memmap needs
        return shape, dtype, self._open_cached() if self.memmapped else None

    def _open(self):
        import tifffile
        if self.memmapped:
            return tifffile.memmap(self.path, mode="r", series=0, level=0)
        with tifffile.TiffFile(self.path) as tif:
            return tif.series[0].asarray()


class NiftiSource(_PathSource):
    """A NIfTI-1/2 image (``.nii`` or ``.nii.gz``), with nibabel's axis order.

    Uncompressed ``.nii`` files are read by region through nibabel's array proxy, which reads only
    the bytes needed. A ``.nii.gz`` cannot be read by region without decompressing everything
    before it, so the first read in each process decodes the whole image and keeps it in memory
    for later reads (:func:`clear_cache` releases it). Opening the source reads only the header.

    The dtype is the on-disk dtype, unless the header scales the data (``scl_slope`` /
    ``scl_inter`` other than 1 / 0 or unset): then it is the float dtype nibabel scales to.
    """

    def _probe(self):
        nibabel = _require("nibabel", "reading .nii files")
        with _reading(self._what()):
            proxy = nibabel.load(self.path).dataobj
            return (*self._describe(proxy), None if self._gz else proxy)

    @property
    def _gz(self) -> bool:
        return self.path.lower().endswith(".gz")

    def _open(self):
        import nibabel
        proxy = nibabel.load(self.path).dataobj
        return np.asarray(proxy) if self._gz else proxy

    def _describe(self, handle):
        shape = tuple(handle.shape)
        if isinstance(handle, np.ndarray) or not shape or min(shape) <= 0:
            return shape, handle.dtype
        # A one-voxel read gives the dtype nibabel returns (the on-disk one, or the float it scales to).
        return shape, np.asarray(handle[(slice(0, 1),) * len(shape)]).dtype


class ZarrPathSource(_PathSource):
    """A Zarr array directory (format 2 or 3), opened with ``zarr.open_array(path, mode="r")``."""

    _fresh = True
    _label = "zarr array "

    def _open(self):
        zarr = _require("zarr", "reading Zarr arrays")
        return zarr.open_array(self.path, mode="r")


class TensorStoreSource(_LazySource):
    """Anything TensorStore opens, kept as its JSON spec and opened with ``tensorstore.open(spec, read=True)``.

    A domain that does not start at 0 is translated to start there: region ``(slice(0, n), ...)``
    is the first ``n`` elements whatever the TensorStore's own origin.

    The spec is what pickles: a TensorStore object is kept as ``store.spec().to_json()`` (which, for
    the ``"array"`` driver, holds the data itself). Data in an in-memory kvstore (``"memory"``
    driver) exists only in the process that made it: such a source works with threads but
    refuses to pickle.
    """

    _fresh = True

    def __init__(self, spec):
        ts = _require("tensorstore", "reading TensorStore sources")
        handle = None
        if isinstance(spec, ts.TensorStore):
            handle = _zero_origin(spec)
            spec = spec.spec().to_json()
        elif isinstance(spec, ts.Spec):
            spec = spec.to_json()
        elif not isinstance(spec, dict) or "driver" not in spec:
            raise TypeError(f"a TensorStore source needs a TensorStore, a tensorstore.Spec or a spec dict with a "
                            f"'driver' key, not {spec!r}")
        try:
            self.spec = json.loads(json.dumps(spec))   # a private copy, checked to be JSON
        except (TypeError, ValueError) as e:
            raise TypeError(f"a TensorStore spec must be JSON: {e}") from None
        for option in ("create", "delete_existing"):
            if self.spec.get(option):
                raise ValueError(f"the TensorStore spec asks for {option!r}; a source is only read: drop it")
        super().__init__(_tensorstore_name(self.spec), handle)

    def _key(self):
        return "tensorstore", json.dumps(self.spec, sort_keys=True)

    def _open(self):
        import tensorstore as ts
        return _zero_origin(ts.open(self.spec, read=True).result())

    def _describe(self, handle):
        return handle.shape, handle.dtype.numpy_dtype

    def _read(self, region):
        return self._get()[region].read().result()

    def _what(self) -> str:
        text = json.dumps(self.spec)
        return f"TensorStore spec {text if len(text) <= 300 else text[:300] + ' ...'}"

    def __getstate__(self):
        if _in_memory(self.spec):
            raise TypeError(f"{self.name} lives in an in-memory kvstore, which another process cannot open; "
                            "write it to a file-backed kvstore, or read it from threads only")
        return super().__getstate__()


def _zero_origin(store):
    return store.translate_to[0] if any(store.domain.origin) else store


def _in_memory(spec) -> bool:
    if isinstance(spec, dict):
        return spec.get("driver") == "memory" or any(_in_memory(v) for v in spec.values())
    if isinstance(spec, list):
        return any(_in_memory(v) for v in spec)
    return isinstance(spec, str) and spec.startswith("memory://")


def _tensorstore_name(spec: dict) -> str:
    kv = spec.get("kvstore")
    if isinstance(kv, dict) and "driver" in kv:
        where = kv.get("path", "") if kv["driver"] == "file" else f"{kv['driver']}://{kv.get('path', '')}"
    else:
        where = kv if isinstance(kv, str) else ""
    return f"tensorstore {spec['driver']} {where}".rstrip()


# -- opening ----------------------------------------------------------------------------------------------------

def open_source(source) -> Source:
    """Open ``source`` as a :class:`Source` (a :class:`Source` is returned as it is).

    Parameters
    ----------
    source
        A numpy array, or an object with ``__array__`` (converted with ``numpy.asarray``); a dask
        array; a ``zarr.Array``; a path (``str`` or ``os.PathLike``) to a ``.npy``,
        ``.tif``/``.tiff`` or ``.nii``/``.nii.gz`` file or to a Zarr array directory; or a
        TensorStore: a ``tensorstore.TensorStore``, a ``tensorstore.Spec``, or a spec dict with a
        ``"driver"`` key.

    Raises
    ------
    FileNotFoundError
        The path does not exist.
    ValueError
        The path is not a kind this module reads, or the data cannot be read as that kind; the
        source is 0-dimensional or has an axis of size 0.
    TypeError
        ``source`` is none of the above, or its dtype is not one inr-codecs stores.
    ImportError
        The library the source needs is not installed.
    """
    if isinstance(source, Source):
        return source
    if isinstance(source, (str, os.PathLike)):
        return _open_path(source)
    if isinstance(source, dict):
        return TensorStoreSource(source)
    if isinstance(source, np.ndarray):
        return ArraySource(source)
    # A dask, zarr or tensorstore object implies its module is imported already: no import here.
    da = sys.modules.get("dask.array")
    if da is not None and isinstance(source, da.Array):
        return DaskSource(source)
    zarr = sys.modules.get("zarr")
    if zarr is not None and isinstance(source, zarr.Array):
        return ZarrSource(source)
    ts = sys.modules.get("tensorstore")
    if ts is not None and isinstance(source, (ts.TensorStore, ts.Spec)):
        return TensorStoreSource(source)
    if hasattr(source, "__array__"):
        return ArraySource(np.asarray(source), f"numpy array from {type(source).__name__}")
    raise TypeError(f"cannot read a {type(source).__module__}.{type(source).__qualname__} as a source; "
                    f"expected {_ACCEPTED}")


def _open_path(path) -> Source:
    p = os.fspath(path)
    if not isinstance(p, str):
        raise TypeError(f"source paths must be str, not {type(p).__name__}: {p!r}")
    if not os.path.exists(p):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", p)
    low = p.rstrip("/\\").lower()
    if os.path.isdir(p):
        kind = _zarr_node_type(p)
        if kind == "array":
            return ZarrPathSource(p)
        if kind == "group":
            arrays = sorted(n for n in os.listdir(p) if _zarr_node_type(os.path.join(p, n)) == "array")
            hint = f"; its arrays: {', '.join(arrays[:8])}" + (", ..." if len(arrays) > 8 else "") if arrays else ""
            raise ValueError(f"{p!r} is a Zarr group, not an array: pass the path of an array inside it{hint}")
        raise ValueError(f"{p!r} is a directory but not a Zarr array (no zarr.json or .zarray in it); "
                         f"expected {_PATH_KINDS}")
    if low.endswith(".npy"):
        return NpySource(p)
    if low.endswith((".tif", ".tiff")):
        return TiffSource(p)
    if low.endswith((".nii", ".nii.gz")):
        return NiftiSource(p)
    raise ValueError(f"cannot read {p!r}: unknown file type; expected {_PATH_KINDS}")


def _zarr_node_type(path: str) -> str | None:
    """``"array"``, ``"group"`` or None: what Zarr node a directory is."""
    if os.path.isfile(os.path.join(path, ".zarray")):
        return "array"
    if os.path.isfile(os.path.join(path, ".zgroup")):
        return "group"
    meta = os.path.join(path, "zarr.json")
    if not os.path.isfile(meta):
        return None
    try:
        with open(meta, encoding="utf-8") as f:
            node_type = json.load(f).get("node_type")
    except (OSError, ValueError, AttributeError):
        return None
    return node_type if node_type in ("array", "group") else None


def _require(module: str, purpose: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{purpose} needs {module}: pip install {_PIP.get(module, module)}") from e


@contextlib.contextmanager
def _reading(what: str):
    """Turn a reader's failure to open ``what`` into a ValueError naming it (OSErrors pass unchanged)."""
    try:
        yield
    except (OSError, ImportError):
        raise
    except Exception as e:
        raise ValueError(f"cannot read {what}: {e}") from e


def _region_text(region) -> str:
    return "[" + ", ".join(f"{s.start}:{s.stop}" for s in region) + "]"


# -- the per-process cache of open handles ----------------------------------------------------------------------

_CACHE_SIZE = 8        # open files kept per process; a decoded TIFF or .nii.gz holds the whole image
_cache: collections.OrderedDict = collections.OrderedDict()
_opening: dict = {}    # key -> lock held while that key is being opened
_lock = threading.Lock()
_inherited: list = []  # caches of a parent process: kept, never used (see _after_fork)


def _cached(key, opener):
    """``opener()``, opened once per process for ``key`` however many threads ask at once."""
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        opening = _opening.setdefault(key, threading.Lock())
    with opening:
        with _lock:
            if key in _cache:
                return _cache[key]
        try:
            handle = opener()
        except BaseException:
            with _lock:
                _opening.pop(key, None)
            raise
        with _lock:
            _cache[key] = handle
            _opening.pop(key, None)
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
    return handle


def clear_cache() -> None:
    """Forget every handle this process opened (memory maps, decoded images, TensorStores).

    Sources opened or unpickled from now on open their data anew; a source object that already
    holds a handle keeps it until the object is garbage collected.
    """
    with _lock:
        _cache.clear()


def _after_fork() -> None:
    # A forked child must open its own handles (TensorStore, for one, does not survive fork) and
    # must not wait on a lock another thread of the parent held. The parent's handles are kept
    # referenced rather than closed: closing them in the child is not safe either.
    global _cache, _opening, _lock
    _inherited.append(_cache)
    _cache, _opening, _lock = collections.OrderedDict(), {}, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def read_source(path: str):
    """The whole volume at ``path`` (.npy, .tif/.tiff, .nii/.nii.gz or a Zarr array) as numpy."""
    src = open_source(path)
    return src.read(tuple(slice(0, n) for n in src.shape))


def chunk_regions(shape, chunks):
    """Slices of every chunk of a regular grid, in C order."""
    ranges = [range(0, s, c) for s, c in zip(shape, chunks)]
    for start in itertools.product(*ranges):
        yield tuple(slice(a, min(a + c, s)) for a, c, s in zip(start, chunks, shape))


def parse_ints(text):
    """``"64,64,64"`` -> ``(64, 64, 64)``; empty or None -> None."""
    return tuple(int(v) for v in text.split(",")) if text else None
