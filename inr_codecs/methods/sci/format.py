"""SCI payload body (method id 2), its partition rule and its numpy decoder.

Body layout, little-endian::

    lo, hi     2 x f64  value range of the chunk; networks predict (x - mid) / half
    coords     u8       0 = pixel centres of each block's own grid, (2 i + 1) / n - 1 (0 if n = 1)
    w0         f32      sine frequency of every layer
    depth      u8       sine layers per block network (plus one linear output layer)
    fr         f32      funnel ratio the encoder used (informative: the widths below decide)
    encoding   u8       tensor encoding (``quant.QUANTISED`` or ``quant.FLOAT16``)
    bits       u8       bit depth of QUANTISED tensors (0 for FLOAT16)
    deblock    f32      deblocking strength t in normalised units (0 = no filtering)
    n_flags    u32      number of partition flags
    flags      ceil(n_flags / 8) bytes: split flags of the partition tree in preorder, packed
                        most significant bit first, padding bits zero (see :func:`children`)
    blocks     per block (the tree's leaves in preorder): w1 u16, w u16 (first and other sine
               layer widths); w1 = w = 0 marks a constant block and is followed by its value f32
               (normalised)
    tensors    present if any block has a network: ``quant.encode_tensors`` of every network
               block's layers in block order, each layer one (fan_in + 1, fan_out) matrix [W; b]
"""
from __future__ import annotations

import itertools
import math
import struct
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ... import payload, quant
from ...codec import denormalise, pack_range, read_range
from ...nn import FixedSiren, coord_axes, mlp_shapes, siren_forward
from ...payload import Header, PayloadError, Reader

METHOD_ID = 2
PIXEL_CENTRES = 0
FIXED = struct.Struct("<BfBfBBfI")   # coords, w0, depth, fr, encoding, bits, deblock, n_flags
MIN_SIDE = 4            # an axis is split only if both halves keep >= MIN_SIDE voxels


# --- partition tree ------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Node:
    """A box ``start:stop`` of the chunk at tree level ``level`` (the chunk itself is level 0)."""

    start: tuple[int, ...]
    stop: tuple[int, ...]
    level: int

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(b - a for a, b in zip(self.start, self.stop))

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def slices(self) -> tuple[slice, ...]:
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop))


def split_axes(node: Node) -> list[int]:
    """The axes the split rule halves: those of at least ``2 * MIN_SIDE`` voxels."""
    return [a for a, n in enumerate(node.shape) if n >= 2 * MIN_SIDE]


def children(node: Node) -> list[Node]:
    """The split rule, part of the format: every axis of at least ``2 * MIN_SIDE`` voxels is
    halved at ``start + side // 2`` (the upper half takes the odd voxel); children are listed
    lower-half first, in C order over the split axes (the first split axis varies slowest).
    A node with no such axis cannot be split."""
    axes = split_axes(node)
    out = []
    for upper in itertools.product((0, 1), repeat=len(axes)):
        start, stop = list(node.start), list(node.stop)
        for a, u in zip(axes, upper):
            mid = node.start[a] + node.shape[a] // 2
            start[a], stop[a] = (mid, node.stop[a]) if u else (node.start[a], mid)
        out.append(Node(tuple(start), tuple(stop), node.level + 1))
    return out if axes else []


def read_partition(shape: tuple[int, ...], flags: np.ndarray) -> list[Node]:
    """Rebuild the blocks (preorder) from split flags; raise PayloadError if they do not fit."""
    blocks, pos = [], 0
    stack = [Node((0,) * len(shape), tuple(shape), 0)]
    while stack:
        node = stack.pop()
        if pos >= len(flags):
            raise PayloadError("partition flags end before the tree does")
        flag, pos = int(flags[pos]), pos + 1
        if flag:
            k = len(split_axes(node))
            if k == 0:
                raise PayloadError(f"partition splits a block of shape {node.shape} that cannot be split")
            if 2 ** k > len(flags) - pos:       # each child takes a flag: checked before making them
                raise PayloadError(f"partition flags end before the tree does ({2 ** k} children of a "
                                   f"block of shape {node.shape}, {len(flags) - pos} flags left)")
            stack += reversed(children(node))
        else:
            blocks.append(node)
    if pos != len(flags):
        raise PayloadError(f"{len(flags) - pos} partition flags left after the tree")
    return blocks


# --- networks ---------------------------------------------------------------------------------

def block_shapes(in_dim: int, w1: int, w: int, depth: int) -> list[tuple[int, ...]]:
    """Tensor shapes W0, b0, ... of a block network: sine layers of w1, then depth - 1 of w."""
    return mlp_shapes(in_dim, [w1] + [w] * (depth - 1))


def layer_shapes(in_dim: int, w1: int, w: int, depth: int) -> list[tuple[int, int]]:
    """Stored layer matrices [W; b] of a block network, each (fan_in + 1, fan_out)."""
    return [(a + 1, b) for a, b in block_shapes(in_dim, w1, w, depth)[::2]]


def split_layers(layers):
    """[W; b] matrices -> [W0, b0, W1, b1, ...] views for ``siren_forward`` (numpy or torch)."""
    return [t for m in layers for t in (m[..., :-1, :], m[..., -1:, :])]


def forward(xp, layers, x, w0: float):
    """Evaluate one (or a leading batch of) block network(s) at block coordinates ``x``."""
    return siren_forward(xp, split_layers(layers), x, w0)


def render(shape, blocks: list[Node], nets: list, axes: list[int], w0: float) -> np.ndarray:
    """Evaluate every block's network (its decoded ``(q, step)`` layer matrices, exactly: see
    ``nn.FixedSiren``) or constant on its own grid: the normalised chunk, float32."""
    y = np.empty(shape, np.float32)
    for blk, net in zip(blocks, nets):
        if not isinstance(net, list):
            y[blk.slices] = net
            continue
        fixed = FixedSiren([(q[:-1], step, q[-1], step) for q, step in net], w0)
        out = np.empty(blk.size, np.float32)
        for start, values in fixed.on_grid(blk.shape, axes):
            out[start:start + len(values)] = values
        y[blk.slices] = out.reshape(blk.shape)
    return y


def deblock(y: np.ndarray, blocks: list[Node], t: float) -> np.ndarray:
    """Filter block faces on every axis (an H.264-style edge filter, decode time).

    For each face between blocks along axis a, with p1, p0 | q0, q1 the two voxels on either
    side: where |q0 - p0| < t, |p1 - p0| < t/2 and |q1 - q0| < t/2 (a small step between smooth
    sides, i.e. a blocking artefact, not an edge), p0 += d and q0 -= d with
    d = clip((4 (q0 - p0) + p1 - q1) / 8, -t/2, t/2). Axes are filtered one after another in
    axis order, each on the previous axis's result. ``t`` is in normalised units ([-1, 1] range).
    """
    if t <= 0:
        return y
    out = y.copy()
    for a in range(y.ndim):
        src = out.copy()
        for blk in blocks:
            s = blk.start[a]
            if s == 0:
                continue
            planes = [blk.slices[:a] + (i,) + blk.slices[a + 1:] for i in (s - 2, s - 1, s, s + 1)]
            p1, p0, q0, q1 = (src[pl] for pl in planes)
            step = q0 - p0
            on = (np.abs(step) < t) & (np.abs(p1 - p0) < t / 2) & (np.abs(q1 - q0) < t / 2)
            d = np.where(on, np.clip((4 * step + p1 - q1) / 8, -t / 2, t / 2), 0).astype(np.float32)
            out[planes[1]] = p0 + d
            out[planes[2]] = q0 - d
    return out


# --- body -------------------------------------------------------------------------------------

class Body(NamedTuple):
    """The fields of an SCI body before its tensors (see the module docstring)."""

    lo: float
    hi: float
    w0: float
    depth: int
    fr: float
    encoding: int
    bits: int
    deblock: float
    blocks: list[Node]
    widths: list[tuple[int, int]]
    constants: dict[int, float]


def read_body_fixed(shape, r) -> Body:
    """Parse an SCI body up to its tensors."""
    lo, hi = read_range(r)
    coords, w0, depth, fr, enc, bits, t, n_flags = r.take(FIXED.format[1:])
    if coords != PIXEL_CENTRES:
        raise PayloadError(f"unknown coordinate convention {coords}")
    if not (depth >= 2 and np.isfinite(w0) and np.isfinite(t) and t >= 0):
        raise PayloadError(f"bad SCI fields: depth {depth}, w0 {w0}, deblock {t}")
    if n_flags > 2 * math.prod(shape):
        raise PayloadError(f"{n_flags} partition flags for a chunk of shape {tuple(shape)}")
    packed = r.array("u1", math.ceil(n_flags / 8))
    bits_all = np.unpackbits(packed)
    if bits_all[n_flags:].any():
        raise PayloadError("non-zero padding after the partition flags")
    blocks = read_partition(tuple(shape), bits_all[:n_flags])
    widths, constants = [], {}
    for i in range(len(blocks)):
        w1, w = r.take("HH")
        if (w1 == 0) != (w == 0):
            raise PayloadError(f"block {i} has widths ({w1}, {w})")
        if w == 0:
            constants[i] = r.take("f")
            if not np.isfinite(constants[i]):
                raise PayloadError(f"block {i} has a non-finite constant")
        widths.append((w1, w))
    return Body(lo, hi, w0, depth, fr, enc, bits, t, blocks, widths, constants)


def describe(data) -> Body:
    """The fields of an SCI payload (partition, widths, deblocking), without its tensors."""
    header, body = payload.unpack(data)
    if header.method != METHOD_ID:
        raise ValueError(f"not an SCI payload (method id {header.method})")
    return read_body_fixed(header.shape, Reader(body))


def describe_body(header: Header, r: Reader) -> Body:
    return read_body_fixed(header.shape, r)


def render_body(shape, r) -> tuple[Body, np.ndarray]:
    """Parse a whole SCI body and evaluate its blocks: the fields and the normalised float32
    chunk before deblocking."""
    body = read_body_fixed(shape, r)
    axes = coord_axes(shape)
    if not axes:
        raise PayloadError(f"an SCI payload for a one-voxel chunk {tuple(shape)} (writers store a constant)")
    in_dim = len(axes)
    net_ids = [i for i, w in enumerate(body.widths) if w != (0, 0)]
    shapes = [layer_shapes(in_dim, *body.widths[i], body.depth) for i in net_ids]
    flat = quant.decode_exact(r, [s for sh in shapes for s in sh], body.encoding, body.bits) if net_ids else []
    r.done()
    nets, off = {}, 0
    for i, sh in zip(net_ids, shapes):
        nets[i], off = flat[off:off + len(sh)], off + len(sh)
    y = render(shape, body.blocks,
               [body.constants[i] if i in body.constants else nets[i] for i in range(len(body.blocks))],
               axes, body.w0)
    return body, y


def decode_body(header, r) -> np.ndarray:
    body, y = render_body(header.shape, r)
    return denormalise(deblock(y, body.blocks, body.deblock).ravel(), body.lo, body.hi, header.dtype)


def pack(header: Header, fields: Body, flags: list[int], layers: list[list[np.ndarray]]) -> bytes:
    """A complete SCI payload: ``fields`` (their ``blocks`` are described by the split
    ``flags``), and every network block's layers, as (fan_in + 1, fan_out) matrices."""
    packed_flags = np.packbits(np.array(flags, np.uint8)).tobytes()
    table = b"".join(
        struct.pack("<HHf", 0, 0, fields.constants[i]) if i in fields.constants else struct.pack("<HH", *w)
        for i, w in enumerate(fields.widths))
    tensors = [m for net in layers for m in net]
    body = (pack_range(fields.lo, fields.hi)
            + FIXED.pack(PIXEL_CENTRES, fields.w0, fields.depth, fields.fr, fields.encoding, fields.bits,
                         fields.deblock, len(flags))
            + packed_flags + table
            + (quant.encode_tensors(tensors, fields.encoding, fields.bits) if tensors else b""))
    return payload.pack(header, body)
