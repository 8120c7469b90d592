"""Compress a volume into a sharded Zarr v3 array with SIRENSerializer; read a slice back.

    python examples/zarr_v3.py                       # synthetic 32x64x64 uint16, into a temp dir
    python examples/zarr_v3.py vol.zarr --nuclei     # a crop of the real nuclei volume, kept
"""
import json
import os
import tempfile

import numpy as np
import zarr

from _common import setup
from inr_codecs import SIRENSerializer
from inr_codecs.metrics import psnr, stored_chunk_bytes


a, vol = setup(__doc__)
with tempfile.TemporaryDirectory() as tmp:
    path = a.path or os.path.join(tmp, "vol.zarr")

    # Zarr v3: the codec is the array-to-bytes serializer, here 4 inner chunks in one shard.
    # compressors=None: otherwise zarr appends zstd, which cannot shrink network weights.
    z = zarr.create_array(path, shape=vol.shape, dtype=vol.dtype, shards=(32, 64, 64), chunks=(32, 32, 32),
                          serializer=SIRENSerializer(ratio=a.ratio, steps=a.steps), compressors=None)
    z[:] = vol

    back = zarr.open_array(path, mode="r")
    shard = back.metadata.to_dict()["codecs"][0]
    print("codecs:", shard["name"], "->", json.dumps(shard["configuration"]["codecs"][0])[:72], "...")
    part = back[10:20, 5:30, 60]                  # decodes only the inner chunk it touches
    err = np.abs(part.astype(float) - vol[10:20, 5:30, 60]).max()
    print(f"slice {part.shape}: max abs error {err:.0f} (values {vol.min()}..{vol.max()})")
    stored, files = stored_chunk_bytes(path)
    print(f"ratio {vol.nbytes / stored:.1f}x in {len(files)} shard file(s), PSNR {psnr(vol, back[:]):.2f} dB")
