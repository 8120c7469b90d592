"""SCI's encoder-side choices: the candidate tree, spectrum concentration, the exact
best partition (paper Eqs. 8-12), and the byte allocation between blocks (Eq. 13)."""
from __future__ import annotations

import numpy as np

from ...nn import funnel_widths, param_count
from .format import Node, children, layer_shapes

MIN_WIDTH = 8           # narrowest block network (its first layer is round(fr * 8) wide)


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
