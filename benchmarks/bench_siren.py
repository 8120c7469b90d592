"""Rate and quality of SIRENCodec on real volumes, written as JSON.

    python benchmarks/bench_siren.py --steps 400 --out benchmarks/results/siren_cpu.json

For each volume and ratio, the whole volume is written to a local (temporary) Zarr v3 array with
``SIRENSerializer`` (chunks --chunks) and read back. Reported: achieved ratio (raw bytes / stored
bytes, every payload byte counted), PSNR (peak = max - min), 3D SSIM (scikit-image, same data
range), max abs error, encode and decode MB/s of raw data, and the steps. ``--float16`` adds the
same fit stored as float16 weights, the baseline quantisation + entropy coding is measured against.
A ratio the codec refuses at the chosen bits is recorded as skipped and retried with 6 bits.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile


from inr_codecs import BudgetError, SIRENCodec
from inr_codecs.bench import results as schema
from inr_codecs.bench.rd import quality
from inr_codecs.datasets import load
from inr_codecs.metrics import round_trip
from inr_codecs.zarr3 import SIRENSerializer


def run_one(vol, chunks, ratio, serializer=SIRENSerializer, **cfg) -> dict:
    """Write ``vol`` with serializer(ratio, **cfg) to a local Zarr v3 array, read it back, measure."""
    with tempfile.TemporaryDirectory() as tmp:
        rt = round_trip(vol, os.path.join(tmp, "a.zarr"), chunks, serializer(ratio=ratio, **cfg))
    mb = vol.nbytes / 1e6
    return {"ratio_achieved": round(vol.nbytes / rt.stored_bytes, 2), "stored_bytes": rt.stored_bytes,
            **quality(vol, rt.decoded),
            "encode_s": round(rt.encode_s, 2), "decode_s": round(rt.decode_s, 3),
            "encode_MBps": round(mb / rt.encode_s, 4), "decode_MBps": round(mb / rt.decode_s, 2)}


def record(results: dict, row: dict, out: str) -> None:
    """Add a result row, print it, and rewrite the JSON file (so an interrupted run keeps its rows)."""
    results["runs"].append(row)
    print(json.dumps(row), flush=True)
    schema.write(results, out)


def measure(name, vol, chunks, ratio, cfg) -> dict:
    """One result row: the codec's configuration and either its measurements or why it was refused."""
    codec = SIRENCodec(ratio, **cfg)
    row = {"volume": name, "shape": list(vol.shape), "dtype": str(vol.dtype), "ratio_requested": ratio,
           "encoding": codec.encoding, "bits": codec.bits if codec.encoding == "quantised" else None,
           "steps": codec.steps}
    try:
        row.update(run_one(vol, chunks, ratio, **cfg))
    except BudgetError as e:
        row["skipped"] = str(e)
    return row


def parser(doc: str) -> argparse.ArgumentParser:
    """The arguments the volume benchmarks share (--volumes, --ratios)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--volumes", nargs="+", default=["nuclei", "ct"])
    ap.add_argument("--ratios", nargs="+", type=float, default=[64, 256, 1024])
    return ap


def main(argv=None):
    ap = parser(__doc__)
    ap.add_argument("--chunks", nargs=3, type=int, default=[64, 64, 64])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--bits", type=int, help="fixed quantisation bit depth (default: auto)")
    ap.add_argument("--float16", action="store_true", help="also run float16 weight storage")
    ap.add_argument("--out", default="benchmarks/results/siren.json")
    a = ap.parse_args(argv)
    results = schema.new("siren", {"volumes": a.volumes, "ratios": a.ratios, "chunks": a.chunks, "steps": a.steps,
                                   "bits": a.bits, "float16": a.float16}, schema.command_line())
    for name in a.volumes:
        vol = load(name)
        for ratio in a.ratios:
            variants = [{"bits": a.bits} if a.bits else {}] + ([{"encoding": "float16"}] if a.float16 else [])
            for extra in variants:
                rows = [measure(name, vol, tuple(a.chunks), ratio, {"steps": a.steps, **extra})]
                if "skipped" in rows[0] and rows[0]["encoding"] == "quantised" and rows[0]["bits"] != 6:
                    rows.append(measure(name, vol, tuple(a.chunks), ratio, {"steps": a.steps, **extra, "bits": 6}))
                for r in rows:
                    record(results, r, a.out)


if __name__ == "__main__":
    main()
