"""Command line: ``inr-codecs compress | info | export | bench``.

    inr-codecs compress nuclei.tif nuclei.zarr --ratio 64 --chunks 64,64,64
    inr-codecs info nuclei.zarr
    inr-codecs export nuclei.zarr nuclei-zstd.zarr      # standard codecs, via tensorstore
    inr-codecs bench nuclei --ratios 64 256 --plot rd.png  # against classical codecs
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections import Counter

import numpy as np

from . import payload
from .codec import BudgetError
from .metrics import psnr_from, stored_chunk_bytes
from .payload import PayloadError

CODECS = ("siren", "sci")   # names of inr_codecs.zarr3.SERIALIZERS, listed here so --help needs no zarr


def read_source(path: str):
    """Open a volume lazily where the format allows: .npy, .tif/.tiff, .nii/.nii.gz, or a Zarr array."""
    p = path.rstrip("/")
    low = p.lower()
    if low.endswith(".npy"):
        return np.load(p, mmap_mode="r")
    if low.endswith((".tif", ".tiff")):
        import tifffile
        return tifffile.imread(p)
    if low.endswith((".nii", ".nii.gz")):
        import nibabel
        return nibabel.load(p).dataobj
    if os.path.isdir(p):
        import zarr
        return zarr.open_array(p, mode="r")
    raise ValueError(f"cannot read {path!r}: expected .npy, .tif, .nii(.gz) or a Zarr array directory")


def chunk_regions(shape, chunks):
    """Slices of every chunk of a regular grid, in C order."""
    ranges = [range(0, s, c) for s, c in zip(shape, chunks)]
    for start in itertools.product(*ranges):
        yield tuple(slice(a, min(a + c, s)) for a, c, s in zip(start, chunks, shape))


def parse_ints(text):
    """``"64,64,64"`` -> ``(64, 64, 64)``; empty or None -> None."""
    return tuple(int(v) for v in text.split(",")) if text else None


def _progress(total, desc):
    try:
        from tqdm.auto import tqdm
    except ImportError:   # progress is a nicety; the work goes on without it
        return None
    return tqdm(total=total, desc=desc, unit="chunk", file=sys.stderr)


def make_codec(name: str, ratio: float, zarr_format: int, **options):
    """The named codec for a Zarr format: numcodecs codec (v2) or serializer (v3)."""
    from .zarr3 import SERIALIZERS
    if name not in SERIALIZERS:
        raise ValueError(f"unknown codec {name!r}; available: {', '.join(SERIALIZERS)}")
    opts = {k: v for k, v in options.items() if v is not None}
    cls = SERIALIZERS[name]
    return cls.codec_cls(ratio, **opts) if zarr_format == 2 else cls(ratio, **opts)


def cmd_compress(a) -> int:
    import zarr
    src = read_source(a.source)
    shape, dtype = tuple(src.shape), np.dtype(src.dtype)
    chunks = parse_ints(a.chunks) or tuple(min(s, 64) for s in shape)
    if len(chunks) != len(shape):
        raise ValueError(f"--chunks has {len(chunks)} values but the source has {len(shape)} axes {shape}")
    if os.path.exists(a.target) and not a.overwrite:
        raise FileExistsError(f"{a.target} exists; pass --overwrite to replace it")
    codec = make_codec(a.codec, a.ratio, a.zarr_format, steps=a.steps, bits=a.bits,
                       device=a.device, seed=a.seed)
    (codec if a.zarr_format == 2 else codec.codec).check_chunk(chunks, dtype)  # before touching the target
    if a.zarr_format == 2:
        if a.shards:
            raise ValueError("--shards needs --zarr-format 3")
        z = zarr.create_array(a.target, shape=shape, chunks=chunks, dtype=dtype, zarr_format=2,
                              compressors=codec, filters=None, overwrite=a.overwrite)
        write_grid = chunks
    else:
        shards = parse_ints(a.shards)
        z = zarr.create_array(a.target, shape=shape, chunks=chunks, shards=shards, dtype=dtype,
                              serializer=codec, compressors=None, overwrite=a.overwrite)
        write_grid = shards or chunks
    regions = list(chunk_regions(shape, write_grid))
    bar = _progress(len(regions), "compress")
    t0 = time.perf_counter()
    for region in regions:
        z[region] = np.asarray(src[region])
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t0
    stored, _ = stored_chunk_bytes(a.target)
    raw = int(np.prod(shape)) * dtype.itemsize
    summary = {"source": a.source, "target": a.target, "shape": list(shape), "dtype": str(dtype),
               "chunks": list(chunks), "codec": a.codec, "ratio_requested": a.ratio,
               "ratio_achieved": round(raw / max(stored, 1), 2), "seconds": round(seconds, 2),
               "MB_per_s": round(raw / 1e6 / seconds, 4)}
    if not a.no_verify:
        sq_err, lo, hi = 0.0, np.inf, -np.inf
        for region in chunk_regions(shape, write_grid):
            x = np.asarray(src[region], np.float64)
            sq_err += float(np.sum((x - z[region]) ** 2))
            lo, hi = min(lo, x.min()), max(hi, x.max())
        summary["psnr_db"] = round(psnr_from(sq_err / np.prod(shape), hi - lo), 3)
    print(json.dumps(summary) if a.json else
          f"{a.target}: ratio {summary['ratio_achieved']}x (asked {a.ratio:g}x)"
          + (f", PSNR {summary['psnr_db']} dB" if "psnr_db" in summary else "")
          + f", {summary['seconds']} s ({summary['MB_per_s']} MB/s)")
    return 0


def _codec_config(z) -> dict:
    meta = z.metadata.to_dict()
    if meta.get("zarr_format") == 2:
        return {"zarr_format": 2, "compressor": meta.get("compressor"), "filters": meta.get("filters")}
    return {"zarr_format": 3, "codecs": meta.get("codecs")}


def cmd_info(a) -> int:
    import zarr

    from . import sci, siren
    z = zarr.open_array(a.path, mode="r")
    stored, files = stored_chunk_bytes(a.path)
    raw_written = 0
    methods, widths, blocks, bits = Counter(), Counter(), Counter(), Counter()
    sharded = "sharding_indexed" in json.dumps(_codec_config(z))
    for f in ([] if sharded else files):
        with open(os.path.join(a.path, f), "rb") as fh:
            data = fh.read()
        try:
            header, body = payload.unpack(data)
        except PayloadError as e:
            methods["unreadable"] += 1
            print(f"warning: {f}: {e}", file=sys.stderr)
            continue
        raw_written += header.nbytes
        name = payload.METHOD_NAMES[header.method]
        methods[name] += 1
        if name == "siren":
            fields = siren.read_body_fixed(payload.Reader(body))
            widths[fields.width] += 1
            bits[fields.bits] += 1
        elif name == "sci":
            fields = sci.read_body_fixed(header.shape, payload.Reader(body))
            blocks[len(fields.blocks)] += 1
            bits[fields.bits] += 1
    raw_written = raw_written or int(np.prod(z.shape)) * z.dtype.itemsize
    out = {"path": a.path, "shape": list(z.shape), "dtype": str(z.dtype), "chunks": list(z.chunks),
           **_codec_config(z), "stored_files": len(files), "stored_bytes": stored,
           "ratio_achieved": round(raw_written / max(stored, 1), 2)}
    if not sharded:
        out.update(payload_methods=methods, siren_widths=widths, sci_blocks_per_chunk=blocks,
                   weight_bits=bits)
    print(json.dumps(out, indent=None if a.json else 1, default=str))
    return 0


def cmd_export(a) -> int:
    import tensorstore as ts
    import zarr
    src = zarr.open_array(a.source, mode="r")
    if os.path.exists(a.target) and not a.overwrite:
        raise FileExistsError(f"{a.target} exists; pass --overwrite to replace it")
    shape, chunks, dtype = list(src.shape), list(src.chunks), np.dtype(src.dtype)
    if a.zarr_format == 3:
        spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": a.target},
                "metadata": {"shape": shape, "data_type": dtype.name,
                             "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunks}},
                             "codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                                        {"name": "zstd", "configuration": {"level": 5}}]}}
    else:
        spec = {"driver": "zarr", "kvstore": {"driver": "file", "path": a.target},
                "metadata": {"shape": shape, "chunks": chunks, "dtype": dtype.str,
                             "compressor": {"id": "zstd", "level": 5}}}
    out = ts.open(spec, create=True, delete_existing=a.overwrite).result()
    regions = list(chunk_regions(shape, chunks))
    bar = _progress(len(regions), "export")
    for region in regions:
        out[region].write(src[region]).result()
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    print(f"{a.target}: {dtype} {tuple(shape)} written with zstd (zarr v{a.zarr_format}, readable by tensorstore and neuroglancer)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="inr-codecs", description="Lossy neural codecs for Zarr arrays.")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compress", help="compress a volume into a Zarr array")
    c.add_argument("source", help=".npy, .tif, .nii(.gz) or Zarr array")
    c.add_argument("target", help="Zarr array path to create")
    c.add_argument("--codec", default="siren", choices=CODECS)
    c.add_argument("--ratio", type=float, required=True, help="compression ratio (a ceiling per chunk)")
    c.add_argument("--chunks", help="chunk shape, e.g. 64,64,64 (default: 64 per axis)")
    c.add_argument("--shards", help="shard shape (Zarr v3), e.g. 128,128,128")
    c.add_argument("--zarr-format", type=int, choices=(2, 3), default=3)
    c.add_argument("--steps", type=int)
    c.add_argument("--bits", type=int)
    c.add_argument("--device")
    c.add_argument("--seed", type=int)
    c.add_argument("--overwrite", action="store_true")
    c.add_argument("--no-verify", action="store_true", help="skip reading back to compute PSNR")
    c.add_argument("--json", action="store_true", help="print the summary as JSON")
    c.set_defaults(func=cmd_compress)
    i = sub.add_parser("info", help="codec, achieved ratio and payload summary of an array")
    i.add_argument("path")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)
    e = sub.add_parser("export", help="decode into a standard-codec (zstd) Zarr array, with tensorstore")
    e.add_argument("source")
    e.add_argument("target")
    e.add_argument("--zarr-format", type=int, choices=(2, 3), default=3)
    e.add_argument("--overwrite", action="store_true")
    e.set_defaults(func=cmd_export)
    from .bench import rd
    b = sub.add_parser("bench", help="rate-distortion benchmark against classical codecs",
                       description=rd.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    rd.build_parser(b).set_defaults(func=lambda a: rd.main(args=a))
    return p


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    try:
        return a.func(a)
    except (BudgetError, FileExistsError, ValueError, TypeError, PayloadError) as e:
        print(f"inr-codecs {a.cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
