"""Payload fuzzing, shared by ``tests/test_fuzz.py`` (a short run in CI) and ``tests/fuzz/run.py``
(a long run a maintainer starts by hand).

A *seed* is a valid payload (every method, integer and float dtypes, 2-, 3- and 4-D chunks, C and
F order, quantised and float16 weights, constants). A *mutant* is a seed changed by one of the
mutations below, with its CRC-32 either left alone (accidental corruption) or recomputed (a
forged payload, or a writer's bug). :func:`outcome` decodes a mutant through the three ways a
reader can (``inr_codecs.decode``; the numcodecs codec's ``decode``; ``decode(buf, out=...)``
into a buffer of the seed's chunk) and classifies what happened; :func:`check` says whether that
is allowed: a ``PayloadError``, or an array of the declared shape and dtype with finite values.
"""
from __future__ import annotations

import struct
import time
import zlib

import numpy as np

PRE = struct.Struct("<4sBB3scB")        # magic, version, method, dtype, order, ndim


def fix_crc(data: bytes) -> bytes:
    """``data`` with its last 4 bytes replaced by the CRC-32 of the rest (a forged payload)."""
    return data[:-4] + struct.pack("<I", zlib.crc32(data[:-4]))


def header_end(data: bytes) -> int:
    """Offset of the method body (after magic .. body_len)."""
    return PRE.size + 4 * data[10] + 4


def make_seeds(small: bool = False) -> dict[str, bytes]:
    """Valid payloads, from short fits on small smooth chunks (needs torch); ``small``: three
    chunk kinds (uint16 3-D, float32 2-D, big-endian uint16 4-D) instead of six."""
    from conftest import smooth_volume

    from inr_codecs import LatentGridCodec, SCICodec, SIRENCodec
    from inr_codecs.codec import encode_constant

    seeds = {}
    cpu = {"device": "cpu"}
    kinds = [((16, 32, 32), "<u2"), ((64, 64), "<f4"), ((2, 8, 16, 16), ">u2")]
    if not small:
        kinds += [((16, 32, 32), "u1"), ((16, 32, 32), "<i2"), ((16, 32, 32), "<f8")]
    for i, (shape, dtype) in enumerate(kinds):
        x = smooth_volume(shape, dtype, i)
        fx = np.asfortranarray(x)
        seeds[f"siren {dtype} {shape}"] = SIRENCodec(8, steps=5, **cpu).encode(x)
        seeds[f"siren float16 {dtype} {shape} F"] = SIRENCodec(8, steps=5, encoding="float16", **cpu).encode(fx)
        seeds[f"sci paper {dtype} {shape}"] = SCICodec.paper(8, steps=5, **cpu).encode(x)
        seeds[f"latent_grid {dtype} {shape}"] = LatentGridCodec(8, steps=10, **cpu).encode(x)
        seeds[f"constant {dtype} {shape}"] = encode_constant(np.full(shape, x.flat[7], x.dtype))
    return seeds


def decode_seeds(seeds: dict[str, bytes]) -> dict[str, np.ndarray]:
    from inr_codecs import decode
    return {k: decode(v) for k, v in seeds.items()}


# --- mutations: each takes (rng, data, others) and returns the mutated bytes --------------------

INTERESTING_U32 = [0, 1, 2, 3, 7, 8, 9, 15, 16, 31, 32, 255, 256, 1023, 1024, 4096, 65535, 65536,
                   2 ** 20, 2 ** 24, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1]
INTERESTING_F32 = [0.0, -0.0, 1.0, -1.0, 0.25, 1e-45, 1e-38, 3e38, -3e38, float("inf"), float("-inf"),
                   float("nan"), 30.0, 1e6]
INTERESTING_F64 = [0.0, 1.0, -1.0, 1e300, -1e300, 1.7e308, -1.7e308, 5e-324, float("inf"), float("nan"),
                   65535.0, -32768.0, 3.5e38]


def _bit_flips(rng, data, others):
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        p = int(rng.integers(len(b)))
        b[p] ^= 1 << int(rng.integers(8))
    return bytes(b)


def _random_bytes(rng, data, others):
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        b[int(rng.integers(len(b)))] = int(rng.integers(256))
    return bytes(b)


def _body_field(rng, data, others):
    """An interesting u8/u16/u32/f32/f64 written at a random offset of the body."""
    start = header_end(data)
    if len(data) - 4 - start < 8:
        return _random_bytes(rng, data, others)
    off = int(rng.integers(start, len(data) - 4 - 8 + 1))
    kind = int(rng.integers(5))
    if kind == 0:
        field = struct.pack("<B", int(rng.choice([0, 1, 2, 8, 16, 17, 32, 127, 128, 255])))
    elif kind == 1:
        field = struct.pack("<H", int(rng.choice([0, 1, 2, 4, 8, 12, 64, 255, 256, 1024, 4096, 65535])))
    elif kind == 2:
        field = struct.pack("<I", int(rng.choice(INTERESTING_U32)))
    elif kind == 3:
        field = struct.pack("<f", float(rng.choice(INTERESTING_F32)))
    else:
        field = struct.pack("<d", float(rng.choice(INTERESTING_F64)))
    return data[:off] + field + data[off + len(field):]


def _header_field(rng, data, others):
    """A header field set to another value: shape entries, ndim, dtype, order, method, body_len."""
    from inr_codecs import payload
    b = bytearray(data)
    ndim = data[10]
    which = int(rng.integers(6))
    if which == 0:          # one axis
        a = int(rng.integers(ndim))
        old = struct.unpack_from("<I", b, PRE.size + 4 * a)[0]
        new = int(rng.choice([rng.choice(INTERESTING_U32), old + int(rng.integers(-3, 4)),
                              old * int(rng.choice([2, 3, 16, 1024])), old ^ (1 << int(rng.integers(32)))]))
        struct.pack_into("<I", b, PRE.size + 4 * a, new % 2 ** 32)
    elif which == 1:        # axes permuted
        shape = list(struct.unpack_from(f"<{ndim}I", b, PRE.size))
        rng.shuffle(shape)
        struct.pack_into(f"<{ndim}I", b, PRE.size, *shape)
    elif which == 2:
        b[6:9] = list(payload.DTYPE_FIELDS)[int(rng.integers(len(payload.DTYPE_FIELDS)))]
    elif which == 3:
        b[9] = int(rng.choice([ord("C"), ord("F"), 0, ord("A")]))
    elif which == 4:
        b[5] = int(rng.choice([0, 1, 2, 3, 4, 200, 255]))
    else:
        off = PRE.size + 4 * ndim
        struct.pack_into("<I", b, off, int(rng.choice(INTERESTING_U32)))
    return bytes(b)


def _resize_body(rng, data, others):
    """Body cut, extended or spliced with another seed's body; ``body_len`` kept consistent."""
    start = header_end(data)
    body = data[start:-4]
    kind = int(rng.integers(3))
    if kind == 0:
        body = body[:int(rng.integers(len(body) + 1))]
    elif kind == 1:
        body = body + bytes(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8))
    else:
        other = others[int(rng.integers(len(others)))]
        o = other[header_end(other):-4]
        cut = int(rng.integers(len(body) + 1))
        body = body[:cut] + o[int(rng.integers(len(o) + 1)):]
    head = bytearray(data[:start])
    struct.pack_into("<I", head, start - 4, len(body))
    return bytes(head) + body + data[-4:]


def _burst(rng, data, others):
    b = bytearray(data)
    n = int(rng.integers(1, 64))
    p = int(rng.integers(len(b)))
    b[p:p + n] = bytes([int(rng.choice([0, 255]))]) * len(b[p:p + n])
    return bytes(b)


MUTATIONS = {"bit_flips": _bit_flips, "random_bytes": _random_bytes, "body_field": _body_field,
             "header_field": _header_field, "resize_body": _resize_body, "burst": _burst}


def mutate(rng: np.random.Generator, data: bytes, others: list[bytes]) -> tuple[str, bool, bytes]:
    """One mutant of ``data``: (mutation name, CRC fixed up, bytes)."""
    name = list(MUTATIONS)[int(rng.integers(len(MUTATIONS)))]
    out = MUTATIONS[name](rng, data, others)
    crc = bool(rng.integers(2))
    if crc and len(out) >= 4:
        out = fix_crc(out)
    return name, crc, out


# --- decoding a mutant ---------------------------------------------------------------------------

def _codec_for(data: bytes):
    """The numcodecs codec a Zarr v2 array of the payload's method would hold."""
    from inr_codecs import LatentGridCodec, SCICodec, SIRENCodec
    method = data[5] if len(data) > 5 else 1
    return {2: SCICodec, 3: LatentGridCodec}.get(method, SIRENCodec)(16)


def outcome(data: bytes, like: np.ndarray) -> dict:
    """Decode ``data`` the three ways; per way, the ``"result"``: ``"PayloadError"``, another
    exception's type name, or ``"ok"`` (with ``"problem"`` naming a broken promise: wrong shape or
    dtype, non-finite values), and the ``"seconds"`` it took. ``like`` is the seed's decoded chunk
    (what ``out=`` is shaped as)."""
    from inr_codecs import PayloadError, decode

    def run(fn):
        t = time.perf_counter()
        try:
            arr = fn()
        except PayloadError:
            return {"result": "PayloadError", "seconds": time.perf_counter() - t}
        except Exception as e:          # noqa: BLE001  (what the fuzzer is looking for)
            return {"result": type(e).__name__, "message": str(e)[:200], "seconds": time.perf_counter() - t}
        seconds = time.perf_counter() - t
        return {"result": "ok", "problem": check(arr, data), "seconds": seconds}

    codec = _codec_for(data)
    out = np.empty(like.shape, like.dtype)
    ways = {"decode": lambda: decode(data), "codec": lambda: codec.decode(data),
            "codec_out": lambda: codec.decode(data, out=out)}
    return {name: run(fn) for name, fn in ways.items()}


def check(arr, data: bytes) -> str | None:
    """What is wrong with a successful decode (None: nothing): its shape and dtype must be the
    header's (the ``out=`` path's, ``out``'s), its values finite."""
    from inr_codecs import payload
    header, _ = payload.unpack(data)
    a = np.asarray(arr)
    if a.size != int(np.prod(header.shape)):
        return f"size {a.size} for declared shape {header.shape}"
    if (a.dtype.kind, a.dtype.itemsize) != (header.dtype.kind, header.dtype.itemsize):
        return f"dtype {a.dtype} for declared {header.dtype}"
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        return f"{int(a.size - np.count_nonzero(np.isfinite(a)))} non-finite values"
    return None
