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


def quantise(w: np.ndarray, bits: int) -> tuple[np.ndarray, np.float32]:
    """Uniform symmetric quantisation of one tensor: (integers, step)."""
    q_max = levels(bits)
    amax = float(np.max(np.abs(w))) if w.size else 0.0
    step = np.float32(amax / q_max) if amax > 0 else np.float32(0.0)
    if step == 0 or not np.isfinite(step):
        return np.zeros(w.shape, np.int32), np.float32(0.0)
    q = np.clip(np.rint(w / step), -q_max, q_max).astype(np.int32)
    return q, step


def dequantise(q: np.ndarray, step) -> np.ndarray:
    return q.astype(np.float32) * np.float32(step)


def fake_quantise(tensors, bits: int):
    """Quantise then dequantise each tensor (what the decoder will see)."""
    return [dequantise(*quantise(t, bits)) for t in tensors]


def _model_params(qs, sigmas):
    means = np.zeros(sum(q.size for q in qs), np.float32)
    stds = np.concatenate([np.full(q.size, s, np.float32) for q, s in zip(qs, sigmas)])
    return means, stds


def encode_tensors(tensors: list[np.ndarray], encoding: int, bits: int) -> bytes:
    """Serialise float tensors (shapes known to the reader) in the given encoding."""
    if encoding == FLOAT16:
        return b"".join(np.asarray(t, "<f2").tobytes() for t in tensors)
    if encoding != QUANTISED:
        raise ValueError(f"unknown tensor encoding {encoding}")
    c = _coder()
    qs, steps = zip(*(quantise(np.asarray(t, np.float32), bits) for t in tensors))
    sigmas = [np.float32(max(MIN_SIGMA, float(np.sqrt(np.mean(q.astype(np.float64) ** 2)))))
              for q in qs]
    side = b"".join(struct.pack("<ff", s, g) for s, g in zip(steps, sigmas))
    q_max = levels(bits)
    model = c.stream.model.QuantizedGaussian(-q_max, q_max)
    ans = c.stream.stack.AnsCoder()
    means, stds = _model_params(qs, sigmas)
    ans.encode_reverse(np.concatenate([q.ravel() for q in qs]).astype(np.int32), model, means, stds)
    words = ans.get_compressed().astype("<u4")
    return side + struct.pack("<I", words.size) + words.tobytes()


def decode_tensors(r: Reader, shapes: list[tuple[int, ...]], encoding: int, bits: int) -> list[np.ndarray]:
    """Read tensors of the given shapes written by :func:`encode_tensors`."""
    sizes = [int(np.prod(s)) for s in shapes]
    if encoding == FLOAT16:
        return [r.array("<f2", n).astype(np.float32).reshape(s) for n, s in zip(sizes, shapes)]
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
    c = _coder()
    model = c.stream.model.QuantizedGaussian(-q_max, q_max)
    ans = c.stream.stack.AnsCoder(words)
    stds = np.concatenate([np.full(n, g, np.float32) for n, g in zip(sizes, sigmas)])
    q = ans.decode(model, np.zeros(sum(sizes), np.float32), stds)
    out, off = [], 0
    for n, s, step in zip(sizes, shapes, steps):
        out.append(dequantise(q[off:off + n], step).reshape(s))
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
