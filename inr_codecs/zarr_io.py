"""Direct chunk I/O for INR-coded Zarr arrays: write finished payloads without zarr's codecs.

:func:`inr_codecs.pipeline.compress` fits many chunks at once and so has each chunk's payload
(the bytes :meth:`InrCodec.encode` returns) before zarr sees it. Handing the data to
``z[...] = ...`` would fit every chunk again, so the payloads go straight into the store, at
the keys and in the layout zarr itself would use::

    layout = Layout.from_array(z)
    for unit in layout.units():
        payloads = [None if layout.is_empty(d) else codec.encode(layout.pad(d))
                    for d in (vol[layout.chunk_region(c)] for c in layout.unit_chunks(unit))]
        layout.write(unit, payloads)

A *write unit* is what one store key holds: a chunk, or a shard of chunks for a Zarr v3 array
with sharding. Which codec layouts qualify is described in :meth:`Layout.from_array`. Shards
are built as the ``sharding_indexed`` codec builds them (inner chunks in Morton order, then the
index), so a shard written here is byte for byte the shard zarr writes for the same payloads.

A :class:`Layout` holds the store and plain values only: it pickles, and a copy in a Dask
worker process writes to the same store (``LocalStore``, ``FsspecStore``; not ``MemoryStore``,
see :attr:`Layout.in_memory`).

:func:`open_target` gives the array :func:`~inr_codecs.pipeline.compress` writes: the array
passed, or the one at a path, created for the source and codec or reopened (to resume) if it
has exactly the settings asked for.
"""
from __future__ import annotations

import math
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import google_crc32c  # the crc32c implementation zarr's own ``crc32c`` codec uses
import numpy as np
import zarr
from zarr.abc.codec import BytesBytesCodec
from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import MemoryStore, WrapperStore

from .codec import InrCodec, expect_chunk
from .payload import PayloadError, unpack
from .registry import method_for
from .zarr3 import InrSerializer, as_codec, serializer_for

if TYPE_CHECKING:
    from zarr.abc.store import Store

    from .sources import Source

__all__ = ["COMPLETE_ATTR", "ArrayCheck", "ChunkError", "Layout", "SettingsMismatch", "check_array", "is_complete",
           "open_target", "read_chunk"]

#: Array attribute :func:`~inr_codecs.pipeline.compress` keeps: False from the moment a run starts
#: (or resumes) writing, True once every chunk is written (and verified, if the run verifies).
#: An interrupted run leaves it False; read it with :func:`is_complete`.
COMPLETE_ATTR = "inr_codecs_complete"

#: Shard index entry of an absent inner chunk (both offset and length).
EMPTY = 2**64 - 1

_REQUIRED = (
    "compress() writes INR payloads into the store itself, so the array's chunks must be "
    "stored as the bare INR payload: zarr v2 with compressor=SIRENCodec(...) or SCICodec(...) "
    "and no filters; zarr v3 with serializer=SIRENSerializer(...) or SCISerializer(...), "
    "compressors=None and no filters (array-to-array codecs such as transpose), optionally "
    "sharded (shards=...) with that serializer as the only inner codec")


# --- zarr version differences --------------------------------------------------------------

def _enum_value(value: Any) -> Any:
    """A codec setting as a plain value: zarr 3.1 keeps ``index_location`` and ``endian`` as
    Enums, zarr >= 3.2 as strings."""
    return getattr(value, "value", value)


# --- store I/O (synchronous wrappers over zarr's async Store API) ---------------------------

def _get(store: Store, key: str) -> bytes | None:
    buf = sync(store.get(key, prototype=default_buffer_prototype()))
    return None if buf is None else buf.to_bytes()


def _set(store: Store, key: str, data: bytes) -> None:
    sync(store.set(key, default_buffer_prototype().buffer.from_bytes(data)))


def _delete(store: Store, key: str) -> None:
    if sync(store.exists(key)):
        sync(store.delete(key))


def _codec_name(codec) -> str:
    """A zarr v3 codec's name in metadata (``zstd``)."""
    try:
        return codec.to_dict()["name"]
    except Exception:       # a codec without metadata of its own
        return type(codec).__name__


def _base_store(store: Store) -> Store:
    """The store under any ``WrapperStore`` (e.g. ``LoggingStore``) layers."""
    while isinstance(store, WrapperStore):
        store = store._store
    return store


# --- helpers --------------------------------------------------------------------------------

@lru_cache(maxsize=64)
def _morton_order(grid: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """Coordinates of ``grid`` in zarr's (compressed) Morton order: bit ``b`` of every axis
    that still has one, axes in order, from the lowest bit up; axes of length 1 take none.
    This is the order in which zarr's sharding codec lays out inner chunks."""
    bits = [(n - 1).bit_length() for n in grid]

    def code(coords: tuple[int, ...]) -> int:
        z, out = 0, 0
        for b in range(max(bits, default=0)):
            for axis, c in enumerate(coords):
                if b < bits[axis]:
                    z |= ((c >> b) & 1) << out
                    out += 1
        return z

    return tuple(sorted(np.ndindex(*grid), key=code))


def _grid(shape: tuple[int, ...], block: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(math.ceil(s / b) for s, b in zip(shape, block))


def _region(coords: tuple[int, ...], block: tuple[int, ...], shape: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(c * b, min((c + 1) * b, s)) for c, b, s in zip(coords, block, shape))


def _check_coords(coords, grid: tuple[int, ...], what: str) -> tuple[int, ...]:
    coords = tuple(int(c) for c in coords)
    if len(coords) != len(grid) or not all(0 <= c < n for c, n in zip(coords, grid)):
        raise IndexError(f"{what} {coords} is outside the {what} grid of shape {grid}")
    return coords


def _index_codecs(sharding: ShardingCodec) -> tuple[str, bool]:
    """(byte order, has crc32c) of a shard index stored as ``[bytes]`` or ``[bytes, crc32c]``."""
    codecs = tuple(sharding.index_codecs)
    if (len(codecs) in (1, 2) and isinstance(codecs[0], BytesCodec)
            and (len(codecs) == 1 or isinstance(codecs[1], Crc32cCodec))):
        endian = _enum_value(codecs[0].endian) or "little"
        return endian, len(codecs) == 2
    raise ValueError(
        f"unsupported shard index codecs {list(codecs)}: compress() writes shard indexes encoded "
        "with [bytes] or [bytes, crc32c] (zarr's default) only")


# --- the layout -----------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Layout:
    """Where and how an INR-coded Zarr array stores its chunks.

    Build one with :meth:`from_array`. Grid coordinates are tuples of ints: *chunk* coordinates
    index the chunk grid (``chunks``), *unit* coordinates the grid of store keys
    (``write_shape``: shards if sharded, else the chunk grid itself).
    """

    store: Store = field(repr=False)
    #: Key prefix of the array in ``store`` ("" at the root).
    path: str
    shape: tuple[int, ...]
    dtype: np.dtype
    zarr_format: int
    #: Shape of one chunk (the inner chunk if sharded): what one payload covers.
    chunks: tuple[int, ...]
    #: Shape of one shard if sharded, else ``chunks``: what one store key covers.
    write_shape: tuple[int, ...]
    #: Fill value as a numpy scalar of ``dtype`` (a Zarr v2 null fill value reads as 0).
    fill_value: Any
    #: Memory order zarr hands the codec chunks in: "F" only for Zarr v2 arrays with order="F"
    #: (Zarr v3 stores no memory order; zarr hands its serializers C-order chunks).
    order: str
    #: The numcodecs :class:`~inr_codecs.codec.InrCodec` (a v3 serializer's ``.codec``).
    codec: InrCodec = field(repr=False)
    sharded: bool
    #: Shard index placement, "start" or "end" (sharded arrays only).
    index_location: str = field(default="end", repr=False)
    #: Byte order of the shard index integers.
    index_endian: str = field(default="little", repr=False)
    #: Whether the shard index is followed by its crc32c checksum.
    index_checksum: bool = field(default=True, repr=False)
    #: Bytes-to-bytes codecs (e.g. zarr's default zstd) each stored payload was passed through
    #: after the INR serializer: only arrays opened with :meth:`for_reading` have any, and
    #: such a layout is read, never written.
    wrap: tuple = field(default=(), repr=False)
    _metadata: Any = field(default=None, repr=False)   # encodes chunk keys

    @classmethod
    def for_reading(cls, z: zarr.Array) -> Layout:
        """The layout of ``z`` for reading its payloads: as :meth:`from_array`, but a Zarr v3
        serializer may also be followed by bytes-to-bytes codecs (``compressors``: zarr adds
        zstd unless ``compressors=None``); :meth:`read_payloads` and :meth:`status` undo them
        (:attr:`wrap`), and :meth:`write` refuses such a layout."""
        return cls.from_array(z, wrapped=True)

    @classmethod
    def from_array(cls, z: zarr.Array, *, wrapped: bool = False) -> Layout:
        """The layout of ``z``, which must store each chunk as one bare INR payload.

        Accepted: a Zarr v2 array whose compressor is an INR codec and which has no filters; a
        Zarr v3 array whose codecs are exactly ``[InrSerializer]``, or ``[sharding_indexed]``
        with exactly ``[InrSerializer]`` inside and index codecs ``[bytes]`` or
        ``[bytes, crc32c]``. Anything else raises ValueError: its chunks would hold
        something other than the payloads written here.
        """
        md = z.metadata
        if md.zarr_format == 2:
            codec, sharding, wrap = cls._v2_codec(md), None, ()
        else:
            codec, sharding, wrap = cls._v3_codecs(md, wrapped)
        if len(z.shape) == 0:
            raise ValueError("INR codecs store arrays of one or more dimensions; this array is 0-d")
        try:
            outer = tuple(int(c) for c in (z.shards or z.chunks))
        except (TypeError, ValueError, NotImplementedError) as e:
            raise ValueError(f"compress() needs a regular chunk grid: {e}") from e
        dtype = np.dtype(np.dtype(z.dtype).str)   # canonical: equal dtypes pickle and print alike
        fill = md.fill_value
        fill = dtype.type(0) if fill is None else np.asarray(fill, dtype=dtype)[()]
        layout = {"store": z.store_path.store, "path": z.store_path.path,
                  "shape": tuple(int(s) for s in z.shape), "dtype": dtype,
                  "zarr_format": md.zarr_format, "write_shape": outer, "fill_value": fill,
                  "order": md.order if md.zarr_format == 2 else "C", "codec": codec, "wrap": wrap,
                  "_metadata": md}
        if sharding is None:
            return cls(chunks=outer, sharded=False, **layout)
        endian, checksum = _index_codecs(sharding)
        return cls(chunks=tuple(int(c) for c in sharding.chunk_shape), sharded=True,
                   index_location=_enum_value(sharding.index_location), index_endian=endian,
                   index_checksum=checksum, **layout)

    @staticmethod
    def _v2_codec(md) -> InrCodec:
        codec = md.compressor
        if md.filters or not isinstance(codec, InrCodec):
            found = f"filters {list(md.filters)}" if md.filters else f"compressor {codec!r}"
            raise ValueError(f"{_REQUIRED}; this zarr v2 array has {found}")
        return codec

    @staticmethod
    def _v3_codecs(md, wrapped: bool) -> tuple[InrCodec, ShardingCodec | None, tuple]:
        """The INR codec, the sharding codec (or None) and the bytes-to-bytes codecs after the
        serializer (only if ``wrapped``; else there must be none)."""
        codecs = tuple(md.codecs)
        sharding = codecs[0] if len(codecs) == 1 and isinstance(codecs[0], ShardingCodec) else None
        inner = tuple(sharding.codecs) if sharding is not None else codecs
        if inner and isinstance(inner[0], InrSerializer):
            wrap = inner[1:]
            if not wrap or (wrapped and all(isinstance(c, BytesBytesCodec) for c in wrap)):
                return inner[0].codec, sharding, wrap
        if sharding is not None:
            raise ValueError(f"{_REQUIRED}; this zarr v3 array's shards hold inner codecs {list(inner)}")
        raise ValueError(f"{_REQUIRED}; this zarr v3 array has codecs {list(codecs)}")

    # --- geometry ---

    @property
    def in_memory(self) -> bool:
        """True for a ``MemoryStore``: a pickled copy writes to its own copy of the data, so
        only threads in this process can write."""
        return isinstance(_base_store(self.store), MemoryStore)

    @property
    def chunk_grid(self) -> tuple[int, ...]:
        """Number of chunks along each axis."""
        return _grid(self.shape, self.chunks)

    @property
    def unit_grid(self) -> tuple[int, ...]:
        """Number of write units (shards, or chunks if unsharded) along each axis."""
        return _grid(self.shape, self.write_shape)

    @property
    def chunks_per_unit(self) -> tuple[int, ...]:
        """Chunks along each axis of one write unit (the shard index grid), all ones if unsharded."""
        return tuple(w // c for w, c in zip(self.write_shape, self.chunks))

    def units(self) -> list[tuple[int, ...]]:
        """Grid coordinates of every write unit, in C order."""
        return list(np.ndindex(*self.unit_grid))

    def unit_key(self, unit) -> str:
        """Store key of a write unit, with the array's path prefix."""
        key = self._metadata.encode_chunk_key(_check_coords(unit, self.unit_grid, "unit"))
        return f"{self.path}/{key}" if self.path else key

    def unit_chunks(self, unit) -> list[tuple[int, ...]]:
        """Grid coordinates of the chunks in a write unit that intersect the array, in C order."""
        unit = _check_coords(unit, self.unit_grid, "unit")
        if not self.sharded:
            return [unit]
        cpu, grid = self.chunks_per_unit, self.chunk_grid
        ranges = [range(u * n, min((u + 1) * n, g)) for u, n, g in zip(unit, cpu, grid)]
        return [tuple(r[i] for r, i in zip(ranges, idx)) for idx in np.ndindex(*map(len, ranges))]

    def unit_region(self, unit) -> tuple[slice, ...]:
        """The array region a write unit covers, clipped to the array's shape."""
        return _region(_check_coords(unit, self.unit_grid, "unit"), self.write_shape, self.shape)

    def chunk_region(self, chunk) -> tuple[slice, ...]:
        """The array region a chunk covers, clipped to the array's shape."""
        return _region(_check_coords(chunk, self.chunk_grid, "chunk"), self.chunks, self.shape)

    # --- chunk data ---

    def pad(self, data: np.ndarray) -> np.ndarray:
        """A chunk's data as zarr hands it to the codec: the full chunk shape (an edge chunk's
        region padded with the fill value), the array's dtype, in the array's memory order.
        A full chunk already in that form is returned as is (no copy)."""
        data = np.asarray(data)
        if data.ndim != len(self.chunks) or any(d > c for d, c in zip(data.shape, self.chunks)):
            raise ValueError(f"chunk data of shape {data.shape} does not fit in chunks of shape "
                             f"{self.chunks}")
        if data.shape == self.chunks:
            return np.asarray(data, dtype=self.dtype, order=self.order)
        out = np.full(self.chunks, self.fill_value, dtype=self.dtype, order=self.order)
        out[tuple(slice(0, d) for d in data.shape)] = data
        return out

    def is_empty(self, chunk_data) -> bool:
        """Whether zarr would not store this chunk (``write_empty_chunks=False``): every
        element equals the fill value; a NaN fill matches NaN, and a zero float fill matches
        only zeros of its sign (zarr compares bit patterns)."""
        data = np.asarray(chunk_data, dtype=self.dtype)
        fill = self.fill_value
        if data.dtype.kind == "f":
            if np.isnan(fill):
                return bool(np.isnan(data).all())
            if fill == 0:
                bits = np.dtype(f"u{data.dtype.itemsize}")
                return bool((data.view(bits) == np.asarray(fill, data.dtype).view(bits)).all())
        return bool((data == fill).all())

    # --- payloads ---

    def chunk_key(self, chunk) -> str:
        """Store key of the unit (chunk, or shard) that holds a chunk."""
        chunk = _check_coords(chunk, self.chunk_grid, "chunk")
        return self.unit_key(tuple(c // n for c, n in zip(chunk, self.chunks_per_unit)))

    def chunk_name(self, chunk) -> str:
        """How messages name a chunk: ``chunk (0, 1, 0) (key 'c/0/1/0')``, the key being the
        shard's for a sharded array."""
        return f"chunk {tuple(int(c) for c in chunk)} (key {self.chunk_key(chunk)!r})"

    def check_payload(self, payload, chunk=None) -> None:
        """Raise PayloadError unless ``payload`` is an intact INR payload of this array's chunk
        shape and dtype (``chunk`` only names the chunk and its key in the message)."""
        where = "" if chunk is None else f" for {self.chunk_name(chunk)}"
        try:
            header, _ = unpack(payload)
            method_for(header)
        except TypeError as e:
            raise PayloadError(f"payload{where} is not bytes-like: {type(payload).__name__}") from e
        except PayloadError as e:
            raise PayloadError(f"payload{where}: {e}") from None
        expect_chunk(header, self.chunks, self.dtype, where)

    def decode_chunk(self, payload, chunk) -> np.ndarray:
        """The chunk a stored payload holds (the full chunk shape), after :meth:`check_payload`;
        PayloadError naming the chunk and its key if it cannot be read."""
        self.check_payload(payload, chunk)
        try:
            return self.codec.decode_payload(payload)
        except PayloadError as e:
            raise PayloadError(f"{self.chunk_name(chunk)}: {e}") from None

    def unwrap(self, data: bytes, chunk=None) -> bytes:
        """A stored payload with the :attr:`wrap` codecs undone (``data`` itself if there are
        none); PayloadError, naming ``chunk``, if they cannot undo it."""
        if not self.wrap:
            return data
        from zarr.core.array_spec import ArrayConfig, ArraySpec
        proto = default_buffer_prototype()
        # built here (zarr 3.4 has no ArrayV3Metadata.get_chunk_spec): the spec of one chunk
        spec = ArraySpec(shape=tuple(self.chunks), dtype=self._metadata.dtype, fill_value=self._metadata.fill_value,
                         config=ArrayConfig.from_dict({}), prototype=proto)
        buf = proto.buffer.from_bytes(data)
        for codec in reversed(self.wrap):
            try:
                (buf,) = sync(codec.decode([(buf, spec)]))
            except Exception as e:      # each codec raises its own kind (zstd: RuntimeError)
                where = "stored bytes" if chunk is None else f"{self.chunk_name(chunk)}:"
                raise PayloadError(f"{where} not decodable by its {_codec_name(codec)} codec "
                                   f"({type(e).__name__}: {e})") from None
            if buf is None:
                raise PayloadError(f"{_codec_name(codec)} decoded to nothing")
        return buf.to_bytes()

    def write(self, unit, payloads: Sequence[bytes | None]) -> int:
        """Store a write unit's payloads, given in :meth:`unit_chunks` order (None: an empty
        chunk, not stored). Writes the chunk, or the shard with its index; deletes the key
        instead if every chunk is empty. Returns the number of bytes written."""
        if self.wrap:
            raise ValueError(f"{_REQUIRED}; this array's payloads are wrapped in "
                             f"{[_codec_name(c) for c in self.wrap]}")
        chunks = self.unit_chunks(unit)
        if len(payloads) != len(chunks):
            raise ValueError(f"unit {tuple(unit)} holds {len(chunks)} chunk(s) but "
                             f"{len(payloads)} payload(s) were given")
        for chunk, p in zip(chunks, payloads):
            if p is not None:
                self.check_payload(p, chunk)
        if self.store.read_only:
            raise ValueError("the array's store is read-only: open the array with mode='r+' or "
                             "'a' to write to it")
        key = self.unit_key(unit)
        data = (self._encode_shard(dict(zip(chunks, payloads))) if self.sharded
                else None if payloads[0] is None else bytes(payloads[0]))
        if data is None:
            _delete(self.store, key)
            return 0
        _set(self.store, key, data)
        return len(data)

    def read_payloads(self, unit) -> list[bytes | None]:
        """The stored payloads of a write unit (one read), in :meth:`unit_chunks` order; None
        for chunks not stored. Raises PayloadError for a corrupt shard index (or bytes the
        :attr:`wrap` codecs cannot undo); the payloads themselves are returned unchecked (see
        :meth:`check_payload`)."""
        parts = self._split(unit, _get(self.store, self.unit_key(unit)))
        return [None if p is None else self.unwrap(p, c) for c, p in zip(self.unit_chunks(unit), parts)]

    def status(self, unit) -> str:
        """"missing" if the unit's key is absent; "ok" if it is present and every payload in it
        (for a shard: its index, checksum included, and each stored inner payload) is intact
        and of this array's chunk shape and dtype; "corrupt" otherwise."""
        data = _get(self.store, self.unit_key(unit))
        if data is None:
            return "missing"
        try:
            for chunk, p in zip(self.unit_chunks(unit), self._split(unit, data)):
                if p is not None:
                    self.check_payload(self.unwrap(p, chunk), chunk)
        except PayloadError:
            return "corrupt"
        return "ok"

    def _split(self, unit, data: bytes | None) -> list[bytes | None]:
        """The stored payloads (still wrapped) in a unit's bytes, in :meth:`unit_chunks` order."""
        chunks = self.unit_chunks(unit)
        if data is None:
            return [None] * len(chunks)
        if not self.sharded:
            return [data]
        index = self._parse_shard(data, self.unit_key(unit))
        out = []
        for chunk in chunks:
            offset, nbytes = (int(v) for v in index[self._local(chunk)])
            out.append(None if offset == EMPTY else data[offset:offset + nbytes])
        return out

    # --- shards ---

    @property
    def _index_nbytes(self) -> int:
        return 16 * math.prod(self.chunks_per_unit) + 4 * self.index_checksum

    @property
    def _index_dtype(self) -> np.dtype:
        return np.dtype("<u8" if self.index_endian == "little" else ">u8")

    def _local(self, chunk: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(c % n for c, n in zip(chunk, self.chunks_per_unit))

    def _encode_shard(self, payloads: dict[tuple[int, ...], bytes | None]) -> bytes | None:
        """Shard bytes per the ``sharding_indexed`` spec, laid out as zarr lays them out: inner
        chunks in Morton order, then (or before them) the index of (offset, nbytes) pairs over
        the full chunks-per-shard grid. None if every chunk is empty."""
        local = {self._local(c): p for c, p in payloads.items() if p is not None}
        if not local:
            return None
        index = np.full(self.chunks_per_unit + (2,), EMPTY, dtype=np.uint64)
        offset = self._index_nbytes if self.index_location == "start" else 0
        parts = []
        for coords in _morton_order(self.chunks_per_unit):
            if coords in local:
                p = local[coords]
                index[coords] = (offset, len(p))
                parts.append(p)
                offset += len(p)
        raw = index.astype(self._index_dtype).tobytes()
        if self.index_checksum:
            raw += struct.pack("<I", google_crc32c.value(raw))
        parts.insert(0 if self.index_location == "start" else len(parts), raw)
        return b"".join(parts)

    def _decode_index(self, raw: bytes, key: str) -> np.ndarray:
        """The (offset, nbytes) array of a shard index, after checking its length and crc32c."""
        if len(raw) != self._index_nbytes:
            raise PayloadError(f"shard {key!r} is too short ({len(raw)} bytes) for its "
                               f"{self._index_nbytes}-byte index")
        if self.index_checksum:
            raw, (crc,) = raw[:-4], struct.unpack("<I", raw[-4:])
            if google_crc32c.value(raw) != crc:
                raise PayloadError(f"shard {key!r} index checksum mismatch: the shard is corrupt")
        index = np.frombuffer(raw, dtype=self._index_dtype).astype(np.uint64)
        return index.reshape(self.chunks_per_unit + (2,))

    def _parse_shard(self, data: bytes, key: str) -> np.ndarray:
        """The index of a whole shard, checked: every entry is empty or lies in the data part."""
        size = self._index_nbytes
        start = self.index_location == "start"
        index = self._decode_index(data[:size] if start else data[-size:], key)
        lo, hi = (size, len(data)) if start else (0, len(data) - size)
        for offset, nbytes in index.reshape(-1, 2).tolist():
            if (offset, nbytes) != (EMPTY, EMPTY) and not lo <= offset <= offset + nbytes <= hi:
                raise PayloadError(f"shard {key!r} index entry ({offset}, {nbytes}) points "
                                   f"outside the shard's data (bytes {lo}..{hi})")
        return index


# --- the target array -----------------------------------------------------------------------

def open_target(target, source: Source, codec, *, chunks=None, shards=None, zarr_format=None,
                overwrite=False, fill_value=None) -> zarr.Array:
    """The zarr array to write: ``target`` itself (a zarr.Array), or the array at a path,
    created with ``codec`` (Zarr v2 for a numcodecs codec unless ``zarr_format=3``, v3 for a
    serializer or when ``shards`` is given). An existing array is reused (resumed) if its
    shape, dtype, chunking and codec are what this call asks for; otherwise ValueError,
    unless ``overwrite``. Nothing is created or deleted before every check passed."""
    if isinstance(target, zarr.Array):
        return _given_array(target, source, codec, overwrite)
    if not isinstance(target, (str, os.PathLike)):
        raise TypeError(f"target must be a zarr.Array or a path, not {type(target).__name__}")
    if codec is None:
        if not os.path.exists(target):
            raise ValueError(f"{target} does not exist: pass a codec to create it")
        z = zarr.open_array(target, mode="r+")
        _check_fits(z, source)
        return z
    inr = as_codec(codec)
    fmt = zarr_format or (3 if isinstance(codec, InrSerializer) or shards else 2)
    chunks, shards = _new_chunking(source, inr, fmt, chunks, shards)
    if os.path.exists(target) and not overwrite:
        return _resumed_array(target, source, inr, fmt, chunks, shards)
    return _new_array(target, source, inr, fmt, chunks, shards, overwrite, fill_value)


def _given_array(z: zarr.Array, source: Source, codec, overwrite: bool) -> zarr.Array:
    """``z`` itself, checked: its codec is ``codec`` (if given) and it fits ``source``."""
    if overwrite:
        raise ValueError("overwrite=True needs a path target; an array object is written into as it is")
    if codec is not None and _array_codec(z) != as_codec(codec):
        raise ValueError(f"the target array's codec is {_array_codec(z)!r}, not the {as_codec(codec)!r} "
                         "asked for")
    _check_fits(z, source)
    return z


def _new_chunking(source: Source, inr: InrCodec, fmt: int, chunks, shards):
    """The chunks and shards (None if unsharded) of a Zarr v``fmt`` array for ``source``:
    checked against the format, the source's axes and the codec's budget."""
    if fmt not in (2, 3):
        raise ValueError(f"zarr_format must be 2 or 3, not {fmt}")
    if fmt == 2 and shards:
        raise ValueError("shards need zarr_format=3")
    chunks = tuple(int(c) for c in chunks) if chunks else tuple(min(s, 64) for s in source.shape)
    shards = tuple(int(s) for s in shards) if shards else None
    if len(chunks) != len(source.shape) or (shards and len(shards) != len(source.shape)):
        raise ValueError(f"chunks {chunks} / shards {shards} need one value per axis of the source "
                         f"{source.shape}")
    if shards and any(s % c for s, c in zip(shards, chunks)):
        raise ValueError(f"shards {shards} must be multiples of chunks {chunks}")
    inr.check_chunk(chunks, source.dtype)
    return chunks, shards


class SettingsMismatch(ValueError):
    """An existing array that a call would resume has other settings than asked for.

    ``target`` is the path; ``differences`` lists ``(name, stored, asked)`` for each differing
    setting only, named as :func:`~inr_codecs.pipeline.compress` and the codec's constructor
    name them (``chunks``, ``shards``, ``zarr_format``, ``ratio``, ``steps``, ...; ``codec`` for
    another codec class, ``shape`` and ``dtype`` for the source's). The message says how to
    resume or replace it in the Python API; the command line rewrites it in its own options.
    """

    def __init__(self, target, differences: list[tuple[str, Any, Any]]):
        self.target, self.differences = str(target), differences
        diff = ", ".join(f"{name}={have!r} (asked {want!r})" for name, have, want in differences)
        super().__init__(f"{target} exists with different settings: {diff}; pass overwrite=True to "
                         "replace it, or the same settings to resume it")


def _resumed_array(target, source: Source, inr: InrCodec, fmt: int, chunks, shards) -> zarr.Array:
    """The existing array at ``target``, if it has exactly the settings asked for (to resume);
    :class:`SettingsMismatch` naming every difference otherwise."""
    try:
        z = zarr.open_array(target, mode="r+")
    except Exception as e:
        raise ValueError(f"{target} exists and is not a Zarr array ({e}); choose another path or "
                         "pass overwrite=True") from None
    want = dict(shape=tuple(source.shape), dtype=str(np.dtype(source.dtype)), chunks=chunks,
                shards=shards, zarr_format=fmt)
    have = dict(shape=tuple(z.shape), dtype=str(np.dtype(z.dtype)), chunks=tuple(z.chunks),
                shards=tuple(z.shards) if z.shards else None, zarr_format=z.metadata.zarr_format)
    diff = [(k, have[k], want[k]) for k in want if have[k] != want[k]]
    try:
        stored = _array_codec(z).get_config()
    except ValueError as e:
        raise ValueError(f"{target} exists and is not an array compress() writes ({e}); pass "
                         "overwrite=True to replace it") from None
    asked = inr.get_config()
    if stored["id"] != asked["id"]:
        diff.append(("codec", stored["id"], asked["id"]))
    else:
        diff += [(k, stored.get(k), asked.get(k)) for k in {**stored, **asked} if stored.get(k) != asked.get(k)]
    if diff:
        raise SettingsMismatch(target, diff)
    return z


def _new_array(target, source: Source, inr: InrCodec, fmt: int, chunks, shards, overwrite: bool,
               fill_value) -> zarr.Array:
    """A new array at ``target`` for ``source`` (replacing what is there if ``overwrite``):
    ``inr`` as the compressor (Zarr v2) or as the serializer (Zarr v3, sharded if ``shards``)."""
    kw = dict(shape=source.shape, chunks=chunks, dtype=source.dtype, overwrite=overwrite,
              fill_value=0 if fill_value is None else fill_value, attributes={COMPLETE_ATTR: False})
    if fmt == 2:
        return zarr.create_array(target, zarr_format=2, compressors=inr, filters=None, **kw)
    return zarr.create_array(target, shards=shards, serializer=serializer_for(inr), compressors=None,
                             filters=None, **kw)


def _array_codec(z: zarr.Array) -> InrCodec:
    return Layout.from_array(z).codec


def _check_fits(z: zarr.Array, source: Source) -> None:
    if tuple(z.shape) != tuple(source.shape):
        raise ValueError(f"the target array has shape {tuple(z.shape)} but the source {source.shape}")
    if np.dtype(z.dtype) != np.dtype(source.dtype):
        raise ValueError(f"the target array has dtype {np.dtype(z.dtype)} but the source {source.dtype}")


# --- completion marker ------------------------------------------------------------------------

def is_complete(array) -> bool | None:
    """Whether :func:`~inr_codecs.pipeline.compress` finished writing ``array`` (a zarr.Array or
    a path): True once every chunk is written (and verified, if the run verified); False if a
    run started and has not finished (interrupted, failed, or still running: chunks not yet
    written read as the fill value, so rerun the same call to finish); None if no ``compress``
    run wrote it (the :data:`COMPLETE_ATTR` attribute is absent)."""
    z = array if isinstance(array, zarr.Array) else zarr.open_array(array, mode="r")
    value = z.attrs.get(COMPLETE_ATTR)
    return None if value is None else bool(value)


def mark_complete(z: zarr.Array, complete: bool) -> None:
    """Set the :data:`COMPLETE_ATTR` attribute of ``z`` (``compress`` sets False before it
    writes anything, True after the last chunk)."""
    if z.store.read_only:
        raise ValueError("the array's store is read-only: open the array with mode='r+' or 'a' to write to it")
    z.attrs[COMPLETE_ATTR] = bool(complete)


# --- reading chunks, named ----------------------------------------------------------------------

class ChunkError(PayloadError):
    """A chunk that cannot be read; the message names it, and ``chunk`` (grid coordinates) and
    ``key`` (the store key holding it: the chunk's, or its shard's) say which it is."""

    def __init__(self, message: str, chunk: tuple[int, ...], key: str):
        super().__init__(message)
        self.chunk, self.key = chunk, key


def chunk_key(z: zarr.Array, chunk) -> str:
    """Store key (with the array's path) of the chunk, or shard, holding chunk ``chunk`` of any
    zarr array (``chunk`` indexes the grid of ``z.chunks``, the inner chunks if sharded)."""
    inner, outer = tuple(z.chunks), tuple(z.shards or z.chunks)
    chunk = _check_coords(chunk, _grid(tuple(z.shape), inner), "chunk")
    key = z.metadata.encode_chunk_key(tuple(c // (o // i) for c, i, o in zip(chunk, inner, outer)))
    path = z.store_path.path
    return f"{path}/{key}" if path else key


def read_chunk(z: zarr.Array, chunk) -> np.ndarray:
    """The data of chunk ``chunk`` of ``z`` (its region, clipped to the array), read through
    zarr; :class:`ChunkError` naming the chunk and its key if it cannot be decoded (a plain
    ``z[...]`` raises the codec's PayloadError, which cannot say which chunk failed)."""
    chunk = _check_coords(chunk, _grid(tuple(z.shape), tuple(z.chunks)), "chunk")
    try:
        return z[_region(chunk, tuple(z.chunks), tuple(z.shape))]
    except (ValueError, RuntimeError) as e:   # PayloadError; zarr's crc32c and zstd checks
        key = chunk_key(z, chunk)
        raise ChunkError(f"chunk {chunk} (key {key!r}) cannot be read: {e}", chunk, key) from e


# --- checking a whole array ----------------------------------------------------------------------

#: Unreadable and absent chunks an :class:`ArrayCheck` lists by name (beyond that, counted).
LISTED = 20


@dataclass
class ArrayCheck:
    """What :func:`check_array` found in an INR-coded array's store."""

    #: :func:`is_complete` of the array.
    complete: bool | None
    chunks_total: int
    #: Chunks with a stored payload (readable or not).
    chunks_stored: int = 0
    #: Chunks not stored: empty (the fill value everywhere) or, if ``complete`` is False,
    #: possibly not yet written. The first :data:`LISTED` are in ``absent``.
    chunks_absent: int = 0
    absent: list = field(default_factory=list)
    #: ``(chunk, key, reason)`` of every stored chunk that cannot be read (the reason does not
    #: repeat the chunk's name).
    unreadable: list = field(default_factory=list)
    #: Payloads per method name, and per method the counts of its summary fields.
    methods: dict = field(default_factory=dict)
    fields: dict = field(default_factory=dict)
    #: Raw (decoded) bytes of the stored chunks.
    raw_bytes: int = 0
    #: Bytes-to-bytes codecs the payloads are wrapped in (e.g. ``["zstd"]``), and how many
    #: stored (wrapped) payloads exceed the codec's ceiling of chunk bytes / ratio.
    wrap: list = field(default_factory=list)
    over_ceiling: int = 0

    @property
    def ok(self) -> bool:
        """No unreadable chunk, and not an interrupted ``compress`` run."""
        return not self.unreadable and self.complete is not False


def check_array(z: zarr.Array, *, decode: bool = False) -> ArrayCheck:
    """Read every stored payload of an INR-coded array (:meth:`Layout.for_reading`) and check
    it: intact, of the array's chunk shape and dtype, its fixed fields readable (and, with
    ``decode``, the whole chunk decodable). A chunk that fails is listed as unreadable (with
    its key and the reason) and the check goes on. ValueError if ``z`` is not INR-coded."""
    from .registry import describe
    layout = Layout.for_reading(z)
    out = ArrayCheck(complete=is_complete(z), chunks_total=math.prod(layout.chunk_grid),
                     wrap=[_codec_name(c) for c in layout.wrap])
    chunk_bytes = math.prod(layout.chunks) * layout.dtype.itemsize
    ceiling = layout.codec.budget(layout.chunks, layout.dtype)

    def bad(chunk, reason):
        out.unreadable.append((tuple(chunk), layout.chunk_key(chunk), reason))

    for unit in layout.units():
        chunks = layout.unit_chunks(unit)
        try:
            parts = layout._split(unit, _get(layout.store, layout.unit_key(unit)))
        except PayloadError as e:           # a shard whose index is corrupt: none of its chunks
            out.chunks_stored += len(chunks)
            out.raw_bytes += len(chunks) * chunk_bytes
            for chunk in chunks:
                bad(chunk, str(e))
            continue
        for chunk, part in zip(chunks, parts):
            if part is None:
                out.chunks_absent += 1
                if len(out.absent) < LISTED:
                    out.absent.append(tuple(chunk))
                continue
            out.chunks_stored += 1
            out.raw_bytes += chunk_bytes
            if layout.wrap and len(part) > ceiling:
                out.over_ceiling += 1
            try:
                p = layout.unwrap(part)
                layout.check_payload(p)
                method, _, described = describe(p)
                if decode:
                    layout.codec.decode_payload(p)
            except PayloadError as e:
                bad(chunk, str(e))
                continue
            out.methods[method.name] = out.methods.get(method.name, 0) + 1
            if method.summary is not None:
                for key, value in method.summary(described).items():
                    counts = out.fields.setdefault(method.name, {}).setdefault(key, {})
                    counts[str(value)] = counts.get(str(value), 0) + 1
    return out
