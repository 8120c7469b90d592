"""SIREN payload body (method id 1) and its numpy decoder.

Body layout, little-endian::

    lo, hi     2 x f64  value range of the chunk; the network predicts (x - mid) / half
    coords     u8       0 = pixel centres (2 i + 1) / n - 1 on every axis longer than 1
    w0         f32      sine frequency: layers compute sin(w0 * (h @ W + b))
    depth      u8       number of sine layers (the network has depth + 1 linear layers)
    width      u16      units per sine layer
    encoding   u8       tensor encoding (``quant.QUANTISED`` or ``quant.FLOAT16``)
    bits       u8       bit depth of QUANTISED tensors (0 for FLOAT16)
    tensors    ...      ``quant.encode_tensors`` of W0, b0, ..., W_depth, b_depth
"""
from __future__ import annotations

import math
import struct
from typing import NamedTuple

import numpy as np

from ... import payload, quant
from ...codec import denormalise_into, pack_range, read_range
from ...nn import FixedSiren, coord_axes, siren_shapes
from ...payload import Header, PayloadError, Reader

METHOD_ID = 1
PIXEL_CENTRES = 0
FIXED = struct.Struct("<BfBHBB")      # coords, w0, depth, width, encoding, bits


class Body(NamedTuple):
    """Fixed fields of a SIREN body (see the module docstring)."""

    lo: float
    hi: float
    w0: float
    depth: int
    width: int
    encoding: int
    bits: int


def body_overhead(ndim: int, depth: int, encoding: int) -> int:
    """Payload bytes that do not depend on the width (frame + fixed fields + side info)."""
    return payload.frame_overhead(ndim) + 16 + FIXED.size + quant.side_bytes(encoding, 2 * (depth + 1))


def pack(header: Header, fields: Body, params: list[np.ndarray]) -> bytes:
    """A complete SIREN payload: ``fields`` and the network's tensors in ``fields.encoding``."""
    body = (pack_range(fields.lo, fields.hi)
            + FIXED.pack(PIXEL_CENTRES, fields.w0, fields.depth, fields.width, fields.encoding, fields.bits)
            + quant.encode_tensors(params, fields.encoding, fields.bits))
    return payload.pack(header, body)


def read_body_fixed(r: Reader) -> Body:
    """Parse and check the fixed part of a SIREN body."""
    lo, hi = read_range(r)
    coords, w0, depth, width, enc, bits = r.take(FIXED.format[1:])
    if coords != PIXEL_CENTRES:
        raise PayloadError(f"unknown coordinate convention {coords}")
    if not (depth >= 1 and width >= 1 and np.isfinite(w0)):
        raise PayloadError(f"bad SIREN architecture: depth {depth}, width {width}, w0 {w0}")
    return Body(lo, hi, w0, depth, width, enc, bits)


def describe_body(header: Header, r: Reader) -> Body:
    return read_body_fixed(r)


def describe(data) -> Body:
    """The fixed fields of a SIREN payload, without decoding its network."""
    header, body = payload.unpack(data)
    if header.method != METHOD_ID:
        raise ValueError(f"not a SIREN payload (method id {header.method})")
    return read_body_fixed(Reader(body))


def fixed_network(tensors, w0: float) -> FixedSiren:
    """The exact evaluator of decoded ``(q, step)`` tensors W0, b0, W1, b1, ..."""
    return FixedSiren([tensors[i] + tensors[i + 1] for i in range(0, len(tensors), 2)], w0)


def decode_body(header: Header, r: Reader) -> np.ndarray:
    lo, hi, w0, depth, width, enc, bits = read_body_fixed(r)
    axes = coord_axes(header.shape)
    if not axes:
        raise PayloadError(f"a SIREN payload for a one-voxel chunk {header.shape} (writers store a constant)")
    net = fixed_network(quant.decode_exact(r, siren_shapes(len(axes), width, depth), enc, bits), w0)
    r.done()
    out = np.empty(math.prod(header.shape), header.dtype)
    for start, y in net.on_grid(header.shape, axes):    # denormalised slab by slab: no chunk-sized work arrays
        denormalise_into(y, lo, hi, out[start:start + len(y)])
    return out
