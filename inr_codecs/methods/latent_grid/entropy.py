"""Entropy coding of integers with discretised Laplace tables that are the same on every machine.

A symbol is an integer ``v`` coded relative to a base ``m`` (``v - m`` in ``[-radius, radius]``)
with the table ``(frac, scale)``: a Laplace distribution centred at ``m + frac / 4`` with scale
``b = 2 ** (scale / 8 + LOG2_B_MIN)``, integrated over each unit bin. The tables are built from
IEEE-754 additions, multiplications and divisions only (:func:`exp`: no libm, whose last bits
differ between platforms and builds), so every machine builds bit-identical float64 tables and
constriction's (deterministic) quantisation of them gives identical coders.

Symbols that share a table are coded with one fixed ``Categorical`` model in one call (tens of
millions of symbols per second, against a few million for per-symbol parametric models):
:class:`Encoder` collects groups in decoding order and writes them into one ANS stack in
reverse; :class:`Decoder` reads them back group by group.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ...payload import PayloadError

FRACS = 8                         # mean offsets 0, 1/8, ..., 7/8 (rounded: within 1/16 of mu)
LOG2_B_MIN, LOG2_B_MAX = -4, 7    # scale range: 1/16 .. 128
SCALE_STEPS = 8                   # scale indices per octave
N_SCALES = (LOG2_B_MAX - LOG2_B_MIN) * SCALE_STEPS + 1
MIN_PROB = 1e-12                  # floor of a bin's probability before constriction's own floor

_LN2_HI = 6.93147180369123816490e-01   # ln 2 split so that n * _LN2_HI is exact (fdlibm)
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e+00
LN2 = 0.6931471805599453                # ln 2 rounded to binary64 (a literal: no libm)
_EXP_TERMS = tuple(1.0 / math.factorial(k) for k in range(14, -1, -1))   # Horner, highest first


def exp(x) -> np.ndarray:
    """exp(x) for float64 ``x`` from +, *, / and ldexp only: the same bits on every machine.

    Range reduction x = n ln 2 + r (|r| <= ln 2 / 2), a degree-14 Taylor polynomial for exp(r),
    then scaling by 2**n. Accurate to a few ulp; what matters is that it is reproducible.
    """
    x = np.asarray(x, np.float64)
    n = np.rint(x * _INV_LN2)
    r = (x - n * _LN2_HI) - n * _LN2_LO
    p = np.full_like(r, _EXP_TERMS[0])
    for c in _EXP_TERMS[1:]:
        p = p * r + c
    return np.ldexp(p, np.clip(n, -1100, 1100).astype(np.int64))


def scale_of(index) -> np.ndarray:
    """Laplace scale b of scale indices (float64, reproducible)."""
    return exp((np.asarray(index, np.float64) / SCALE_STEPS + LOG2_B_MIN) * LN2)


@lru_cache(maxsize=None)
def probabilities(frac: int, scale: int, radius: int) -> np.ndarray:
    """Probabilities of the symbols -radius..radius (index 0 = -radius) of table (frac, scale)."""
    if not (0 <= frac < FRACS and 0 <= scale < N_SCALES and radius >= 0):
        raise ValueError(f"no table ({frac}, {scale}, {radius})")
    inv_b = 1.0 / float(scale_of(scale))
    s = np.arange(-radius, radius + 1, dtype=np.float64)
    centre = frac / FRACS

    def cdf(x):
        e = exp(-np.abs(x) * inv_b) * 0.5
        return np.where(x < 0, e, 1.0 - e)

    p = cdf(s + 0.5 - centre) - cdf(s - 0.5 - centre)
    return np.maximum(p, MIN_PROB)


@lru_cache(maxsize=4096)
def model(frac: int, scale: int, radius: int):
    """The constriction model of table (frac, scale) over -radius..radius (cached per process)."""
    import constriction
    return constriction.stream.model.Categorical(probabilities(frac, scale, radius), perfect=False)


def quantise_params(mu, log2_b, radius_mu: int):
    """Table keys of continuous Laplace parameters, exactly as the decoder derives them.

    ``mu`` and ``log2_b`` are float64 arrays whose values are exact (computed in fixed point).
    Returns (base, frac, scale): ``base`` = floor(mu) clamped to [-radius_mu, radius_mu],
    ``frac`` = the nearest multiple of 1/FRACS above it, ``scale`` = the nearest scale index.
    """
    quarters = np.clip(np.floor(mu * FRACS + 0.5), -radius_mu * FRACS, radius_mu * FRACS)
    base = np.floor(quarters / FRACS)
    frac = (quarters - base * FRACS).astype(np.int64)
    scale = np.clip(np.floor((log2_b - LOG2_B_MIN) * SCALE_STEPS + 0.5), 0, N_SCALES - 1).astype(np.int64)
    return base.astype(np.int64), frac, scale


def _runs(keys: np.ndarray):
    """(order, runs): the stable order that sorts ``keys`` and (key, start, stop) of each run of
    one key in it, keys ascending. Table keys are small: a radix sort of them as int16."""
    keys = np.asarray(keys, np.int64)
    small = keys.size and 0 <= keys.min() and keys.max() < 1 << 15
    order = np.argsort(keys.astype(np.int16) if small else keys, kind="stable")
    sorted_keys = keys[order]
    cuts = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
    starts = np.concatenate([[0], cuts]).astype(np.int64)
    ends = np.concatenate([cuts, [len(keys)]]).astype(np.int64)
    return order, [(int(sorted_keys[a]), int(a), int(b)) for a, b in zip(starts, ends) if b > a]


def _groups(keys: np.ndarray):
    """(key, positions) of each distinct key, keys ascending, positions in order."""
    order, runs = _runs(keys)
    return [(key, order[a:b]) for key, a, b in runs]


def cost_bits(values, base, frac, scale, radius: int) -> float:
    """Ideal code length (bits) of ``values`` under the tables (an estimate for choosing)."""
    total = 0.0
    keys = frac * N_SCALES + scale
    for key, pos in _groups(np.asarray(keys)):
        p = probabilities(key // N_SCALES, key % N_SCALES, radius)
        total -= float(np.log2(p[values[pos] - base[pos] + radius]).sum())
    return total


class Encoder:
    """Collects symbol groups in decoding order; :meth:`finish` writes one ANS stream."""

    def __init__(self):
        self.groups: list[tuple[object, np.ndarray]] = []

    def add(self, values, base, frac, scale, radius: int) -> None:
        """Queue integers ``values`` with per-symbol bases and tables (all equal-length arrays)."""
        values, base = np.asarray(values, np.int64), np.asarray(base, np.int64)
        sym = values - base + radius
        if sym.size and (sym.min() < 0 or sym.max() > 2 * radius):
            raise ValueError("a symbol lies outside its table")
        keys = np.asarray(frac, np.int64) * N_SCALES + np.asarray(scale, np.int64)
        for key, pos in _groups(keys):
            self.groups.append((model(key // N_SCALES, key % N_SCALES, radius), sym[pos].astype(np.int32)))

    def finish(self) -> np.ndarray:
        import constriction
        coder = constriction.stream.stack.AnsCoder()
        for m, sym in reversed(self.groups):
            coder.encode_reverse(sym, m)
        return coder.get_compressed().astype("<u4")


class Decoder:
    """Reads groups written by :class:`Encoder`, in the same order."""

    def __init__(self, words: np.ndarray):
        import constriction
        self.coder = constriction.stream.stack.AnsCoder(np.ascontiguousarray(words, np.uint32))

    def read(self, base, frac, scale, radius: int) -> np.ndarray:
        """The integers of one :meth:`Encoder.add` call with the same bases and tables."""
        base = np.asarray(base, np.int64)
        keys = np.asarray(frac, np.int64) * N_SCALES + np.asarray(scale, np.int64)
        order, runs = _runs(keys.reshape(-1))
        sym = np.empty(order.shape, np.int64)          # symbols in key order, one call per table
        for key, a, b in runs:
            try:
                sym[a:b] = self.coder.decode(model(key // N_SCALES, key % N_SCALES, radius), b - a)
            except Exception as e:      # constriction reports an exhausted or invalid stream
                raise PayloadError(f"latent-grid entropy stream is corrupt: {e}") from e
        out = np.empty(base.shape, np.int64)
        out.reshape(-1)[order] = sym
        out -= radius
        out += base
        return out

    def done(self) -> None:
        if not self.coder.is_empty():
            raise PayloadError("latent-grid entropy stream has data left over after decoding")
