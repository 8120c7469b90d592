"""What the example scripts share: their command line and the volume they compress."""
import argparse
import os
import sys

import numpy as np


def volume(nuclei: bool) -> np.ndarray:
    """A 32x64x64 uint16 crop of the nuclei volume, or a smooth synthetic one (no download)."""
    if nuclei:
        from inr_codecs.datasets import load
        return load("nuclei")[14:46, 96:160, 96:160]
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in (32, 64, 64)), indexing="ij")
    blobs = sum(np.exp(-((z - c) ** 2 + (y + c) ** 2 + (x - c / 2) ** 2) / 0.1) for c in (-0.5, 0, 0.5))
    return (40000 * blobs / blobs.max() + 2000 * (x + 1)).astype(np.uint16)


def setup(doc: str, path_help: str = "new Zarr array to write (default: a temporary one)", extra=None):
    """Parse ``[path] [--ratio R] [--steps N] [--nuclei]`` (plus ``extra(parser)``); refuse an
    existing path. Returns the arguments and the volume."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", nargs="?", help=path_help)
    ap.add_argument("--ratio", type=float, default=32)
    ap.add_argument("--steps", type=int, default=100, help="steps per chunk (codec default 1000)")
    ap.add_argument("--nuclei", action="store_true", help="use a crop of the real nuclei volume")
    if extra:
        extra(ap)
    a = ap.parse_args()
    if a.path and os.path.exists(a.path):
        sys.exit(f"{a.path} exists; give a new path")
    return a, volume(a.nuclei)
