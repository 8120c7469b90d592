"""What every inr-codecs codec shares: chunk checks, normalisation, the byte budget,
constant chunks, decoding by method id, and the numcodecs ``Codec`` base class."""
from __future__ import annotations

import importlib
import math
import struct
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
from numcodecs.abc import Codec
from numcodecs.compat import ensure_contiguous_ndarray, ensure_ndarray_like, ndarray_copy

from . import payload
from .payload import Header, PayloadError, Reader

#: Module that decodes each method id's body (``decode_body(header, reader) -> ndarray``).
_METHOD_MODULES = {payload.METHODS["siren"]: "inr_codecs.siren", payload.METHODS["sci"]: "inr_codecs.sci"}


class BudgetError(ValueError):
    """The requested ratio leaves too few bytes for a useful network."""


class Encoded(NamedTuple):
    """One chunk's payload and the optimiser steps its network(s) took (0 for a constant chunk)."""

    payload: bytes
    steps: int


def budget_bytes(raw_nbytes: int, ratio: float) -> int:
    """Payload ceiling for a chunk: floor(raw bytes / ratio), header included."""
    return int(raw_nbytes // ratio)


def check_ratio(ratio) -> float:
    try:
        r = float(ratio)
    except (TypeError, ValueError):
        raise ValueError(f"ratio must be a number >= 1, not {ratio!r}") from None
    if not (r >= 1 and np.isfinite(r)):
        raise ValueError(f"ratio must be a finite number >= 1, not {ratio!r}")
    return r


def as_chunk(buf) -> np.ndarray:
    """The array zarr (or a user) hands to ``encode``, with shape and memory order kept."""
    arr = ensure_ndarray_like(buf)
    if not isinstance(arr, np.ndarray):
        arr = np.asarray(arr)
    payload.check_dtype(arr.dtype)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(
            f"chunk contains {bad} NaN/Inf value(s); inr-codecs stores finite values only "
            "(replace them, e.g. with np.nan_to_num, or mask them before compressing)")
    return arr


def memory_order(arr: np.ndarray) -> str:
    return "F" if arr.flags.f_contiguous and not arr.flags.c_contiguous else "C"


def header_for(arr: np.ndarray, method: str) -> Header:
    return Header(payload.METHODS[method], arr.dtype, memory_order(arr), tuple(arr.shape))


def value_range(arr: np.ndarray) -> tuple[float, float]:
    return float(arr.min()), float(arr.max())


def normalise(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Chunk values in C order mapped to [-1, 1]: y = (x - mid) / half (float32, flattened)."""
    mid, half = (lo + hi) / 2.0, (hi - lo) / 2.0
    return ((np.ravel(arr, order="C").astype(np.float64) - mid) / half).astype(np.float32)


def denormalise(y: np.ndarray, lo: float, hi: float, dtype: np.dtype) -> np.ndarray:
    """Inverse of :func:`normalise`, clipped to [lo, hi]; integers rounded half to even."""
    mid, half = (lo + hi) / 2.0, (hi - lo) / 2.0
    x = np.clip(y.astype(np.float64) * half + mid, lo, hi)
    if dtype.kind in "iu":
        x = np.rint(x)
    return x.astype(dtype)


def encode_constant(arr: np.ndarray) -> bytes:
    return payload.pack(header_for(arr, "constant"), arr.reshape(-1)[:1].tobytes())


def decode(buf) -> np.ndarray:
    """Decode any inr-codecs payload to an array of its recorded shape, dtype and order."""
    header, body = payload.unpack(ensure_contiguous_ndarray(buf))
    if header.method == payload.METHODS["constant"]:
        r = Reader(body)
        value = r.array(header.dtype, 1)
        r.done()
        return np.full(header.shape, value[0], dtype=header.dtype, order=header.order)
    module = importlib.import_module(_METHOD_MODULES[header.method])
    out = module.decode_body(header, Reader(body))
    return np.asarray(out.reshape(header.shape), order=header.order)


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
    lo, hi = r.take("dd")
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise PayloadError(f"bad value range [{lo}, {hi}] in payload")
    return lo, hi


class InrCodec(Codec):
    """Base numcodecs codec: subclasses set ``codec_id`` and implement ``encode_arrays``.

    Every public attribute is constructor configuration (JSON-serialisable); models and
    caches never live on the instance, so one instance serves concurrent threads.
    """

    codec_id: str | None = None

    def encode(self, buf):
        return self.encode_batch([buf])[0].payload

    def decode(self, buf, out=None):
        return ndarray_copy(decode(buf), out) if out is not None else decode(buf)

    def encode_batch(self, chunks: Sequence, *, init=None) -> list[Encoded]:
        """Payloads of many chunks whose networks train together, in one batched model.

        Each payload is in the format :meth:`encode` writes and decodes with :func:`decode`;
        chunks of the same shape, dtype and memory order share a batch. ``init`` (SIRENCodec
        only): initial network parameters for every chunk instead of the seeded SIREN
        initialisation, e.g. a learned initialisation (``SIRENCodec.learn_init``).
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
            done = self.encode_arrays([arrs[i] for i in members], [ranges[i] for i in members], init)
            for i, enc in zip(members, done):
                out[i] = enc
        return out

    def encode_arrays(self, arrs: list[np.ndarray], ranges: list[tuple[float, float]],
                      init=None) -> list[Encoded]:  # pragma: no cover
        """Payloads of non-constant chunks of one shape, dtype and order that passed
        :meth:`check_chunk`, trained as one batch; ``ranges`` are their (min, max)."""
        raise NotImplementedError

    def min_bytes(self, shape: tuple[int, ...], bits: int) -> int:  # pragma: no cover
        """Smallest payload (bytes) of a useful network for chunks of ``shape``."""
        raise NotImplementedError

    def smallest_network(self, bits: int) -> str:  # pragma: no cover
        """Words naming the network :meth:`min_bytes` sizes, for error messages."""
        raise NotImplementedError

    def _smallest_bits(self) -> int:
        """Lowest bit depth the codec may use (0 for float16 weights)."""
        return 0 if self.encoding == "float16" else self.bits

    def check_chunk(self, shape: tuple[int, ...], dtype) -> None:
        """Raise (BudgetError, TypeError) if chunks of this shape and dtype cannot be stored."""
        dt = payload.check_dtype(dtype)
        shape = tuple(int(s) for s in shape)
        bits = self._smallest_bits()
        need = self.min_bytes(shape, bits)
        raw = int(np.prod(shape)) * dt.itemsize
        if budget_bytes(raw, self.ratio) >= need:
            return
        max_ratio = math.floor(raw / need * 10) / 10
        voxels = math.ceil(need * self.ratio / dt.itemsize)
        fix = (f"use ratio <= {max_ratio:g}, chunks of >= {voxels} voxels"
               if max_ratio >= 1 else f"use chunks of >= {voxels} voxels")
        if bits > 4:
            fix += f", fewer bits (bits={bits - 2} needs {self.min_bytes(shape, bits - 2)} bytes)"
        raise BudgetError(
            f"ratio {self.ratio:g} leaves {budget_bytes(raw, self.ratio)} bytes per "
            f"{'x'.join(map(str, shape))} {dt} chunk; {self.smallest_network(bits)} needs "
            f"{need} bytes: {fix} or a smaller depth.")

    def __repr__(self):
        cfg = self.get_config()
        cfg.pop("id")
        return f"{type(self).__name__}(" + ", ".join(f"{k}={v!r}" for k, v in cfg.items()) + ")"
