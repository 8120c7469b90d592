"""Write an OME-Zarr image pyramid whose levels are INR-compressed, with ome-zarr-py; read it back.

    python examples/ome_ngff.py                      # both formats, synthetic 32x64x64, temp dir
    python examples/ome_ngff.py out_dir --format 0.5 --nuclei

OME-NGFF 0.4 is Zarr v2 (the codec goes in as `compressor`); OME-NGFF 0.5 is Zarr v3 (the codec
goes in as `serializer`, with `compressors=None`). Needs `pip install ome-zarr` (and dask >= 2026.3:
older dask drops the v3 serializer silently).
"""
import os
import sys
import tempfile

import zarr
from ome_zarr.format import FormatV04, FormatV05
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader
from ome_zarr.writer import write_image

from _common import setup
from inr_codecs import SIRENCodec, SIRENSerializer
from inr_codecs.metrics import psnr


def write(vol, path, fmt, ratio, steps):
    """Two pyramid levels: full size, and y/x halved."""
    if fmt.version == "0.4":     # Zarr v2: a numcodecs codec as `compressor`, used for every level
        root = zarr.open_group(path, mode="w-", zarr_format=2)
        options = {"chunks": (32, 32, 32), "compressor": SIRENCodec(ratio=ratio, steps=steps)}
    else:                        # Zarr v3: the serializer, no zstd after it; one dict per level
        root = zarr.open_group(path, mode="w-", zarr_format=3)
        options = [{"chunks": (32, 32, 32), "serializer": SIRENSerializer(ratio=r, steps=steps),
                    "compressors": None} for r in (ratio, ratio / 2)]   # the small level at half the ratio
    write_image(vol, root, scale_factors=[2], axes="zyx", fmt=fmt, storage_options=options)


def read(path, fmt) -> list:
    """The pyramid's levels as lazy dask arrays, through ome-zarr-py's reader."""
    (image, *_) = Reader(parse_url(path, fmt=fmt))()
    return image.data


a, vol = setup(__doc__, "new directory for the images (default: a temporary one)",
               lambda ap: ap.add_argument("--format", choices=["0.4", "0.5", "both"], default="both",
                                          help="OME-NGFF version"))
with tempfile.TemporaryDirectory() as tmp:
    for fmt in [f for f in (FormatV04(), FormatV05()) if a.format in (f.version, "both")]:
        path = os.path.join(a.path or tmp, f"image-{fmt.version}.ome.zarr")
        write(vol, path, fmt, a.ratio, a.steps)
        levels = read(path, fmt)
        for name, arr in zarr.open_group(path, mode="r").arrays():   # check the codec was stored
            meta = arr.metadata
            codec = meta.compressor if fmt.version == "0.4" else getattr(meta.codecs[0], "codec", None)
            if getattr(codec, "codec_id", None) != "inr_codecs.siren":
                sys.exit(f"level {name} was written without the INR codec (dask older than 2026.3?)")
            print(f"OME-NGFF {fmt.version} level {name}: {arr.shape}, {codec.codec_id} at {codec.ratio:g}x")
        print(f"OME-NGFF {fmt.version}: {len(levels)} levels, "
              f"PSNR of level 0 {psnr(vol, levels[0].compute()):.2f} dB")
