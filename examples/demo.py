"""Compress a real confocal volume into a Zarr v3 array with SIRENCodec; print ratio, PSNR, time.

    python examples/demo.py                 # nuclei (60x256x256 uint16), 64x, 300 steps per chunk
    python examples/demo.py --ratio 256 --steps 1000 --volume ct
"""
import argparse
import tempfile
import time

import numpy as np
import zarr

from inr_codecs.datasets import load
from inr_codecs.metrics import psnr
from inr_codecs.zarr3 import SIRENSerializer

ap = argparse.ArgumentParser()
ap.add_argument("--volume", default="nuclei", choices=["nuclei", "ct"])
ap.add_argument("--ratio", type=float, default=64)
ap.add_argument("--steps", type=int, default=300)
ap.add_argument("--chunks", type=int, nargs=3, default=[64, 64, 64])
a = ap.parse_args()

vol = load(a.volume)
print(f"{a.volume}: {vol.shape} {vol.dtype}, {vol.nbytes / 1e6:.1f} MB, chunks {tuple(a.chunks)}")
with tempfile.TemporaryDirectory() as tmp:
    path = f"{tmp}/{a.volume}.zarr"
    z = zarr.create_array(path, shape=vol.shape, chunks=tuple(a.chunks), dtype=vol.dtype,
                          serializer=SIRENSerializer(ratio=a.ratio, steps=a.steps), compressors=None)
    t = time.perf_counter()
    z[:] = vol
    t_enc = time.perf_counter() - t
    stored = sum(p.stat().st_size for p in __import__("pathlib").Path(path).rglob("*")
                 if p.is_file() and p.name != "zarr.json")
    t = time.perf_counter()
    out = zarr.open_array(path, mode="r")[:]
    t_dec = time.perf_counter() - t
print(f"ratio    {vol.nbytes / stored:.1f}x  (asked {a.ratio:g}x per chunk; {stored} bytes stored)")
print(f"PSNR     {psnr(vol, out):.2f} dB  (peak = max - min = {int(vol.max()) - int(vol.min())})")
print(f"encode   {t_enc:.1f} s  ({vol.nbytes / 1e6 / t_enc:.3f} MB/s)")
print(f"decode   {t_dec:.2f} s  ({vol.nbytes / 1e6 / t_dec:.1f} MB/s)")
print(f"max err  {np.abs(vol.astype(float) - out).max():.0f}")
