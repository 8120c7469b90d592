"""Decode throughput of SIRENCodec payloads on this machine (numpy only), written as JSON.

    python benchmarks/decode_speed.py --out benchmarks/results/decode_speed_cpu.json

Encodes one real 64^3 uint16 chunk of the nuclei volume per ratio (few steps: decode cost depends
on the network's size, not on how well it was trained), then times ``inr_codecs.decode`` (best of 5).
"""
import argparse
import json
import time

import numpy as np

from inr_codecs import BudgetError, SIRENCodec, decode
from inr_codecs.bench import results as schema
from inr_codecs.datasets import load
from inr_codecs.methods.siren import describe

ap = argparse.ArgumentParser()
ap.add_argument("--ratios", nargs="+", type=float, default=[64, 256, 1024])
ap.add_argument("--out", default="benchmarks/results/decode_speed_cpu.json")
a = ap.parse_args()
chunk = np.ascontiguousarray(load("nuclei")[:64, 64:128, 64:128])
chunk = np.pad(chunk, ((0, 64 - chunk.shape[0]), (0, 0), (0, 0)), mode="edge")
res = schema.new("decode_speed", {"volume": "nuclei", "ratios": a.ratios, "encode_steps": 20, "timing": "best of 5"},
                 schema.command_line())
runs = res["runs"]
for r in a.ratios:
    try:
        p = SIRENCodec(ratio=r, steps=20, device="cpu").encode(chunk)
    except BudgetError:   # 8 bits do not fit a useful network at this ratio: 6 do
        p = SIRENCodec(ratio=r, steps=20, device="cpu", bits=6).encode(chunk)
    width, bits = describe(p).width, describe(p).bits
    times = []
    for _ in range(5):
        t = time.perf_counter()
        decode(p)
        times.append(time.perf_counter() - t)
    best = min(times)
    runs.append({"ratio": r, "chunk": list(chunk.shape), "dtype": str(chunk.dtype), "width": width, "bits": bits,
                 "payload_bytes": len(p), "decode_s": round(best, 4),
                 "decode_MBps": round(chunk.nbytes / 1e6 / best, 2),
                 "decode_Mvoxel_per_s": round(chunk.size / 1e6 / best, 2)})
    print(json.dumps(runs[-1]), flush=True)
schema.write(res, a.out)
