"""LatentGridCodec: fits latent grids, a synthesis MLP and a context MLP per chunk under a
rate-distortion loss, with the rate steered to the byte budget (torch, through the fitting engine)."""
from __future__ import annotations

import math
import warnings

import numpy as np

from numcodecs.compat import ensure_contiguous_ndarray

from ... import args, payload
from ...codec import BudgetError, Encoded, InrCodec, as_chunk, header_for, normalise, value_range
from ...fit import GridSampler, Networks, fit, sum_of_log_means
from ...metrics import psnr
from . import entropy
from . import format as fmt
from .model import (INTERP_BITS, PLAIN_TAPS, axis_table, conv_stage, interpolate_at, level_shapes, mlp, n_context,
                    parity, prefilter, upsample)

#: Network sizes the codec picks from, largest first: (synthesis hidden widths, context width).
LADDER = (((16, 16), 16), ((16, 16), 8), ((16,), 8), ((8,), 8), ((8,), 4), ((4,), 4))
WEIGHT_SHARE = 0.15        # networks may take this share of the budget (estimate) when sized automatically
RATE_MARGIN = 0.95         # the rate is steered to this share of the bytes left for latents
LAMBDA0 = 1.0             # initial rate weight: the loss is log(MSE) + lambda * bits / target bits
DUAL_STEP = 0.02          # log-lambda change per fitting step of the rate controller (at most) ...
DUAL_TRAVEL = 10.0        # ... or this over the codec's steps, if larger (short fits)
MIN_LATENT_BYTES = 16
LATENT_GAIN = 12.0        # latents train as parameters / LATENT_GAIN: their steps are this much larger
REPAIR_BOOST = 3          # a refit's rate weight starts at lambda * (over-budget factor) ** this
CONTEXT_GAIN = (4.0, 8.0)  # training scale of the context MLP's outputs (mu, log2 b)
LOG2_B_START = -2.0       # initial log2 scale: latents start at zero
REPAIR_ROUNDS = 2          # refits of over-budget (or, with psnr=, short) chunks with a tighter target
MAX_EXPONENT = 20          # stored weights are multiples of 2**-20 or coarser
PSNR_MARGIN = 0.1          # psnr= mode: the fit aims this many dB above the target
CALIBRATE_AT = 0.5         # ratio mode: halfway through the fit every chunk is packed as it stands, and its rate
SPEND = 0.97               # ... target raised by what its payload lacks of this share of the budget (None: off)
CONV_FRACTION = 0.2        # conv_stage=True: the last fifth of the steps train on whole chunks, with the stage
CONV_LR = 0.2              # ... from this share of the learning rate
UPSAMPLINGS = ("linear", "learned")
#: Entropy-model inputs by ``context=`` (ablations; the format is the same, unused inputs get zero weights).
CONTEXTS = {"full": ("parent", "neighbours"), "parent": ("parent",), "checkerboard": ("neighbours",),
            "level": ()}


def weight_bytes_estimate(n_params: int, bits: int) -> float:
    """Stored bytes of ``n_params`` trained weights at ``bits``: power-of-two steps spread them
    over the whole range, 8.6 bits each at 8 bits on nuclei (hence bits + 0.75)."""
    return n_params * (bits + 0.75) / 8


class LatentGridCodec(InrCodec):
    """Lossy codec: multi-resolution latent grids, entropy coded, and a tiny per-voxel network.

    Each chunk is represented by ``levels`` single-channel grids of integers (resolutions
    1/2 ... 1/2**levels of the chunk per axis by default), upsampled linearly to every voxel and
    mapped to its value by a small synthesis MLP; a context MLP predicts every latent's
    distribution from the coarser level and (checkerboard) its already decoded neighbours, and
    the latents and network weights are entropy coded with it. Decoding is numpy only, exact
    and machine independent (fixed-point arithmetic, see ``docs/format.md``).

    Parameters
    ----------
    ratio : float, optional
        Compression ratio; a hard ceiling: payload bytes <= floor(raw chunk bytes / ratio).
        Without ``psnr`` the fit steers its rate to the budget (a rate weight adapted while
        fitting). Default with ``psnr``: no ceiling but the raw size (ratio 1).
    psnr : float, optional
        Quality mode: the smallest payload whose chunk PSNR (dB, peak = the chunk's max - min)
        reaches this; the rate weight is steered to the distortion instead, every payload is
        decoded and measured, and chunks short of the target are refitted. ``ratio`` (if given)
        stays a hard ceiling and wins over the target.
    levels : int, default 5
        Number of latent grids.
    first_level : int, default 1
        Resolution of the finest grid: 1/2**first_level of the chunk (0 = full resolution,
        slower to fit and 8x the latents to decode).
    hidden : sequence of int or None, default None
        Hidden widths of the synthesis MLP; None picks by budget from ``LADDER``.
    context_width : int or None, default None
        Hidden width of the context MLP; None picks with ``hidden``.
    latent_max : int, default 63
        Latents are integers in [-latent_max, latent_max].
    shared : bool, default False
        Networks shared per array: the synthesis and context networks are fitted once on a
        sample of the array's chunks (:meth:`fit_networks`; :func:`inr_codecs.compress` does it
        before the chunks) and kept in the codec configuration (``networks``), so that every
        payload holds latents only. The array's metadata then carries the networks (2.6 kB
        of JSON for the default sizes in 3-D): count it in the stored bytes.
    networks : dict or None
        The fitted shared networks (set by :meth:`fit_networks`; docs/format.md, 5.5).
    context : {"full", "parent", "checkerboard", "level"}, default "full"
        Inputs of the entropy model (for ablations): the parent level and the two-pass
        checkerboard, the parent only, the checkerboard only, or one distribution per level.
    upsampling : {"linear", "learned"}, default "linear"
        "learned": a symmetric 5-tap filter per level, fitted and stored with the networks, is
        applied separably to each latent grid before the linear interpolation (Cool-chic's
        learned separable upsampling; 3 weights per level).
    conv_stage : bool, default False
        A residual convolution stage after the synthesis MLP: two 3x3x3 (3**d) convolutions,
        1 -> 4 -> 1 channels with ReLU, added to its output (221 weights in 3-D), for edge-heavy
        data. Its training needs whole-chunk passes: the last ``CONV_FRACTION`` of the steps
        evaluate every voxel (slower fitting), and decoding slows down too (see docs).
    bits : int, default 8
        Bit depth of the stored network weights (integers times a power of two).
    **fit
        Fitting options (:class:`inr_codecs.fit.FitOptions`); defaults here: 1500 steps,
        lr 1e-2 (cosine), 32768 voxels per step; the last ``qat_fraction`` of the steps round
        latents and weights straight-through.
    """

    codec_id = "inr_codecs.latent_grid"
    method_id = fmt.METHOD_ID
    fit_defaults = {"steps": 1500, "lr": 1e-2, "batch_size": 32768}

    def __init__(self, ratio=None, *, psnr=None, levels=5, first_level=1, hidden=None, context_width=None,
                 latent_max=63, context="full", upsampling="linear", conv_stage=False, shared=False, networks=None,
                 bits=8, encoding="quantised", **fit):
        if encoding != "quantised":
            raise ValueError("LatentGridCodec stores quantised weights only (encoding='quantised')")
        if ratio is None and psnr is None:
            raise TypeError("LatentGridCodec needs ratio= (a ceiling on every payload), psnr= (a quality "
                            "target per chunk) or both")
        super().__init__(1.0 if ratio is None else ratio, bits=bits, encoding=encoding, **fit)
        self.psnr = None if psnr is None else args.real("psnr", psnr, above=0)
        if context not in CONTEXTS:
            raise ValueError(f"context must be one of {list(CONTEXTS)}, not {context!r}")
        if upsampling not in UPSAMPLINGS:
            raise ValueError(f"upsampling must be one of {list(UPSAMPLINGS)}, not {upsampling!r}")
        self.levels = args.integer("levels", levels, 1, fmt.MAX_LEVELS)
        self.first_level = args.integer("first_level", first_level, 0)
        if self.first_level > fmt.MAX_FIRST + 1 - self.levels:
            raise ValueError(f"first_level + levels must be at most {fmt.MAX_FIRST + 1} (the coarsest level "
                             f"at 1/2**{fmt.MAX_FIRST}), not {first_level} + {levels}")
        if hidden is not None:
            if isinstance(hidden, (str, bytes)) or not hasattr(hidden, "__iter__"):
                raise ValueError(f"hidden must be a sequence of widths or None, not {hidden!r}")
            hidden = [args.integer("hidden widths", h, 1, 255) for h in hidden]
            if len(hidden) > fmt.MAX_HIDDEN:
                raise ValueError(f"hidden must be at most {fmt.MAX_HIDDEN} widths in 1..255, not {hidden}")
        self.hidden = hidden
        self.context_width = None if context_width is None else args.integer("context_width", context_width, 1, 255)
        self.latent_max = args.integer("latent_max", latent_max, 1, 127)
        self.context = context
        self.upsampling, self.conv_stage = upsampling, args.boolean("conv_stage", conv_stage)
        self.shared = args.boolean("shared", shared)
        if networks is not None and not self.shared:
            raise ValueError("networks= are an array's shared networks: they need shared=True")
        self.networks = None
        if networks is not None:
            nets = fmt.Networks.from_config(networks)        # ValueError naming what is wrong
            if nets.levels != self.levels or nets.weight_bits != self.bits or nets.flags != self.flags:
                raise ValueError(f"the networks are for {nets.levels} levels, {nets.weight_bits}-bit weights and "
                                 f"options {_options(nets.flags)}, not levels={self.levels}, bits={self.bits}, "
                                 f"{_options(self.flags)}")
            self.networks = nets.to_config()

    @property
    def flags(self) -> int:
        """The payload flags of the network options (format ARCH_FLAGS bits)."""
        return ((fmt.FLAG_UPSAMPLE if self.upsampling == "learned" else 0)
                | (fmt.FLAG_CONV if self.conv_stage else 0))

    # sizes -------------------------------------------------------------------------------
    def _n_params(self, ndim: int, hidden, ctx_width: int) -> int:
        return sum(math.prod(s) for s in fmt.tensor_shapes(ndim, self.levels, hidden, ctx_width, self.flags))

    def architecture(self, shape, budget: int) -> tuple[tuple[int, ...], int]:
        """(synthesis hidden widths, context width) for chunks of ``shape`` and a byte budget."""
        ladder = [(tuple(self.hidden) if self.hidden is not None else h,
                   self.context_width if self.context_width is not None else c) for h, c in LADDER]
        if self.networks is not None:
            nets = fmt.Networks.from_config(self.networks)
            return nets.hidden, nets.ctx_width
        if self.shared:               # the networks cost the payloads nothing
            return ladder[0]
        for hidden, ctx in ladder:
            if weight_bytes_estimate(self._n_params(len(shape), hidden, ctx), self.bits) <= WEIGHT_SHARE * budget:
                return hidden, ctx
        return ladder[-1]

    def check_chunk(self, shape, dtype) -> None:
        if len(shape) > fmt.MAX_NDIM:       # 0 axes: the base class says why
            raise ValueError(f"LatentGridCodec stores chunks of 1 to {fmt.MAX_NDIM} axes, not {len(shape)}")
        super().check_chunk(shape, dtype)

    def min_bytes(self, shape, bits) -> int:
        if self.shared:
            return (fmt.fixed_bytes(len(shape), self.architecture(shape, 0)[0], shared=True, flags=self.flags)
                    + MIN_LATENT_BYTES)
        hidden, ctx = (tuple(self.hidden) if self.hidden is not None else LADDER[-1][0],
                       self.context_width or LADDER[-1][1])
        return (fmt.fixed_bytes(len(shape), hidden, flags=self.flags) + MIN_LATENT_BYTES
                + math.ceil(weight_bytes_estimate(self._n_params(len(shape), hidden, ctx), bits)))

    def smallest_network(self, bits) -> str:
        return f"the smallest latent-grid model ({bits}-bit weights and {MIN_LATENT_BYTES} bytes of latents)"

    # fitting -----------------------------------------------------------------------------
    def encode_arrays(self, arrs, ranges, budget, init=None):
        if init is not None:
            raise ValueError("LatentGridCodec does not take an initialisation (init)")
        shape = tuple(arrs[0].shape)
        model = self._model(shape, budget)
        if self.shared:
            if self.networks is None:
                raise ValueError("LatentGridCodec(shared=True) needs networks fitted for the array: "
                                 "inr_codecs.compress fits them first, or use codec.fit_networks(sample_chunks)")
            model.freeze(fmt.Networks.from_config(self.networks))
        latent_bytes = budget - self._fixed_bytes(model) - 8
        if latent_bytes < MIN_LATENT_BYTES:
            raise BudgetError(f"ratio {self.ratio:g} leaves {budget} bytes per chunk; the latent-grid networks "
                              f"alone need about {self._fixed_bytes(model):.0f}")
        n = len(arrs)
        targets, target_bits, norm, mse = self._targets(model, arrs, ranges, latent_bytes)
        params = model.init(n)[:1] if self.shared else model.init(n)
        header = header_for(arrs[0], self.method_id)
        if self.psnr is None:       # the targets above are estimates: calibrated on packed payloads
            model.calibration = (lambda i, p: len(model.pack(header, *ranges[i], p)), SPEND * budget)
        fitted = self._fit_all(model, params, targets, target_bits, norm, mse)
        model.calibration = None
        params, steps, lams = fitted.params, fitted.steps.copy(), model.last_lambda.copy()
        out = [model.pack(header, lo, hi, [p[i] for p in params]) for i, (lo, hi) in enumerate(ranges)]
        quality = self._quality(arrs, out)
        for _ in range(REPAIR_ROUNDS):
            over = [i for i in range(n) if len(out[i]) > budget]
            # a chunk short of psnr= is refitted to a lower error, unless it is at its ceiling
            short = [] if quality is None else [i for i in range(n) if quality[i] < self.psnr
                                                and len(out[i]) < budget * RATE_MARGIN]
            redo = sorted(over + short)
            if not redo:
                break
            lam = lams.copy()
            for i in over:
                scale = budget / len(out[i]) * RATE_MARGIN
                target_bits[i] *= scale
                lam[i] *= scale ** -REPAIR_BOOST
            for i in short:
                gap = self.psnr - quality[i] + PSNR_MARGIN
                mse[i] *= 10 ** (-gap / 10)
            refit = self._fit(model, [p[redo] for p in params], targets[redo], target_bits[redo], norm[redo],
                              mse[redo], steps=max(20, int(self.steps * 0.1)), lr=self.lr * 0.1,
                              lr_schedule="constant", qat_fraction=0.5, target_psnr=None, plateau_steps=None,
                              lam=lam[redo])
            lams[redo] = model.last_lambda
            for j, i in enumerate(redo):
                for p, r in zip(params, refit.params):
                    p[i] = r[j]
                steps[i] += int(refit.steps[j])
                out[i] = model.pack(header, *ranges[i], [p[i] for p in params])
            if quality is not None:
                quality[redo] = self._quality([arrs[i] for i in redo], [out[i] for i in redo])
        for i in range(n):
            trimmed = self._trim(model, header, ranges[i], [p[i] for p in params], out[i], budget)
            if trimmed != out[i] and quality is not None:
                quality[i] = self._quality([arrs[i]], [trimmed])[0]
            out[i] = trimmed
        if quality is not None and (quality < self.psnr).any():
            warnings.warn(f"{int((quality < self.psnr).sum())} of {n} chunks stay below psnr={self.psnr:g} dB "
                          f"(lowest {quality.min():.2f} dB): limited by the ratio ceiling or the fitting steps",
                          stacklevel=2)
        return [Encoded(o, int(s)) for o, s in zip(out, steps)]

    def _model(self, shape, budget, tied=False) -> "_Model":
        hidden, ctx_width = self.architecture(shape, budget)
        if self.networks is not None and fmt.Networks.from_config(self.networks).ndim != len(shape):
            raise ValueError(f"the shared networks are for {fmt.Networks.from_config(self.networks).ndim}-d chunks, "
                             f"not {len(shape)}-d")
        return _Model(shape, self.levels, self.first_level, hidden, ctx_width, self.latent_max, self.bits,
                      self.seed, self.context, tied, self.flags)

    def _targets(self, model, arrs, ranges, latent_bytes):
        """(normalised chunks, rate targets (bits), the rate's scale in the loss, MSE targets).
        The rate weight is steered to the latents' byte budget (ratio mode) or, with psnr=, to a
        mean squared error on the normalised range [-1, 1] (peak 2), the budget as a bound; the
        rate's scale is the target, or with psnr= one bit per latent unless the ceiling is lower."""
        n = len(arrs)
        targets = np.stack([normalise(a, lo, hi) for a, (lo, hi) in zip(arrs, ranges)])
        target_bits = np.full(n, 8 * latent_bytes * RATE_MARGIN)
        mse = np.full(n, 0.0 if self.psnr is None else _mse_at(self.psnr + PSNR_MARGIN))
        norm = target_bits.copy() if self.psnr is None else np.minimum(target_bits, float(model.offsets[-1]))
        return targets, target_bits, norm, mse

    def _fixed_bytes(self, model) -> float:
        """Payload bytes besides the latents' stream: fixed fields and (estimated) weights."""
        fixed = fmt.fixed_bytes(len(model.shape), model.hidden, shared=self.shared, flags=self.flags)
        return fixed if self.shared else fixed + weight_bytes_estimate(model.n_weights, self.bits)

    def fit_networks(self, chunks) -> "LatentGridCodec":
        """This codec with ``networks`` fitted for an array: one synthesis and one context
        network trained jointly on ``chunks`` (a sample of the array's chunks, one shape) with
        each chunk's own latents, at the codec's rate target (or ``psnr``) and steps."""
        if not self.shared:
            raise ValueError("fit_networks fits shared networks: use LatentGridCodec(..., shared=True)")
        arrs = [as_chunk(c) for c in chunks]
        if not arrs or len({(a.shape, a.dtype.str) for a in arrs}) != 1:
            raise ValueError("fit_networks needs one or more chunks of one shape and dtype")
        ranges = [value_range(a) for a in arrs]
        keep = [i for i, (lo, hi) in enumerate(ranges) if lo < hi]
        if not keep:
            raise ValueError("fit_networks needs a chunk that is not constant")
        arrs, ranges = [arrs[i] for i in keep], [ranges[i] for i in keep]
        shape = tuple(arrs[0].shape)
        self.check_chunk(shape, arrs[0].dtype)
        budget = self.budget(shape, arrs[0].dtype)
        model = self._model(shape, budget, tied=True)
        latent_bytes = budget - self._fixed_bytes(model) - 8
        targets, target_bits, norm, mse = self._targets(model, arrs, ranges, latent_bytes)
        fitted = self._fit_all(model, model.init(len(arrs)), targets, target_bits, norm, mse)
        qs, exps, _ = model.integers([p[0] for p in fitted.params])
        nets = fmt.Networks(len(shape), self.levels, model.hidden, model.ctx_width, self.bits, tuple(exps),
                            tuple(qs), self.flags)
        model.check(nets)
        cfg = self.get_config()
        cfg.pop("id")
        return type(self)(**{**cfg, "networks": nets.to_config()})

    def decode_payload(self, buf) -> np.ndarray:
        if self.networks is None:
            return super().decode_payload(buf)
        from ...registry import decode_unpacked
        header, body = payload.unpack(ensure_contiguous_ndarray(buf))
        if header.method != self.method_id:
            return decode_unpacked(header, body)
        return decode_unpacked(header, body, networks=fmt.Networks.from_config(self.networks))

    def _quality(self, arrs, payloads):
        """Chunk PSNRs (dB) of the payloads as decoded (psnr= mode), or None."""
        if self.psnr is None:
            return None
        return np.array([psnr(a, self.decode_payload(p).reshape(a.shape)) for a, p in zip(arrs, payloads)])

    def _fit_all(self, model, params, targets, target_bits, norm, mse):
        """The main fit: with the convolution stage, first without it on drawn voxels, then the
        last CONV_FRACTION of the steps with it on whole chunks (dense passes), the rate weight
        carried over."""
        if not model.conv:
            return self._fit(model, params, targets, target_bits, norm, mse)
        dense = max(1, round(self.steps * CONV_FRACTION))
        first = self._fit(model, params, targets, target_bits, norm, mse, steps=max(1, self.steps - dense),
                          qat_fraction=0.0)
        model.dense = True
        second = self._fit(model, first.params, targets, target_bits, norm, mse, lam=model.last_lambda,
                           steps=dense, lr=self.lr * CONV_LR, target_psnr=None, plateau_steps=None)
        return second._replace(steps=first.steps + second.steps)

    def _fit(self, model, params, targets, target_bits, norm, mse, lam=None, **changes):
        if model.dense:         # whole chunks: every voxel, in order
            changes.update(batch_size=math.prod(model.shape), sampling="uniform")
        options = self.fit_options(**changes)
        sampler = GridSampler(model.shape, targets, options.batch_size, options.sampling, coords=False)
        model.start(target_bits, options, lam, norm, mse, dual=max(DUAL_STEP, DUAL_TRAVEL / self.steps))
        net = Networks(model.forward, params, penalty=model.penalty, quantise=model.quantise)
        return fit(net, sampler, sum_of_log_means, options, bits=self.bits)

    def _trim(self, model, header, rng, params, data, budget) -> bytes:
        """Last resort for a chunk still over budget: zero latents from the finest level up,
        then make the context model certain of zeros (all latents then cost almost nothing),
        so the ceiling always holds whenever the networks fit."""
        level = 0
        while len(data) > budget:
            if level > model.levels or (level == model.levels and model.frozen is not None):
                raise BudgetError(f"latent-grid payload of {len(data)} bytes exceeds the budget of {budget} "
                                  "with every latent zero; use a lower ratio or larger chunks")
            params = [p.copy() for p in params]
            if level < model.levels:
                model.zero_level(params, level)
            else:
                model.certain_zero(params)
            data = model.pack(header, *rng, params)
            level += 1
        return data


class _Model:
    """The trainable model of one chunk shape, batched over chunks, and its packing."""

    def __init__(self, shape, levels, first, hidden, ctx_width, latent_max, bits, seed, context="full", tied=False,
                 flags=0):
        self.shape, self.levels, self.first = tuple(shape), levels, first
        self.hidden, self.ctx_width, self.latent_max, self.bits = tuple(hidden), ctx_width, latent_max, bits
        self.seed = seed
        self.shapes = level_shapes(self.shape, first, levels)
        self.offsets = np.concatenate([[0], np.cumsum([math.prod(s) for s in self.shapes])]).astype(int)
        self.flags = flags
        self.tensor_shapes = fmt.tensor_shapes(len(self.shape), levels, self.hidden, ctx_width, flags)
        self.n_weights = sum(math.prod(s) for s in self.tensor_shapes)
        self.parts = fmt.tensor_parts(self.hidden, flags)    # of the networks, params[1:]
        self.conv = self.parts.conv is not None
        self.dense = False        # the convolution stage is on: whole-chunk passes (set by the codec's fit)
        self.q_max = fmt.weight_radius(bits)
        self.last_lambda = None
        self.calibration = None   # (measure(i, params of chunk i) -> payload bytes, goal bytes): see _calibrate
        self.noisy = None
        self.tied = tied          # one set of networks for the batch (fit_networks): network 0's, used by all
        self.frozen = None        # shared networks given (fmt.Networks): only latents train
        d, inputs = len(self.shape), CONTEXTS[context]
        self.ctx_mask = np.ones((n_context(d, levels), 1), np.float32)   # rows of the context MLP's W0
        if "parent" not in inputs:
            self.ctx_mask[:1 + 2 * d] = 0
        if "neighbours" not in inputs:
            self.ctx_mask[1 + 2 * d:2 + 4 * d] = 0

    def init(self, n: int) -> list[np.ndarray]:
        """Zero latents, uniform fan-in weights (PyTorch's default), context biases mu 0, log2 b 0;
        prefilter taps (1, 0, 0) (plain linear upsampling), the convolution stage's output
        weights 0 (it starts as the identity)."""
        rng = np.random.default_rng(self.seed)
        out = [np.zeros((n, 1, int(self.offsets[-1])), np.float32)]
        special = {}
        if self.parts.prefilter is not None:
            special[self.parts.prefilter] = np.tile(np.asarray(PLAIN_TAPS, np.float32), (self.levels, 1))
        if self.conv:
            wb = self.parts.conv.start + 2
            special[wb] = np.zeros(self.tensor_shapes[wb], np.float32)
        for t, shp in enumerate(self.tensor_shapes):
            if t in special:
                out.append(np.repeat(special[t][None], n, 0))
            elif len(shp) == 2:
                bound = 1 / math.sqrt(shp[0])
                w = rng.uniform(-bound, bound, shp)
                out.append(np.repeat(w[None].astype(np.float32), n, 0))
            else:
                out.append(np.zeros((n, 1) + shp, np.float32))
        return out

    # torch -----------------------------------------------------------------------------
    def start(self, target_bits, options, lam=None, norm=None, mse=None, dual=DUAL_STEP):
        """Before a fit: the rate target (bits; the controller raises the rate weight while the
        coded rate is above it), the initial rate weight, the rate's scale in the loss (bits;
        default the target) and the MSE target (normalised; None or 0 = steer by the rate alone;
        else the weight also rises while the batch's MSE is below it), the controller's step."""
        import torch
        from ...fit import resolve_device
        self.torch = torch
        device = resolve_device(options.device)
        self.gen = torch.Generator(device="cpu").manual_seed(options.seed + 7)
        self.tables = [[tuple(torch.as_tensor(t, device=device) if k < 2 else
                              torch.as_tensor(t / (1 << INTERP_BITS), dtype=torch.float32, device=device)
                              for k, t in enumerate(axis_table(n, m, self.first + i)))
                        for n, m in zip(self.shape, s)] for i, s in enumerate(self.shapes)]
        self.strides = [math.prod(self.shape[a + 1:]) for a in range(len(self.shape))]
        if self.frozen is not None:
            self.frozen_torch = [torch.as_tensor(w[None], dtype=torch.float32, device=device)
                                 for w in self._trained(self.frozen.weights())]
        self.target = torch.as_tensor(np.asarray(target_bits, np.float64), device=device)
        self.dual = dual
        self.norm = torch.as_tensor(np.asarray(target_bits if norm is None else norm, np.float32), device=device)
        self.mse = None if mse is None or not np.any(mse) else torch.as_tensor(np.asarray(mse, np.float64),
                                                                               device=device)
        start = np.log(LAMBDA0) if lam is None else np.log(np.asarray(lam))
        self.log_lam = torch.as_tensor(np.broadcast_to(start, len(target_bits)).copy(), device=device)
        self.calls = 0
        self.calibrate_at = (max(1, round(CALIBRATE_AT * options.steps))
                             if self.calibration is not None and CALIBRATE_AT is not None and not self.tied else None)

    def _levels(self, lat):
        """Latent grids (b, *shape) of flat latents (b, 1, M), finest first."""
        lat = lat[:, 0]
        return [lat[:, a:b].reshape((-1,) + s) for a, b, s in zip(self.offsets[:-1], self.offsets[1:], self.shapes)]

    def forward(self, xp, params, idx):
        lat, nets = params[0][:, 0], params[1:]
        if self.parts.prefilter is not None:
            lat = self._prefiltered(xp, lat, nets[self.parts.prefilter])
        if self.dense:
            return self._dense(xp, lat, nets)[:, idx, None]
        axes = [(idx // st) % n for st, n in zip(self.strides, self.shape)]
        if len(self.shape) in (2, 3):       # torch's own kernel: the same interpolation, faster
            feats = self._grid_sample(lat, axes)
        else:
            feats = [interpolate_at(xp, lat[:, a:b], s, t, axes)
                     for a, b, s, t in zip(self.offsets[:-1], self.offsets[1:], self.shapes, self.tables)]
        return mlp(xp, nets[self.parts.mlp], xp.stack(feats, -1))

    def _prefiltered(self, xp, lat, taps):
        """Flat latents (b, M) through each level's prefilter (taps (b, levels, 3))."""
        d, out = len(self.shape), []
        for level, (a, z, s) in enumerate(zip(self.offsets[:-1], self.offsets[1:], self.shapes)):
            t = [taps[:, level, k].reshape((-1,) + (1,) * d) for k in range(3)]
            out.append(prefilter(xp, lat[:, a:z].reshape((-1,) + s), t, d).reshape(lat.shape[0], -1))
        return xp.concatenate(out, 1)

    def _dense(self, xp, lat, nets):
        """Every voxel's value (b, voxels), through the convolution stage: each level upsampled
        to the whole chunk, the synthesis MLP, the stage (``nets``: the networks' tensors)."""
        b = lat.shape[0]
        feats = [upsample(xp, lat[:, a:z].reshape((b,) + s), t)
                 for a, z, s, t in zip(self.offsets[:-1], self.offsets[1:], self.shapes, self.tables)]
        y = mlp(xp, nets[self.parts.mlp], xp.stack(feats, -1).reshape(b, -1, self.levels))
        y = conv_stage(xp, y.reshape((b,) + self.shape), nets[self.parts.conv])
        return y.reshape(b, -1)

    def _grid_sample(self, lat, axes):
        """The linear interpolation of :func:`model.axis_table` by torch's ``grid_sample``
        (align_corners=False, border padding: the same clamped positions and weights)."""
        torch = self.torch
        from torch.nn.functional import grid_sample
        b, lead = lat.shape[0], (1,) * (len(self.shape) - 1)
        out = []
        for level, (a, z, s) in enumerate(zip(self.offsets[:-1], self.offsets[1:], self.shapes)):
            # u = (i + 1/2) / 2**scale - 1/2 is x = (2 i + 1) / (2**scale m) - 1 in grid_sample's terms
            step = 2 ** (self.first + level)
            coords = [((2 * v + 1).float() / (step * m) - 1) for v, m in zip(axes, s)][::-1]   # x = last axis
            grid = torch.stack(coords, -1)
            grid = (grid.expand(b, *grid.shape) if grid.ndim == 2 else grid).reshape(b, *lead, -1, len(self.shape))
            v = grid_sample(lat[:, a:z].reshape(b, 1, *s), grid, mode="bilinear", padding_mode="border",
                            align_corners=False)
            out.append(v.reshape(b, -1))
        return out

    def quantise(self, torch, params, qat: bool):
        lat = (params[0] * LATENT_GAIN).clamp(-self.latent_max, self.latent_max)
        rounded = lat + (torch.round(lat) - lat).detach()
        if self.frozen is not None:
            nets = self.frozen_torch
        else:
            nets = [p[:1] for p in params[1:]] if self.tied else list(params[1:])
            if qat:
                nets = [self._fake_quantise(torch, w) for w in nets]
        if qat:
            self.noisy = None
            return [rounded] + nets
        # float phase: the rate sees additive uniform noise (smooth), the synthesis the rounded
        # latents with straight-through gradients (what it will decode)
        self.noisy = lat + torch.rand(lat.shape, generator=self.gen).to(lat.device) - 0.5
        return [rounded] + nets

    def freeze(self, nets) -> None:
        """Train latents only, under the shared networks ``nets`` (fmt.Networks)."""
        self.check(nets)
        self.frozen = nets

    def check(self, nets) -> None:
        """Raise ValueError unless ``nets`` fit this model and decode exactly."""
        if (nets.ndim, nets.levels, nets.hidden, nets.ctx_width, nets.flags) != (
                len(self.shape), self.levels, self.hidden, self.ctx_width, self.flags):
            raise ValueError("the shared networks' architecture differs from this chunk shape's model")
        self._check(nets.values, nets.exps)

    def _check(self, qs, exps) -> None:
        """:func:`format.check_networks` of stored integers and exponents."""
        fmt.check_networks([q * 2.0 ** -e for q, e in zip(qs, exps)], exps, len(self.shape), self.hidden,
                           self.flags, self.latent_max)

    def _trained(self, weights):
        """Stored network values in the training parametrisation (inverse of :meth:`context`)."""
        out = [np.asarray(w, np.float64) for w in weights]
        gain = np.asarray(CONTEXT_GAIN)
        out[-2] = out[-2] / gain
        out[-1] = (out[-1] - np.asarray([0.0, LOG2_B_START])) / gain
        return out

    def _fake_quantise(self, torch, w):
        e = _exponents(torch, w.detach(), self.q_max)
        scale = torch.exp2(e)
        q = torch.clamp(torch.round(w.detach() * scale), -self.q_max, self.q_max) / scale
        return w + (q - w).detach()

    def context(self, params):
        """The context MLP's tensors as stored: the training parametrisation scales its outputs
        (mu by CONTEXT_GAIN[0], log2 b by CONTEXT_GAIN[1], plus LOG2_B_START) so that they move
        as fast as the latents do."""
        w0, b0, w1, b1 = params[1:][self.parts.context]
        gain = np.asarray(CONTEXT_GAIN, np.float32)
        shift = np.asarray([0.0, LOG2_B_START], np.float32)
        mask = self.ctx_mask
        if not isinstance(w1, np.ndarray):
            gain, shift, mask = (self.torch.as_tensor(v, device=w1.device) for v in (gain, shift, mask))
        return [w0 if self.ctx_mask.all() else w0 * mask, b0, w1 * gain, b1 * gain + shift]

    def rate(self, torch, params):
        """Bits of every network's latents under its context model (b,)."""
        grids = self._levels(params[0])
        ctx = self.context(params)
        total = 0
        for level in range(self.levels):
            parent = grids[level + 1] if level + 1 < self.levels else None
            out = _context_mlp(torch, ctx, grids[level], parent, level)
            mu = out[..., 0].clamp(-self.latent_max - 1, self.latent_max + 1)
            log2_b = out[..., 1].clamp(entropy.LOG2_B_MIN, entropy.LOG2_B_MAX)
            total = total + _laplace_bits(torch, grids[level].reshape(grids[level].shape[0], -1), mu, log2_b).sum(1)
        return total

    def penalty(self, torch, params, rows, sq=None):
        bits = self.rate(torch, [self.noisy if self.noisy is not None else params[0]] + list(params[1:]))
        with torch.no_grad():
            # the controller steers the rate of the rounded latents (what is coded): the noisy
            # rate has a floor of ~0.1-0.2 bits per latent that low targets fall below
            coded = bits if self.noisy is None else self.rate(torch, params)
            if self.calls == self.calibrate_at:
                self._calibrate(torch, params, rows, coded)
            self.calls += 1
            err = torch.log(coded.double().clamp(min=1.0) / self.target[rows])
            if self.mse is not None and sq is not None:     # psnr=: raise the weight while the error is low
                err = torch.maximum(err, torch.log(self.mse[rows] / sq.double().mean(1).clamp(min=1e-12)))
            self.log_lam[rows] += self.dual * err.clamp(-1, 1)
            self.last_lambda = torch.exp(self.log_lam).cpu().numpy()
        return torch.exp(self.log_lam[rows]).float() * bits / self.norm[rows]

    def _calibrate(self, torch, params, rows, coded) -> None:
        """Raise the rate targets of the chunks ``rows`` by what their payloads, packed as they
        stand (``params`` as the step uses them: rounded latents), lack of the goal: the targets
        were estimates (the weights' bytes, the coder's quantised tables). Never lowered: a chunk
        that ends over budget is refitted (the repair in encode_arrays)."""
        measure, goal = self.calibration
        use = [p.detach().cpu().numpy() for p in (params if self.frozen is None else params[:1])]
        use[0] = use[0] / LATENT_GAIN
        sizes = [measure(int(i), [p[j] for p in use]) for j, i in enumerate(rows.cpu().numpy())]
        gap = torch.as_tensor(goal - np.asarray(sizes, np.float64), device=coded.device)
        self.target[rows] = torch.maximum(self.target[rows], coded.double() + 8 * gap)

    # numpy -----------------------------------------------------------------------------
    def grids(self, latents):
        """The integer latent grids (finest first) of one network's trained latents."""
        lat = np.clip(np.rint(latents[0] * LATENT_GAIN), -self.latent_max, self.latent_max).astype(np.int64)
        return [lat[a:b].reshape(s) for a, b, s in zip(self.offsets[:-1], self.offsets[1:], self.shapes)]

    def integers(self, params):
        """(weights as integers, their exponents, latents as integer grids) of one network."""
        grids = self.grids(params[0])
        qs, exps = [], []
        for w, shp in zip(list(params[1:][self.parts.decoder]) + self.context(params), self.tensor_shapes):
            w = np.asarray(w, np.float64).reshape(shp)
            if not np.all(np.isfinite(w)):
                raise FloatingPointError("fitting diverged (non-finite weights); lower lr")
            e = int(_exponents(np, w, self.q_max))
            qs.append(np.clip(np.rint(w * 2.0 ** e), -self.q_max, self.q_max).astype(np.int64))
            exps.append(e)
        return qs, exps, grids

    def _plain(self, qs, exps):
        """Stored networks with the options neutral (prefilter taps (1, 0, 0), the convolution
        stage's output zero): for the rare fit whose options would leave exact arithmetic."""
        qs, exps = list(qs), list(exps)
        if self.parts.prefilter is not None:
            qs[self.parts.prefilter] = np.tile(np.asarray(PLAIN_TAPS, np.int64), (self.levels, 1))
            exps[self.parts.prefilter] = 0
        if self.conv:
            for t in (self.parts.conv.start + 2, self.parts.conv.start + 3):
                qs[t] = np.zeros_like(qs[t])
                exps[t] = 0
        return qs, exps

    def zero_level(self, params, level: int) -> None:
        params[0][:, self.offsets[level]:self.offsets[level + 1]] = 0

    def certain_zero(self, params) -> None:
        """A context model that predicts mu = 0 with the smallest scale for every latent."""
        for p in params[1:][self.parts.context]:
            p[...] = 0
        params[-1].reshape(-1)[1] = (entropy.LOG2_B_MIN - LOG2_B_START) / CONTEXT_GAIN[1]

    def pack(self, header, lo, hi, params) -> bytes:
        if self.frozen is not None:           # latents only; the networks are the array's
            nets = self.frozen
            grids = self.grids(params[0])
            fields = fmt.Body(lo, hi, self.first, self.levels, self.latent_max, self.bits, self.hidden,
                              self.ctx_width, fmt.FLAG_SHARED | self.flags, nets.id)
            return fmt.pack(header, fields, list(nets.values), list(nets.exps), None, grids)
        qs, exps, grids = self.integers(params)
        try:
            self._check(qs, exps)
        except ValueError:
            if not self.flags:
                raise
            qs, exps = self._plain(qs, exps)        # a valid payload without the options' effect
            self._check(qs, exps)
        radius = self.q_max
        scales = []
        for q in qs:
            flat = q.reshape(-1)
            zeros = np.zeros_like(flat)
            costs = [entropy.cost_bits(flat, zeros, zeros, np.full(flat.shape, s), radius)
                     for s in range(entropy.N_SCALES)]
            scales.append(int(np.argmin(costs)))
        fields = fmt.Body(lo, hi, self.first, self.levels, self.latent_max, self.bits, self.hidden, self.ctx_width,
                          self.flags)
        return fmt.pack(header, fields, qs, exps, scales, grids)


def _exponents(xp, w, q_max: int):
    """Power-of-two step exponents e (per network, or for one tensor with numpy): the largest e
    with max|w| * 2**e <= q_max (0 for an all-zero tensor), at most MAX_EXPONENT (a tiny tensor,
    such as a single bias near 0, would otherwise ask for a step too fine to stay exact: 5.4)."""
    if xp is np:
        m = float(np.max(np.abs(w))) if w.size else 0.0
        return 0 if m == 0 else int(np.clip(math.floor(math.log2(q_max / m)), -100, MAX_EXPONENT))
    m = w.abs().reshape(w.shape[0], -1).amax(1)
    e = xp.floor(xp.log2(q_max / m.clamp(min=1e-30))).clamp(-100, MAX_EXPONENT)
    e = xp.where(m > 0, e, xp.zeros_like(e))
    return e.reshape((-1,) + (1,) * (w.ndim - 1))


def _mse_at(db: float) -> float:
    """Mean squared error on the normalised range (peak 2) of a PSNR in dB."""
    return 4.0 * 10.0 ** (-db / 10.0)


def _context_mlp(torch, ctx, grid, parent, level: int):
    """The context MLP on :func:`model.context_features` of ``grid`` (B, *m), for training:
    the same values (B, cells, 2), computed without the constant columns (the pass flag is one
    column, the level's one-hot a bias), the parent's columns built at the parent's resolution
    and repeated 2x per axis, the neighbours as views of one zero-padded copy."""
    pad = torch.nn.functional.pad
    w0, b0, w1, b1 = ctx
    b, m, d = grid.shape[0], grid.shape[1:], grid.ndim - 1
    n_parent = 1 + 2 * d
    cols = []
    if parent is not None:
        mp, padded = parent.shape[1:], pad(parent, (1, 1) * d)
        views = [padded[(slice(None),) + tuple(slice(1, 1 + n) for n in mp)]]
        views += [padded[(slice(None),) + tuple(slice(1 - (s if c == a else 0), 1 - (s if c == a else 0) + n)
                                                for c, n in enumerate(mp))] for a in range(d) for s in (1, -1)]
        near = torch.stack(views, -1)                                            # (B, *mp, 1 + 2d)
        spread = near.reshape((b,) + sum(((n, 1) for n in mp), ()) + (n_parent,))
        spread = spread.expand((b,) + sum(((n, 2) for n in mp), ()) + (n_parent,))
        spread = spread.reshape((b,) + tuple(2 * n for n in mp) + (n_parent,))
        cols.append(spread[(slice(None),) + tuple(slice(0, n) for n in m)])
    odd = parity(torch, grid, m)
    padded = pad(grid, (1, 1) * d)
    views = [padded[(slice(None),) + tuple(slice(1 - (s if c == a else 0), 1 - (s if c == a else 0) + n)
                                           for c, n in enumerate(m))] for a in range(d) for s in (1, -1)]
    cols.append(torch.stack(views, -1) * odd[..., None])
    cols.append(odd.expand(grid.shape)[..., None])
    feats = torch.cat(cols, -1).reshape(b, -1, 4 * d + 2 - (0 if parent is not None else n_parent))
    weights = w0[:, :4 * d + 2] if parent is not None else w0[:, n_parent:4 * d + 2]
    # (shared networks have a batch axis of 1: expanded, not copied)
    h = torch.baddbmm(b0 + w0[:, 4 * d + 2 + level][:, None], feats, weights.expand(b, -1, -1)).clamp(min=0)
    return torch.baddbmm(b1, h, w1.expand(b, -1, -1))


def _laplace_bits(torch, v, mu, log2_b):
    """-log2 P(v) of integers (or noisy values) v under Laplace(mu, 2**log2_b) integrated over
    the unit bin around v (what the coder's tables approximate)."""
    inv_b = torch.exp2(-log2_b)
    x = -(v - mu).abs()                         # mirrored to the left half: bin [x - 1/2, x + 1/2]
    upper = x + 0.5
    lower_cdf = 0.5 * torch.exp((x - 0.5) * inv_b)
    upper_cdf = torch.where(upper <= 0, 0.5 * torch.exp(upper.clamp(max=0) * inv_b),
                            1 - 0.5 * torch.exp(-upper.clamp(min=0) * inv_b))
    p = (upper_cdf - lower_cdf).clamp(min=1e-9)
    return -torch.log2(p)


def _options(flags: int) -> str:
    """The codec options of network flags, as keyword arguments."""
    return (f"upsampling={'learned' if flags & fmt.FLAG_UPSAMPLE else 'linear'!r}, "
            f"conv_stage={bool(flags & fmt.FLAG_CONV)}")
