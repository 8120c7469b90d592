"""Write a Dask array into an INR-compressed Zarr v3 array, then read it lazily with Dask.

    python examples/dask_read.py                     # synthetic 32x64x64 uint16, into a temp dir
    python examples/dask_read.py vol.zarr --nuclei   # a crop of the real nuclei volume, kept
"""
import os
import tempfile

import dask.array as da
import numpy as np
import zarr

from _common import setup
from inr_codecs import SIRENSerializer
from inr_codecs.metrics import psnr


a, vol = setup(__doc__)
with tempfile.TemporaryDirectory() as tmp:
    path = a.path or os.path.join(tmp, "vol.zarr")

    # Writing: create the array with the codec, then store the Dask array into it chunk by chunk
    # (dask chunks should match the Zarr chunks: each task then encodes whole chunks).
    x = da.from_array(vol, chunks=(32, 32, 32))
    z = zarr.create_array(path, shape=x.shape, dtype=x.dtype, chunks=(32, 32, 32),
                          serializer=SIRENSerializer(ratio=a.ratio, steps=a.steps), compressors=None)
    da.to_zarr(x, z)

    # Reading: lazy; each task decodes one chunk with numpy only, so only touched chunks are decoded.
    y = da.from_zarr(path)
    print(y)
    part = y[10:20, 5:30, 60].compute()           # one chunk decoded
    print(f"slice {part.shape}: max abs error {np.abs(part.astype(float) - vol[10:20, 5:30, 60]).max():.0f}")
    print(f"mean {y.mean().compute():.1f} (original {vol.mean():.1f}), PSNR {psnr(vol, y.compute()):.2f} dB")
