"""SCICodec: partitions each chunk, sizes one funnel SIREN per block and fits them all with
the fitting engine (every block of every chunk of a batch in one batched model)."""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ... import args, payload, quant
from ...codec import Encoded, InrCodec, header_for, normalise, pack_within_budget
from ...fit import BoxSampler, Networks, fit, mean_of_all
from ...nn import coord_axes, funnel_widths, param_count, siren_init
from . import format as fmt
from .format import MIN_SIDE, Node, block_shapes, deblock, layer_shapes
from .partition import (MIN_WIDTH, Tree, allocate, allocation_weights, best_partition, block_widths,
                        equidistant_partition, preorder, spectrum_concentration)

REFERENCE_BLOCK_PARAMS = 1361   # the authors' minimum parameters per block; sets the default a_max
PARTITIONS = ("none", "adaptive", "equidistant")
ALLOCATIONS = ("size_over_d", "size", "d", "equal")
DEBLOCK_GRID = (0.02, 0.04, 0.08, 0.16, 0.32, 0.64)   # strengths "auto" tries (normalised units)


class Plan(NamedTuple):
    """What the encoder decided for one chunk before fitting."""

    blocks: list[Node]
    flags: list[int]
    D: np.ndarray
    widths: list[tuple[int, int]]      # (0, 0) for constant blocks
    constants: dict[int, float]        # block index -> normalised value


def _per_block_bytes(encoding: int, depth: int) -> int:
    return 4 + (8 * (depth + 1) if encoding == quant.QUANTISED else 0)


class SCICodec(InrCodec):
    """Lossy codec: spectrum-concentrated partition of each chunk, one funnel SIREN per block.

    SCI (Yang et al., AAAI 2023). The defaults are the best settings measured at the default
    1000 steps (``docs/codecs/sci.md``, ``benchmarks/results/defaults_cpu.json``): Adam, and no
    partition (one funnel SIREN per chunk), which beat the paper's Adamax by 0.9-2.3 dB and its
    adaptive partition by 0.2 dB (nuclei) and 2.7 dB (CT) at 64x, though the partition fits about
    2x and decodes 2-3x faster. ``SCICodec.paper(ratio)`` gives the paper's settings
    (``paper_settings``: adaptive partition, Adamax).

    Parameters
    ----------
    ratio : float
        Compression ratio; a hard ceiling: payload bytes <= floor(raw chunk bytes / ratio).
    depth : int, default 6
        Sine layers per block network (plus the linear output layer: 7 layers).
    w0 : float, default 20.0
    fr : float, default 2.2
        Funnel ratio: the first sine layer is ``round(fr * width)`` wide (paper Eq. 13).
    M : int, default 1
        Spectrum concentration D uses the M largest FFT magnitudes (paper Eq. 9).
    a_max : int or None, default None
        Most blocks per chunk (Eq. 11). None: as many as the budget gives blocks of 1361
        parameters (the authors' minimum); always capped so every block can get a width-8
        network.
    levels : int or None, default None
        Octree levels below the chunk. None: floor(log_{2^N} a_max) + 2 (the authors' rule),
        N the number of axes that can be split.
    partition : {"none", "adaptive", "equidistant"}, default "none"
        "adaptive" is the paper's partition; "equidistant" and "none" its EP and NP ablations.
        ``a_max``, ``levels``, ``allocation`` and ``deblock`` act only on a partitioned chunk.
    allocation : {"size_over_d", "size", "d", "equal"}, default "size_over_d"
        Block budgets proportional to |x|/D (the paper's), |x|, 1/D, or equal; never below the
        smallest network.
    deblock : "auto", "off" or float, default "auto"
        Decode-time face filter strength t (normalised units). "auto": the encoder tries
        ``DEBLOCK_GRID`` and keeps the strength (or none) with the lowest error.
    bits : int, default 8
        Quantisation bit depth (2-16); block networks are sized for it.
    encoding : {"quantised", "float16"}, default "quantised"
        "float16" stores raw half-precision weights.
    **fit
        Fitting options (:class:`inr_codecs.fit.FitOptions`), all supported, as for
        ``SIRENCodec``: all blocks of a chunk train together, one step each per step;
        ``batch_size`` voxels per step are split equally between a chunk's blocks; early
        stopping applies per block network. Default ``optimizer="adam"`` (see above).
    """

    codec_id = "inr_codecs.sci"
    method_id = fmt.METHOD_ID
    fit_defaults = {"optimizer": "adam"}
    paper_settings = {"optimizer": "adamax", "partition": "adaptive", "allocation": "size_over_d", "fr": 2.2,
                      "w0": 20.0, "depth": 6, "M": 1, "lr": 1e-3}

    def __init__(self, ratio, *, depth=6, w0=20.0, fr=2.2, M=1, a_max=None, levels=None, partition="none",
                 allocation="size_over_d", deblock="auto", bits=8, encoding="quantised", **fit):
        super().__init__(ratio, bits=bits, encoding=encoding, **fit)
        self.depth = args.integer("depth", depth, 2, 255)
        # w0 and fr: the values given, for the configuration (payloads store them as float32: _w0, _fr)
        self.w0 = args.real("w0", w0, above=0, f32=True)
        self.fr = args.real("fr", fr, above=0, f32=True)
        self.M = args.integer("M", M, 1)
        self.a_max = None if a_max is None else args.integer("a_max", a_max, 1)
        self.levels = None if levels is None else args.integer("levels", levels, 0, 16)
        if partition not in PARTITIONS:
            raise ValueError(f"partition must be one of {PARTITIONS}, not {partition!r}")
        if allocation not in ALLOCATIONS:
            raise ValueError(f"allocation must be one of {ALLOCATIONS}, not {allocation!r}")
        self.partition, self.allocation = partition, allocation
        if isinstance(deblock, str):
            if deblock not in ("auto", "off"):
                raise ValueError(f"deblock must be 'auto', 'off' or a strength >= 0, not {deblock!r}")
            self.deblock = deblock
        else:
            try:
                self.deblock = args.real("deblock", deblock, at_least=0, f32=True)
            except ValueError:
                raise ValueError(f"deblock must be 'auto', 'off' or a strength >= 0 (a number, finite in float32: "
                                 f"payloads store it as float32), not {deblock!r}") from None

    @property
    def _w0(self) -> float:
        """``w0`` as payloads store it (float32): what the fit trains with and the decoder reads."""
        return args.f32(self.w0)

    @property
    def _fr(self) -> float:
        """``fr`` as payloads store it (float32): what sizes the networks."""
        return args.f32(self.fr)

    # sizes -------------------------------------------------------------------------------
    @property
    def _enc(self) -> int:
        return quant.ENCODINGS[self.encoding]

    def _bpp(self, bits: int | None = None) -> float:
        return quant.bits_per_param_estimate(self._enc, self.bits if bits is None else bits)

    def _fixed_bytes(self, ndim: int, n_flags: int) -> int:
        return (payload.frame_overhead(ndim) + 16 + fmt.FIXED.size + math.ceil(n_flags / 8)
                + quant.side_bytes(self._enc, 0))

    def _block_bytes(self, params: int, bits: int | None = None) -> int:
        return _per_block_bytes(self._enc, self.depth) + math.ceil(params * self._bpp(bits) / 8)

    def _min_block_bytes(self, in_dim: int, bits: int | None = None) -> int:
        w1 = funnel_widths(MIN_WIDTH, self.depth, self._fr)[0]
        return self._block_bytes(param_count(layer_shapes(in_dim, w1, MIN_WIDTH, self.depth)), bits)

    def min_bytes(self, shape, bits) -> int:
        return self._fixed_bytes(len(shape), 1) + self._min_block_bytes(len(coord_axes(shape)), bits or None)

    def smallest_network(self, bits) -> str:
        return (f"the smallest SCI block network (width {MIN_WIDTH}, fr {self.fr:g}, "
                f"depth {self.depth}, {bits or 16} bits)")

    def a_max_for(self, shape, budget: int) -> int:
        """Blocks allowed in a chunk: the configured or default a_max, capped by what fits."""
        in_dim = len(coord_axes(shape))
        room = budget - self._fixed_bytes(len(shape), 0)
        fits = max(1, room // (self._min_block_bytes(in_dim) + 1))   # +1: a block costs <= 2 flags
        want = self.a_max if self.a_max is not None else max(
            1, room // (self._block_bytes(REFERENCE_BLOCK_PARAMS) + 1))
        return int(min(want, fits))

    def levels_for(self, shape, a_max: int) -> int:
        if self.levels is not None:
            return self.levels
        n = max(1, sum(s >= 2 * MIN_SIDE for s in shape))
        return int(math.floor(math.log(a_max, 2 ** n) + 1e-9)) + 2 if a_max > 1 else 0

    # encoding ----------------------------------------------------------------------------
    def plan(self, arr: np.ndarray, lo: float, hi: float, budget: int | None = None) -> Plan:
        """Partition the chunk, measure D, allocate ``budget`` bytes (default: the codec's
        budget for this chunk) and solve each block's widths."""
        shape = tuple(arr.shape)
        budget = self.budget(shape, arr.dtype) if budget is None else budget
        a_max = self.a_max_for(shape, budget)
        tree = Tree(shape, self.levels_for(shape, a_max) if self.partition != "none" else 0)
        shifted = np.asarray(arr, np.float64) - lo
        D = {n: spectrum_concentration(shifted[n.slices], self.M) for n in tree.nodes}
        if self.partition == "adaptive":
            total = arr.size
            chosen = best_partition(tree, {n: D[n] * n.size / total for n in tree.nodes}, a_max)
        elif self.partition == "equidistant":
            chosen = equidistant_partition(tree, a_max)
        else:
            chosen = [tree.root]
        blocks, flags = preorder(tree.kids, tree.root, chosen)
        half, mid = (hi - lo) / 2, (hi + lo) / 2
        constants = {}
        for i, b in enumerate(blocks):
            v = arr[b.slices]
            if v.min() == v.max():
                constants[i] = float(np.float32((float(v.flat[0]) - mid) / half))
        widths = self._widths(shape, blocks, [D[b] for b in blocks], constants, len(flags), budget)
        return Plan(blocks, flags, np.array([D[b] for b in blocks]), widths, constants)

    def _widths(self, shape, blocks, D, constants, n_flags, budget) -> list[tuple[int, int]]:
        """Each block's (w1, w): the budget left after the fixed fields shared by the network
        blocks (allocation rule, never under the smallest network); (0, 0) for constants."""
        nets = [i for i in range(len(blocks)) if i not in constants]
        in_dim = len(coord_axes(shape))
        fixed = self._fixed_bytes(len(shape), n_flags) + 8 * len(constants)
        per_block = _per_block_bytes(self._enc, self.depth)
        widths = [(0, 0)] * len(blocks)
        if not nets:
            return widths
        shares = allocate(budget - fixed, allocation_weights(self.allocation, np.array([blocks[i].size for i in nets]),
                                                             np.array([D[i] for i in nets])),
                          self._min_block_bytes(in_dim))
        carry = 0
        for i, share in zip(nets, shares):
            # what a block's rounded-down width leaves unused goes to the next block
            widths[i] = block_widths(share + carry, in_dim, self.depth, self._fr, per_block, self._bpp())
            carry = share + carry - self._block_bytes(param_count(layer_shapes(in_dim, *widths[i], self.depth)))
        return widths

    def encode_arrays(self, arrs, ranges, budget, init=None):
        if init is not None:
            raise ValueError("SCICodec has no warm start: its block networks differ from chunk to chunk")
        shape = tuple(arrs[0].shape)
        plans = [self.plan(a, lo, hi, budget) for a, (lo, hi) in zip(arrs, ranges)]
        targets = [normalise(a, lo, hi) for a, (lo, hi) in zip(arrs, ranges)]
        nets = [[i for i, w in enumerate(p.widths) if w != (0, 0)] for p in plans]
        layers: list[list] = [[] for _ in arrs]
        steps = [0] * len(arrs)
        groups: dict[int, list[int]] = {}
        for c, net in enumerate(nets):         # chunks with as many networks train together
            if net:
                groups.setdefault(len(net), []).append(c)
        for members in groups.values():
            fitted = self._fit([plans[c] for c in members], [nets[c] for c in members],
                               np.concatenate([targets[c] for c in members]), shape)
            for c, (lay, n_steps) in zip(members, fitted):
                layers[c], steps[c] = lay, n_steps
        header = header_for(arrs[0], self.method_id)
        out = []
        for (lo, hi), plan, lay, target, n_steps in zip(ranges, plans, layers, targets, steps):
            packed, bits = pack_within_budget(
                lambda b: self._pack(header, lo, hi, plan, lay, b, 0.0), self._smallest_bits(), budget)
            t = self._choose_deblock(packed, target.reshape(shape))
            out.append(Encoded(self._pack(header, lo, hi, plan, lay, bits, t) if t else packed, n_steps))
        return out

    def _fit(self, plans: list[Plan], nets: list[list[int]], target, shape) -> list[tuple[list, int]]:
        """Train every network block of the chunks at once (padded to common widths, masked).

        The chunks are stacked on a new leading axis (``target`` is their values one after the
        other), so a block of chunk c is the box ``(c, *start)`` of sides ``(1, *sides)``.
        Returns, per chunk, its network blocks' layers as (fan_in + 1, fan_out) matrices and
        the most steps any of them took.
        """
        axes = coord_axes(shape)
        in_dim = len(axes)
        widths = [plan.widths[i] for plan, net in zip(plans, nets) for i in net]
        padded = layer_shapes(in_dim, max(w[0] for w in widths), max(w[1] for w in widths), self.depth)
        params = [np.zeros((len(widths),) + s, np.float32) for s in padded]
        masks = [np.zeros_like(p) for p in params]
        starts, sides = [], []
        b = 0
        for c, (plan, net) in enumerate(zip(plans, nets)):
            for j, i in enumerate(net):
                real = layer_shapes(in_dim, *plan.widths[i], self.depth)
                init = siren_init(np.random.default_rng([self.seed, j]),
                                  block_shapes(in_dim, *plan.widths[i], self.depth), self._w0)
                for layer, ((r, cols), W, bias) in enumerate(zip(real, init[::2], init[1::2])):
                    params[layer][b, :r - 1, :cols] = W
                    params[layer][b, -1, :cols] = bias
                    masks[layer][b, :r - 1, :cols] = 1
                    masks[layer][b, -1, :cols] = 1
                starts.append((c,) + plan.blocks[i].start)
                sides.append((1,) + plan.blocks[i].shape)
                b += 1
        options = self.fit_options()
        sampler = BoxSampler((len(plans),) + tuple(shape), target, starts, sides, [a + 1 for a in axes],
                             options.batch_size, options.sampling)
        model = Networks(lambda xp, p, x: fmt.forward(xp, p, x, self._w0), params, masks)
        fitted = fit(model, sampler, mean_of_all, options, bits=self._smallest_bits() or None)
        out, b = [], 0
        for plan, net in zip(plans, nets):
            chunk = []
            for i in net:
                real = layer_shapes(in_dim, *plan.widths[i], self.depth)
                chunk.append([np.concatenate([p[b, :r - 1, :cols], p[b, -1:, :cols]])
                              for p, (r, cols) in zip(fitted.params, real)])
                b += 1
            out.append((chunk, int(fitted.steps[b - len(net):b].max())))
        return out

    def _choose_deblock(self, packed: bytes, target: np.ndarray) -> float:
        """The configured strength, or with "auto" the one (or none) that brings the decoded
        chunk (``packed`` without filtering) closest to ``target`` (normalised)."""
        if self.deblock == "off":
            return 0.0
        if not isinstance(self.deblock, str):
            return self.deblock
        header, body_bytes = payload.unpack(packed)
        body, y = fmt.render_body(header.shape, payload.Reader(body_bytes))
        if len(body.blocks) == 1:
            return 0.0
        errs = {t: float(np.mean((deblock(y, body.blocks, t) - target) ** 2)) for t in (0.0,) + DEBLOCK_GRID}
        return min(errs, key=lambda t: (errs[t], t))

    def _pack(self, header, lo, hi, plan: Plan, layers, bits: int, t: float) -> bytes:
        fields = fmt.Body(lo, hi, self._w0, self.depth, self._fr, self._enc, bits, t, plan.blocks, plan.widths,
                          plan.constants)
        return fmt.pack(header, fields, plan.flags, layers)
