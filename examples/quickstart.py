"""Quick start: compress a volume into Zarr v2 and Zarr v3 arrays, read them back, check quality.

    python examples/quickstart.py          # writes into a temporary directory, then removes it
"""
import tempfile

import numpy as np
import zarr

from inr_codecs import SIRENCodec, SIRENSerializer
from inr_codecs.metrics import psnr, stored_chunk_bytes

# Any numpy array works; here a smooth synthetic 32^3 uint16 volume.
z, y, x = np.meshgrid(*3 * [np.linspace(-1, 1, 32)], indexing="ij")
vol = (30000 * np.exp(-(x * x + y * y + z * z) / 0.3) + 5000 * (y + 1)).astype(np.uint16)

with tempfile.TemporaryDirectory() as tmp:
    # Zarr v2: the codec is the compressor.
    v2 = zarr.create(shape=vol.shape, chunks=(32, 32, 32), dtype=vol.dtype, store=f"{tmp}/v2.zarr",
                     compressor=SIRENCodec(ratio=32, steps=100), zarr_format=2)
    v2[:] = vol

    # Zarr v3: the codec is the serializer; compressors=None keeps zstd out.
    v3 = zarr.create_array(f"{tmp}/v3.zarr", shape=vol.shape, chunks=(32, 32, 32), dtype=vol.dtype,
                           serializer=SIRENSerializer(ratio=32, steps=100), compressors=None)
    v3[:] = vol

    for name in ("v2.zarr", "v3.zarr"):
        out = zarr.open_array(f"{tmp}/{name}", mode="r")[:]     # decoding needs numpy only
        ratio = vol.nbytes / stored_chunk_bytes(f"{tmp}/{name}")[0]
        print(f"{name}: ratio {ratio:.1f}x, PSNR {psnr(vol, out):.2f} dB")
