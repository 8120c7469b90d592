"""Weight storage: per-tensor uniform quantisation and entropy coding (numpy only).

A network's tensors are stored in one of two encodings (the ``encoding`` byte of a body):

* ``QUANTISED`` (0): each tensor t gets a step ``s_t = max|w_t| / Q`` with ``Q = 2**(bits-1) - 1``;
  its integers ``q = rint(w / s_t)`` in ``[-Q, Q]`` are entropy coded, all tensors in one
  constriction ``AnsCoder`` stream, each symbol modelled as ``QuantizedGaussian(-Q, Q)`` with mean 0
  and the tensor's standard deviation ``sigma_t`` (in steps). Side information: ``s_t`` and
  ``sigma_t`` as float32 per tensor. Dequantised weights are ``float32(q) * float32(s_t)``.
* ``FLOAT16`` (1): raw little-endian float16 of every tensor, the baseline the benchmark compares to.
"""
from __future__ import annotations

import math
import struct

import numpy as np

from .payload import PayloadError, Reader

QUANTISED, FLOAT16 = 0, 1
ENCODINGS = {"quantised": QUANTISED, "float16": FLOAT16}
MIN_SIGMA = 0.25   # smallest modelled std (in steps); keeps the model well defined for near-constant tensors


def _coder():
    import constriction  # numpy-only dependency, imported where used
    return constriction


def levels(bits: int) -> int:
    """Largest quantised magnitude Q for a bit depth."""
    if not 2 <= bits <= 16:
        raise ValueError(f"bits must be in 2..16, not {bits}")
    return 2 ** (bits - 1) - 1


def quantise_xp(xp, w, bits: int, batched: bool = False):
    """Symmetric uniform quantisation, written once for numpy (encode) and torch (QAT).

    Returns (q, step): ``step = max|w| / Q`` and ``q = clip(round(w / step), -Q, Q)`` as floats
    (round half to even in both libraries); an all-zero tensor gets step 0 and q = 0.
    ``batched``: axis 0 indexes independent tensors (one step each, shaped to broadcast).
    """
    q_max = levels(bits)
    if batched:
        step = xp.amax(xp.abs(w).reshape(w.shape[0], -1), 1).reshape((-1,) + (1,) * (w.ndim - 1)) / q_max
    else:
        step = xp.abs(w).max() / q_max
    return xp.clip(xp.round(w / (step + (step == 0))), -q_max, q_max), step


def quantise(w: np.ndarray, bits: int) -> tuple[np.ndarray, np.float32]:
    """Quantise one float32 tensor for storage: (int32 integers, float32 step)."""
    w = np.asarray(w, np.float32)
    if not np.all(np.isfinite(w)):
        raise FloatingPointError("fitting diverged (non-finite weights); lower lr or change w0")
    if w.size == 0:
        return np.zeros(w.shape, np.int32), np.float32(0.0)
    q, step = quantise_xp(np, w, bits)
    return q.astype(np.int32), np.float32(step)


def dequantise(q: np.ndarray, step) -> np.ndarray:
    return q.astype(np.float32) * np.float32(step)


def fake_quantise(tensors, bits: int):
    """Quantise then dequantise each tensor (what the decoder will see)."""
    return [dequantise(*quantise(t, bits)) for t in tensors]


def _stds(sizes, sigmas) -> np.ndarray:
    """Per-symbol standard deviations of the entropy model: each tensor's sigma, repeated."""
    return np.concatenate([np.full(n, g, np.float32) for n, g in zip(sizes, sigmas)])


def encode_tensors(tensors: list[np.ndarray], encoding: int, bits: int) -> bytes:
    """Serialise float tensors (shapes known to the reader) in the given encoding."""
    if encoding == FLOAT16:
        return b"".join(np.asarray(t, "<f2").tobytes() for t in tensors)
    if encoding != QUANTISED:
        raise ValueError(f"unknown tensor encoding {encoding}")
    c = _coder()
    qs, steps = zip(*(quantise(t, bits) for t in tensors))
    sigmas = [np.float32(max(MIN_SIGMA, float(np.sqrt(np.mean(q.astype(np.float64) ** 2)))))
              for q in qs]
    side = b"".join(struct.pack("<ff", s, g) for s, g in zip(steps, sigmas))
    q_max = levels(bits)
    model = c.stream.model.QuantizedGaussian(-q_max, q_max)
    ans = c.stream.stack.AnsCoder()
    symbols = np.concatenate([q.ravel() for q in qs])
    ans.encode_reverse(symbols, model, np.zeros(symbols.size, np.float32), _stds([q.size for q in qs], sigmas))
    words = ans.get_compressed().astype("<u4")
    if stream_bits_needed([q.size for q in qs], sigmas, q_max) > 32.0 * (words.size + 2):
        raise ValueError("degenerate network: its weights end in more than "
                         f"{FREE_SYMBOLS} values at -{q_max} (format.md 6); a reader would refuse it")
    return side + struct.pack("<I", words.size) + words.tobytes()


def min_symbol_bits(sigmas, q_max: int) -> np.ndarray:
    """A lower bound on the bits any one symbol costs in the stream, per model standard deviation
    (in steps): the likeliest value of ``QuantizedGaussian(-Q, Q)`` (mean 0, deviation sigma) is
    0, with probability ``P(|x| < 1/2)``, or an end of the range, which takes the tail beyond it:
    ``P(x > Q - 1/2)``; add 2**-20 for constriction's 24-bit rounding and 0.01 bits per symbol
    for the ANS coder's own (under 0.006). 0.057 bits at sigma = MIN_SIGMA, about 6 at sigma = 20.
    (Symbols -Q pushed first into an empty coder cost nothing: see :func:`stream_bits_needed`.)"""
    from math import erf, erfc, sqrt
    p = [min(1.0, max(erf(0.5 / (sqrt(2.0) * float(g))), 0.5 * erfc((q_max - 0.5) / (sqrt(2.0) * float(g))))
             + 2.0 ** -20) for g in sigmas]
    return np.maximum(0.0, -np.log2(np.array(p, np.float64)) - 0.01)


#: Symbols at the end of a stream (in storage order) that may cost no bits: constriction's ANS
#: pushes -Q into an empty coder for free, so a stream may end with a run of -Q symbols that
#: no word pays for. A valid stream has at most this many such symbols beyond what its words pay
#: for (a writer checks: :func:`encode_tensors`).
FREE_SYMBOLS = 64


def stream_bits_needed(sizes, sigmas, q_max: int) -> float:
    """Bits a stream must have to hold tensors of ``sizes`` symbols modelled with ``sigmas``:
    :func:`min_symbol_bits` of every symbol but the last FREE_SYMBOLS (storage order)."""
    counts = list(sizes)
    free = FREE_SYMBOLS
    for i in reversed(range(len(counts))):
        take = min(free, counts[i])
        counts[i] -= take
        free -= take
    return float(np.dot(counts, min_symbol_bits(sigmas, q_max))) if counts else 0.0


def decode_tensors(r: Reader, shapes: list[tuple[int, ...]], encoding: int, bits: int) -> list[np.ndarray]:
    """Read tensors of the given shapes written by :func:`encode_tensors`: float32 arrays
    (``float32(q) * float32(step)``, or the float16 values). Every check of
    :func:`decode_exact` applies."""
    if encoding == FLOAT16:
        return [w.astype(np.float32) for w in _float16_tensors(r, shapes)]
    return [dequantise(q, step) for q, step in decode_exact(r, shapes, encoding, bits)]


def _float16_tensors(r: Reader, shapes) -> list[np.ndarray]:
    out = []
    for s in shapes:
        w = r.array("<f2", math.prod(s)).astype(np.float64).reshape(s)
        if not np.all(np.isfinite(w)):
            raise PayloadError("non-finite float16 weights")
        out.append(w)
    return out


def decode_exact(r: Reader, shapes: list[tuple[int, ...]], encoding: int, bits: int
                 ) -> list[tuple[np.ndarray, float]]:
    """Read tensors of the given shapes written by :func:`encode_tensors` as exact integers
    and a step, for the exact decoders (``nn.FixedSiren``): ``(q, step)`` with q float64
    integers, |q| <= 2**15, and the weight ``q * step``. Quantised tensors are their integers
    and stored step; a float16 tensor whose largest magnitude lies in [2**(e-1), 2**e) is
    ``q = rint(w / 2**(e-15))`` (its values on a grid of 2**-15 of its largest; all zero: step 1)."""
    if encoding == FLOAT16:
        out = []
        for w in _float16_tensors(r, shapes):
            top = float(np.abs(w).max()) if w.size else 0.0
            step = math.ldexp(1.0, math.frexp(top)[1] - 15) if top else 1.0
            out.append((np.rint(w / step), step))
        return out
    sizes = [math.prod(s) for s in shapes]
    if encoding != QUANTISED:
        raise PayloadError(f"unknown tensor encoding {encoding}")
    try:
        q_max = levels(bits)
    except ValueError as e:
        raise PayloadError(str(e)) from e
    side = r.array("<f4", 2 * len(shapes)).reshape(-1, 2)
    steps, sigmas = side[:, 0], side[:, 1]
    if not (np.all(np.isfinite(side)) and np.all(steps >= 0) and np.all(sigmas >= MIN_SIGMA)):
        raise PayloadError("bad quantisation side information")
    n_words = r.take("I")
    words = r.array("<u4", n_words).astype(np.uint32)
    total = sum(sizes)
    # A stream holds no more symbols than its bits pay for (the coder's 64-bit state included):
    # a body declaring more weights is refused before anything is decoded or allocated.
    need = stream_bits_needed(sizes, sigmas, q_max)
    if need > 32.0 * (n_words + 2):
        raise PayloadError(f"{total} weights declared, more than a stream of {n_words} words can hold "
                           f"(at least {need:.0f} bits)")
    c = _coder()
    model = c.stream.model.QuantizedGaussian(-q_max, q_max)
    try:
        coder = c.stream.stack.AnsCoder(words)
        q = coder.decode(model, np.zeros(total, np.float32), _stds(sizes, sigmas))
    except Exception as e:              # constriction: not a valid ANS stream
        raise PayloadError(f"entropy-coded weight stream is corrupt: {e}") from e
    if not coder.is_empty():
        raise PayloadError("entropy-coded weight stream has data left over after its weights")
    out, off = [], 0
    for n, s, step in zip(sizes, shapes, steps):
        out.append((q[off:off + n].astype(np.float64).reshape(s), float(step)))
        off += n
    return out


def bits_per_param_estimate(encoding: int, bits: int) -> float:
    """Stored bits per parameter, used to size a network before fitting.

    For QUANTISED the Gaussian model costs ~bits + 0.25 bits per symbol on uniformly spread
    weights (an untrained network) but 7.36-7.60 at 8 bits on trained SIRENs (nuclei and CT
    chunks, 32x-256x); ``bits - 0.3`` sizes for the latter with a little margin. The encoder
    checks the real size and drops a bit if it is over (``siren.SIRENCodec._pack``).
    """
    return 16.0 if encoding == FLOAT16 else bits - 0.3


def side_bytes(encoding: int, n_tensors: int) -> int:
    """Fixed bytes of side information (step, sigma per tensor; stream length word, ANS flush)."""
    return 0 if encoding == FLOAT16 else 8 * n_tensors + 4 + 8
