"""Latent-grid payload body (method id 3) and its numpy decoder.

Body layout, little-endian::

    lo, hi       2 x f64   value range of the chunk; the synthesis predicts (x - mid) / half
    first        u8        level i (0 = finest) has shape ceil(n / 2 ** (first + i)) per axis
    levels       u8        L, number of latent grids (1..MAX_LEVELS, first + L - 1 <= MAX_FIRST)
    latent_max   u8        latents are integers in [-latent_max, latent_max] (1..127)
    weight_bits  u8        network weights are integers in [-(2**(bits-1) - 1), 2**(bits-1) - 1]
    n_hidden     u8        hidden layers of the synthesis MLP (0..MAX_HIDDEN)
    hidden       n_hidden x u8   their widths (1..255)
    ctx_width    u8        hidden width of the context MLP (1..255)
    flags        u8        bits: FLAG_SHARED (1) the networks are the array's (codec configuration),
                           FLAG_UPSAMPLE (2) learned upsampling, FLAG_CONV (4) convolution stage
    networks_id  u32       with FLAG_SHARED only: :func:`networks_id` of those networks
    tensor side  without FLAG_SHARED: n_tensors x (i8 exponent e, u8 scale index s): tensor values
                 are integers times 2**-e, coded with the Laplace table (frac 0, scale s) around 0
    n_words      u32
    words        n_words x u32: one ANS stream (``entropy``): every tensor (without
                 FLAG_SHARED), then the latents

Tensors, in order: the synthesis layers ``W (fan_in, fan_out), b (fan_out)`` from L inputs through
the hidden widths to 1 output; with FLAG_UPSAMPLE the prefilter taps ``(L, 3)`` (level by level,
finest first: t0, t1, t2 of :func:`model.prefilter`); with FLAG_CONV the convolution stage
``Wa (3**d, W), ba (W), Wb (W * 3**d, 1), bb (1)`` (W = ``model.CONV_WIDTH``, :func:`model.conv_stage`);
then the context MLP ``W0 (C, ctx_width), b0, W1 (ctx_width, 2), b1`` with C = :func:`model.n_context`.
Latents follow level by level, coarsest first, and within a level in two checkerboard passes
(even, then odd index sum), each pass in C order of its cells: a latent ``v`` is coded with the
table chosen by the context MLP's (mu, log2 b) (:func:`entropy.quantise_params`, radius
2 latent_max + 1 around floor(mu)). The decoder's arithmetic is exact (``model``), so these
tables, and the decoded values, are the same on every machine.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import math
import struct
import threading
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from ... import payload
from ...codec import denormalise_into, pack_range, read_range
from ...payload import Header, PayloadError, Reader
from . import entropy
from .model import (ACT_BITS, CONV_WIDTH, EXACT, FILTER_BITS, INTERP_BITS, axis_matrix, check_exact, filter_gain,
                    fixed_conv_stage, FixedMLP, level_shapes, n_context, prefilter, round_to,
                    upsample_trailing)

METHOD_ID = 3
MAX_LEVELS = 8
MAX_FIRST = 7                            # first + levels - 1 <= MAX_FIRST: the coarsest level is 1/2**MAX_FIRST
MAX_HIDDEN = 3
MAX_NDIM = 4                             # interpolation stays exact in binary64 up to 4 axes
FIXED = struct.Struct("<BBBBB")          # first, levels, latent_max, weight_bits, n_hidden
DECODE_VOXELS = 1 << 17                  # voxels per synthesis tile (long GIL-free calls: threads decode chunks in parallel)
FLAG_SHARED = 1                          # networks in the codec configuration, not the payload
FLAG_UPSAMPLE = 2                        # learned upsampling (prefilter taps per level)
FLAG_CONV = 4                            # residual convolution stage after the synthesis MLP
FLAGS = FLAG_SHARED | FLAG_UPSAMPLE | FLAG_CONV
ARCH_FLAGS = FLAG_UPSAMPLE | FLAG_CONV   # the flags that change the networks (shared networks carry them)
NETWORKS_VERSION = 1


class Body(NamedTuple):
    """Fixed fields of a latent-grid body (see the module docstring)."""

    lo: float
    hi: float
    first: int
    levels: int
    latent_max: int
    weight_bits: int
    hidden: tuple[int, ...]
    ctx_width: int
    flags: int = 0
    networks_id: int = 0


class Networks(NamedTuple):
    """Networks shared by the chunks of an array (``LatentGridCodec(networks=...)``): the
    architecture, every tensor as integers (storage order) and its power-of-two exponent."""

    ndim: int
    levels: int
    hidden: tuple[int, ...]
    ctx_width: int
    weight_bits: int
    exps: tuple[int, ...]
    values: tuple[np.ndarray, ...]
    flags: int = 0                       # ARCH_FLAGS bits: learned upsampling, convolution stage

    def weights(self) -> list[np.ndarray]:
        return [q.astype(np.float64) * 2.0 ** -int(e) for q, e in zip(self.values, self.exps)]

    def to_config(self) -> dict:
        """JSON-serialisable form kept in the codec configuration (docs/format.md, 5.5)."""
        flat = np.concatenate([q.reshape(-1) for q in self.values]).astype("<i2")
        return {"version": NETWORKS_VERSION, "ndim": self.ndim, "levels": self.levels, "hidden": list(self.hidden),
                "context_width": self.ctx_width, "weight_bits": self.weight_bits, "flags": self.flags,
                "exponents": list(self.exps), "values": base64.b64encode(flat.tobytes()).decode("ascii")}

    @classmethod
    def from_config(cls, cfg: dict) -> "Networks":
        """Parse and check networks from a codec configuration (ValueError naming what is wrong)."""
        try:
            if cfg["version"] != NETWORKS_VERSION:
                raise ValueError(f"networks version {cfg['version']} is not {NETWORKS_VERSION}")
            ndim, levels, ctx, bits = (int(cfg[k]) for k in ("ndim", "levels", "context_width", "weight_bits"))
            hidden = tuple(int(h) for h in cfg["hidden"])
            flags = int(cfg.get("flags", 0))
            exps = tuple(int(e) for e in cfg["exponents"])
            flat = np.frombuffer(base64.b64decode(cfg["values"], validate=True), "<i2").astype(np.int64)
        except (KeyError, TypeError, ValueError, binascii.Error) as e:
            raise ValueError(f"bad latent-grid networks in the codec configuration: {e}") from None
        if not (1 <= ndim <= MAX_NDIM and 1 <= levels <= MAX_LEVELS and len(hidden) <= MAX_HIDDEN
                and all(1 <= h <= 255 for h in hidden) and 1 <= ctx <= 255 and 2 <= bits <= 16
                and not flags & ~ARCH_FLAGS):
            raise ValueError(f"bad latent-grid networks architecture: {ndim}-d, {levels} levels, hidden {hidden}, "
                             f"context width {ctx}, {bits} bits, flags {flags}")
        shapes = tensor_shapes(ndim, levels, hidden, ctx, flags)
        sizes = [math.prod(t) for t in shapes]
        q = weight_radius(bits)
        if len(exps) != len(shapes) or len(flat) != sum(sizes) or np.abs(flat).max(initial=0) > q \
                or not all(-128 <= e <= 127 for e in exps):
            raise ValueError("bad latent-grid networks: exponents or values do not match the architecture")
        values = tuple(v.reshape(t) for v, t in zip(np.split(flat, np.cumsum(sizes)[:-1]), shapes))
        return cls(ndim, levels, hidden, ctx, bits, exps, values, flags)

    @property
    def id(self) -> int:
        """The u32 a payload carries to name these networks: the first 4 bytes (little-endian)
        of the SHA-256 of their canonical bytes."""
        head = struct.pack("<BBB", self.ndim, self.levels, len(self.hidden)) + bytes(self.hidden) + struct.pack(
            "<BB", self.ctx_width, self.weight_bits) + np.asarray(self.exps, np.int8).tobytes()
        if self.flags:           # (networks without options keep the id they had before options existed)
            head += struct.pack("<B", self.flags)
        flat = np.concatenate([q.reshape(-1) for q in self.values]).astype("<i2")
        return struct.unpack("<I", hashlib.sha256(head + flat.tobytes()).digest()[:4])[0]


def tensor_shapes(ndim: int, levels: int, hidden, ctx_width: int, flags: int = 0) -> list[tuple[int, ...]]:
    """Shapes of the stored tensors: synthesis layers, prefilter taps (FLAG_UPSAMPLE), convolution
    stage (FLAG_CONV), then the context MLP."""
    dims = [levels, *hidden, 1]
    out: list[tuple[int, ...]] = []
    for a, b in zip(dims[:-1], dims[1:]):
        out += [(a, b), (b,)]
    if flags & FLAG_UPSAMPLE:
        out.append((levels, 3))
    if flags & FLAG_CONV:
        taps = 3 ** ndim
        out += [(taps, CONV_WIDTH), (CONV_WIDTH,), (CONV_WIDTH * taps, 1), (1,)]
    c = n_context(ndim, levels)
    return out + [(c, ctx_width), (ctx_width,), (ctx_width, 2), (2,)]


class Parts(NamedTuple):
    """Where each network's tensors are in the stored list (:func:`tensor_shapes` order)."""

    mlp: slice                  # the synthesis MLP's layers
    prefilter: int | None       # FLAG_UPSAMPLE: the prefilter taps
    conv: slice | None          # FLAG_CONV: Wa, ba, Wb, bb
    context: slice              # the context MLP's four tensors, last

    @property
    def decoder(self) -> slice:
        """Everything before the context MLP (the synthesis side)."""
        return slice(0, self.context.start)


def tensor_parts(hidden, flags: int = 0) -> Parts:
    """The :class:`Parts` of the tensors of a synthesis MLP with ``hidden`` widths and ``flags``."""
    at = 2 * (len(hidden) + 1)
    mlp, prefilter, conv = slice(0, at), None, None
    if flags & FLAG_UPSAMPLE:
        prefilter, at = at, at + 1
    if flags & FLAG_CONV:
        conv, at = slice(at, at + 4), at + 4
    return Parts(mlp, prefilter, conv, slice(at, at + 4))


def fixed_bytes(ndim: int, hidden, shared: bool = False, flags: int = 0) -> int:
    """Payload bytes outside the entropy stream (frame, fixed fields, tensor side info or the
    shared networks' id, n_words)."""
    n_tensors = tensor_parts(hidden, flags).context.stop
    return payload.frame_overhead(ndim) + 16 + FIXED.size + len(hidden) + 2 + (4 if shared else 2 * n_tensors) + 4


def weight_radius(bits: int) -> int:
    return 2 ** (bits - 1) - 1


def latent_radius(latent_max: int) -> int:
    return 2 * latent_max + 1


def check_networks(weights, exps, ndim: int, hidden, flags: int, latent_max: int) -> None:
    """Raise ValueError unless the networks (stored order, float64 values, power-of-two exponents)
    decode exactly in float64 for latents up to ``latent_max``: the context MLP on integer
    inputs; the prefilter (its gain bounds the synthesis inputs); the synthesis MLP on inputs
    floored to 2**-ACT_BITS; the convolution stage on the synthesis output."""
    parts = tensor_parts(hidden, flags)
    exps = list(exps)
    check_exact(weights[parts.context], exps[parts.context], latent_max, 0)
    bound = float(latent_max)
    if parts.prefilter is not None:
        m = parts.prefilter
        gain = max(filter_gain(t) for t in weights[m])
        peak = bound * max(1.0, gain) ** ndim           # largest value after any axis
        bound *= gain ** ndim
        bits = FILTER_BITS[ndim]
        if not peak * 2.0 ** (bits + max(0, int(exps[m]))) < EXACT \
                or not bound * 2.0 ** (bits + INTERP_BITS * ndim) < EXACT:
            raise ValueError(f"the upsampling prefilter's gain {gain:g} takes latents beyond exact float64")
    out = check_exact(weights[parts.mlp], exps[parts.mlp], bound, ACT_BITS)
    if parts.conv is not None:
        c = parts.conv.start
        r = check_exact(weights[parts.conv], exps[parts.conv], out, ACT_BITS)
        if not (out + r) * 2.0 ** (ACT_BITS + max(0, int(exps[c + 2]), int(exps[c + 3]))) < EXACT:
            raise ValueError("the convolution stage's output is beyond exact float64")


def read_body_fixed(r: Reader, ndim: int) -> tuple[Body, np.ndarray | None, np.ndarray | None]:
    """Parse and check the fixed fields and tensor side information of a body (None, None
    for shared networks)."""
    lo, hi = read_range(r)
    first, levels, latent_max, bits, n_hidden = r.take(FIXED.format[1:])
    if not (1 <= levels <= MAX_LEVELS and first + levels <= MAX_FIRST + 1 and 1 <= latent_max <= 127
            and 2 <= bits <= 16 and n_hidden <= MAX_HIDDEN):
        raise PayloadError(f"bad latent-grid fields: first {first}, levels {levels}, latent_max {latent_max}, "
                           f"weight bits {bits}, hidden layers {n_hidden}")
    hidden = tuple(int(v) for v in r.array("u1", n_hidden))
    ctx_width, flags = r.take("BB")
    if 0 in hidden or ctx_width == 0:
        raise PayloadError(f"bad latent-grid network widths {hidden}, {ctx_width}")
    if flags & ~FLAGS:
        raise PayloadError(f"latent-grid flags {flags} are not readable by this inr-codecs")
    if flags & FLAG_SHARED:
        return Body(lo, hi, first, levels, latent_max, bits, hidden, ctx_width, flags, r.take("I")), None, None
    body = Body(lo, hi, first, levels, latent_max, bits, hidden, ctx_width, flags)
    n_tensors = len(tensor_shapes(ndim, levels, hidden, ctx_width, flags))
    side = r.array("u1", 2 * n_tensors).reshape(-1, 2)
    exps = side[:, 0].view(np.int8).astype(np.int64)
    scales = side[:, 1].astype(np.int64)
    if np.any(scales >= entropy.N_SCALES):
        raise PayloadError("bad scale index in latent-grid tensor side information")
    return body, exps, scales


def describe_body(header: Header, r: Reader) -> Body:
    return read_body_fixed(r, len(header.shape))[0]


def describe(data) -> Body:
    """The fixed fields of a latent-grid payload, without decoding it."""
    header, body = payload.unpack(data)
    if header.method != METHOD_ID:
        raise ValueError(f"not a latent-grid payload (method id {header.method})")
    return describe_body(header, Reader(body))


# --- the coded content, shared by encoder and decoder -------------------------------------------

class _Pass(NamedTuple):
    """One checkerboard pass of one level, as flat indices (C order) for the decoder's gathers."""

    cells: np.ndarray             # the pass's cells in the level's grid
    padded: np.ndarray            # the same cells in the zero-padded grid (a layer of zeros around it)
    parents: np.ndarray           # their parents' cells in the coarser level's grid (all 0 at the coarsest level)
    neighbours: np.ndarray        # (k, 2 d) their face neighbours in the padded grid (second pass only)


class _Level(NamedTuple):
    shape: tuple[int, ...]
    passes: tuple[_Pass, _Pass]
    parent_context: np.ndarray | None   # (M, 1 + 2 d): per coarser-level cell, its context cells in its padded grid


def _faces(d: int) -> list[tuple[int, int]]:
    """(axis, offset) of the face-neighbour columns of :func:`model.context_features`, in order."""
    return [(a, -step) for a in range(d) for step in (1, -1)]


def _neighbourhood(shape, coords: np.ndarray) -> np.ndarray:
    """(k, 1 + 2 d) flat indices in the zero-padded grid of ``shape``: cells ``coords`` (d, k) and their face neighbours."""
    padded = tuple(k + 2 for k in shape)
    here = np.ravel_multi_index(coords + 1, padded)
    steps = [o * math.prod(padded[a + 1:]) for a, o in _faces(len(shape))]
    return here[:, None] + np.array([0] + steps, np.intp)


@lru_cache(maxsize=4)
def _context_plan(shape: tuple[int, ...], first: int, levels: int) -> tuple[_Level, ...]:
    """Gather indices of :func:`code_latents` for chunks of ``shape``, per level (finest first):
    the columns of :func:`model.context_features` become gathers from zero-padded grids (a
    neighbour outside the grid reads the padding). Cached per shape (read-only arrays)."""
    shapes = level_shapes(shape, first, levels)
    d = len(shape)
    plan = []
    for level, m in enumerate(shapes):
        coords = np.indices(m).reshape(d, -1)
        odd = coords.sum(0) % 2
        coarser = shapes[level + 1] if level + 1 < levels else None
        passes = []
        for pass_ in (0, 1):
            cells = np.flatnonzero(odd == pass_)
            near = _neighbourhood(m, coords[:, cells])
            parents = (np.zeros(len(cells), np.intp) if coarser is None
                       else np.ravel_multi_index(coords[:, cells] // 2, coarser))
            passes.append(_Pass(cells, near[:, 0].copy(), parents,
                                near[:, 1:].copy() if pass_ else np.empty((0, 2 * d), np.intp)))
        context = None if coarser is None else _neighbourhood(coarser, np.indices(coarser).reshape(d, -1))
        level_plan = _Level(m, tuple(passes), context)
        for x in (*(v for q in passes for v in q), context):
            if x is not None:
                x.flags.writeable = False
        plan.append(level_plan)
    return tuple(plan)


def code_latents(fields: Body, shape, ctx: list[np.ndarray], code) -> list[np.ndarray]:
    """Visit the latents in stream order; ``code(base, frac, scale, cells, level)`` returns the
    integer latents of ``cells`` (flat indices of one pass of one level), encoding or decoding.
    Returns the latent grids, finest first (float64, integer-valued).

    The context MLP is :func:`model.context_features` then :func:`model.mlp` with
    ``floor_to(ACT_BITS)``, evaluated by parts, with the context columns gathered from
    zero-padded grids (:func:`_context_plan`): the parent columns are the same for the 2**d
    cells of a parent, so their share of the first layer is computed once per parent, and a
    first-pass cell's whole context (parent, level and pass) is its parent's: its table is
    computed once per parent. Every sum is exact, so the values are the same."""
    d, levels = len(shape), fields.levels
    plan = _context_plan(tuple(int(n) for n in shape), fields.first, levels)
    w0, b0, w1, b1 = ctx
    w_parent, w_nb, w_pass, w_level = w0[:1 + 2 * d], w0[1 + 2 * d:1 + 4 * d], w0[1 + 4 * d], w0[2 + 4 * d:]
    up = 2.0 ** ACT_BITS

    def tables(h):
        """Table keys from first-layer pre-activations h (cells, ctx_width); h is overwritten."""
        h *= up
        np.floor(h, out=h)
        np.maximum(h, 0, out=h)
        out = h @ w1
        out += b1.reshape(-1) * up
        out *= 1.0 / up
        return entropy.quantise_params(out[:, 0], out[:, 1], fields.latent_max)

    padded: list[np.ndarray | None] = [None] * (levels + 1)
    for level in reversed(range(levels)):
        level_plan = plan[level]
        grid = np.zeros(tuple(k + 2 for k in level_plan.shape), np.float64)
        flat = grid.reshape(-1)
        const = w_level[level] + b0.reshape(-1)
        if padded[level + 1] is None:
            by_parent = const[None, :]                       # no parent: one context for the level
        else:
            by_parent = padded[level + 1].reshape(-1)[level_plan.parent_context] @ w_parent
            by_parent += const
        for pass_, p in enumerate(level_plan.passes):
            if not len(p.cells):
                continue
            if pass_ == 0:
                base, frac, scale = (key[p.parents] for key in tables(by_parent.copy()))
            else:
                h = by_parent[p.parents]
                h += flat[p.neighbours] @ w_nb
                h += w_pass
                base, frac, scale = tables(h)
            values = code(base, frac, scale, p.cells, level)
            if np.any(np.abs(values) > fields.latent_max):
                raise PayloadError(f"latent beyond latent_max {fields.latent_max}")
            flat[p.padded] = values
        padded[level] = grid
    return [np.ascontiguousarray(g[(slice(1, -1),) * d]) for g in padded[:levels]]


def _scratch(name: str, shape) -> np.ndarray:
    """A float64 work array of ``shape``, reused by the calling thread's later decodes (fresh
    multi-megabyte temporaries cost page faults that are a large share of a chunk's decode).
    Its contents are left over from earlier use. A thread keeps the largest synthesis tile's
    features and output it has needed: (levels + 2) doubles per voxel of a tile, DECODE_VOXELS
    voxels (about 10 MB at 8 levels) or one row of the first axis if that is larger."""
    n = math.prod(shape)
    cache = _SCRATCH.__dict__
    if cache.get(name) is None or cache[name].size < n:
        cache[name] = np.empty(n, np.float64)
    return cache[name][:n].reshape(shape)


_SCRATCH = threading.local()


def synthesise(fields: Body, shape, grids: list[np.ndarray], weights: list[np.ndarray], dtype) -> np.ndarray:
    """The chunk's values in ``dtype`` (flat C order) from decoded latents, in tiles of rows of
    the first axis: the trailing axes are interpolated once per level (small grids), the first
    axis per tile, into a (levels + 1, voxels) feature matrix for :class:`model.FixedMLP`, whose
    output is denormalised into the result tile by tile (whole chunk with the convolution stage).
    ``weights``: the stored tensors (:func:`tensor_shapes` order).

    The interpolation is computed as products with :func:`model.axis_matrix` (two integer
    weights per row: exact, whatever the BLAS)."""
    d = len(shape)
    parts = tensor_parts(fields.hidden, fields.flags)
    scale = 2.0 ** (ACT_BITS - INTERP_BITS * d)      # features as integers times 2**ACT_BITS
    if parts.prefilter is not None:                  # prefiltered latents, as integers times 2**-FILTER_BITS[d]
        bits = FILTER_BITS[d]
        grids = [prefilter(np, g, tuple(t), d, round_to(bits)) * 2.0 ** bits
                 for g, t in zip(grids, weights[parts.prefilter])]
        scale *= 2.0 ** -bits
    matrices = [[axis_matrix(n, m, fields.first + i) for n, m in zip(shape, g.shape)] for i, g in enumerate(grids)]
    partial = [upsample_trailing(g, a[1:]).reshape(g.shape[0], -1) for g, a in zip(grids, matrices)]
    first = [a[0] * scale for a in matrices]        # axis 0 and the scaling (a power of two: exact) in one
    row, voxels = math.prod(shape[1:]), math.prod(shape)
    rows_per_tile = max(1, DECODE_VOXELS // max(1, row))
    result = np.empty(voxels, dtype)
    whole = np.empty(voxels) if parts.conv is not None else None
    mlp = FixedMLP(weights[parts.mlp])
    levels = len(grids)
    buffer = _scratch("features", (levels + 1, rows_per_tile * row))   # features, then a row of ones
    buffer[levels] = 1.0
    for start in range(0, shape[0], rows_per_tile):
        stop = min(shape[0], start + rows_per_tile)
        tile = slice(start * row, stop * row)
        feats = buffer[:, :(stop - start) * row]
        for lvl, (p, a) in enumerate(zip(partial, first)):
            np.matmul(a[start:stop], p, out=feats[lvl].reshape(stop - start, row))
        np.floor(feats[:levels], out=feats[:levels])
        if whole is not None:
            mlp(feats, out=whole[None, tile])
        else:
            y = mlp(feats, out=_scratch("output", (1, feats.shape[1])))[0]
            denormalise_into(y, fields.lo, fields.hi, result[tile])
    if whole is not None:
        y = fixed_conv_stage(whole.reshape(shape), weights[parts.conv]).reshape(-1)
        denormalise_into(y, fields.lo, fields.hi, result)
    return result


def decode_body(header: Header, r: Reader, networks: Networks | None = None) -> np.ndarray:
    """The chunk's values; ``networks``: the array's shared networks (needed by, and only by,
    payloads with FLAG_SHARED)."""
    ndim = len(header.shape)
    if ndim > MAX_NDIM:
        raise PayloadError(f"latent-grid payloads have at most {MAX_NDIM} axes, not {ndim}")
    fields, exps, scales = read_body_fixed(r, ndim)
    shapes = tensor_shapes(ndim, fields.levels, fields.hidden, fields.ctx_width, fields.flags)
    n_words = r.take("I")
    words = r.array("<u4", n_words)
    r.done()
    dec = entropy.Decoder(words)
    if fields.flags & FLAG_SHARED:
        weights, exps = _shared_weights(fields, ndim, networks)
    else:
        radius = weight_radius(fields.weight_bits)
        weights = []
        for shp, e, s in zip(shapes, exps, scales):
            n = math.prod(shp)
            q = dec.read(np.zeros(n, np.int64), np.zeros(n, np.int64), np.full(n, s), radius)
            weights.append((q.astype(np.float64) * 2.0 ** -int(e)).reshape(shp))
    try:
        check_networks(weights, exps, ndim, fields.hidden, fields.flags, fields.latent_max)
    except ValueError as e:
        raise PayloadError(f"latent-grid networks out of the exactly decodable range: {e}") from e
    grids = code_latents(fields, header.shape, weights[tensor_parts(fields.hidden, fields.flags).context],
                         lambda base, frac, scale, cells, level: dec.read(base, frac, scale,
                                                                          latent_radius(fields.latent_max)))
    dec.done()
    return synthesise(fields, header.shape, grids, weights, header.dtype)


def _shared_weights(fields: Body, ndim: int, networks: Networks | None):
    """The networks a FLAG_SHARED payload names, checked against it."""
    if networks is None:
        raise PayloadError("this latent-grid chunk uses networks shared by its array (kept in the codec "
                           "configuration): decode it through the array's codec (a Zarr read does)")
    if networks.id != fields.networks_id:
        raise PayloadError(f"this latent-grid chunk was written with other shared networks (id "
                           f"{fields.networks_id:08x}) than the codec's ({networks.id:08x})")
    if (networks.ndim, networks.levels, networks.hidden, networks.ctx_width, networks.weight_bits,
            networks.flags) != (ndim, fields.levels, fields.hidden, fields.ctx_width, fields.weight_bits,
                                fields.flags & ARCH_FLAGS):
        raise PayloadError("the shared networks' architecture differs from the payload's")
    return networks.weights(), list(networks.exps)


def pack(header: Header, fields: Body, weights: list[np.ndarray], exps: list[int], scales: list[int] | None,
         latents: list[np.ndarray]) -> bytes:
    """A complete payload: ``weights`` as integers (times 2**-exps), ``latents`` (finest first,
    integer arrays of the level shapes). With FLAG_SHARED in ``fields`` the weights are the
    shared networks' (not stored; ``scales`` unused)."""
    enc = entropy.Encoder()
    radius = weight_radius(fields.weight_bits)
    shared = bool(fields.flags & FLAG_SHARED)
    for q, s in zip([] if shared else weights, scales or []):
        q = np.asarray(q, np.int64).reshape(-1)
        enc.add(q, np.zeros_like(q), np.zeros_like(q), np.full(q.shape, s), radius)
    k = tensor_parts(fields.hidden, fields.flags).context
    ctx = [np.asarray(q, np.float64) * 2.0 ** -int(e) for q, e in zip(weights[k], exps[k])]

    def code(base, frac, scale, cells, level):
        values = np.asarray(latents[level], np.int64).reshape(-1)[cells]
        enc.add(values, base, frac, scale, latent_radius(fields.latent_max))
        return values

    code_latents(fields, header.shape, ctx, code)
    words = enc.finish()
    side = (struct.pack("<I", fields.networks_id) if shared
            else b"".join(struct.pack("<bB", int(e), int(s)) for e, s in zip(exps, scales)))
    body = (pack_range(fields.lo, fields.hi)
            + FIXED.pack(fields.first, fields.levels, fields.latent_max, fields.weight_bits, len(fields.hidden))
            + bytes(fields.hidden) + struct.pack("<BB", fields.ctx_width, fields.flags)
            + side + struct.pack("<I", words.size) + words.tobytes())
    return payload.pack(header, body)
