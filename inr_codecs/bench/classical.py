"""The classical lossy codecs inr-codecs is measured against, each behind one small interface.

A :class:`Classical` codec turns one array (a Zarr chunk) into bytes at a value of its rate knob
and back, given the shape and dtype a Zarr array's metadata would give it. Everything else the
decoder needs (an offset, a 12-bit scaling) is packed into those bytes and counted. The decoded
array has the original dtype (rounded and clipped), as a Zarr codec would return it.

:meth:`Classical.steer` finds, for a whole volume's chunks at once, the knob whose total bytes come closest
to a byte budget from below (the best quality the budget allows), or says the budget is out of
the codec's reach and what ratio its most compressing setting gets.

Every codec is optional: :meth:`Classical.missing` names what is not installed, and the benchmark
reports the codec as skipped.
"""
from __future__ import annotations

import functools
import math
import shutil
import struct
import subprocess

import numpy as np


class Unreachable(Exception):
    """The budget is below what the codec's most compressing setting produces."""

    def __init__(self, knob, nbytes, message):
        super().__init__(message)
        self.knob, self.nbytes = knob, nbytes


def to_dtype(values, dtype) -> np.ndarray:
    """Decoded floats as ``dtype``: rounded and clipped to its range for integers."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return np.asarray(values).astype(dtype)


# Side information, packed in front of a bitstream and counted in its bytes.
_RANGE = struct.Struct("<dd")      # lo, hi of a linear map onto an integer code range


def _to_codes(a, bits):
    """Map ``a`` linearly onto 0 .. 2**bits - 1 (uint16); return the codes and the packed range."""
    lo, hi = float(a.min()), float(a.max())
    scale = (2 ** bits - 1) / (hi - lo) if hi > lo else 0.0
    codes = np.rint((a.astype(np.float64) - lo) * scale).astype(np.uint16)
    return codes, _RANGE.pack(lo, hi)


def _from_codes(codes, side, bits):
    lo, hi = _RANGE.unpack(side)
    return codes.astype(np.float64) * ((hi - lo) / (2 ** bits - 1)) + lo


def _needs(module):
    try:
        __import__(module)
    except ImportError:
        return f"{module} is not installed"
    return None


class Classical:
    """One classical codec. Subclasses set the knob and implement encode / decode."""

    name = ""
    label = ""
    knob = ""
    lo = 0.0               # knob range searched
    hi = 1.0
    scale = "log"          # "log", "linear" or "int"
    larger_when_up = True  # do bytes grow with the knob?
    ndims = (2, 3, 4)      # array ranks it accepts
    iterations = 14

    def missing(self) -> str | None:
        """Why the codec cannot run here, or None."""
        return None

    def encode(self, a: np.ndarray, k) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes, shape, dtype) -> np.ndarray:
        raise NotImplementedError

    def first_guess(self, bits_per_value: float):
        """A knob value expected to land near ``bits_per_value``, or None to bisect from the ends."""
        return None

    def steer(self, pieces, budget: int):
        """Knob value whose total bytes over ``pieces`` (the chunks) are largest but <= ``budget``.

        Returns ``(knob, encoded chunks, encodes tried)``; raises :class:`Unreachable` when even
        the most compressing setting exceeds the budget. The knob is searched by bisection over
        ``lo .. hi`` (on ``scale``), starting from :meth:`first_guess` where there is one.
        """
        tried = {}

        def size(k):
            if k not in tried:
                tried[k] = [self.encode(p, k) for p in pieces]
            return sum(map(len, tried[k]))

        small, large = (self.lo, self.hi) if self.larger_when_up else (self.hi, self.lo)
        if size(small) > budget:
            raise Unreachable(small, size(small), f"{self.label} cannot reach this budget: its most "
                              f"compressing setting ({self.knob}={small}) takes {size(small)} bytes > {budget}")
        if size(large) <= budget:
            return large, tried[large], len(tried)
        a, b = small, large            # invariant: size(a) <= budget < size(b)

        def narrow(m):
            nonlocal a, b
            if size(m) <= budget:
                a = m
            else:
                b = m

        # Rates in bits per value: start at the budget's rate and correct by the overshoot; rates
        # are quantised (zfp: 1/64 bit per value in 3D), so bisection finishes the bracket.
        guess = self.first_guess(8.0 * budget / sum(p.size for p in pieces))
        for _ in range(4 if guess is not None else 0):
            if not min(a, b) < guess < max(a, b):
                break
            narrow(guess)
            if size(a) >= 0.995 * budget:
                return a, tried[a], len(tried)
            guess *= budget / size(guess) * (0.998 if size(guess) > budget else 1.0)
        for _ in range(self.iterations):
            if self.scale == "int":
                if abs(b - a) <= 1:
                    break
                m = (a + b) // 2
            elif self.scale == "log":
                m = math.sqrt(a * b)
            else:
                m = (a + b) / 2
            narrow(m)
            if size(a) >= 0.995 * budget:
                break
        return a, tried[a], len(tried)


def _imagecodecs(codec):
    try:
        import imagecodecs
    except ImportError:
        return "imagecodecs is not installed"
    if not getattr(imagecodecs, codec.upper()).available:
        return f"this imagecodecs build lacks {codec}"
    return None


class SPERR(Classical):
    name, label, knob = "sperr", "SPERR 3D", "bpp"
    lo, hi = 1e-3, 16.0
    ndims = (2, 3)

    def missing(self):
        return _imagecodecs("sperr")

    def encode(self, a, k):
        import imagecodecs
        return imagecodecs.sperr_encode(np.ascontiguousarray(a, np.float64), float(k), "bpp")

    def decode(self, data, shape, dtype):
        import imagecodecs
        return to_dtype(imagecodecs.sperr_decode(data).reshape(shape), dtype)

    def first_guess(self, bits_per_value):
        return bits_per_value


class SZ3(Classical):
    name, label, knob = "sz3", "SZ3", "abs_error_bound"
    lo, hi = 1e-3, 1e5
    larger_when_up = False
    ndims = (1, 2, 3, 4)

    def missing(self):
        return _imagecodecs("sz3")

    def encode(self, a, k):
        import imagecodecs
        return imagecodecs.sz3_encode(np.ascontiguousarray(a, np.float32), mode="abs", abs=float(k))

    def decode(self, data, shape, dtype):
        import imagecodecs
        return to_dtype(imagecodecs.sz3_decode(data, tuple(shape), np.float32), dtype)


class ZFP(Classical):
    """ZFP fixed rate (numcodecs.zfpy). Integers go in as int32 shifted to use the top bits:
    zfp's integer path assumes values span the full 32-bit range and loses small ones otherwise."""

    name, label, knob = "zfp", "ZFP fixed-rate", "rate"
    lo, hi = 1 / 64, 32.0
    ndims = (1, 2, 3, 4)
    _SHIFT = struct.Struct("<qB")   # offset, left shift

    def missing(self):
        return _needs("zfpy") or _needs("numcodecs.zfpy")

    def _codec(self, k):
        import zfpy
        from numcodecs.zfpy import ZFPY
        return ZFPY(mode=zfpy.mode_fixed_rate, rate=float(k))

    def encode(self, a, k):
        if a.dtype.kind in "iu":
            lo = int(a.min())
            span = int(a.max()) - lo
            if span >= 2 ** 31:
                raise ValueError(f"ZFP's int32 path cannot hold a range of {span}")
            shift = max(0, 30 - span.bit_length())
            x = (a.astype(np.int64) - lo).astype(np.int32) << shift
            return self._SHIFT.pack(lo, shift) + self._codec(k).encode(x)
        # a float block needs its 1 + 8 exponent bits: zfpy corrupts its heap below that rate
        rate = max(float(k), 9 / 4 ** a.ndim)
        return self._codec(rate).encode(np.ascontiguousarray(a, np.float32))

    def decode(self, data, shape, dtype):
        if np.dtype(dtype).kind in "iu":
            lo, shift = self._SHIFT.unpack_from(data)
            x = self._codec(1).decode(data[self._SHIFT.size:]).reshape(shape)
            return to_dtype((x.astype(np.int64) >> shift) + lo, dtype)
        return to_dtype(self._codec(1).decode(data).reshape(shape), dtype)

    def first_guess(self, bits_per_value):
        return bits_per_value


class _PerSlice(Classical):
    """An image codec applied to every slice along axis 0; one knob for all slices."""

    ndims = (3,)
    _LEN = struct.Struct("<I")

    def encode(self, a, k):
        prefix, planes = self._prepare(a)
        out = [prefix]
        for p in planes:
            b = self._encode_slice(p, k)
            out += [self._LEN.pack(len(b)), b]
        return b"".join(out)

    def decode(self, data, shape, dtype):
        n = self._side_bytes(dtype)
        prefix, pos, planes = data[:n], n, []
        for _ in range(shape[0]):
            (size,) = self._LEN.unpack_from(data, pos)
            pos += self._LEN.size
            planes.append(self._decode_slice(data[pos:pos + size]))
            pos += size
        return to_dtype(self._restore(np.stack(planes), prefix), dtype)

    @staticmethod
    def _side_bytes(dtype) -> int:
        """Image codecs take unsigned 8/16-bit samples: those go in as they are (0 bytes of side
        information); other integers of <= 16 bits are offset by their minimum (8 bytes); the
        rest are mapped onto 16-bit codes (their range, 16 bytes)."""
        dtype = np.dtype(dtype)
        if dtype in (np.uint8, np.uint16):
            return 0
        return 8 if dtype.kind in "iu" and dtype.itemsize <= 2 else _RANGE.size

    def _prepare(self, a):
        n = self._side_bytes(a.dtype)
        if n == 0:
            return b"", a
        if n == 8:
            lo = int(a.min())
            return struct.pack("<q", lo), (a.astype(np.int64) - lo).astype(np.uint16)
        codes, side = _to_codes(a, 16)
        return side, codes

    def _restore(self, planes, prefix):
        if len(prefix) == 0:
            return planes
        if len(prefix) == 8:
            return planes.astype(np.int64) + struct.unpack("<q", prefix)[0]
        return _from_codes(planes, prefix, 16)


class JPEGXL(_PerSlice):
    name, label, knob = "jpegxl", "JPEG-XL per slice", "distance"
    lo, hi = 0.05, 25.0
    larger_when_up = False

    def missing(self):
        return _imagecodecs("jpegxl")

    def _encode_slice(self, p, k):
        import imagecodecs
        return imagecodecs.jpegxl_encode(p, distance=float(k), lossless=False)

    def _decode_slice(self, b):
        import imagecodecs
        return imagecodecs.jpegxl_decode(b)


class JPEG2000(_PerSlice):
    """OpenJPEG; the knob is the target PSNR (dB) of each slice, OpenJPEG's quality layer."""

    name, label, knob = "jpeg2k", "JPEG 2000 per slice", "target_psnr_db"
    lo, hi = 15.0, 90.0
    scale = "linear"

    def missing(self):
        return _imagecodecs("jpeg2k")

    def _encode_slice(self, p, k):
        import imagecodecs
        return imagecodecs.jpeg2k_encode(p, level=float(k))

    def _decode_slice(self, b):
        import imagecodecs
        return imagecodecs.jpeg2k_decode(b)


class _Video12(Classical):
    """A 12-bit video codec over the slices along axis 0 (frames); the chunk is mapped linearly
    onto 0..4095 (its range, 16 bytes, travels with the bitstream)."""

    ndims = (3,)

    def encode(self, a, k):
        codes, side = _to_codes(a, 12)
        return side + self._encode_frames(codes, k)

    def decode(self, data, shape, dtype):
        frames = self._decode_frames(data[_RANGE.size:], shape)
        return to_dtype(_from_codes(frames, data[:_RANGE.size], 12), dtype)


@functools.cache
def ffmpeg_exe() -> str | None:
    """ffmpeg on PATH, else the binary the ``imageio-ffmpeg`` wheel ships (it has libx265)."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        try:
            import imageio_ffmpeg
            exe = imageio_ffmpeg.get_ffmpeg_exe()
        except (ImportError, RuntimeError):
            return None
    return exe


@functools.cache
def _ffmpeg_encoders(exe) -> str:
    return subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True).stdout


def _ffmpeg(args, data: bytes) -> bytes:
    r = subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", *args],
                       input=data, capture_output=True)
    if r.returncode:
        raise RuntimeError(f"ffmpeg {' '.join(args)} failed: {r.stderr.decode(errors='replace').strip()}")
    return r.stdout


class HEVC(_Video12):
    """x265 through ffmpeg, 4:0:0 12-bit, raw Annex-B stream without the encoder-info SEI.
    The CRF search stops at 46: past it x265's 12-bit output breaks down (PSNR falls to ~8 dB)."""

    name, label, knob = "hevc", "HEVC 12-bit (x265)", "crf"
    lo, hi = 0.0, 46.0
    scale = "linear"          # x265 takes fractional CRF
    larger_when_up = False
    preset = "medium"

    def missing(self):
        exe = ffmpeg_exe()
        if exe is None:
            return "no ffmpeg (install ffmpeg or imageio-ffmpeg)"
        return None if "libx265" in _ffmpeg_encoders(exe) else f"{exe} has no libx265"

    def _encode_frames(self, codes, crf):
        # Frames are padded (edge values) to multiples of 64: the x265 in imageio-ffmpeg's build
        # crashes on some smaller sizes (8, 40, 48 pixels); the decoder crops.
        z, y, x = codes.shape
        codes = np.pad(codes, [(0, 0), (0, -y % 64), (0, -x % 64)], mode="edge")
        z, y, x = codes.shape
        return _ffmpeg(["-f", "rawvideo", "-pix_fmt", "gray12le", "-s", f"{x}x{y}", "-r", "25", "-i", "-",
                        "-c:v", "libx265", "-preset", self.preset, "-crf", f"{crf:.3f}",
                        "-x265-params", "info=0:log-level=error", "-pix_fmt", "gray12le", "-f", "hevc", "-"],
                       codes.astype("<u2").tobytes())

    def _decode_frames(self, data, shape):
        out = _ffmpeg(["-f", "hevc", "-i", "-", "-f", "rawvideo", "-pix_fmt", "gray12le", "-"], data)
        z, y, x = shape
        return np.frombuffer(out, "<u2").reshape(z, y + -y % 64, x + -x % 64)[:, :y, :x]


class AV1(_Video12):
    """libavif (imagecodecs), 12-bit monochrome (yuv400) image sequence: AV1 inter prediction
    between slices. Grayscale input is always lossless in imagecodecs, hence the RGB copy."""

    name, label, knob = "av1", "AV1 sequence (libavif)", "quality"
    lo, hi = 0, 100
    scale = "int"
    speed = 6

    def missing(self):
        return _imagecodecs("avif")

    def _encode_frames(self, codes, q):
        import imagecodecs
        q = int(q)
        rgb = np.repeat(codes[..., None], 3, axis=-1)
        return imagecodecs.avif_encode(rgb, level=q, speed=self.speed, bitspersample=12, pixelformat="yuv400")

    def _decode_frames(self, data, shape):
        import imagecodecs
        out = imagecodecs.avif_decode(data)
        return (out[..., 0] if out.ndim == len(shape) + 1 else out).reshape(shape)


class Downsample(Classical):
    """Block means at an integer factor per axis, stored raw in the array's dtype; decoding
    interpolates linearly (trilinear in 3D) between block centres. The knob is the factor tuple."""

    name, label, knob = "downsample", "downsample + linear", "factors"
    ndims = (1, 2, 3, 4)
    _F = struct.Struct("<B")

    def missing(self):
        return _needs("scipy")

    @staticmethod
    def _stored_shape(shape, f):
        return tuple(-(-s // q) for s, q in zip(shape, f))

    def nbytes(self, shape, itemsize, f) -> int:
        return len(f) * self._F.size + math.prod(self._stored_shape(shape, f)) * itemsize

    @staticmethod
    def _max_factors(shape) -> tuple[int, ...]:
        """Largest factor tried per axis: the axis length, at most 64, and few enough that the
        search stays under about two million tuples."""
        cap = max(2, int(2_000_000 ** (1 / len(shape))))
        return tuple(min(s, 64, cap) for s in shape)

    def steer(self, pieces, budget: int):
        """The factors whose stored bytes are the most within ``budget`` (then the most even);
        no encode is needed to know the size."""
        import itertools
        itemsize = pieces[0].dtype.itemsize
        best = None
        for f in itertools.product(*[range(1, m + 1) for m in self._max_factors(pieces[0].shape)]):
            nb = sum(self.nbytes(p.shape, itemsize, f) for p in pieces)
            if nb <= budget:
                key = (nb, -(max(f) / min(f)))
                if best is None or key > best[0]:
                    best = (key, f)
        if best is None:
            f = self._max_factors(pieces[0].shape)
            nb = sum(self.nbytes(p.shape, itemsize, f) for p in pieces)
            raise Unreachable(f, nb, f"downsampling cannot reach this budget: factors {f} take {nb} bytes > {budget}")
        f = best[1]
        return f, [self.encode(p, f) for p in pieces], 1

    def encode(self, a, f):
        f = tuple(int(q) for q in f)
        small = a.astype(np.float64)
        for ax, q in enumerate(f):
            n = small.shape[ax]
            pad = [(0, 0)] * small.ndim
            pad[ax] = (0, -n % q)
            small = np.pad(small, pad, mode="edge")
            small = small.reshape(small.shape[:ax] + (-1, q) + small.shape[ax + 1:]).mean(axis=ax + 1)
        return b"".join(self._F.pack(q) for q in f) + to_dtype(small, a.dtype).tobytes()

    def decode(self, data, shape, dtype):
        from scipy import ndimage
        f = [self._F.unpack_from(data, i)[0] for i in range(len(shape))]
        small = np.frombuffer(data[len(shape):], dtype).reshape(self._stored_shape(shape, f))
        coords = np.meshgrid(*[(np.arange(s) - (q - 1) / 2) / q for s, q in zip(shape, f)], indexing="ij")
        out = ndimage.map_coordinates(small.astype(np.float64), coords, order=1, mode="nearest")
        return to_dtype(out, dtype)


CODECS = {c.name: c for c in (SPERR(), SZ3(), ZFP(), JPEGXL(), JPEG2000(), HEVC(), AV1(), Downsample())}
