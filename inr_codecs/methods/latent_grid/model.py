"""The latent-grid model, written once for numpy (decode, fixed point) and torch (fit).

A chunk of shape ``n`` is represented by L single-channel latent grids; level ``i`` (0 = finest)
has shape ``ceil(n / 2 ** (first + i))`` per axis. Each grid is upsampled to the chunk by
separable linear interpolation at voxel centres (:func:`axis_table`), the L values of a voxel go
through the synthesis MLP (ReLU), and the latents' distribution comes from the context MLP
(:func:`context_features`: the parent level and, for the second checkerboard pass, the same
level's face neighbours).

The decoder evaluates everything in fixed point with float64 arithmetic on dyadic values: weights
are integers times a power of two, activations are floored to multiples of ``2 ** -ACT_BITS`` after
every hidden layer, interpolation weights are multiples of ``2 ** -INTERP_BITS``. Every product and
sum is then exact (``check_exact`` bounds them below 2**53), whatever the BLAS, its summation order
or thread count: a payload decodes to the same values on every machine. Training runs the same
functions in float32 without the flooring (``requant=None``).

Two options change the pipeline (payload flags, ``docs/format.md``): learned upsampling
(:func:`prefilter`: a symmetric 5-tap filter per level, applied separably to the latent grid
before the linear interpolation, so that the two together are a learned separable upsampling
kernel) and a residual convolution stage (:func:`conv_stage`: two 3**d convolutions, 1 -> CONV_WIDTH
-> 1 channels, added to the synthesis output).
"""
from __future__ import annotations

import itertools
import math
from functools import lru_cache

import numpy as np

INTERP_BITS = 9          # interpolation weights are multiples of 2**-9 (exact for levels up to 2**-8)
ACT_BITS = 16            # hidden activations and synthesis inputs: multiples of 2**-16
EXACT = 2.0 ** 53
FILTER_BITS = {1: 10, 2: 10, 3: 10, 4: 6}   # learned upsampling: prefiltered latents are rounded to 2**-bits
CONV_WIDTH = 4           # hidden channels of the residual convolution stage
PLAIN_TAPS = (1.0, 0.0, 0.0)   # the prefilter that leaves a grid as it is (plain linear upsampling)


def level_shapes(shape, first: int, levels: int) -> list[tuple[int, ...]]:
    """Latent grid shapes, finest first: ``ceil(n / 2 ** (first + i))`` on every axis."""
    return [tuple(-(-int(n) // 2 ** (first + i)) for n in shape) for i in range(levels)]


def axis_table(n: int, m: int, scale: int):
    """Linear interpolation of ``m`` latents to ``n`` voxel centres along one axis, for a level
    at ``2 ** -scale`` of the resolution (``m = ceil(n / 2 ** scale)``).

    Voxel i samples the latent axis at u = (i + 1/2) / 2**scale - 1/2, the latent centres of a
    2x pyramid, clamped to [0, m - 1]: the result is ``a[i0] * w0 + a[i1] * w1`` with integer
    weights summing to ``2 ** INTERP_BITS``; they are exact (u is a multiple of 2**-(scale + 1)).
    """
    if not 0 <= scale < INTERP_BITS:
        raise ValueError(f"levels finer than 2**-{INTERP_BITS - 1} only, not 2**-{scale}")
    one, den = 1 << INTERP_BITS, 2 << scale
    i = np.arange(n, dtype=np.int64)
    num = np.maximum(2 * i + 1 - (1 << scale), 0)       # den * u, clamped below
    i0 = num // den
    w1 = (num - i0 * den) << (INTERP_BITS - scale - 1)
    end = i0 >= m - 1
    i0 = np.minimum(i0, m - 1)
    w1 = np.where(end, 0, w1)
    i1 = np.minimum(i0 + 1, m - 1)
    return i0, i1, one - w1, w1


@lru_cache(maxsize=64)
def axis_matrix(n: int, m: int, scale: int) -> np.ndarray:
    """:func:`axis_table` as a dense (n, m) float64 matrix of integer weights (two per row), for the
    decoder: ``axis_matrix(...) @ a`` interpolates ``a`` along its first axis as :func:`upsample`
    does, in one matrix product (exact: integers, at most two nonzero terms per sum). Read-only."""
    i0, i1, w0, w1 = axis_table(n, m, scale)
    a = np.zeros((n, m), np.float64)
    rows = np.arange(n)
    np.add.at(a, (rows, i0), w0)
    np.add.at(a, (rows, i1), w1)
    a.flags.writeable = False
    return a


def upsample_trailing(grid: np.ndarray, matrices) -> np.ndarray:
    """The decoder's :func:`upsample` of ``grid`` (float64, integer-valued) along its axes 1, 2, ...
    by ``matrices`` (:func:`axis_matrix`, one per axis from axis 1), as matrix products: the same
    exact values. Axis 0 is left as it is."""
    for j, a in enumerate(matrices, 1):
        shape = grid.shape
        if j == grid.ndim - 1:
            grid = (grid.reshape(-1, shape[j]) @ a.T).reshape(shape[:j] + (a.shape[0],))
        else:
            grid = np.matmul(a, grid.reshape(math.prod(shape[:j]), shape[j], -1)).reshape(
                shape[:j] + (a.shape[0],) + shape[j + 1:])
    return grid


def _along(a, axis: int, idx):
    """``a`` indexed by ``idx`` along ``axis`` (numpy or torch)."""
    return a[(slice(None),) * axis + (idx,)]


def _as(xp, like, values, dtype=None):
    """A numpy array as an array of ``xp`` on ``like``'s device."""
    if xp is np:
        return values if dtype is None else values.astype(dtype)
    return xp.as_tensor(values, device=like.device, dtype=dtype)


def upsample(xp, grid, tables, first_axis: int = 1):
    """Separable interpolation of ``grid`` (batch axes, then one axis per table) to the voxel grid.

    ``tables`` are :func:`axis_table` results (weights as integers: the result is scaled by
    ``2 ** (INTERP_BITS * len(tables))``); axis j of the chunk is axis ``first_axis + j`` of grid.
    """
    for j, (i0, i1, w0, w1) in enumerate(tables):
        ax = first_axis + j
        shape = (-1,) + (1,) * (grid.ndim - ax - 1)
        w0 = _as(xp, grid, w0, grid.dtype if xp is not np else np.float64).reshape(shape)
        w1 = _as(xp, grid, w1, grid.dtype if xp is not np else np.float64).reshape(shape)
        grid = _along(grid, ax, _as(xp, grid, i0)) * w0 + _along(grid, ax, _as(xp, grid, i1)) * w1
    return grid


def interpolate_at(xp, flat, level_shape, tables, voxel_axes):
    """Values of one latent level at some voxels, for training: ``flat`` (B, M) latents of
    ``level_shape``; ``voxel_axes`` the voxels' index along each axis (torch, (k,) or (B, k));
    ``tables`` the :func:`axis_table` results as float tensors (weights / 2**INTERP_BITS).
    Returns (B, k): the same linear interpolation as :func:`upsample`, at the drawn voxels only."""
    strides = [math.prod(level_shape[a + 1:]) for a in range(len(level_shape))]
    ends = []
    for (i0, i1, w0, w1), v in zip(tables, voxel_axes):
        ends.append(((i0[v], w0[v]), (i1[v], w1[v])))
    out = 0
    for corner in itertools.product((0, 1), repeat=len(level_shape)):
        index, weight = 0, 1
        for a, c in enumerate(corner):
            i, w = ends[a][c]
            index = index + i * strides[a]
            weight = weight * w
        vals = flat[:, index] if index.ndim == 1 else xp.gather(flat, 1, index)
        out = out + vals * weight
    return out


def mlp(xp, params, h, requant=None):
    """Evaluate ``x @ W + b`` layers with ReLU between them: ``params`` = [W0, b0, W1, b1, ...].

    ``requant``: applied to every hidden layer's pre-activation (the decoder's flooring to
    ``2 ** -ACT_BITS``; None in training)."""
    n = len(params) // 2
    for i in range(n):
        h = h @ params[2 * i] + params[2 * i + 1]
        if i < n - 1:
            if requant is not None:
                h = requant(h)
            h = h.clip(0)           # ReLU (numpy and torch)
    return h


class FixedMLP:
    """The decoder's :func:`mlp` with ``requant=floor_to(ACT_BITS)``, transposed and scaled.

    Called on ``x`` (inputs + 1, voxels): the inputs times ``2 ** ACT_BITS`` (integers), then a
    row of ones; returns (outputs, voxels), unscaled. Every hidden layer is computed as
    ``floor(2 ** ACT_BITS * (x @ W + b))`` directly, the bias folded into the product as a
    column of the weights (the same exact values in fewer passes), in tiles of ``TILE`` voxels
    through reused buffers (cache-sized)."""

    TILE = 2048

    def __init__(self, params):
        up = 2.0 ** ACT_BITS
        self.weights = [np.ascontiguousarray(np.concatenate([params[i], params[i + 1].reshape(1, -1) * up]).T)
                        for i in range(0, len(params), 2)]
        self.buffers = [np.ones((w.shape[0] + 1, self.TILE)) for w in self.weights[:-1]]

    def __call__(self, x, out=None):
        """``out``: (outputs, voxels) float64 to write into (default: a new array)."""
        last = self.weights[-1]
        out = np.empty((last.shape[0], x.shape[1])) if out is None else out
        for start in range(0, x.shape[1], self.TILE):
            h = x[:, start:start + self.TILE]
            k = h.shape[1]
            for w, buf in zip(self.weights[:-1], self.buffers):
                pre = buf[:-1, :k]
                np.matmul(w, h, out=pre)
                np.floor(pre, out=pre)
                np.maximum(pre, 0, out=pre)
                h = buf[:, :k]
            np.matmul(last, h, out=out[:, start:start + k])
        out *= 2.0 ** -ACT_BITS
        return out


def _edge(xp, a, axis: int, lo: int, n_out: int):
    """``a`` along ``axis`` at indices lo .. lo + n_out - 1, clamped to the axis (edge padding)."""
    idx = np.clip(np.arange(lo, lo + n_out), 0, a.shape[axis] - 1)
    return _along(a, axis, _as(xp, a, idx))


def prefilter(xp, grid, taps, d: int, requant=None):
    """Learned upsampling's prefilter: ``grid`` (batch axes, then ``d`` axes) filtered along each
    of its last ``d`` axes by the symmetric kernel [t2, t1, t0, t1, t2] (``taps`` = (t0, t1, t2),
    arrays broadcasting against the batch axes), edge padded; ``requant`` after every axis (the
    decoder's rounding to 2**-FILTER_BITS[d]; None in training). Followed by the linear interpolation,
    this is a learned separable upsampling kernel; taps (1, 0, 0) are the plain interpolation."""
    t0, t1, t2 = taps
    for a in range(grid.ndim - d, grid.ndim):
        n = grid.shape[a]
        side = [(_edge(xp, grid, a, k, n) + _edge(xp, grid, a, -k, n)) for k in (1, 2)]
        grid = grid * t0 + side[0] * t1 + side[1] * t2
        if requant is not None:
            grid = requant(grid)
    return grid


def filter_gain(taps) -> float:
    """Largest factor by which :func:`prefilter` can grow a value along one axis (|t0| + 2|t1| + 2|t2|)."""
    t0, t1, t2 = (float(abs(t)) for t in taps)
    return t0 + 2 * t1 + 2 * t2


def conv_stage(xp, s, tensors, requant=None):
    """The residual convolution stage: ``s + conv_b(relu(conv_a(s)))`` on ``s`` (B, *spatial),
    both convolutions 3**d, edge padded (``s`` is padded by 2 once).

    ``tensors`` = [Wa (B, 3**d, CONV_WIDTH), ba (B, CONV_WIDTH), Wb (B, CONV_WIDTH * 3**d, 1),
    bb (B, 1)], taps in C order of the offsets (-1, 0, +1)**d, Wb's rows channel by channel;
    ``requant`` is applied to ``s`` and to conv_a's pre-activations (the decoder's flooring, as in
    :func:`mlp`; None in training)."""
    wa, ba, wb, bb = tensors
    ba, bb = ba.reshape(ba.shape[0], -1), bb.reshape(bb.shape[0], -1)
    d = s.ndim - 1
    if requant is not None:
        s = requant(s)
    padded = s
    for a in range(1, s.ndim):
        padded = _edge(xp, padded, a, -2, s.shape[a] + 4)
    offsets = list(itertools.product(range(3), repeat=d))
    bcast = (-1,) + (1,) * d

    def window(a, off, grow):
        return a[(slice(None),) + tuple(slice(o, o + n + grow) for o, n in zip(off, s.shape[1:]))]

    hidden = []
    for c in range(wa.shape[-1]):
        h = ba[:, c].reshape(bcast) + window(padded, offsets[0], 2) * wa[:, 0, c].reshape(bcast)
        for t, off in enumerate(offsets[1:], 1):
            h = h + window(padded, off, 2) * wa[:, t, c].reshape(bcast)
        if requant is not None:
            h = requant(h)
        hidden.append(h.clip(0))
    r = bb[:, 0].reshape(bcast)
    for c, h in enumerate(hidden):
        for t, off in enumerate(offsets):
            r = r + window(h, off, 0) * wb[:, c * len(offsets) + t, 0].reshape(bcast)
    return s + r


def fixed_conv_stage(s, tensors):
    """The decoder's :func:`conv_stage` with ``requant=floor_to(ACT_BITS)`` on one chunk ``s``
    (*spatial, float64): the same exact values, computed as matrix products. conv_a gathers
    the 3**d shifted windows of the padded chunk (rows of the first axis at a time) and
    multiplies them by Wa; conv_b multiplies the hidden channels by Wb (one map per tap) and
    adds the taps' shifted maps. ``tensors`` as :func:`conv_stage`, without the batch axis."""
    wa, ba, wb, bb = (np.asarray(t, np.float64) for t in tensors)
    up = 2.0 ** ACT_BITS
    d, n = s.ndim, s.shape
    taps, width = wa.shape
    units = np.floor(s * up)                                   # s as integers times 2**-ACT_BITS
    padded = np.pad(units, 2, mode="edge")
    offsets = list(itertools.product(range(3), repeat=d))
    grown = tuple(k + 2 for k in n)
    row = math.prod(grown[1:])
    hidden = np.empty((width,) + grown)
    rows = max(1, (1 << 16) // row)
    cols = np.empty((taps, rows * row))
    for a in range(0, grown[0], rows):
        b = min(grown[0], a + rows)
        k = (b - a) * row
        for t, off in enumerate(offsets):
            cols[t, :k].reshape((b - a,) + grown[1:])[...] = padded[
                (slice(a + off[0], b + off[0]),) + tuple(slice(o, o + g) for o, g in zip(off[1:], grown[1:]))]
        h = hidden[:, a:b].reshape(width, k)
        np.matmul(wa.T, cols[:, :k], out=h)
        h += (ba.reshape(-1) * up)[:, None]
        np.floor(h, out=h)
        np.maximum(h, 0, out=h)
    # conv_b: per tap t the map sum_c Wb[c, t] h_c, then the sum over taps of the shifted maps
    wb_taps = wb.reshape(width, taps).T                        # (taps, width)
    out = units
    step = max(1, (1 << 16) // math.prod(n[1:]))
    for a in range(0, n[0], step):
        b = min(n[0], a + step)
        maps = (wb_taps @ hidden[:, a:b + 2].reshape(width, -1)).reshape((taps, b - a + 2) + grown[1:])
        acc = out[a:b]
        for t, off in enumerate(offsets):
            acc += maps[(t, slice(off[0], off[0] + b - a)) + tuple(slice(o, o + g) for o, g in zip(off[1:], n[1:]))]
    out *= 1.0 / up
    out += bb.reshape(-1)[0]
    return out


def round_to(bits: int):
    """Rounding of float64 values to the nearest multiple of ``2 ** -bits``, halves up (exact)."""
    up, down = 2.0 ** bits, 2.0 ** -bits
    return lambda h: np.floor(h * up + 0.5) * down


def floor_to(bits: int):
    """Flooring of float64 values to multiples of ``2 ** -bits`` (exact)."""
    up, down = 2.0 ** bits, 2.0 ** -bits
    return lambda h: np.floor(h * up) * down


def parity(xp, like, shape):
    """The checkerboard: 1 where the sum of a cell's indices is odd (second pass), else 0."""
    grids = np.indices(shape).sum(0) % 2
    return _as(xp, like, grids.astype(np.float32 if xp is not np else np.float64))


def _shift(xp, a, axis: int, step: int):
    """``a`` moved by ``step`` (+1 / -1) along ``axis``, zeros shifted in."""
    n = a.shape[axis]
    zero = _along(a, axis, slice(0, 1)) * 0
    if n == 1:
        return zero
    if step > 0:
        return xp.concatenate([zero, _along(a, axis, slice(0, n - 1))], axis)
    return xp.concatenate([_along(a, axis, slice(1, n)), zero], axis)


def context_features(xp, grid, parent, level: int, n_levels: int):
    """Context of every latent of ``grid`` (B, *m): (B, *m, C) with C = 4 d + 2 + n_levels.

    Columns: the parent latent (the coarser level at index // 2) and its 2 d face neighbours
    (0 outside the grid, all 0 for the coarsest level: ``parent`` None); the 2 d face
    neighbours in ``grid`` for second-pass cells (0 for first-pass cells, whose neighbours are
    all second-pass and not yet decoded); the pass (0 / 1); a one-hot of the level.
    Every column is an integer when the latents are (the decoder's exact arithmetic).
    """
    d = grid.ndim - 1
    shape = tuple(grid.shape[1:])
    cols = []
    if parent is None:
        cols += [grid * 0] * (1 + 2 * d)
    else:
        near = parent
        for a in range(d):
            idx = np.arange(shape[a]) // 2
            near = _along(near, a + 1, _as(xp, parent, idx))
        cols.append(near)
        for a in range(d):
            for step in (1, -1):
                moved = _shift(xp, parent, a + 1, step)
                for b in range(d):
                    moved = _along(moved, b + 1, _as(xp, parent, np.arange(shape[b]) // 2))
                cols.append(moved)
    odd = parity(xp, grid, shape)
    for a in range(d):
        for step in (1, -1):
            cols.append(_shift(xp, grid, a + 1, step) * odd)
    cols.append(grid * 0 + odd)
    for i in range(n_levels):
        cols.append(grid * 0 + (1.0 if i == level else 0.0))
    return xp.stack(cols, -1)


def n_context(ndim: int, n_levels: int) -> int:
    """Inputs of the context MLP for ``ndim``-d chunks."""
    return 4 * ndim + 2 + n_levels


def check_exact(weights, exps, bound_in: float, in_bits: int) -> float:
    """Raise ValueError unless every layer of a fixed-point MLP stays exact in float64.

    ``weights`` [W0, b0, ...] (float64), ``exps`` their power-of-two exponents (values are
    integers times ``2 ** -exp``), ``bound_in`` the largest input magnitude, ``in_bits`` the
    inputs' fractional bits. Returns the bound on the output.
    """
    bound, bits = float(bound_in), in_bits
    n = len(weights) // 2
    for i in range(n):
        w, b = weights[2 * i], weights[2 * i + 1]
        unit = max(bits + exps[2 * i], exps[2 * i + 1])
        bound = float(np.max(np.abs(w).sum(0) * bound + np.abs(b).reshape(-1)))
        if not bound * 2.0 ** unit < EXACT:
            raise ValueError(f"layer {i} can reach {bound:g}, beyond exact float64 at 2**-{unit}")
        bits = ACT_BITS
    return bound
