"""Command line: ``inr-codecs compress | info | export | bench``.

    inr-codecs compress nuclei.tif nuclei.zarr --ratio 64 --chunks 64,64,64
    inr-codecs info nuclei.zarr
    inr-codecs export nuclei.zarr nuclei-zstd.zarr      # standard codecs, via tensorstore
    inr-codecs bench nuclei --ratios 64 256 --plot rd.png  # against classical codecs
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import sys

import numpy as np

from . import registry
from .codec import BudgetError
from .fit import OPTION_NAMES
from .metrics import stored_chunk_bytes
from .payload import PayloadError
from .sources import parse_ints


def _progress(total, desc):
    try:
        from tqdm.auto import tqdm
    except ImportError:   # progress is a nicety; the work goes on without it
        return None
    return tqdm(total=total, desc=desc, unit="chunk", file=sys.stderr)


def parse_option(text: str) -> tuple[str, object]:
    """``"partition=none"`` -> ``("partition", "none")``; numbers and None/true/false parsed."""
    key, eq, value = text.partition("=")
    if not eq or not key:
        raise argparse.ArgumentTypeError(f"--option takes KEY=VALUE, not {text!r}")
    for parse in (int, float):
        try:
            return key, parse(value)
        except ValueError:
            pass
    return key, {"none": None, "true": True, "false": False}.get(value.lower(), value)


def _codec_options(a) -> dict:
    """Every codec option given on the command line; the codec refuses what it does not take."""
    opts = {k: getattr(a, k) for k in ("bits", *OPTION_NAMES) if getattr(a, k, None) is not None}
    for key, value in a.option or ():
        if key in opts:
            raise ValueError(f"{key} is given twice (--{key.replace('_', '-')} and --option)")
        opts[key] = value
    return opts


def cmd_compress(a) -> int:
    from .sources import open_source
    src = open_source(a.source)
    chunks = parse_ints(a.chunks) or tuple(min(s, 64) for s in src.shape)
    if len(chunks) != len(src.shape):
        raise ValueError(f"--chunks has {len(chunks)} values but the source has {len(src.shape)} axes {src.shape}")
    shards = parse_ints(a.shards)
    if shards and a.zarr_format == 2:
        raise ValueError("--shards needs --zarr-format 3")
    scheduler = a.scheduler
    if a.scheduler_address:
        from distributed import Client
        scheduler = Client(a.scheduler_address)
    run = dict(scheduler=scheduler, workers=a.workers, batch=a.batch, warm_start=a.warm_start,
               verify=not a.no_verify, progress=not a.no_progress)
    ratios = [float(r) for r in a.ratios.split(",")] if a.ratios else None
    if ratios and not a.ome:
        raise ValueError("--ratios (one per level) needs --ome")
    if a.ratio is None and not ratios and a.psnr is None:
        raise ValueError("--ratio is required (or --psnr, or --ome with --ratios)")
    options = _codec_options(a)
    if a.psnr is not None:
        with_psnr = [m.name for m in registry.codecs() if "psnr" in inspect.signature(m.codec).parameters]
        if a.codec not in with_psnr:
            raise ValueError(f"--psnr: {a.codec} has no quality mode (codecs with one: {', '.join(with_psnr)})")
        options["psnr"] = a.psnr
    codec = registry.make(a.codec, a.ratio if a.ratio is not None or not ratios else ratios[0], preset=a.preset,
                          **options)
    from .zarr_io import SettingsMismatch
    try:
        results = _compress(a, src, codec, ratios, chunks, shards, run)
    except SettingsMismatch as e:
        raise ValueError(_cli_mismatch(e)) from None
    for level, r in enumerate(results):
        summary = {"source": a.source, **r.summary(), "codec": a.codec, "ratio_requested": r.codec["ratio"],
                   **({"psnr_requested": r.codec["psnr"]} if r.codec.get("psnr") is not None else {}),
                   "ratio_achieved": round(r.ratio, 2), "MB_per_s": round(r.mb_per_s, 4)}
        if r.psnr is not None:
            summary["psnr_db"] = round(r.psnr, 3)
        if a.ome:
            summary["level"] = level
        print(json.dumps(summary) if a.json else _summary_line(r))
    return 0


def _compress(a, src, codec, ratios, chunks, shards, run) -> list:
    from .pipeline import compress
    if a.ome:
        from .ome import write_ome
        return write_ome(src, a.target, codec, ratios=ratios, levels=a.levels, chunks=chunks,
                         ngff="0.4" if a.zarr_format == 2 else "0.5", overwrite=a.overwrite, shards=shards, **run)
    return [compress(src, a.target, codec, chunks=chunks, shards=shards, zarr_format=a.zarr_format,
                     overwrite=a.overwrite, **run)]


#: The compress option of each setting a resumed array must match (a codec parameter without
#: an option of its own is set with --option KEY=VALUE).
_CLI_SETTINGS = {"chunks": "--chunks", "shards": "--shards", "zarr_format": "--zarr-format", "codec": "--codec",
                 "ratio": "--ratio", "psnr": "--psnr", "bits": "--bits", "steps": "--steps", "device": "--device",
                 "seed": "--seed", "target_psnr": "--target-psnr", "plateau_steps": "--plateau-steps",
                 "sampling": "--sampling", "levels": "--levels", "ratios": "--ratios"}


def _cli_value(name: str, value) -> str:
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(_cli_value(name, v) for v in value)
    if name == "codec":
        return str(value).removeprefix("inr_codecs.")
    return f"{value:g}" if isinstance(value, float) else str(value)


def _cli_mismatch(e) -> str:
    """A :class:`SettingsMismatch` in the command line's terms: ``--ratio 8 (asked 16)``."""
    parts = []
    for name, have, want in e.differences:
        if name in ("shape", "dtype"):
            parts.append(f"{name} {_cli_value(name, have)} (the source's is {_cli_value(name, want)})")
        elif name in ("axes", "downscale", "fill_value", "ngff"):     # write_ome's, no option of their own
            parts.append(f"{name} {_cli_value(name, have)} (asked {_cli_value(name, want)})")
        elif name in _CLI_SETTINGS:
            parts.append(f"{_CLI_SETTINGS[name]} {_cli_value(name, have)} (asked {_cli_value(name, want)})")
        else:
            parts.append(f"--option {name}={_cli_value(name, have)} (asked {_cli_value(name, want)})")
    return (f"{e.target} exists with different settings: {', '.join(parts)}; pass --overwrite to replace it, "
            "or the same settings to resume it")


def _summary_line(r) -> str:
    asked = f"{r.codec['ratio']:g}x"
    if r.codec.get("psnr") is not None:
        asked = f"PSNR {r.codec['psnr']:g} dB" + (f", at most 1/{asked}" if r.codec["ratio"] > 1 else "")
    out = f"{r.target}: ratio {r.ratio:.2f}x (asked {asked})"
    if r.psnr is not None:
        out += f", PSNR {r.psnr:.2f} dB"
    return out + (f", {r.seconds:.1f} s ({r.mb_per_s:.3g} MB/s); {r.chunks_encoded} chunks encoded, "
                  f"{r.chunks_skipped} already stored, {r.chunks_empty} empty")


def _codec_config(z) -> dict:
    meta = z.metadata.to_dict()
    if meta.get("zarr_format") == 2:
        return {"zarr_format": 2, "compressor": meta.get("compressor"), "filters": meta.get("filters")}
    return {"zarr_format": 3, "codecs": meta.get("codecs")}


def _say(cmd: str, text: str) -> None:
    print(f"inr-codecs {cmd}: {text}", file=sys.stderr)


def cmd_info(a) -> int:
    import zarr

    from .zarr_io import LISTED, check_array
    z = zarr.open_array(a.path, mode="r")
    stored, files = stored_chunk_bytes(a.path)
    out = {"path": a.path, "shape": list(z.shape), "dtype": str(z.dtype), "chunks": list(z.chunks),
           **_codec_config(z), "stored_files": len(files), "stored_bytes": stored}
    try:
        check = check_array(z, decode=a.check)
    except ValueError as e:         # not an inr-codecs array: what zarr says about it, no payloads
        out["ratio_achieved"] = round(int(np.prod(z.shape)) * z.dtype.itemsize / max(stored, 1), 2)
        out["note"] = f"not an inr-codecs array ({str(e).rsplit('; ', 1)[-1]})"
        print(json.dumps(out, indent=None if a.json else 1, default=str))
        return 0
    raw = check.raw_bytes or int(np.prod(z.shape)) * z.dtype.itemsize
    out.update(ratio_achieved=round(raw / max(stored, 1), 2), complete=check.complete,
               chunks_total=check.chunks_total, chunks_stored=check.chunks_stored,
               chunks_absent=check.chunks_absent, chunks_unreadable=len(check.unreadable),
               unreadable=[{"chunk": list(c), "key": k, "error": r} for c, k, r in check.unreadable],
               payload_methods=check.methods, payload_fields=check.fields)
    if check.complete is False:
        out["absent"] = [list(c) for c in check.absent]
    if check.wrap:
        out.update(wrapped_in=check.wrap, note=_wrapped_note(check))
    print(json.dumps(out, indent=None if a.json else 1, default=str))
    for chunk, key, reason in check.unreadable[:LISTED]:
        _say("info", f"chunk {chunk} (key {key!r}) is unreadable: {reason}")
    if check.unreadable:
        more = len(check.unreadable) - LISTED
        _say("info", f"{a.path}: {len(check.unreadable)} of {check.chunks_total} chunks are unreadable"
                     + (f" ({more} not listed)" if more > 0 else "")
                     + "; reading them raises PayloadError (rerun compress to rewrite them, or export "
                       "--skip-corrupt)")
    if check.complete is False:
        some = ", ".join(map(str, check.absent)) + (", ..." if check.chunks_absent > len(check.absent) else "")
        _say("info", f"{a.path}: incomplete: a compress run started and did not finish; "
                     f"{check.chunks_absent} of {check.chunks_total} chunks are missing or empty"
                     + (f" ({some})" if some else "")
                     + " and read as the fill value; rerun the same compress command to finish it")
    if check.wrap:
        _say("info", f"note: {out['note']}")
    return 0 if check.ok else 1


def _wrapped_note(check) -> str:
    return (f"the payloads are wrapped in {'+'.join(check.wrap)} after the inr-codecs serializer (zarr adds "
            f"zstd unless compressors=None): {check.over_ceiling} of {check.chunks_stored} stored chunks exceed "
            "the ceiling of chunk bytes / ratio, and every read decompresses twice; create the array with "
            "compressors=None (inr-codecs compress does)")


def cmd_export(a) -> int:
    from ._extras import require
    require("inr-codecs export", "io", ("tensorstore",))     # before anything is written
    import tensorstore as ts
    import zarr

    from .zarr_io import LISTED, ChunkError, read_chunk
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
    grid = [-(-s // c) for s, c in zip(shape, chunks)]
    fill = 0 if src.fill_value is None else src.fill_value
    skipped = []
    bar = _progress(int(np.prod(grid)), "export")
    for chunk in np.ndindex(*grid):
        try:
            data = read_chunk(src, chunk)
        except ChunkError as e:
            if not a.skip_corrupt:
                raise PayloadError(f"{e}; {a.target} is incomplete (pass --skip-corrupt to write the fill "
                                   "value for unreadable chunks)") from None
            skipped.append(e)
            data = np.full([min((i + 1) * c, s) - i * c for i, c, s in zip(chunk, chunks, shape)], fill, dtype)
        region = tuple(slice(i * c, i * c + n) for i, c, n in zip(chunk, chunks, data.shape))
        out[region].write(data).result()
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    print(f"{a.target}: {dtype} {tuple(shape)} written with zstd (zarr v{a.zarr_format}, "
          "readable by tensorstore and neuroglancer)")
    for e in skipped[:LISTED]:
        _say("export", f"written as the fill value {fill}: {e}")
    if skipped:
        more = len(skipped) - LISTED
        _say("export", f"{len(skipped)} unreadable chunk(s) written as the fill value {fill}"
                       + (f" ({more} not listed)" if more > 0 else ""))
        return 1
    return 0


def cmd_bench(a) -> int:
    try:
        from .bench import rd     # tooling: imported only when asked for
    except ImportError as e:      # without the bench extra: say what to install
        print(f"inr-codecs bench: error: {e}", file=sys.stderr)
        return 2
    return rd.main(a.args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="inr-codecs", description="Lossy neural codecs for Zarr arrays.")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compress", help="compress a volume into a Zarr array (rerun to resume)")
    c.add_argument("source", help=".npy, .tif, .nii(.gz) or Zarr array")
    c.add_argument("target", help="Zarr array path to create")
    c.add_argument("--codec", default="siren", choices=registry.names())
    c.add_argument("--preset", choices=("paper",), help="start from the method's paper settings (e.g. SCI's)")
    c.add_argument("--ratio", type=float, help="compression ratio (a ceiling per chunk); required unless --ratios "
                                               "or --psnr")
    c.add_argument("--psnr", type=float, help="quality mode (latent_grid): the smallest payloads whose chunk PSNR "
                                              "reaches this (dB); --ratio then stays a ceiling")
    c.add_argument("--chunks", help="chunk shape, e.g. 64,64,64 (default: 64 per axis)")
    c.add_argument("--shards", help="shard shape (Zarr v3), e.g. 128,128,128")
    c.add_argument("--zarr-format", type=int, choices=(2, 3), default=3)
    c.add_argument("--steps", type=int)
    c.add_argument("--bits", type=int)
    c.add_argument("--device")
    c.add_argument("--seed", type=int)
    c.add_argument("--target-psnr", type=float, help="stop a network's fit at this training PSNR (dB)")
    c.add_argument("--plateau-steps", type=int, help="stop a network's fit after this many steps without gain")
    c.add_argument("--sampling", choices=("uniform", "error"), help="voxels drawn per step")
    c.add_argument("--option", action="append", type=parse_option, metavar="KEY=VALUE",
                   help="any other codec parameter, e.g. --option partition=none (repeatable)")
    c.add_argument("--warm-start", choices=("meta",), help="start every chunk from a learned initialisation")
    c.add_argument("--scheduler", default="threads", choices=("threads", "processes", "sync"))
    c.add_argument("--scheduler-address", help="dask.distributed scheduler to run on (e.g. tcp://host:8786)")
    c.add_argument("--workers", type=int, help="parallel local tasks (default 1)")
    c.add_argument("--batch", type=int, help="chunks fitted together per task (default 8 on CPU, 64 on CUDA)")
    c.add_argument("--ome", action="store_true",
                   help="write an OME-Zarr multiscale image (NGFF 0.5 with --zarr-format 3, 0.4 with 2)")
    c.add_argument("--levels", type=int, default=1, help="--ome: resolution levels (each halves x, y, z)")
    c.add_argument("--ratios", help="--ome: ratio per level, e.g. 64,32,16 (default --ratio for all)")
    c.add_argument("--overwrite", action="store_true", help="replace the target (default: resume it)")
    c.add_argument("--no-verify", action="store_true", help="skip decoding to compute PSNR")
    c.add_argument("--no-progress", action="store_true")
    c.add_argument("--json", action="store_true", help="print the summary as JSON")
    c.set_defaults(func=cmd_compress)
    i = sub.add_parser("info", help="codec, achieved ratio, completeness and payload summary of an array "
                                    "(exit status 1: unreadable chunks, or an interrupted compress)")
    i.add_argument("path")
    i.add_argument("--json", action="store_true")
    i.add_argument("--check", action="store_true", help="also decode every chunk (slow)")
    i.set_defaults(func=cmd_info)
    e = sub.add_parser("export", help="decode into a standard-codec (zstd) Zarr array, with tensorstore")
    e.add_argument("source")
    e.add_argument("target")
    e.add_argument("--zarr-format", type=int, choices=(2, 3), default=3)
    e.add_argument("--overwrite", action="store_true")
    e.add_argument("--skip-corrupt", action="store_true",
                   help="write the fill value for chunks that cannot be read, list them, and exit with status 1")
    e.set_defaults(func=cmd_export)
    b = sub.add_parser("bench", help="rate-distortion benchmark against classical codecs (needs the bench extra)",
                       add_help=False)
    b.add_argument("args", nargs=argparse.REMAINDER, help="see inr-codecs bench --help")
    b.set_defaults(func=cmd_bench)
    return p


#: What to install for a module the command line may miss.
_INSTALL = {"torch": "'inr-codecs[fit]'", "dask": "'inr-codecs[fit]'", "tensorstore": "'inr-codecs[io]'",
            "tifffile": "'inr-codecs[io]'", "nibabel": "'inr-codecs[io]'", "distributed": "distributed",
            "ome_zarr": "ome-zarr"}


def _missing(e: ImportError) -> str:
    """An ImportError as one line naming what to install."""
    if "pip install" in str(e):
        return str(e).splitlines()[0]
    name = (e.name or "").split(".")[0]
    return f"{name or e} is not installed: pip install {_INSTALL.get(name, name)}"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:       # everything after it is the benchmark's own (--help included)
        a = argparse.Namespace(cmd="bench", func=cmd_bench, args=argv[1:])
    else:
        a = build_parser().parse_args(argv)
    try:
        return a.func(a)
    except (BudgetError, FileExistsError, FileNotFoundError, ValueError, TypeError, PayloadError) as e:
        print(f"inr-codecs {a.cmd}: error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:        # an extra not installed: one line saying what to install
        print(f"inr-codecs {a.cmd}: error: {_missing(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"inr-codecs {a.cmd}: interrupted; what was written is kept, rerun the same command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
