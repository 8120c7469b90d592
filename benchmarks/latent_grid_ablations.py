"""Ablations of LatentGridCodec on a crop of real data, with SPERR and HEVC on the same chunks.

    python benchmarks/latent_grid_ablations.py --volume nuclei --out benchmarks/results/rd_latent_grid_ablations_nuclei.json

Each variant is a ``latent_grid:`` spec of the RD harness (``inr_codecs.bench.rd``) written as a
Zarr v3 array of the crop's chunks and read back: PSNR, achieved ratio, encode and decode MB/s
(the harness's row). The default variants:

* entropy model: ``context=full`` (parent + two-pass checkerboard, the default),
  ``context=parent``, ``context=checkerboard``, ``context=level`` (one distribution per level);
* fitting steps 500 / 1500 / 3000 (``context=full``);
* on CT (``--volume ct --ratios 64 256 --variants ...``, see ``CT_VARIANTS``): learned upsampling and the
  convolution stage, alone and together, at the RD benchmark's 800 steps.

The crop is two chunks of the RD benchmark's grid (30x128x128 on nuclei, 54x128x128 on CT),
at the centre of the volume, to keep the study to about an hour on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import os
import sys

from inr_codecs.bench import rd
from inr_codecs.datasets import load

VARIANTS = ("latent_grid:steps=1500", "latent_grid:steps=1500,context=parent",
            "latent_grid:steps=1500,context=checkerboard", "latent_grid:steps=1500,context=level",
            "latent_grid:steps=500", "latent_grid:steps=3000")
CT_VARIANTS = ("latent_grid:steps=800", "latent_grid:steps=800,upsampling=learned",
               "latent_grid:steps=800,conv_stage=true", "latent_grid:steps=800,upsampling=learned,conv_stage=true")
REFERENCES = ("sperr", "hevc")


def crop(vol, chunks):
    """Two chunks of ``chunks`` at the volume's centre, side by side along the last axis."""
    starts = [max(0, (s - c * (2 if a == vol.ndim - 1 else 1)) // 2) for a, (s, c) in enumerate(zip(vol.shape, chunks))]
    sl = tuple(slice(st, st + c * (2 if a == vol.ndim - 1 else 1)) for a, (st, c) in enumerate(zip(starts, chunks)))
    return vol[sl], sl


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--volume", default="nuclei")
    ap.add_argument("--chunks", help="chunk shape (default: the RD benchmark's for the volume)")
    ap.add_argument("--ratios", nargs="+", type=float, default=[256])
    ap.add_argument("--variants", nargs="+", help="latent_grid: specs (default: VARIANTS; CT_VARIANTS on ct)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    variants = a.variants or list(CT_VARIANTS if a.volume == "ct" else VARIANTS)
    vol = load(a.volume)
    chunks = rd.parse_ints(a.chunks) if a.chunks else rd.default_chunks(vol.shape)
    part, sl = crop(vol, chunks)
    name = f"{a.volume}[{','.join(f'{s.start}:{s.stop}' for s in sl)}]"
    ratios = [int(r) if float(r).is_integer() else r for r in a.ratios]
    previous = rd.read_json(a.out) if os.path.exists(a.out) else None
    res = rd.run(part, name, ratios, [*variants, *REFERENCES], chunks=chunks, out=a.out, update=previous,
                 command=rd.schema.command_line(), log=lambda s: print(s, file=sys.stderr, flush=True))
    print(rd.table_markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
