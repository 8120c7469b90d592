"""Compress a real confocal volume with SIRENCodec into a Zarr v3 array; print ratio, PSNR, time.

    python examples/demo.py                 # nuclei (60x256x256 uint16), 64x, 300 steps per chunk
    python examples/demo.py --ratio 256 --steps 1000 --volume ct

Uses ``inr_codecs.compress``: chunks are fitted 8 at a time as one batched model, with a
progress bar; the array is then read back with plain zarr (numpy decoding, no torch).
"""
import argparse
import os
import tempfile
import time

import numpy as np
import zarr

from inr_codecs import SIRENCodec, compress
from inr_codecs.datasets import load
from inr_codecs.metrics import psnr

ap = argparse.ArgumentParser()
ap.add_argument("--volume", default="nuclei", choices=["nuclei", "ct"])
ap.add_argument("--ratio", type=float, default=64)
ap.add_argument("--steps", type=int, default=300)
ap.add_argument("--chunks", type=int, nargs=3, default=[64, 64, 64])
a = ap.parse_args()

vol = load(a.volume)
print(f"{a.volume}: {vol.shape} {vol.dtype}, {vol.nbytes / 1e6:.1f} MB, chunks {tuple(a.chunks)}")
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, f"{a.volume}.zarr")
    r = compress(vol, path, SIRENCodec(ratio=a.ratio, steps=a.steps), chunks=a.chunks, zarr_format=3,
                 verify=False)
    t = time.perf_counter()
    out = zarr.open_array(path, mode="r")[:]
    t_dec = time.perf_counter() - t
print(f"ratio    {r.ratio:.1f}x  (asked {a.ratio:g}x per chunk; {r.stored_bytes} bytes stored)")
print(f"PSNR     {psnr(vol, out):.2f} dB  (peak = max - min = {int(vol.max()) - int(vol.min())})")
print(f"encode   {r.seconds:.1f} s  ({vol.nbytes / 1e6 / r.seconds:.3f} MB/s)")
print(f"decode   {t_dec:.2f} s  ({vol.nbytes / 1e6 / t_dec:.1f} MB/s)")
print(f"max err  {np.abs(vol.astype(float) - out).max():.0f}")
