"""Compress a real confocal volume into a Zarr v3 array with SIRENCodec; print ratio, PSNR, time.

    python examples/demo.py                 # nuclei (60x256x256 uint16), 64x, 300 steps per chunk
    python examples/demo.py --ratio 256 --steps 1000 --volume ct
"""
import argparse
import tempfile

import numpy as np

from inr_codecs.datasets import load
from inr_codecs.metrics import psnr, round_trip
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
    out, t_enc, t_dec, stored = round_trip(vol, f"{tmp}/{a.volume}.zarr", a.chunks,
                                           SIRENSerializer(ratio=a.ratio, steps=a.steps))
print(f"ratio    {vol.nbytes / stored:.1f}x  (asked {a.ratio:g}x per chunk; {stored} bytes stored)")
print(f"PSNR     {psnr(vol, out):.2f} dB  (peak = max - min = {int(vol.max()) - int(vol.min())})")
print(f"encode   {t_enc:.1f} s  ({vol.nbytes / 1e6 / t_enc:.3f} MB/s)")
print(f"decode   {t_dec:.2f} s  ({vol.nbytes / 1e6 / t_dec:.1f} MB/s)")
print(f"max err  {np.abs(vol.astype(float) - out).max():.0f}")
