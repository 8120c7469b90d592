"""What every inr-codecs codec shares: chunk checks, normalisation, the byte budget,
constant chunks, storage and fitting options, and the numcodecs ``Codec`` base class.

A method's codec subclasses :class:`InrCodec` (see ``docs/guides/new-method.md``); decoding
by method id is the registry's (:func:`inr_codecs.registry.decode`)."""
from __future__ import annotations

import math
import os
import struct
import threading
from collections.abc import Callable, Sequence
from typing import ClassVar, NamedTuple

import numpy as np
from numcodecs.abc import Codec
from numcodecs.compat import ensure_contiguous_ndarray, ensure_ndarray_like, ndarray_copy

from . import args, payload, quant
from .fit import OPTION_NAMES, FitOptions
from .payload import Header, PayloadError, Reader

#: Method id of a constant chunk (every codec writes one for a chunk with a single value).
CONSTANT = 0


def available_cores() -> int:
    """The cores this process may use (its CPU affinity where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:          # not on Linux
        return os.cpu_count() or 1


def _decode_threads() -> int:
    return payload.env_count("INR_CODECS_DECODE_THREADS", available_cores())


#: Chunk decodes that run at once through the Zarr codecs (v2 ``decode``, v3 serializers); the
#: others wait. Decoding is CPU-bound numpy: more threads than cores (zarr's pool has cores + 4)
#: only contend for the GIL. The cores this process may use, or ``INR_CODECS_DECODE_THREADS``.
DECODE_THREADS = _decode_threads()
decode_slots = threading.BoundedSemaphore(DECODE_THREADS)


def expect_chunk(header: Header, shape, dtype, where: str = "") -> None:
    """Raise PayloadError unless a payload's header declares a chunk of ``shape`` and ``dtype``
    (kind and size; byte order aside): checked before decoding, so that a chunk of another array
    (same byte count, other dtype or shape) is refused instead of read bit-cast. ``where`` names
    the chunk in the message (" for chunk (0, 1)")."""
    dtype = np.dtype(dtype)
    if tuple(header.shape) != tuple(shape) or (header.dtype.kind, header.dtype.itemsize) != (
            dtype.kind, dtype.itemsize):
        raise PayloadError(f"payload{where} holds a {tuple(header.shape)} {header.dtype} chunk; this array's "
                           f"chunks are {tuple(shape)} {dtype}")


def check_out(header: Header, out) -> None:
    """Raise PayloadError unless numcodecs' ``out`` can take the payload's chunk as it is: a flat
    byte buffer of its size, or an array of its dtype (kind and size; another byte order is
    converted) and element count, and of its shape when ``out`` has more than one axis."""
    o = ensure_ndarray_like(out)
    raw = o.ndim <= 1 and o.dtype.itemsize == 1
    if raw and o.nbytes == header.nbytes:
        return
    if o.ndim > 1:
        expect_chunk(header, o.shape, o.dtype)
    elif raw or o.size != math.prod(header.shape) or (o.dtype.kind, o.dtype.itemsize) != (
            header.dtype.kind, header.dtype.itemsize):
        raise PayloadError(f"payload holds a {tuple(header.shape)} {header.dtype} chunk; out is "
                           f"{o.shape} {o.dtype}")


class DecodedChunk(np.ndarray):
    """What the numcodecs ``decode`` returns without ``out``: the chunk, as a numpy array that
    refuses (PayloadError) to be viewed as another dtype (kind, item size or byte order) or
    reshaped to another shape of more than one axis. Zarr's v2 reader views and reshapes whatever
    a compressor returns to its array's chunk dtype and shape; this makes it refuse a payload of
    another array (the same byte count, another dtype or shape) instead of reading it bit-cast.
    Slices, copies and ``np.asarray(chunk)`` are plain arrays of the same values."""

    _expects: tuple | None = None       # (dtype, shape) of the payload's chunk

    @classmethod
    def of(cls, arr: np.ndarray) -> "DecodedChunk":
        """``arr`` (a decoded chunk: its payload's dtype and shape) as a DecodedChunk."""
        out = arr.view(cls)
        out._expects = (arr.dtype, tuple(arr.shape))
        return out

    def __array_finalize__(self, obj):
        # Only views of the whole chunk (its shape, or flattened) carry the check.
        exp = getattr(obj, "_expects", None)
        keep = exp is not None and self.shape in (exp[1], (math.prod(exp[1]),))
        self._expects = exp if keep else None

    def _refuse(self, what: str):
        dtype, shape = self._expects
        raise PayloadError(f"payload holds a {shape} chunk of {dtype.str}; refusing to read it as {what} "
                           "(a chunk of another array?)")

    def view(self, *args, **kwargs):
        out = super().view(*args, **kwargs)
        exp = self._expects
        if exp is not None and isinstance(out, np.ndarray) and not same_values(out.dtype, exp[0]):
            self._refuse(out.dtype.str)
        return out

    def reshape(self, *args, **kwargs):
        out = super().reshape(*args, **kwargs)
        exp = self._expects
        if exp is not None and out.ndim > 1 and out.shape != exp[1]:
            self._refuse(f"shape {out.shape}")
        return out


def same_values(a: np.dtype, b: np.dtype) -> bool:
    """Whether the bytes of dtype ``a`` mean the same values as those of ``b`` (equal dtypes, or
    single-byte ones of the same kind)."""
    return a == b or (a.itemsize == b.itemsize == 1 and a.kind == b.kind)


class BudgetError(ValueError):
    """The requested ratio leaves too few bytes for a useful network."""


#: Appended to a :class:`BudgetError` from :meth:`InrCodec.encode` (the numcodecs path).
ZARR_V2_BUDGET_NOTE = (
    "(If this codec is the compressor of a Zarr v2 array: zarr gives a v2 compressor no chunk shape "
    "when the array is created, so this first write is the first check, and the array's metadata "
    "(.zarray) is already stored. Recreate the array (overwrite=True) with a codec that fits; "
    "codec.check_chunk(chunks, dtype) runs this check before you create an array, as "
    "inr_codecs.compress and the Zarr v3 serializers do.)")


class Encoded(NamedTuple):
    """One chunk's payload and the optimiser steps its network(s) took (0 for a constant chunk)."""

    payload: bytes
    steps: int


def budget_bytes(raw_nbytes: int, ratio: float) -> int:
    """Payload ceiling for a chunk: floor(raw bytes / ratio), header included."""
    return int(raw_nbytes // ratio)


def check_ratio(ratio) -> float:
    """``ratio`` as a float: a finite real number >= 1 (not a bool, not a string)."""
    return args.real("ratio", ratio, at_least=1)


def as_chunk(buf) -> np.ndarray:
    """The array zarr (or a user) hands to ``encode``, with shape and memory order kept.

    Refused with ValueError: a 0-d array (payloads hold chunks of 1 to 32 axes, and a 0-d chunk
    stored as shape (1,) would not come back as it went in), an empty one, and NaN or Inf
    values; with TypeError: an unsupported dtype."""
    arr = ensure_ndarray_like(buf)
    if not isinstance(arr, np.ndarray):
        arr = np.asarray(arr)
    payload.check_dtype(arr.dtype)
    check_shape(arr.shape)
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(
            f"chunk contains {bad} NaN/Inf value(s); inr-codecs stores finite values only "
            "(replace them, e.g. with np.nan_to_num, or mask them before compressing)")
    return arr


def check_shape(shape) -> None:
    """ValueError unless a chunk shape can be stored: 1 to 32 axes, none of them empty."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 0:
        raise ValueError("chunk is 0-d (a scalar); inr-codecs stores chunks of 1 to 32 axes: pass it as a "
                         "1-element array (np.reshape(x, 1)) and reshape the decoded chunk")
    if len(shape) > payload.MAX_NDIM:
        raise ValueError(f"chunk of shape {shape} has {len(shape)} axes; inr-codecs stores chunks of 1 to "
                         f"{payload.MAX_NDIM} axes")
    if 0 in shape:
        raise ValueError(f"chunk of shape {shape} is empty; inr-codecs stores chunks of at least one element")


def memory_order(arr: np.ndarray) -> str:
    return "F" if arr.flags.f_contiguous and not arr.flags.c_contiguous else "C"


def header_for(arr: np.ndarray, method_id: int) -> Header:
    return Header(method_id, arr.dtype, memory_order(arr), tuple(arr.shape))


def value_range(arr: np.ndarray) -> tuple[float, float]:
    """(min, max) of a chunk; ValueError for a non-constant chunk whose range :func:`normalise`
    cannot map to [-1, 1] (see :func:`check_range`)."""
    lo, hi = float(arr.min()), float(arr.max())
    if lo != hi:
        check_range(lo, hi)
    return lo, hi


#: Smallest half-range of a non-constant chunk: the smallest normal float64.
MIN_HALF_RANGE = float(np.finfo(np.float64).tiny)


def check_range(lo: float, hi: float) -> None:
    """Raise ValueError unless a chunk's range [lo, hi] (lo < hi) normalises: the format maps
    x to (x - mid) / half with mid = (lo + hi) / 2 and half = (hi - lo) / 2 in float64, and
    decodes y * half + mid, so hi - lo and lo + hi must be finite and half a normal float64
    (otherwise the values snap to lo or hi, or the division overflows). Only float64 chunks can
    fail: values spanning more than DBL_MAX (1.8e308), both near +-DBL_MAX, or a range under
    4.5e-308."""
    span, total = hi - lo, lo + hi
    if math.isfinite(span) and math.isfinite(total) and span / 2.0 >= MIN_HALF_RANGE:
        return
    why = ("hi - lo overflows float64" if not math.isfinite(span) else
           "lo + hi overflows float64" if not math.isfinite(total) else
           f"(hi - lo) / 2 = {span / 2.0:.3g} is below the smallest normal float64 ({MIN_HALF_RANGE:.4g})")
    raise ValueError(
        f"chunk values span [{lo!r}, {hi!r}]: {why}. inr-codecs normalises each chunk to [-1, 1] with "
        "mid = (lo + hi) / 2 and half = (hi - lo) / 2 in float64 (the decoder computes y * half + mid), so "
        "hi - lo and lo + hi must not overflow float64 (DBL_MAX = 1.797e308) and hi - lo must be at least "
        f"{2 * MIN_HALF_RANGE:.4g}, unless every value is the same; rescale the data (multiply or divide by a "
        "power of two, which is exact) before compressing")


def normalise(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Chunk values in C order mapped to [-1, 1]: y = (x - mid) / half (float32, flattened)."""
    mid, half = (lo + hi) / 2.0, (hi - lo) / 2.0
    return ((np.ravel(arr, order="C").astype(np.float64) - mid) / half).astype(np.float32)


def denormalise(y: np.ndarray, lo: float, hi: float, dtype: np.dtype) -> np.ndarray:
    """Inverse of :func:`normalise`, clipped to [lo, hi]; integers rounded half to even."""
    out = np.empty(np.shape(y), dtype)
    denormalise_into(np.array(y, np.float64), lo, hi, out)
    return out


def denormalise_into(x: np.ndarray, lo: float, hi: float, out: np.ndarray) -> None:
    """:func:`denormalise` of float64 ``x`` written into ``out`` (its dtype, ``x``'s shape);
    ``x`` is overwritten (scratch: a decoder works tile by tile without temporaries)."""
    check_decoded_range(lo, hi, out.dtype)
    mid, half = (lo + hi) / 2.0, (hi - lo) / 2.0
    with np.errstate(over="ignore"):        # a forged network's huge output is clipped below
        x *= half
        x += mid
    np.clip(x, lo, hi, out=x)
    if out.dtype.kind in "iu":
        np.rint(x, out=x)
    np.copyto(out, x, casting="unsafe")


def encode_constant(arr: np.ndarray) -> bytes:
    return payload.pack(header_for(arr, CONSTANT), arr.reshape(-1)[:1].tobytes())


def decode_constant(header: Header, r: Reader) -> np.ndarray:
    """A constant chunk's body: its one value in the chunk's dtype (finite)."""
    value = r.array(header.dtype, 1)
    r.done()
    if header.dtype.kind == "f" and not np.isfinite(value[0]):
        raise PayloadError(f"constant chunk of non-finite value {value[0]}")
    return np.full(math.prod(header.shape), value[0], dtype=header.dtype)


def pack_within_budget(encode: Callable[[int], bytes], bits: int, budget: int,
                       grow: bool = False) -> tuple[bytes, int]:
    """Serialise with ``encode(bits)``; while over ``budget``, one bit less (networks are sized
    on an estimate of bits per parameter). With ``grow``, then one bit more while it still fits
    (spends slack on precision at no fitting cost). ``bits`` 0 means float16: sizes are exact.
    Returns the payload and the bit depth used."""
    out = encode(bits)
    while len(out) > budget:
        if bits <= 2:
            raise BudgetError(f"payload of {len(out)} bytes exceeds the budget of {budget}")
        bits -= 1
        out = encode(bits)
    while grow and 0 < bits < 16:
        more = encode(bits + 1)
        if len(more) > budget:
            break
        bits, out = bits + 1, more
    return out, bits


def pack_range(lo: float, hi: float) -> bytes:
    return struct.pack("<dd", lo, hi)


def read_range(r: Reader) -> tuple[float, float]:
    """A body's value range: finite, lo < hi, and hi - lo and lo + hi finite (section 3.3)."""
    lo, hi = r.take("dd")
    with np.errstate(over="ignore"):
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi and np.isfinite(hi - lo)
                and np.isfinite(hi + lo)):
            raise PayloadError(f"bad value range [{lo}, {hi}] in payload")
    return lo, hi


def check_decoded_range(lo: float, hi: float, dtype: np.dtype) -> None:
    """PayloadError unless every value of [lo, hi] can be stored in ``dtype`` (so decoded
    values, clipped to the range, never overflow to inf or wrap around)."""
    info = np.iinfo(dtype) if dtype.kind in "iu" else np.finfo(dtype)
    if not (float(info.min) <= lo and hi <= float(info.max)):
        raise PayloadError(f"value range [{lo}, {hi}] of the payload is beyond the range of its dtype {dtype}")


class InrCodec(Codec):
    """Base numcodecs codec of every method.

    A subclass sets ``codec_id`` (``"inr_codecs.<name>"``, as its registry entry) and
    implements :meth:`encode_arrays` and :meth:`min_bytes`; its constructor takes its own
    parameters, then calls ``super().__init__(ratio, bits=..., encoding=..., **fit)``, which
    validates and stores the storage options and the fitting options (:class:`FitOptions`,
    with the method's measured defaults ``fit_defaults``). Every public attribute is
    constructor configuration (JSON-serialisable); models and caches never live on the
    instance, so one instance serves concurrent threads.
    """

    codec_id: str | None = None
    #: Method id its payloads carry (the registry's).
    method_id: ClassVar[int]
    #: Fitting options whose default differs from :class:`FitOptions`' for this method.
    fit_defaults: ClassVar[dict] = {}
    #: Fitting options the method does not support: any value but the default is refused.
    unsupported: ClassVar[tuple[str, ...]] = ()
    #: Whether ``bits=None`` (a search over bit depths) is supported.
    auto_bits: ClassVar[bool] = False
    #: The settings of the method's paper (see :meth:`paper`), or None.
    paper_settings: ClassVar[dict | None] = None

    def __init__(self, ratio, *, bits=8, encoding="quantised", **fit):
        name = type(self).__name__
        self.ratio = check_ratio(ratio)
        if encoding not in quant.ENCODINGS:
            raise ValueError(f"encoding must be one of {list(quant.ENCODINGS)}, not {encoding!r}")
        if bits is None and not self.auto_bits:
            raise ValueError(f"{name} needs an integer bit depth (2..16)")
        self.bits, self.encoding = (None if bits is None else args.integer("bits", bits, 2, 16)), encoding
        unknown = sorted(set(fit) - set(OPTION_NAMES))
        if unknown:
            raise TypeError(f"{name}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}")
        options = FitOptions(**{**self.fit_defaults, **fit})     # validates every value
        defaults = FitOptions(**self.fit_defaults)
        for key in self.unsupported:
            if getattr(options, key) != getattr(defaults, key):
                raise ValueError(f"{name} does not support {key}={getattr(options, key)!r}")
        for key in OPTION_NAMES:
            setattr(self, key, getattr(options, key))

    @classmethod
    def paper(cls, ratio, **overrides):
        """The codec with its paper's settings (``paper_settings``), overridable by keyword."""
        if cls.paper_settings is None:
            raise ValueError(f"{cls.__name__} has no paper preset")
        return cls(ratio, **{**cls.paper_settings, **overrides})

    def fit_options(self, **changes) -> FitOptions:
        """The fitting options of this codec (with ``changes``)."""
        return FitOptions(**{**{k: getattr(self, k) for k in OPTION_NAMES}, **changes})

    def budget(self, shape: tuple[int, ...], dtype) -> int:
        """Payload ceiling in bytes for chunks of ``shape`` and ``dtype``, header included."""
        return budget_bytes(math.prod(int(s) for s in shape) * np.dtype(dtype).itemsize, self.ratio)

    def encode(self, buf):
        """numcodecs' encode (what a Zarr v2 array calls for each chunk): one chunk's payload.

        A :class:`BudgetError` here gets :data:`ZARR_V2_BUDGET_NOTE` appended: zarr gives a v2
        compressor no chunk shape when an array is created, so in a Zarr v2 array the first
        write is where a ratio too high for the chunks shows, after the metadata is stored."""
        try:
            return self.encode_batch([buf])[0].payload
        except BudgetError as e:
            raise BudgetError(f"{e} {ZARR_V2_BUDGET_NOTE}") from None

    def decode(self, buf, out=None):
        if out is not None:             # before decoding: a chunk of another array is refused unread
            header, _ = payload.unpack(ensure_contiguous_ndarray(buf))
            check_out(header, out)
        with decode_slots:
            arr = self.decode_payload(buf)
        if out is not None:
            o = ensure_ndarray_like(out)
            if o.dtype.itemsize > 1 and not same_values(o.dtype, arr.dtype):
                arr = arr.astype(o.dtype)       # the other byte order (ndarray_copy would bit-cast)
            return ndarray_copy(arr, out)
        return DecodedChunk.of(arr)

    def decode_payload(self, buf) -> np.ndarray:
        """The chunk a payload holds (:func:`inr_codecs.decode`, plus what this codec's
        configuration carries for its payloads, e.g. networks shared per array)."""
        from .registry import decode
        return decode(buf)

    def encode_batch(self, chunks: Sequence, *, init=None) -> list[Encoded]:
        """Payloads of many chunks whose networks train together, in one batched model.

        Each payload is in the format :meth:`encode` writes and decodes with
        :func:`inr_codecs.decode`; chunks of the same shape, dtype and memory order share a
        batch. ``init``: initial network parameters for every chunk (a warm start, e.g.
        ``SIRENCodec.learn_init``), for methods that support one.
        """
        arrs = [as_chunk(c) for c in chunks]
        ranges = [value_range(a) for a in arrs]
        out: list[Encoded | None] = [None] * len(arrs)
        groups: dict[tuple, list[int]] = {}
        for i, (arr, (lo, hi)) in enumerate(zip(arrs, ranges)):
            if lo == hi:
                out[i] = Encoded(encode_constant(arr), 0)
                continue
            self.check_chunk(arr.shape, arr.dtype)
            groups.setdefault((arr.shape, arr.dtype.str, memory_order(arr)), []).append(i)
        for members in groups.values():
            first = arrs[members[0]]
            done = self.encode_arrays([arrs[i] for i in members], [ranges[i] for i in members],
                                      self.budget(first.shape, first.dtype), init)
            for i, enc in zip(members, done):
                out[i] = enc
        return out

    def encode_arrays(self, arrs: list[np.ndarray], ranges: list[tuple[float, float]], budget: int,
                      init=None) -> list[Encoded]:  # pragma: no cover
        """Payloads of non-constant chunks of one shape, dtype and order that passed
        :meth:`check_chunk`, trained as one batch; ``ranges`` are their (min, max), ``budget``
        the payload ceiling in bytes of each."""
        raise NotImplementedError

    def min_bytes(self, shape: tuple[int, ...], bits: int) -> int:  # pragma: no cover
        """Smallest payload (bytes) of a useful network for chunks of ``shape``."""
        raise NotImplementedError

    def smallest_network(self, bits: int) -> str:
        """Words naming the network :meth:`min_bytes` sizes, for error messages."""
        return f"the smallest useful {type(self).__name__} network ({bits or 16} bits)"

    def _smallest_bits(self) -> int:
        """Lowest bit depth the codec may use (0 for float16 weights)."""
        return 0 if self.encoding == "float16" else self.bits

    def check_chunk(self, shape: tuple[int, ...], dtype) -> None:
        """Raise (BudgetError, TypeError, ValueError) if chunks of this shape and dtype cannot be
        stored: a ratio too high for them, an unsupported dtype, no axis, more than 32 or an
        empty one."""
        dt = payload.check_dtype(dtype)
        shape = tuple(int(s) for s in shape)
        check_shape(shape)
        bits = self._smallest_bits()
        need = self.min_bytes(shape, bits)
        budget = self.budget(shape, dt)
        if budget >= need:
            return
        raw = math.prod(shape) * dt.itemsize
        max_ratio = math.floor(raw / need * 10) / 10
        voxels = math.ceil(need * self.ratio / dt.itemsize)
        fix = (f"use ratio <= {max_ratio:g}, chunks of >= {voxels} voxels"
               if max_ratio >= 1 else f"use chunks of >= {voxels} voxels")
        if bits > 4:
            fix += f", fewer bits (bits={bits - 2} needs {self.min_bytes(shape, bits - 2)} bytes)"
        raise BudgetError(
            f"ratio {self.ratio:g} leaves {budget} bytes per "
            f"{'x'.join(map(str, shape))} {dt} chunk; {self.smallest_network(bits)} needs "
            f"{need} bytes: {fix} or a smaller depth.")

    def __getitem__(self, index):
        """A codec is not a sequence of codecs: this raises TypeError, with where it goes.

        zarr.create_array iterates over ``compressors=`` and ``filters=`` of a Zarr v3 array
        when they are not a zarr codec; without this that gives "object is not iterable". It is
        ``__getitem__`` (which ``for`` falls back to) rather than ``__iter__``: a codec with
        ``__iter__`` is an ``Iterable``, which zarr refuses as a Zarr v2 ``compressors=``."""
        from .registry import method_of
        name = type(self).__name__
        try:
            serializer = method_of(self).serializer_name
        except TypeError:       # a subclass that is not a registered method
            serializer = f"the Zarr v3 serializer of {name}"
        raise TypeError(
            f"{name} is a numcodecs codec (a Zarr v2 compressor), not a list of codecs. In a Zarr v3 array "
            f"(zarr.create_array's default) it is the serializer: pass serializer={serializer}(...same "
            f"parameters) and compressors=None (inr_codecs.{serializer} or "
            f"inr_codecs.zarr3.serializer_for(codec)); for a Zarr v2 array pass zarr_format=2, "
            f"compressors={name}(...) and no filters.")

    def __repr__(self):
        cfg = self.get_config()
        cfg.pop("id")
        return f"{type(self).__name__}(" + ", ".join(f"{k}={v!r}" for k, v in cfg.items()) + ")"
