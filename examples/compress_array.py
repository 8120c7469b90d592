"""Compress a whole array with inr_codecs.compress: many chunks per fit, in parallel, resumable.

    python examples/compress_array.py                     # synthetic 32x64x64 uint16, into a temp dir
    python examples/compress_array.py vol.zarr --nuclei   # a crop of the real nuclei volume, kept
"""
import os
import tempfile

import zarr

from _common import setup
from inr_codecs import SIRENCodec, compress
from inr_codecs.metrics import psnr

a, vol = setup(__doc__)
with tempfile.TemporaryDirectory() as tmp:
    path = a.path or os.path.join(tmp, "vol.zarr")
    codec = SIRENCodec(ratio=a.ratio, steps=a.steps)

    # Eight 16x32x32 chunks; four train together in each task (batch=4), tasks run on threads.
    # Payloads go straight into the store: the result is an ordinary Zarr v2 array.
    r = compress(vol, path, codec, chunks=(16, 32, 32), batch=4, scheduler="threads")
    print(f"{r.chunks_encoded} chunks, ratio {r.ratio:.1f}x, PSNR {r.psnr:.2f} dB, {r.seconds:.1f} s")

    # The same call again finds every chunk stored intact and fits nothing: an interrupted run
    # (Ctrl-C, a killed job) is resumed this way and ends identical to an uninterrupted one.
    again = compress(vol, path, codec, chunks=(16, 32, 32), batch=4)
    print(f"rerun: {again.chunks_encoded} encoded, {again.chunks_skipped} already stored")

    back = zarr.open_array(path, mode="r")[:]          # read it like any Zarr array
    print(f"read back: PSNR {psnr(vol, back):.2f} dB")
