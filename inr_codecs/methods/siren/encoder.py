"""SIRENCodec: sizes a SIREN to the byte budget and fits it with the fitting engine."""
from __future__ import annotations

import math

import numpy as np

from ... import args, quant
from ...codec import Encoded, InrCodec, as_chunk, header_for, normalise, pack_within_budget, value_range
from ...fit import GridSampler, Networks, fit, sum_of_means
from ...nn import coord_axes, grid_coords, siren_forward, siren_init, siren_param_count, siren_shapes
from . import format as fmt

MIN_WIDTH = 8                          # narrower networks are refused as not useful
AUTO_BITS = (6, 8)                     # candidates tried by bits=None
PILOT_FRACTION = 0.2                   # share of the steps each candidate bit depth is trained for


def solve_width(shape, budget: int, depth: int, encoding: int, bits: int) -> int:
    """Widest SIREN whose estimated payload fits ``budget`` bytes (0 if none fits)."""
    room_bits = 8 * (budget - fmt.body_overhead(len(shape), depth, encoding))
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
    return fmt.body_overhead(len(shape), depth, encoding) + math.ceil(
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
    **fit
        Fitting options (:class:`inr_codecs.fit.FitOptions`), all supported: ``steps`` (default
        1000: a 64^3 chunk in about a minute on 2 CPU cores; on a GPU 5000+ give a few dB more),
        ``batch_size`` (16384 voxels per step), ``lr`` (1e-3), ``lr_schedule`` ("cosine" decays
        to 5%, or "constant"), ``optimizer`` ("adam" or "adamax"), ``qat_fraction`` (0.1),
        ``device`` ("auto"), ``seed`` (0: on CPU the same chunk gives the same payload),
        ``sampling`` ("uniform", or "error": half the voxels in proportion to each voxel's last
        seen squared error), ``target_psnr`` and ``plateau_steps`` (early stopping per chunk,
        then the quantisation-aware steps), ``precision`` ("high": TF32 on CUDA).
    """

    codec_id = "inr_codecs.siren"
    method_id = fmt.METHOD_ID
    auto_bits = True

    def __init__(self, ratio, *, depth=6, w0=20.0, width=None, bits=8, encoding="quantised", **fit):
        super().__init__(ratio, bits=bits, encoding=encoding, **fit)
        self.depth = args.integer("depth", depth, 1, 255)
        self.w0 = args.real("w0", w0, above=0, f32=True)   # the value given, for the configuration
        self.width = None if width is None else args.integer("width", width, MIN_WIDTH, 65535)

    @property
    def _w0(self) -> float:
        """``w0`` as payloads store it (float32): what the fit trains with and the decoder reads."""
        return args.f32(self.w0)

    # sizes -------------------------------------------------------------------------------
    def _candidate_bits(self) -> tuple[int, ...]:
        if self.encoding == "float16":
            return (0,)
        return (self.bits,) if self.bits is not None else AUTO_BITS

    def _candidates(self, shape, budget: int) -> list[tuple[int, int]]:
        """(bits, width) of each network size the codec may train for chunks of this shape."""
        widths = [(b, self._width_for(shape, budget, b)) for b in self._candidate_bits()]
        return [(b, w) for b, w in widths if w >= MIN_WIDTH]

    def _fixed_size(self, shape, budget: int) -> tuple[int, int]:
        """(bits, width) of the one network a warm start initialises (a fixed bit depth only)."""
        candidates = self._candidates(shape, budget)
        if len(candidates) != 1:
            raise ValueError("a warm start (init, learn_init) needs a fixed bit depth "
                             "(bits=None tries several network sizes)")
        return candidates[0]

    def _width_for(self, shape, budget: int, bits: int) -> int:
        solved = solve_width(shape, budget, self.depth, quant.ENCODINGS[self.encoding], bits)
        return min(solved, self.width) if self.width is not None else solved

    def min_bytes(self, shape, bits) -> int:
        return min_ratio_bytes(shape, self.depth, quant.ENCODINGS[self.encoding], bits)

    def smallest_network(self, bits) -> str:
        return f"the smallest useful SIREN (width {MIN_WIDTH}, depth {self.depth}, {bits or 16} bits)"

    def _smallest_bits(self) -> int:
        return min(self._candidate_bits())

    # fitting -----------------------------------------------------------------------------
    def _init(self, in_dim: int, width: int) -> list[np.ndarray]:
        return siren_init(np.random.default_rng(self.seed), siren_shapes(in_dim, width, self.depth), self._w0)

    def _forward(self, xp, params, x):
        return siren_forward(xp, params, x, self._w0)

    def _fit(self, start: list[np.ndarray], targets: np.ndarray, shape, bits: int | None, **changes):
        """Train one network per row of ``targets`` from ``start`` (leading axis B)."""
        options = self.fit_options(**changes)
        sampler = GridSampler(shape, targets, options.batch_size, options.sampling)
        return fit(Networks(self._forward, start), sampler, sum_of_means, options, bits=bits)

    def encode_arrays(self, arrs, ranges, budget, init=None):
        shape = tuple(arrs[0].shape)
        targets = np.stack([normalise(a, lo, hi) for a, (lo, hi) in zip(arrs, ranges)])
        candidates = self._candidates(shape, budget)
        if init is not None:
            init = self._check_init(init, shape, budget)
        n = len(arrs)
        if len(candidates) == 1:
            bits, width = candidates[0]
            start = init if init is not None else self._init(len(coord_axes(shape)), width)
            fitted = self._fit(_repeat(start, n), targets, shape, bits or None)
            chosen = [(bits, width, [p[i] for p in fitted.params], int(fitted.steps[i])) for i in range(n)]
        else:
            chosen = self._fit_auto_bits(targets, shape, candidates)
        header = header_for(arrs[0], self.method_id)
        return [Encoded(self._pack(header, budget, lo, hi, width, bits, params), steps)
                for (lo, hi), (bits, width, params, steps) in zip(ranges, chosen)]

    def _fit_auto_bits(self, targets, shape, candidates):
        """``bits=None``: a pilot fit per candidate bit depth; each chunk goes on with the one
        whose quantised pilot network has the lowest error on a probe set of voxels."""
        n = len(targets)
        pilot = max(1, int(self.steps * PILOT_FRACTION))
        probe = np.random.default_rng(self.seed).integers(0, targets.shape[1], min(targets.shape[1], 1 << 15))
        x = grid_coords(shape, probe)
        errs, pilots = [], []
        for b, w in candidates:
            p = self._fit(_repeat(self._init(len(coord_axes(shape)), w), n), targets, shape, None, steps=pilot).params
            errs.append([np.mean((siren_forward(np, quant.fake_quantise([t[i] for t in p], b), x, self._w0)[:, 0]
                                  - targets[i, probe]) ** 2) for i in range(n)])
            pilots.append(p)
        pick = np.argmin(np.array(errs), 0)
        chosen: list = [None] * n
        for c, (b, w) in enumerate(candidates):
            members = np.flatnonzero(pick == c)
            if len(members):
                fitted = self._fit([p[members] for p in pilots[c]], targets[members], shape, b,
                                   steps=max(1, self.steps - pilot))
                for j, i in enumerate(members):
                    chosen[i] = (b, w, [p[j] for p in fitted.params], pilot + int(fitted.steps[j]))
        return chosen

    def _check_init(self, init, shape, budget):
        init = [np.asarray(p, np.float32) for p in init]
        want = siren_shapes(len(coord_axes(shape)), self._fixed_size(shape, budget)[1], self.depth)
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
        width = self._fixed_size(shape, self.budget(shape, arrs[0].dtype))[1]
        targets = np.stack([normalise(a, *value_range(a)) for a in arrs])
        theta = self._init(len(coord_axes(shape)), width)
        inner = inner_steps or max(1, self.steps // 10)
        for r in range(rounds):
            fitted = self._fit(_repeat(theta, len(arrs)), targets, shape, None, steps=inner, seed=self.seed + r,
                               lr_schedule="constant", target_psnr=None, plateau_steps=None).params
            theta = [t + meta_lr * (f.mean(0) - t) for t, f in zip(theta, fitted)]
        return [t.astype(np.float32) for t in theta]

    def _pack(self, header, budget, lo, hi, width, bits, params) -> bytes:
        """Serialise within the budget; with ``bits=None`` slack buys extra bits."""
        enc = quant.ENCODINGS[self.encoding]
        return pack_within_budget(
            lambda b: fmt.pack(header, fmt.Body(lo, hi, self._w0, self.depth, width, enc, b), params),
            bits, budget, grow=self.bits is None)[0]


def _repeat(params: list[np.ndarray], n: int) -> list[np.ndarray]:
    """The same parameters for n networks (a leading axis of n)."""
    return [np.repeat(p[None], n, 0) for p in params]
