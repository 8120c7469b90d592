"""SIREN: one sine-activated MLP fitted to the whole chunk (Sitzmann et al. 2020).

The baseline every paper compares against. Body layout of a SIREN payload (method id 1)::

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
from dataclasses import replace
from typing import NamedTuple

import numpy as np

from . import payload, quant
from .codec import (Encoded, InrCodec, as_chunk, budget_bytes, check_ratio, denormalise, header_for, normalise,
                    pack_range, pack_within_budget, read_range, value_range)
from .fit import FitConfig, fit
from .nn import coord_axes, grid_coords, siren_forward, siren_init, siren_param_count, siren_shapes
from .payload import PayloadError

PIXEL_CENTRES = 0
_FIXED = struct.Struct("<BfBHBB")      # coords, w0, depth, width, encoding, bits
MIN_WIDTH = 8                          # narrower networks are refused as not useful
AUTO_BITS = (6, 8)                 # candidates tried by bits=None
PILOT_FRACTION = 0.2                   # share of the steps each candidate bit depth is trained for
DECODE_SLAB = 1 << 16                  # voxels evaluated at once when decoding


def _body_overhead(ndim: int, depth: int, encoding: int) -> int:
    """Payload bytes that do not depend on the width (frame + fixed fields + side info)."""
    return (payload.frame_overhead(ndim) + 16 + _FIXED.size
            + quant.side_bytes(encoding, 2 * (depth + 1)))


def solve_width(shape, itemsize: int, ratio: float, depth: int, encoding: int, bits: int) -> int:
    """Widest SIREN whose estimated payload fits the budget (0 if none fits)."""
    budget = budget_bytes(int(np.prod(shape)) * itemsize, ratio)
    room_bits = 8 * (budget - _body_overhead(len(shape), depth, encoding))
    in_dim = len(coord_axes(shape))
    bpp = quant.bits_per_param_estimate(encoding, bits)
    # params(w) = (depth - 1) w^2 + (in_dim + depth + 1) w + 1; largest w with params * bpp <= room
    a, b, c = depth - 1, in_dim + depth + 1, 1 - room_bits / bpp
    if c > 0:
        return 0
    w = int((-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)) if a > 0 else int(-c / b)
    while w > 0 and siren_param_count(in_dim, w, depth) * bpp > room_bits:
        w -= 1
    return min(w, 65535)


def min_ratio_bytes(shape, depth: int, encoding: int, bits: int) -> int:
    """Smallest budget (bytes) that admits a MIN_WIDTH network."""
    in_dim = len(coord_axes(shape))
    params = siren_param_count(in_dim, MIN_WIDTH, depth)
    return _body_overhead(len(shape), depth, encoding) + math.ceil(
        params * quant.bits_per_param_estimate(encoding, bits) / 8)


class SIRENCodec(InrCodec):
    """Lossy codec: fits one SIREN per chunk; the payload is its quantised, entropy-coded weights.

    Parameters
    ----------
    ratio : float
        Compression ratio; a hard ceiling: payload bytes <= floor(raw chunk bytes / ratio).
    depth : int, default 6
        Sine layers (plus one linear output layer: 7 layers as in the papers).
    w0 : float, default 20.0
        SIREN frequency (the SCI paper's value).
    width : int or None, default None
        Units per sine layer; None solves the widest network that fits the budget.
    bits : int or None, default 8
        Quantisation bit depth (2-16); the network is sized for it. None searches: each of
        ``AUTO_BITS`` gets a short pilot fit, the one with the lowest error after quantisation is
        trained on, and bytes left under the budget buy extra bits. On the nuclei volume at 64x
        and 400 steps the search gave 33.7 dB against 34.2 dB for a fixed 8 bits (equal at 256x)
        and took longer, hence the default (``benchmarks/results/``).
    encoding : {"quantised", "float16"}, default "quantised"
        "float16" stores raw half-precision weights (the baseline quantisation is measured against).
    steps : int, default 1000
        Optimiser steps per chunk. 1000 fits a 64^3 chunk in about a minute on 2 CPU cores;
        on a GPU, 5000+ steps give a few dB more.
    batch_size : int, default 16384
        Voxels sampled per step (the whole chunk when it has fewer).
    lr : float, default 1e-3
    lr_schedule : {"cosine", "constant"}, default "cosine"
        Cosine decays the learning rate to 5% of ``lr`` over the steps.
    optimizer : {"adam", "adamax"}, default "adam"
    qat_fraction : float, default 0.1
        Share of the steps (at the end) trained through the quantiser (quantisation-aware).
    device : {"auto", "cpu", "cuda", "cuda:N"}, default "auto"
    seed : int, default 0
        Seeds initialisation and sampling: on CPU the same chunk gives the same payload.
    sampling : {"uniform", "error"}, default "uniform"
        Voxels drawn each step: uniformly (one draw shared by a batch of chunks), or half
        uniformly and half in proportion to each voxel's last seen squared error.
    target_psnr : float or None, default None
        Early stopping: a chunk's network stops (then gets its quantisation-aware steps) once
        its smoothed training PSNR (peak = the chunk's max - min) reaches this many dB.
    plateau_steps : int or None, default None
        Early stopping: stop once the smoothed training PSNR has gained less than 0.05 dB in
        this many steps.
    precision : {"highest", "high"}, default "highest"
        "high" lets CUDA use TF32 matmuls while fitting (no effect on CPU).
    """

    codec_id = "inr_codecs.siren"

    def __init__(self, ratio, *, depth=6, w0=20.0, width=None, bits=8, encoding="quantised",
                 steps=1000, batch_size=16384, lr=1e-3, lr_schedule="cosine", optimizer="adam",
                 qat_fraction=0.1, device="auto", seed=0, sampling="uniform", target_psnr=None,
                 plateau_steps=None, precision="highest"):
        self.ratio = check_ratio(ratio)
        if int(depth) < 1 or int(depth) > 255:
            raise ValueError(f"depth must be in 1..255, not {depth}")
        if not (float(w0) > 0 and math.isfinite(float(w0))):
            raise ValueError(f"w0 must be a positive number, not {w0}")
        if encoding not in quant.ENCODINGS:
            raise ValueError(f"encoding must be one of {list(quant.ENCODINGS)}, not {encoding!r}")
        if bits is not None:
            quant.levels(int(bits))
        if width is not None and not MIN_WIDTH <= int(width) <= 65535:
            raise ValueError(f"width must be in {MIN_WIDTH}..65535, not {width}")
        self.depth, self.w0 = int(depth), float(np.float32(w0))  # stored as f32 in payloads
        self.width = None if width is None else int(width)
        self.bits = None if bits is None else int(bits)
        self.encoding = encoding
        self.steps, self.batch_size, self.lr = int(steps), int(batch_size), float(lr)
        self.lr_schedule, self.optimizer = lr_schedule, optimizer
        self.qat_fraction, self.device, self.seed = float(qat_fraction), device, int(seed)
        self.sampling, self.precision = sampling, precision
        self.target_psnr = None if target_psnr is None else float(target_psnr)
        self.plateau_steps = None if plateau_steps is None else int(plateau_steps)
        self._fit_config()  # validates the fitting options now, not at the first encode

    def _fit_config(self) -> FitConfig:
        return FitConfig(self.steps, self.batch_size, self.lr, self.lr_schedule, self.optimizer,
                         self.qat_fraction, self.device, self.seed, self.sampling, self.target_psnr,
                         self.plateau_steps, self.precision)

    def _candidate_bits(self) -> tuple[int, ...]:
        if self.encoding == "float16":
            return (0,)
        return (self.bits,) if self.bits is not None else AUTO_BITS

    def _candidates(self, shape, itemsize) -> list[tuple[int, int]]:
        """(bits, width) of each network size the codec may train for chunks of this shape."""
        widths = [(b, self._width_for(shape, itemsize, b)) for b in self._candidate_bits()]
        return [(b, w) for b, w in widths if w >= MIN_WIDTH]

    def _fixed_size(self, shape, itemsize) -> tuple[int, int]:
        """(bits, width) of the one network a warm start initialises (a fixed bit depth only)."""
        candidates = self._candidates(shape, itemsize)
        if len(candidates) != 1:
            raise ValueError("a warm start (init, learn_init) needs a fixed bit depth "
                             "(bits=None tries several network sizes)")
        return candidates[0]

    def _width_for(self, shape, itemsize, bits) -> int:
        enc = quant.ENCODINGS[self.encoding]
        solved = solve_width(shape, itemsize, self.ratio, self.depth, enc, bits)
        return min(solved, self.width) if self.width is not None else solved

    def min_bytes(self, shape, bits) -> int:
        return min_ratio_bytes(shape, self.depth, quant.ENCODINGS[self.encoding], bits)

    def smallest_network(self, bits) -> str:
        return f"the smallest useful SIREN (width {MIN_WIDTH}, depth {self.depth}, {bits or 16} bits)"

    def _smallest_bits(self) -> int:
        return min(self._candidate_bits())

    def _init(self, in_dim: int, width: int) -> list[np.ndarray]:
        return siren_init(np.random.default_rng(self.seed), siren_shapes(in_dim, width, self.depth), self.w0)

    def encode_arrays(self, arrs, ranges, init=None):
        shape = tuple(arrs[0].shape)
        cfg = self._fit_config()
        targets = np.stack([normalise(a, lo, hi) for a, (lo, hi) in zip(arrs, ranges)])
        enc = quant.ENCODINGS[self.encoding]
        candidates = self._candidates(shape, arrs[0].dtype.itemsize)
        if init is not None:
            init = self._check_init(init, shape, arrs[0].dtype.itemsize)
        n = len(arrs)
        if len(candidates) == 1:
            bits, width = candidates[0]
            start = init if init is not None else self._init(len(coord_axes(shape)), width)
            fitted = fit(self._forward, _repeat(start, n), targets, shape, cfg, bits or None)
            chosen = [(bits, width, [p[i] for p in fitted.params], int(fitted.steps[i])) for i in range(n)]
        else:
            chosen = self._fit_auto_bits(targets, shape, cfg, candidates)
        header = header_for(arrs[0], "siren")
        return [Encoded(self._pack(header, lo, hi, width, enc, bits, params), steps)
                for (lo, hi), (bits, width, params, steps) in zip(ranges, chosen)]

    def _forward(self, xp, params, x):
        return siren_forward(xp, params, x, self.w0)

    def _fit_auto_bits(self, targets, shape, cfg, candidates):
        """``bits=None``: a pilot fit per candidate bit depth; each chunk goes on with the one
        whose quantised pilot network has the lowest error on a probe set of voxels."""
        n = len(targets)
        pilot = max(1, int(cfg.steps * PILOT_FRACTION))
        probe = np.random.default_rng(self.seed).integers(0, targets.shape[1], min(targets.shape[1], 1 << 15))
        x = grid_coords(shape, probe)
        errs, pilots = [], []
        for b, w in candidates:
            p = fit(self._forward, _repeat(self._init(len(coord_axes(shape)), w), n), targets, shape, cfg,
                    None, steps=pilot).params
            errs.append([np.mean((siren_forward(np, quant.fake_quantise([t[i] for t in p], b), x, self.w0)[:, 0]
                                  - targets[i, probe]) ** 2) for i in range(n)])
            pilots.append(p)
        pick = np.argmin(np.array(errs), 0)
        chosen: list = [None] * n
        for c, (b, w) in enumerate(candidates):
            members = np.flatnonzero(pick == c)
            if len(members):
                fitted = fit(self._forward, [p[members] for p in pilots[c]], targets[members], shape, cfg, b,
                             steps=max(1, cfg.steps - pilot))
                for j, i in enumerate(members):
                    chosen[i] = (b, w, [p[j] for p in fitted.params], pilot + int(fitted.steps[j]))
        return chosen

    def _check_init(self, init, shape, itemsize):
        init = [np.asarray(p, np.float32) for p in init]
        want = siren_shapes(len(coord_axes(shape)), self._fixed_size(shape, itemsize)[1], self.depth)
        if [p.shape for p in init] != [tuple(s) for s in want]:
            raise ValueError(f"init has tensor shapes {[p.shape for p in init]}, but {shape} chunks at ratio "
                             f"{self.ratio:g} train a SIREN with shapes {want}")
        return init

    def learn_init(self, chunks, *, rounds: int = 10, inner_steps: int | None = None,
                   meta_lr: float = 0.5) -> list[np.ndarray]:
        """A learned initialisation (Reptile, Nichol et al. 2018) for chunks like ``chunks``.

        Every round fits ``inner_steps`` steps (default ``steps // 10``) from the current
        initialisation to every chunk at once, then moves the initialisation ``meta_lr`` of
        the way to the mean of the fitted networks. Pass the result as ``encode_batch(init=)``:
        the networks start nearer a fit, so fewer steps reach a given quality. Constant chunks
        are skipped; the chunks must share one shape. Deterministic given ``seed`` on CPU.
        """
        arrs = [as_chunk(c) for c in chunks]
        arrs = [a for a in arrs if a.min() != a.max()]
        if not arrs:
            raise ValueError("learn_init needs at least one non-constant chunk")
        shape = tuple(arrs[0].shape)
        if any(a.shape != shape for a in arrs):
            raise ValueError("learn_init needs chunks of one shape")
        self.check_chunk(shape, arrs[0].dtype)
        width = self._fixed_size(shape, arrs[0].dtype.itemsize)[1]
        targets = np.stack([normalise(a, *value_range(a)) for a in arrs])
        cfg = replace(self._fit_config(), lr_schedule="constant", target_psnr=None, plateau_steps=None)
        theta = self._init(len(coord_axes(shape)), width)
        inner = inner_steps or max(1, self.steps // 10)
        for r in range(rounds):
            cfg_r = replace(cfg, seed=self.seed + r)
            fitted = fit(self._forward, _repeat(theta, len(arrs)), targets, shape, cfg_r, None, steps=inner).params
            theta = [t + meta_lr * (f.mean(0) - t) for t, f in zip(theta, fitted)]
        return [t.astype(np.float32) for t in theta]

    def _pack(self, header, lo, hi, width, enc, bits, params) -> bytes:
        """Serialise within the budget; with ``bits=None`` slack buys extra bits."""
        fixed = pack_range(lo, hi)

        def encode(b):
            return payload.pack(header, fixed + _FIXED.pack(PIXEL_CENTRES, self.w0, self.depth, width, enc, b)
                                + quant.encode_tensors(params, enc, b))

        return pack_within_budget(encode, bits, budget_bytes(header.nbytes, self.ratio),
                                  grow=self.bits is None)[0]


def _repeat(params: list[np.ndarray], n: int) -> list[np.ndarray]:
    """The same parameters for n networks (a leading axis of n)."""
    return [np.repeat(p[None], n, 0) for p in params]


class Body(NamedTuple):
    """Fixed fields of a SIREN body (see the module docstring)."""

    lo: float
    hi: float
    w0: float
    depth: int
    width: int
    encoding: int
    bits: int


def read_body_fixed(r) -> Body:
    """Parse and check the fixed part of a SIREN body."""
    lo, hi = read_range(r)
    coords, w0, depth, width, enc, bits = r.take(_FIXED.format[1:])
    if coords != PIXEL_CENTRES:
        raise PayloadError(f"unknown coordinate convention {coords}")
    if not (depth >= 1 and width >= 1 and np.isfinite(w0)):
        raise PayloadError(f"bad SIREN architecture: depth {depth}, width {width}, w0 {w0}")
    return Body(lo, hi, w0, depth, width, enc, bits)


def describe(data) -> Body:
    """The fixed fields of a SIREN payload, without decoding its network."""
    header, body = payload.unpack(data)
    if header.method != payload.METHODS["siren"]:
        raise ValueError(f"not a SIREN payload (method {payload.METHOD_NAMES[header.method]})")
    return read_body_fixed(payload.Reader(body))


def decode_body(header, r) -> np.ndarray:
    lo, hi, w0, depth, width, enc, bits = read_body_fixed(r)
    in_dim = len(coord_axes(header.shape))
    params = quant.decode_tensors(r, siren_shapes(in_dim, width, depth), enc, bits)
    r.done()
    n = int(np.prod(header.shape))
    y = np.empty(n, np.float32)
    for start in range(0, n, DECODE_SLAB):
        idx = np.arange(start, min(n, start + DECODE_SLAB))
        y[idx] = siren_forward(np, params, grid_coords(header.shape, idx), w0)[:, 0]
    return denormalise(y, lo, hi, header.dtype)
