"""Decode speed of LatentGridCodec against SIRENCodec, side by side, written as JSON.

    OPENBLAS_NUM_THREADS=1 python benchmarks/latent_grid_speed.py --out benchmarks/results/latent_grid_speed_cpu.json

For each ratio, the 8 chunks (30x128x128, the RD benchmark's) of the real nuclei volume are
encoded once by each codec (in one batch; the latent grid with its rate controller, so its
streams have their real size; SIREN with few steps, since its decode cost is its network size),
and written as Zarr v3 arrays. Then, alternating codecs, best of ``--repeats``:

* one chunk decoded by ``inr_codecs.decode`` on one thread (BLAS pinned by the environment);
* the whole array read by ``zarr`` (its thread pool decodes chunks in parallel: what a reader sees).

Encode seconds per MB are recorded from the same run (the latent grid's, at ``--steps``).
"""
import argparse
import json
import os
import tempfile
import time

import numpy as np
import zarr

from inr_codecs import LatentGridCodec, SIRENCodec, decode
from inr_codecs.bench import results as schema
from inr_codecs.datasets import load
from inr_codecs.metrics import psnr
from inr_codecs.sources import chunk_regions
from inr_codecs.zarr3 import serializer_for

CHUNKS = (30, 128, 128)


def write_payloads(path, vol, codec, payloads):
    """A Zarr v3 array whose chunks are ``payloads`` (in chunk_regions order), written as bytes."""
    z = zarr.create_array(path, shape=vol.shape, chunks=CHUNKS, dtype=vol.dtype, compressors=None,
                          serializer=serializer_for(codec))
    for sl, data in zip(chunk_regions(vol.shape, CHUNKS), payloads):
        key = os.path.join(path, "c", *(str(s.start // c) for s, c in zip(sl, CHUNKS)))
        os.makedirs(os.path.dirname(key), exist_ok=True)
        with open(key, "wb") as f:
            f.write(data)
    return z


def best(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ratios", nargs="+", type=float, default=[64, 256, 1024])
    ap.add_argument("--steps", type=int, default=300, help="latent-grid fitting steps (SIREN: 20)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results/latent_grid_speed_cpu.json")
    a = ap.parse_args(argv)
    vol = load("nuclei")
    regions = list(chunk_regions(vol.shape, CHUNKS))
    chunks = [np.ascontiguousarray(vol[sl]) for sl in regions]
    mb = vol.nbytes / 1e6
    res = schema.new("latent_grid_speed", {"volume": "nuclei", "shape": list(vol.shape), "chunks": list(CHUNKS),
                                           "ratios": a.ratios, "latent_grid_steps": a.steps, "siren_steps": 20,
                                           "repeats": a.repeats,
                                           "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "unset")},
                     schema.command_line())
    for r in a.ratios:
        row = {"ratio": r}
        arrays = {}
        with tempfile.TemporaryDirectory() as tmp:
            for name, codec in (("latent_grid", LatentGridCodec(r, steps=a.steps, device="cpu")),
                                ("siren", SIRENCodec(r, steps=20, device="cpu"))):
                t = time.perf_counter()
                payloads = [e.payload for e in codec.encode_batch(chunks)]
                row[f"{name}_encode_s_per_MB"] = round((time.perf_counter() - t) / mb, 2)
                row[f"{name}_bytes"] = sum(map(len, payloads))
                arrays[name] = (write_payloads(os.path.join(tmp, name), vol, codec, payloads), payloads)
            for name in arrays:          # quality of what is timed (SIREN barely trained: speed only)
                row[f"{name}_psnr_db"] = round(psnr(vol, zarr.open_array(arrays[name][0].store_path)[:]), 2)
            one = {n: best(lambda p=p: decode(p[0]), a.repeats) for n, (_, p) in arrays.items()}
            whole = {n: best(lambda z=z: zarr.open_array(z.store_path)[:], a.repeats) for n, (z, _) in arrays.items()}
            for n in arrays:
                row[f"{n}_chunk_decode_MBps"] = round(chunks[0].nbytes / 1e6 / one[n], 2)
                row[f"{n}_array_read_MBps"] = round(mb / whole[n], 2)
            row["speedup_chunk"] = round(one["siren"] / one["latent_grid"], 1)
            row["speedup_array"] = round(whole["siren"] / whole["latent_grid"], 1)
        res["runs"].append(row)
        print(json.dumps(row), flush=True)
        schema.write(res, a.out)


if __name__ == "__main__":
    main()
