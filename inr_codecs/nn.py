"""Network building blocks written once for numpy (decode) and torch (fit).

Functions take the array namespace ``xp`` (``numpy`` or ``torch``) and use only what both
provide: ``@``, ``+``, ``*`` and ``xp.sin``. Weights are ``(fan_in, fan_out)`` matrices applied
as ``x @ W + b``, so a leading batch axis on every tensor trains many networks at once.
"""
from __future__ import annotations

import math

import numpy as np


def mlp_shapes(in_dim: int, widths: list[int]) -> list[tuple[int, ...]]:
    """Tensor shapes of a SIREN with sine layers of the given widths and a linear output.

    Order: W0, b0, W1, b1, ..., W_depth, b_depth (the last pair is the linear output layer).
    """
    dims = [in_dim] + list(widths) + [1]
    shapes = []
    for a, b in zip(dims[:-1], dims[1:]):
        shapes += [(a, b), (b,)]
    return shapes


def siren_shapes(in_dim: int, width: int, depth: int) -> list[tuple[int, ...]]:
    """Shapes of a SIREN with ``depth`` sine layers of ``width`` units (see :func:`mlp_shapes`)."""
    return mlp_shapes(in_dim, [width] * depth)


def funnel_widths(width: int, depth: int, fr: float) -> list[int]:
    """SCI's funnel: the first sine layer has ``round(fr * width)`` units, the others ``width``."""
    return [max(1, int(round(fr * width)))] + [width] * (depth - 1)


def param_count(shapes) -> int:
    return sum(int(np.prod(s)) for s in shapes)


def siren_param_count(in_dim: int, width: int, depth: int) -> int:
    return param_count(siren_shapes(in_dim, width, depth))


def siren_init(rng: np.random.Generator, shapes, w0: float):
    """SIREN initialisation (Sitzmann et al. 2020) for ``sin(w0 * (x @ W + b))`` layers.

    First layer U(-1/in, 1/in); later layers U(-sqrt(6/in)/w0, sqrt(6/in)/w0); biases like
    their layer's weights. ``shapes`` as from :func:`mlp_shapes`; returns float32 numpy arrays.
    """
    out = []
    for i, shape in enumerate(shapes):
        fan_in = shape[0] if len(shape) == 2 else out[-1].shape[0]
        bound = 1.0 / fan_in if i < 2 else np.sqrt(6.0 / fan_in) / w0
        out.append(rng.uniform(-bound, bound, shape).astype(np.float32))
    return out


def siren_forward(xp, params, x, w0: float):
    """Evaluate a SIREN at coordinates ``x`` (..., N, in_dim) -> (..., N, 1)."""
    h = x
    n_layers = len(params) // 2
    for i in range(n_layers - 1):
        h = xp.sin(w0 * (h @ params[2 * i] + params[2 * i + 1]))
    return h @ params[-2] + params[-1]


def coord_axes(shape: tuple[int, ...]) -> list[int]:
    """Axes that get a coordinate: those longer than 1 (singleton axes carry no information)."""
    return [a for a, n in enumerate(shape) if n > 1]


def pixel_centres(n: int) -> np.ndarray:
    """The coordinates of an axis of ``n`` voxels: pixel centres ``(2 i + 1) / n - 1`` in (-1, 1),
    float64 (0 when n = 1)."""
    return (2.0 * np.arange(n) + 1.0) / n - 1.0


def _gather(tables, shape: tuple[int, ...], axes, flat_index: np.ndarray, dtype) -> np.ndarray:
    """Inputs (len, len(axes)) of C-order flat voxel indices of ``shape``: column j is
    ``tables[j]`` (axis ``axes[j]``'s coordinates) at the voxels' index along that axis."""
    idx = np.unravel_index(flat_index, shape)
    out = np.empty((len(flat_index), len(axes)), dtype)
    for j, a in enumerate(axes):
        out[:, j] = tables[j][idx[a]]
    return out


def grid_coords(shape: tuple[int, ...], flat_index: np.ndarray, axes=None) -> np.ndarray:
    """Coordinates (:func:`pixel_centres`) of C-order flat voxel indices, float32 (len, in_dim):
    one column per axis of ``axes`` (default :func:`coord_axes`), in axis order; an axis of
    length 1 gets 0."""
    axes = coord_axes(shape) if axes is None else axes
    return _gather([pixel_centres(shape[a]) for a in axes], shape, axes, flat_index, np.float32)


# --- exact (fixed-point) evaluation: the numpy decoders of SIREN and SCI --------------------------

#: Fractional bits of the exact decoder's activations (its inputs and sine outputs are integers
#: times 2**-ACT_BITS).
ACT_BITS = 20
#: 1 / (2 pi) in binary64: phases are reduced in turns.
INV_2PI = 0.15915494309189535
#: cos(2 pi r) ~ C0 + C1 s + ... + C6 s^6 with s = r^2, for |r| <= 1/2 turn: the power-basis form
#: of the degree-6 Chebyshev interpolant in s on [0, 1/4], rounded to binary32 and written out
#: (no platform cos, pow or pi enters). Evaluated in binary32 it is within 5.4e-7 of cos.
COS_COEFFS = (1.0, -19.73920440673828, 64.93911743164062, -85.45011138916016, 60.16743087768555,
              -25.96688461303711, 6.527706146240234)
#: The coefficients times 2**ACT_BITS (exact in binary32): the polynomial gives the fixed-point
#: activation directly.
_SCALED = tuple(np.float32(c * 2.0 ** ACT_BITS) for c in COS_COEFFS)
MAX_QUANT = 2 ** 15     # integer weights of the exact decoder have |q| <= MAX_QUANT


def fixed_cos(turns: np.ndarray, out: np.ndarray, scratch=None) -> np.ndarray:
    """``rint(2**ACT_BITS * cos(2 pi * turns))`` of float64 ``turns`` (overwritten) into float32
    ``out`` (same shape), with the same bits on every IEEE-754 machine: no platform function,
    every step one correctly rounded operation. In binary64 ``r = turns - rint(turns)`` (in
    [-1/2, 1/2]); in binary32 ``s = r * r`` and ``p = 2**ACT_BITS * C6 * s + 2**ACT_BITS * C5``,
    then ``p = p * s + 2**ACT_BITS * Ck`` for k = 4 .. 0 (:data:`COS_COEFFS`), then ``rint(p)``.
    ``scratch``: (float64, float32) arrays of the same shape, reused (allocated if None)."""
    whole, s = (np.empty_like(turns), np.empty_like(out)) if scratch is None else scratch
    np.rint(turns, out=whole)
    turns -= whole
    s[...] = turns
    np.multiply(s, s, out=s)
    p = np.multiply(s, _SCALED[6], out=out)
    p += _SCALED[5]
    for c in _SCALED[4::-1]:
        p *= s
        p += c
    return np.rint(p, out=p)


def coord_table(n: int) -> np.ndarray:
    """Fixed-point coordinates of an axis of ``n`` voxels: ``rint(2**ACT_BITS * pixel_centres(n))``
    (float64 integers)."""
    return np.rint(pixel_centres(n) * 2.0 ** ACT_BITS)


class FixedSiren:
    """:func:`siren_forward` evaluated exactly: the same bits on every machine and thread count.

    ``layers``: per layer ``(q, step, qb, step_b)``: integer weights (|q| <= MAX_QUANT) of
    shape (fan_in, fan_out) times ``step``, and the bias's integers times ``step_b``. Inputs
    and sine outputs are integers times 2**-ACT_BITS, so every matrix product is a sum of
    integers below 2**53: exact in binary64 whatever the BLAS's order or threads. With
    ``k = float64(w0) * INV_2PI``, a sine layer computes, in binary64,
    ``turns = (a @ q) * ((step * 2**-ACT_BITS) * k) + ((qb * step_b) * k - 1/4)`` (the products
    in brackets rounded once each, then the product and the sum), and its activation is
    :func:`fixed_cos` of ``turns`` (sin(x) = cos(x - pi/2)); the output layer returns
    ``(a @ q) * (step * 2**-ACT_BITS) + qb * step_b``. Voxels are evaluated in tiles of
    ``TILE`` (fewer for layers wider than 256 units: a tile's buffers hold at most 2**18 values
    each, whatever widths a payload declares) through reused buffers.
    """

    TILE = 1024
    TILE_VALUES = 2 ** 18
    SLAB = 1 << 16          # voxels :meth:`on_grid` yields at a time

    def __init__(self, layers, w0: float):
        k = float(w0) * INV_2PI
        self.layers = []
        for i, (q, step, qb, step_b) in enumerate(layers):
            q = np.asarray(q, np.float64)
            if q.size and (np.abs(q).max() > MAX_QUANT or q.shape[0] * 2.0 ** (ACT_BITS + 15) >= 2.0 ** 53):
                raise ValueError("network beyond the exactly decodable range")
            scale, bias = float(step) * 2.0 ** -ACT_BITS, np.asarray(qb, np.float64).reshape(-1) * float(step_b)
            if i < len(layers) - 1:
                scale, bias = scale * k, bias * k - 0.25
            self.layers.append((q, scale, bias))
        width = max(q.shape[1] for q, _, _ in self.layers)
        self.tile = max(1, min(self.TILE, self.TILE_VALUES // width))
        self.buffers = [np.empty(self.tile * width, t)
                        for t in (np.float64, np.float64, np.float64, np.float32, np.float32)]

    def __call__(self, a0: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Outputs (first unit) at fixed-point inputs ``a0`` (N, in_dim) float64 integers, into
        float ``out`` (N,)."""
        for start in range(0, len(a0), self.tile):
            a = a0[start:start + self.tile]
            k = len(a)
            for q, scale, bias in self.layers[:-1]:
                z, nxt, whole, act, s = (b[:k * q.shape[1]].reshape(k, q.shape[1]) for b in self.buffers)
                np.matmul(a, q, out=z)
                z *= scale
                z += bias
                fixed_cos(z, act, (whole, s))
                a = nxt                     # the layer's input is read: its buffer takes the output
                a[...] = act                # as float64 integers
            q, scale, bias = self.layers[-1]
            y = a @ q[:, :1]
            y *= scale
            y += bias[0]
            out[start:start + k] = y[:, 0]
        return out

    def on_grid(self, shape: tuple[int, ...], axes):
        """The network over the voxels of ``shape`` in C order, its inputs the fixed-point
        coordinates (:func:`coord_table`) of ``axes``: yields ``(start, values)``, float64 values
        of up to ``SLAB`` voxels from flat index ``start`` on, in a buffer the next slab reuses."""
        tables = [coord_table(shape[a]) for a in axes]
        n = math.prod(shape)
        y = np.empty(min(n, self.SLAB))
        for start in range(0, n, self.SLAB):
            idx = np.arange(start, min(n, start + self.SLAB))
            yield start, self(_gather(tables, shape, axes, idx, np.float64), y[:len(idx)])
