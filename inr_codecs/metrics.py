"""Quality measures, with the conventions the project reports in."""
from __future__ import annotations

import os
import time
from typing import NamedTuple

import numpy as np

_METADATA_FILES = {".zarray", ".zattrs", ".zgroup", ".zmetadata", "zarr.json"}


def psnr_from(mse: float, peak: float) -> float:
    """PSNR in dB of a mean squared error at a peak (inf for an exact result)."""
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(peak * peak / mse)) if peak > 0 else float("-inf")


def psnr(original: np.ndarray, decoded: np.ndarray) -> float:
    """PSNR in dB with peak = max - min of the original (not the dtype's maximum)."""
    x = np.asarray(original, np.float64)
    mse = float(np.mean((x - np.asarray(decoded, np.float64)) ** 2))
    return psnr_from(mse, float(x.max() - x.min()))


def stored_chunk_bytes(path) -> tuple[int, list[str]]:
    """Bytes and relative paths of every chunk (or shard) file of a local Zarr array.

    The achieved ratio of an array is its raw bytes over this total (metadata excluded).
    """
    total, files = 0, []
    for root, _, names in os.walk(path):
        for n in names:
            if n not in _METADATA_FILES:
                f = os.path.join(root, n)
                total += os.path.getsize(f)
                files.append(os.path.relpath(f, path))
    return total, sorted(files)


class RoundTrip(NamedTuple):
    decoded: np.ndarray
    encode_s: float
    decode_s: float
    stored_bytes: int


def round_trip(vol: np.ndarray, path, chunks, serializer) -> RoundTrip:
    """Write ``vol`` to a new local Zarr v3 array with ``serializer``, read it back, and time both."""
    import zarr
    z = zarr.create_array(path, shape=vol.shape, chunks=tuple(chunks), dtype=vol.dtype,
                          serializer=serializer, compressors=None)
    t = time.perf_counter()
    z[:] = vol
    encode_s = time.perf_counter() - t
    t = time.perf_counter()
    out = zarr.open_array(path, mode="r")[:]
    decode_s = time.perf_counter() - t
    return RoundTrip(out, encode_s, decode_s, stored_chunk_bytes(path)[0])
