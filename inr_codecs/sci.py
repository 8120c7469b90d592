"""SCI: spectrum-concentrated implicit neural compression (Yang et al., AAAI 2023).

A chunk is cut into blocks by an octree partition that maximises spectrum concentration
(paper Eqs. 8-12, solved exactly by dynamic programming on the tree); every block gets its own
funnel-shaped SIREN (a first sine layer ``fr`` times wider than the rest) whose size is
proportional to ``|x_i| / D(x_i)``; all blocks of a chunk are trained together as one batched
model; at decode time a deblocking filter smooths the block faces on every axis.

Body layout of an SCI payload (method id 2), little-endian::

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

from . import payload, quant
from .codec import (Encoded, InrCodec, budget_bytes, check_ratio, denormalise, header_for, normalise,
                    pack_range, pack_within_budget, read_range)
from .fit import FitConfig, fit_blocks
from .nn import coord_axes, funnel_widths, grid_coords, mlp_shapes, param_count, siren_forward, siren_init
from .payload import PayloadError

PIXEL_CENTRES = 0
_FIXED = struct.Struct("<BfBfBBfI")   # coords, w0, depth, fr, encoding, bits, deblock, n_flags
MIN_SIDE = 4            # an axis is split only if both halves keep >= MIN_SIDE voxels
MIN_WIDTH = 8           # narrowest block network (its first layer is round(fr * 8) wide)
REFERENCE_BLOCK_PARAMS = 1361   # the authors' minimum parameters per block; sets the default a_max
PARTITIONS = ("adaptive", "equidistant", "none")
ALLOCATIONS = ("size_over_d", "size", "d", "equal")
DEBLOCK_GRID = (0.02, 0.04, 0.08, 0.16, 0.32, 0.64)   # strengths "auto" tries (normalised units)
DECODE_SLAB = 1 << 16


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


def children(node: Node) -> list[Node]:
    """The split rule, part of the format: every axis of at least ``2 * MIN_SIDE`` voxels is
    halved at ``start + side // 2`` (the upper half takes the odd voxel); children are listed
    lower-half first, in C order over the split axes (the first split axis varies slowest).
    A node with no such axis cannot be split."""
    axes = [a for a, n in enumerate(node.shape) if n >= 2 * MIN_SIDE]
    out = []
    for upper in itertools.product((0, 1), repeat=len(axes)):
        start, stop = list(node.start), list(node.stop)
        for a, u in zip(axes, upper):
            mid = node.start[a] + node.shape[a] // 2
            start[a], stop[a] = (mid, node.stop[a]) if u else (node.start[a], mid)
        out.append(Node(tuple(start), tuple(stop), node.level + 1))
    return out if axes else []


class Tree:
    """The candidate tree: the chunk split by :func:`children` down to ``levels`` levels."""

    def __init__(self, shape: tuple[int, ...], levels: int):
        self.root = Node((0,) * len(shape), tuple(shape), 0)
        self.kids: dict[Node, list[Node]] = {}
        stack = [self.root]
        while stack:
            node = stack.pop()
            self.kids[node] = children(node) if node.level < levels else []
            stack += self.kids[node]

    @property
    def nodes(self) -> list[Node]:
        return list(self.kids)


def spectrum_concentration(block: np.ndarray, M: int = 1) -> float:
    """D(x) = (sum of the M largest |FFT(x)|) / (sum of all |FFT(x)|), paper Eq. 9.

    The DC term counts like any other coefficient (the paper's definition). Callers pass the
    block minus the chunk minimum, so D does not depend on a dtype's offset (CT's -1024 air);
    a bright smooth block then has D near 1 and a textured or noisy one D near 0. An all-zero
    block has D = 1 (a network represents it exactly).
    """
    mag = np.abs(np.fft.fftn(np.asarray(block, np.float64))).ravel()
    total = mag.sum()
    if total == 0:
        return 1.0
    m = min(M, mag.size)
    return float(np.partition(mag, mag.size - m)[mag.size - m:].sum() / total)


def _maxplus(g: np.ndarray, h: np.ndarray) -> np.ndarray:
    """out[k] = max over i + j = k of g[i] + h[j], for k < len(g)."""
    n = len(g)
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    keep = i + j < n
    out = np.full(n, -np.inf)
    np.maximum.at(out, (i + j)[keep], (g[:, None] + h[None, :])[keep])
    return out


def best_partition(tree: Tree, value: dict[Node, float], a_max: int) -> list[Node]:
    """Blocks maximising the sum of ``value`` with at most ``a_max`` blocks and exactly one block
    on every root-to-leaf path of ``tree`` (paper Eqs. 8, 11, 12): exact tree dynamic programming.

    f[node][k] is the best sum using exactly k blocks inside ``node``; a node either is a block
    (k = 1) or splits k among its children (max-plus convolution). Ties go to fewer blocks and
    to the earlier child. Blocks are returned in preorder.
    """
    if a_max < 1:
        raise ValueError(f"a_max must be >= 1, not {a_max}")
    f, prefixes = {}, {}
    for node in reversed(tree.nodes):           # children come after their parent in tree.nodes
        best = np.full(a_max + 1, -np.inf)
        kids = tree.kids[node]
        if kids:
            g = np.full(a_max + 1, -np.inf)
            g[0] = 0.0
            prefixes[node] = []
            for c in kids:
                prefixes[node].append(g)
                g = _maxplus(g, f[c])
            best = g
        best[1] = value[node]
        f[node] = best
    k = int(np.argmax(f[tree.root][1:])) + 1

    def pick(node, k):
        if k == 1:
            return [node]
        chosen = []
        for c, g in zip(reversed(tree.kids[node]), reversed(prefixes[node])):
            j = int(np.argmax(g[k::-1][:k + 1] + f[c][:k + 1]))  # g[k - j] + f_c[j], j = 0..k
            chosen.append(pick(c, j))
            k -= j
        return [b for part in reversed(chosen) for b in part]
    return pick(tree.root, k)


def equidistant_partition(tree: Tree, a_max: int) -> list[Node]:
    """The deepest uniform cut with at most ``a_max`` blocks (the paper's EP ablation)."""
    best = [tree.root]
    for level in range(1, max(n.level for n in tree.nodes) + 1):
        cut = [n for n in tree.nodes
               if n.level == level or (n.level < level and not tree.kids[n])]
        if len(cut) > a_max:
            break
        best = cut
    return best


def preorder(tree_kids, root: Node, blocks: list[Node]) -> tuple[list[Node], list[int]]:
    """Blocks in preorder and the split flags that describe them (1 = split, 0 = block)."""
    chosen = set(blocks)
    ordered, flags = [], []

    def walk(node):
        if node in chosen:
            flags.append(0)
            ordered.append(node)
            return
        flags.append(1)
        for c in tree_kids[node]:
            walk(c)
    walk(root)
    if len(ordered) != len(blocks):
        raise ValueError("blocks do not form a partition of the tree")
    return ordered, flags


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
            kids = children(node)
            if not kids:
                raise PayloadError(f"partition splits a block of shape {node.shape} that cannot be split")
            stack += reversed(kids)
        else:
            blocks.append(node)
    if pos != len(flags):
        raise PayloadError(f"{len(flags) - pos} partition flags left after the tree")
    return blocks


# --- parameter allocation --------------------------------------------------------------------

def allocation_weights(rule: str, sizes: np.ndarray, D: np.ndarray) -> np.ndarray:
    """Relative share of each block: |x|/D (the paper's), |x|, 1/D or equal."""
    sizes, D = np.asarray(sizes, np.float64), np.asarray(D, np.float64)
    return {"size_over_d": sizes / D, "size": sizes, "d": 1 / D, "equal": np.ones_like(sizes)}[rule]


def allocate(total: int, weights: np.ndarray, floor: int) -> np.ndarray:
    """Integer shares of ``total`` proportional to ``weights``, each >= ``floor``, summing to
    exactly ``total``. Shares that would fall under the floor are raised to it and the rest is
    re-shared among the others (water filling); rounding by largest remainder."""
    w = np.asarray(weights, np.float64)
    n = len(w)
    if total < floor * n:
        raise ValueError(f"{total} bytes cannot give {n} blocks {floor} bytes each")
    fixed = np.zeros(n, bool)
    while True:
        share = np.full(n, float(floor))
        free = ~fixed
        rest = total - floor * fixed.sum()
        share[free] = rest * w[free] / w[free].sum() if w[free].sum() > 0 else rest / free.sum()
        low = free & (share < floor)
        if not low.any():
            break
        fixed |= low
    out = np.floor(share).astype(np.int64)
    order = np.argsort(-(share - out), kind="stable")
    out[order[:total - out.sum()]] += 1
    return out


# --- networks ------------------------------------------------------------------------------

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


def block_widths(nbytes: int, in_dim: int, depth: int, fr: float, fixed: int, bpp: float) -> tuple[int, int]:
    """Widest funnel (w1, w) whose estimated stored size (plus ``fixed`` bytes) fits ``nbytes``."""
    best = (0, 0)
    w = MIN_WIDTH
    while w <= 65535:
        w1 = funnel_widths(w, depth, fr)[0]
        if w1 > 65535 or fixed + param_count(layer_shapes(in_dim, w1, w, depth)) * bpp / 8 > nbytes:
            break
        best, w = (w1, w), w + 1
    return best


def render(shape, blocks: list[Node], nets: list, axes: list[int], w0: float) -> np.ndarray:
    """Evaluate every block's network (or constant) on its own grid: float32 chunk, normalised."""
    y = np.empty(shape, np.float32)
    for blk, net in zip(blocks, nets):
        if not isinstance(net, list):
            y[blk.slices] = net
            continue
        flat = np.empty(blk.size, np.float32)
        for start in range(0, blk.size, DECODE_SLAB):
            idx = np.arange(start, min(blk.size, start + DECODE_SLAB))
            flat[idx] = forward(np, net, grid_coords(blk.shape, idx, axes), w0)[:, 0]
        y[blk.slices] = flat.reshape(blk.shape)
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


# --- the codec -----------------------------------------------------------------------------

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

    Defaults are the paper's (7 layers, fr = 2.2, w0 = 20, M = 1, Adamax lr 1e-3) unless noted.

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
    partition : {"adaptive", "equidistant", "none"}, default "adaptive"
        "equidistant" and "none" are the paper's EP and NP ablations.
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
    steps : int, default 1000
        Optimiser steps; all blocks of a chunk train together, one step each per step.
    batch_size : int, default 16384
        Voxels per step over all blocks of a chunk, split equally between blocks.
    lr : float, default 1e-3
    lr_schedule : {"cosine", "constant"}, default "cosine"
    optimizer : {"adamax", "adam"}, default "adamax"
        The paper's Adamax; at a few hundred steps (CPU) "adam" is 2-4 dB better.
    qat_fraction : float, default 0.1
        Share of the steps (at the end) trained through the quantiser.
    device : {"auto", "cpu", "cuda", "cuda:N"}, default "auto"
    seed : int, default 0
        Seeds initialisation and sampling: on CPU the same chunk gives the same payload.
    precision : {"highest", "high"}, default "highest"
        "high" lets CUDA use TF32 matmuls while fitting (no effect on CPU).
    """

    codec_id = "inr_codecs.sci"

    def __init__(self, ratio, *, depth=6, w0=20.0, fr=2.2, M=1, a_max=None, levels=None,
                 partition="adaptive", allocation="size_over_d", deblock="auto", bits=8,
                 encoding="quantised", steps=1000, batch_size=16384, lr=1e-3, lr_schedule="cosine",
                 optimizer="adamax", qat_fraction=0.1, device="auto", seed=0, precision="highest"):
        self.ratio = check_ratio(ratio)
        if not 2 <= int(depth) <= 255:
            raise ValueError(f"depth must be in 2..255, not {depth}")
        for name, v in (("w0", w0), ("fr", fr)):
            if not (float(v) > 0 and math.isfinite(float(v))):
                raise ValueError(f"{name} must be a positive number, not {v}")
        if int(M) < 1:
            raise ValueError(f"M must be >= 1, not {M}")
        if a_max is not None and int(a_max) < 1:
            raise ValueError(f"a_max must be >= 1 or None, not {a_max}")
        if levels is not None and not 0 <= int(levels) <= 16:
            raise ValueError(f"levels must be in 0..16 or None, not {levels}")
        if partition not in PARTITIONS:
            raise ValueError(f"partition must be one of {PARTITIONS}, not {partition!r}")
        if allocation not in ALLOCATIONS:
            raise ValueError(f"allocation must be one of {ALLOCATIONS}, not {allocation!r}")
        if deblock not in ("auto", "off") and not (isinstance(deblock, (int, float))
                                                   and 0 <= deblock < math.inf):
            raise ValueError(f"deblock must be 'auto', 'off' or a strength >= 0, not {deblock!r}")
        if encoding not in quant.ENCODINGS:
            raise ValueError(f"encoding must be one of {list(quant.ENCODINGS)}, not {encoding!r}")
        if bits is None:
            raise ValueError("SCICodec needs an integer bit depth (2..16)")
        quant.levels(int(bits))
        self.depth, self.w0, self.fr = int(depth), float(np.float32(w0)), float(np.float32(fr))
        self.M = int(M)
        self.a_max = None if a_max is None else int(a_max)
        self.levels = None if levels is None else int(levels)
        self.partition, self.allocation = partition, allocation
        self.deblock = deblock if isinstance(deblock, str) else float(deblock)
        self.bits, self.encoding = int(bits), encoding
        self.steps, self.batch_size, self.lr = int(steps), int(batch_size), float(lr)
        self.lr_schedule, self.optimizer = lr_schedule, optimizer
        self.qat_fraction, self.device, self.seed = float(qat_fraction), device, int(seed)
        self.precision = precision
        self._fit_config()

    def _fit_config(self) -> FitConfig:
        return FitConfig(self.steps, self.batch_size, self.lr, self.lr_schedule, self.optimizer,
                         self.qat_fraction, self.device, self.seed, precision=self.precision)

    # sizes -------------------------------------------------------------------------------
    @property
    def _enc(self) -> int:
        return quant.ENCODINGS[self.encoding]

    def _bpp(self, bits: int | None = None) -> float:
        return quant.bits_per_param_estimate(self._enc, self.bits if bits is None else bits)

    def _fixed_bytes(self, ndim: int, n_flags: int) -> int:
        return (payload.frame_overhead(ndim) + 16 + _FIXED.size + math.ceil(n_flags / 8)
                + quant.side_bytes(self._enc, 0))

    def _block_bytes(self, params: int, bits: int | None = None) -> int:
        return _per_block_bytes(self._enc, self.depth) + math.ceil(params * self._bpp(bits) / 8)

    def _min_block_bytes(self, in_dim: int, bits: int | None = None) -> int:
        w1 = funnel_widths(MIN_WIDTH, self.depth, self.fr)[0]
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
    def plan(self, arr: np.ndarray, lo: float, hi: float) -> Plan:
        """Partition the chunk, measure D, allocate bytes and solve each block's widths."""
        shape = tuple(arr.shape)
        budget = budget_bytes(arr.nbytes, self.ratio)
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
        nets = [i for i in range(len(blocks)) if i not in constants]
        in_dim = len(coord_axes(shape))
        fixed = self._fixed_bytes(len(shape), len(flags)) + 8 * len(constants)
        per_block = _per_block_bytes(self._enc, self.depth)
        widths = [(0, 0)] * len(blocks)
        if nets:
            Ds = np.array([D[blocks[i]] for i in nets])
            sizes = np.array([blocks[i].size for i in nets])
            shares = allocate(budget - fixed, allocation_weights(self.allocation, sizes, Ds),
                              self._min_block_bytes(in_dim))
            carry = 0
            for i, share in zip(nets, shares):
                # what a block's rounded-down width leaves unused goes to the next block
                widths[i] = block_widths(share + carry, in_dim, self.depth, self.fr, per_block, self._bpp())
                carry = share + carry - self._block_bytes(
                    param_count(layer_shapes(in_dim, *widths[i], self.depth)))
        return Plan(blocks, flags, np.array([D[b] for b in blocks]), widths, constants)

    def encode_arrays(self, arrs, ranges, init=None):
        if init is not None:
            raise ValueError("SCICodec has no warm start: its block networks differ from chunk to chunk")
        shape = tuple(arrs[0].shape)
        plans = [self.plan(a, lo, hi) for a, (lo, hi) in zip(arrs, ranges)]
        targets = [normalise(a, lo, hi) for a, (lo, hi) in zip(arrs, ranges)]
        nets = [[i for i, w in enumerate(p.widths) if w != (0, 0)] for p in plans]
        layers: list[list] = [[] for _ in arrs]
        groups: dict[int, list[int]] = {}
        for c, net in enumerate(nets):         # chunks with as many networks train together
            if net:
                groups.setdefault(len(net), []).append(c)
        for members in groups.values():
            for c, fitted in zip(members, self._fit([plans[c] for c in members], [nets[c] for c in members],
                                                    np.concatenate([targets[c] for c in members]), shape)):
                layers[c] = fitted
        header = header_for(arrs[0], "sci")
        budget = budget_bytes(arrs[0].nbytes, self.ratio)
        out = []
        for (lo, hi), plan, lay, target in zip(ranges, plans, layers, targets):
            packed, bits = pack_within_budget(
                lambda b: self._pack(header, lo, hi, plan, lay, b, 0.0), self._smallest_bits(), budget)
            t = self._choose_deblock(packed, target.reshape(shape))
            out.append(Encoded(self._pack(header, lo, hi, plan, lay, bits, t) if t else packed,
                               self.steps if lay else 0))
        return out

    def _fit(self, plans: list[Plan], nets: list[list[int]], target, shape) -> list[list[list[np.ndarray]]]:
        """Train every network block of the chunks at once (padded to common widths, masked).

        The chunks are stacked on a new leading axis (``target`` is their values one after the
        other), so a block of chunk c is the box ``(c, *start)`` of sides ``(1, *sides)``.
        Returns, per chunk, per network block, its layers as (fan_in + 1, fan_out) matrices.
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
                                  block_shapes(in_dim, *plan.widths[i], self.depth), self.w0)
                for layer, ((r, cols), W, bias) in enumerate(zip(real, init[::2], init[1::2])):
                    params[layer][b, :r - 1, :cols] = W
                    params[layer][b, -1, :cols] = bias
                    masks[layer][b, :r - 1, :cols] = 1
                    masks[layer][b, -1, :cols] = 1
                starts.append((c,) + plan.blocks[i].start)
                sides.append((1,) + plan.blocks[i].shape)
                b += 1
        fitted = fit_blocks(lambda xp, p, x: forward(xp, p, x, self.w0), params, masks, target,
                            (len(plans),) + tuple(shape), np.array(starts), np.array(sides), [a + 1 for a in axes],
                            self._fit_config(), self._smallest_bits() or None)
        out, b = [], 0
        for plan, net in zip(plans, nets):
            chunk = []
            for i in net:
                real = layer_shapes(in_dim, *plan.widths[i], self.depth)
                chunk.append([np.concatenate([p[b, :r - 1, :cols], p[b, -1:, :cols]])
                              for p, (r, cols) in zip(fitted, real)])
                b += 1
            out.append(chunk)
        return out

    def _choose_deblock(self, packed: bytes, target: np.ndarray) -> float:
        """The configured strength, or with "auto" the one (or none) that brings the decoded
        chunk (``packed`` without filtering) closest to ``target`` (normalised)."""
        if self.deblock == "off":
            return 0.0
        if not isinstance(self.deblock, str):
            return self.deblock
        header, body_bytes = payload.unpack(packed)
        body, y = render_body(header.shape, payload.Reader(body_bytes))
        if len(body.blocks) == 1:
            return 0.0
        errs = {t: float(np.mean((deblock(y, body.blocks, t) - target) ** 2)) for t in (0.0,) + DEBLOCK_GRID}
        return min(errs, key=lambda t: (errs[t], t))

    def _pack(self, header, lo, hi, plan: Plan, layers, bits: int, t: float) -> bytes:
        flags = np.packbits(np.array(plan.flags, np.uint8)).tobytes()
        table = b"".join(
            struct.pack("<HHf", 0, 0, plan.constants[i]) if i in plan.constants
            else struct.pack("<HH", *w) for i, w in enumerate(plan.widths))
        tensors = [m for net in layers for m in net]
        body = (pack_range(lo, hi)
                + _FIXED.pack(PIXEL_CENTRES, self.w0, self.depth, self.fr, self._enc, bits,
                              t, len(plan.flags))
                + flags + table
                + (quant.encode_tensors(tensors, self._enc, bits) if tensors else b""))
        return payload.pack(header, body)


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
    coords, w0, depth, fr, enc, bits, t, n_flags = r.take(_FIXED.format[1:])
    if coords != PIXEL_CENTRES:
        raise PayloadError(f"unknown coordinate convention {coords}")
    if not (depth >= 2 and np.isfinite(w0) and np.isfinite(t) and t >= 0):
        raise PayloadError(f"bad SCI fields: depth {depth}, w0 {w0}, deblock {t}")
    if n_flags > 2 * int(np.prod(shape)):
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
    if header.method != payload.METHODS["sci"]:
        raise ValueError(f"not an SCI payload (method {payload.METHOD_NAMES[header.method]})")
    return read_body_fixed(header.shape, payload.Reader(body))


def render_body(shape, r) -> tuple[Body, np.ndarray]:
    """Parse a whole SCI body and evaluate its blocks: the fields and the normalised float32
    chunk before deblocking."""
    body = read_body_fixed(shape, r)
    axes = coord_axes(shape)
    in_dim = len(axes)
    net_ids = [i for i, w in enumerate(body.widths) if w != (0, 0)]
    shapes = [layer_shapes(in_dim, *body.widths[i], body.depth) for i in net_ids]
    flat = quant.decode_tensors(r, [s for sh in shapes for s in sh], body.encoding, body.bits) if net_ids else []
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
