"""Network building blocks written once for numpy (decode) and torch (fit).

Functions take the array namespace ``xp`` (``numpy`` or ``torch``) and use only what both
provide: ``@``, ``+``, ``*`` and ``xp.sin``. Weights are ``(fan_in, fan_out)`` matrices applied
as ``x @ W + b``, so a leading batch axis on every tensor trains many networks at once.
"""
from __future__ import annotations

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


def grid_coords(shape: tuple[int, ...], flat_index: np.ndarray, axes=None) -> np.ndarray:
    """Coordinates of C-order flat voxel indices: pixel centres ``(2 i + 1) / n - 1`` in (-1, 1).

    One column per axis of ``axes`` (default :func:`coord_axes`), in axis order; an axis of
    length 1 gets 0. Returns float32 (len, in_dim).
    """
    axes = coord_axes(shape) if axes is None else axes
    idx = np.unravel_index(flat_index, shape)
    out = np.empty((len(flat_index), len(axes)), np.float32)
    for j, a in enumerate(axes):
        out[:, j] = (2.0 * idx[a] + 1.0) / shape[a] - 1.0
    return out
