"""Payload format v1: the bytes one compressed chunk is stored as.

Everything needed to decode a chunk is inside its payload; ``docs/format.md`` is the
normative description. Layout (all integers and floats little-endian)::

    magic    4s   b"INRC"
    version  u8   1
    method   u8   0 = constant, 1 = SIREN, 2 = SCI (``inr_codecs.registry``)
    dtype    3s   numpy ``dtype.str`` in ASCII, e.g. b"<u2", b"|u1", b">f4"
    order    1s   b"C" or b"F": memory order the decoded chunk is returned in
    ndim     u8   number of axes (1..32)
    shape    ndim x u32
    body_len u32  length of the method body in bytes
    body     body_len bytes, method specific
    crc32    u32  CRC-32 (zlib / ISO-HDLC) of every byte before it

This module only frames payloads; methods own their bodies, and the registry
(``inr_codecs.registry``) maps method ids to them.
"""
from __future__ import annotations

import math
import os
import struct
import zlib
from dataclasses import dataclass

import numpy as np

MAGIC = b"INRC"
VERSION = 1

#: dtypes a payload may declare (kind + itemsize, either byte order).
SUPPORTED_DTYPES = ("u1", "i1", "u2", "i2", "u4", "i4", "f4", "f8")

_PRE = struct.Struct("<4sBB3scB")   # magic, version, method, dtype, order, ndim
_U32 = struct.Struct("<I")
MAX_NDIM = 32

#: The dtype field's only spellings: numpy's ``dtype.str`` of each supported dtype in either byte
#: order (``|`` for single bytes), 14 in all; the field is looked up, never parsed.
DTYPE_FIELDS = {np.dtype(s).newbyteorder(o).str.encode("ascii"): np.dtype(s).newbyteorder(o)
                for s in SUPPORTED_DTYPES for o in "<>"}


def env_count(name: str, default: int) -> int:
    """A positive integer setting from the environment variable ``name``, else ``default``;
    ValueError naming the variable for anything else."""
    value = os.environ.get(name, "")
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return int(value)


def _max_chunk_bytes() -> int:
    return env_count("INR_CODECS_MAX_CHUNK_BYTES", 2 ** 31)


#: Largest decoded chunk, in bytes, that a payload may declare (a reader refuses larger ones before
#: allocating anything, so a small forged payload cannot ask for gigabytes); writers refuse them too.
#: 2 GiB, or ``INR_CODECS_MAX_CHUNK_BYTES``; may be changed at run time.
MAX_CHUNK_BYTES = _max_chunk_bytes()


class PayloadError(ValueError):
    """A payload is corrupt, truncated, or not an inr-codecs payload."""


@dataclass(frozen=True)
class Header:
    method: int
    dtype: np.dtype
    order: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        """Bytes of the raw (decoded) chunk."""
        return math.prod(self.shape) * self.dtype.itemsize

    def size_error(self) -> str | None:
        """Why a reader would refuse this header's chunk size (an empty axis, more than
        MAX_CHUNK_BYTES), or None."""
        if 0 in self.shape:
            return f"an empty chunk shape {self.shape}"
        if self.nbytes > MAX_CHUNK_BYTES:
            return (f"a chunk of {self.nbytes} bytes, beyond the limit of {MAX_CHUNK_BYTES} "
                    "(inr_codecs.payload.MAX_CHUNK_BYTES, or INR_CODECS_MAX_CHUNK_BYTES)")
        return None


def check_dtype(dtype) -> np.dtype:
    """Return ``dtype`` as a numpy dtype or raise a TypeError naming the supported ones."""
    dt = np.dtype(dtype)
    if f"{dt.kind}{dt.itemsize}" not in SUPPORTED_DTYPES:
        raise TypeError(
            f"inr-codecs cannot store dtype {dt} ({dt.str}); supported: "
            + ", ".join(str(np.dtype(s)) for s in SUPPORTED_DTYPES))
    return dt


def frame_overhead(ndim: int) -> int:
    """Bytes a payload spends outside the method body for an ``ndim``-d chunk."""
    return _PRE.size + 4 * ndim + 4 + 4


def pack(header: Header, body: bytes) -> bytes:
    """Frame a method body into a complete, checksummed payload."""
    dt = check_dtype(header.dtype)
    if header.order not in ("C", "F"):
        raise ValueError(f"order must be 'C' or 'F', not {header.order!r}")
    if not 1 <= len(header.shape) <= MAX_NDIM:
        raise ValueError(f"chunks must have 1..{MAX_NDIM} axes, not {len(header.shape)}")
    if not all(0 <= int(n) < 2 ** 32 for n in header.shape):
        raise ValueError(f"every chunk axis must have 1..2**32 - 1 elements, not {tuple(header.shape)}")
    problem = Header(header.method, dt, header.order, tuple(int(n) for n in header.shape)).size_error()
    if problem:
        raise ValueError(f"a reader refuses {problem}: use smaller (non-empty) chunks")
    parts = [
        _PRE.pack(MAGIC, VERSION, header.method, dt.str.encode("ascii"),
                  header.order.encode("ascii"), len(header.shape)),
        struct.pack(f"<{len(header.shape)}I", *header.shape),
        _U32.pack(len(body)),
        bytes(body),
    ]
    data = b"".join(parts)
    return data + _U32.pack(zlib.crc32(data))


def unpack(payload) -> tuple[Header, memoryview]:
    """Check and parse a payload; return its header and method body.

    Raises PayloadError for anything that is not an intact v1 payload.
    """
    buf = memoryview(payload).cast("B")
    n = len(buf)
    if n < _PRE.size + 8:
        raise PayloadError(f"payload of {n} bytes is too short to be an inr-codecs payload")
    magic, version, method, dts, order, ndim = _PRE.unpack_from(buf, 0)
    if magic != MAGIC:
        raise PayloadError(f"not an inr-codecs payload: magic {bytes(magic)!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise PayloadError(
            f"payload format version {version} is not readable by this inr-codecs "
            f"(reads version {VERSION}); upgrade inr-codecs")
    (crc,) = _U32.unpack_from(buf, n - 4)
    if zlib.crc32(buf[:-4]) != crc:
        raise PayloadError("payload checksum mismatch: the chunk is corrupt or truncated")
    # Past the checksum, inconsistencies mean a writer bug, still reported, never decoded.
    # (An unknown method id is the registry's to report.)
    if order not in (b"C", b"F") or not 1 <= ndim <= MAX_NDIM:
        raise PayloadError(f"bad order {order!r} or ndim {ndim} in payload header")
    dtype = DTYPE_FIELDS.get(bytes(dts))
    if dtype is None:
        raise PayloadError(f"bad dtype {bytes(dts)!r} in payload header (one of "
                           f"{b' '.join(DTYPE_FIELDS).decode()})")
    off = _PRE.size
    if n < off + 4 * ndim + 8:
        raise PayloadError("payload truncated inside its header")
    shape = struct.unpack_from(f"<{ndim}I", buf, off)
    off += 4 * ndim
    (body_len,) = _U32.unpack_from(buf, off)
    off += 4
    if off + body_len + 4 != n:
        raise PayloadError(f"payload length {n} does not match its header (body of {body_len} bytes)")
    header = Header(method, dtype, order.decode(), tuple(shape))
    problem = header.size_error()
    if problem:
        raise PayloadError(f"payload declares {problem}")
    return header, buf[off:off + body_len]


class Reader:
    """Sequential little-endian reader over a method body, raising PayloadError on overrun."""

    def __init__(self, body: memoryview):
        self.buf, self.off = body, 0

    def take(self, fmt: str):
        s = struct.Struct("<" + fmt)
        if self.off + s.size > len(self.buf):
            raise PayloadError("method body truncated")
        out = s.unpack_from(self.buf, self.off)
        self.off += s.size
        return out if len(out) > 1 else out[0]

    def array(self, dtype, count: int) -> np.ndarray:
        dt = np.dtype(dtype)
        nbytes = dt.itemsize * count
        if self.off + nbytes > len(self.buf):
            raise PayloadError("method body truncated")
        out = np.frombuffer(self.buf, dt, count, self.off)
        self.off += nbytes
        return out

    def done(self):
        if self.off != len(self.buf):
            raise PayloadError(f"{len(self.buf) - self.off} unexpected bytes at the end of the method body")
