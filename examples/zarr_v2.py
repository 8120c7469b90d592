"""Compress a volume into a Zarr v2 array with SIRENCodec as its numcodecs compressor.

    python examples/zarr_v2.py                       # synthetic 32x64x64 uint16, into a temp dir
    python examples/zarr_v2.py vol.zarr --nuclei     # a crop of the real nuclei volume, kept
"""
import os
import tempfile

import zarr

from _common import setup
from inr_codecs import SIRENCodec
from inr_codecs.metrics import psnr, stored_chunk_bytes


a, vol = setup(__doc__)
with tempfile.TemporaryDirectory() as tmp:
    path = a.path or os.path.join(tmp, "vol.zarr")

    # Zarr v2: the codec is the array's compressor (zarr_format=2 is required for `compressor=`).
    z = zarr.create(shape=vol.shape, chunks=(32, 32, 32), dtype=vol.dtype, store=path,
                    compressor=SIRENCodec(ratio=a.ratio, steps=a.steps), zarr_format=2)
    z[:] = vol                                    # fits one network per chunk

    back = zarr.open_array(path, mode="r")        # any process with inr-codecs installed can do this
    print("compressor", back.metadata.compressor)
    out = back[:]
    stored, files = stored_chunk_bytes(path)
    print(f"ratio {vol.nbytes / stored:.1f}x over {len(files)} chunks, PSNR {psnr(vol, out):.2f} dB")
