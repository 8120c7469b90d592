"""Is decoding bit-identical across BLAS thread counts and CPU kernels, and what does it cost?

    python benchmarks/decode_determinism.py --out benchmarks/results/decode_determinism_cpu.json

Writes SIREN, SCI and latent-grid payloads of one real 64^3 uint16 nuclei chunk and one
32x64x64 float32 neuron chunk (few fitting steps: neither determinism nor decode cost depends on
how well a network was trained), then decodes every payload in fresh processes under each
environment below and counts the voxels that differ from the first (1 OpenBLAS thread, default
kernels). Each process decodes twice: with ``inr_codecs.decode`` (the format's exact decoder) and,
for SIREN and SCI, with the float32 BLAS evaluation the decoder used before it was made exact
(``float32_decode`` below), so the table shows what the exact arithmetic fixes. Decode speed,
exact vs float32, is timed side by side in one process (best of 5, 1 and 2 OpenBLAS threads).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ENVIRONMENTS = {
    "1 thread": {"OPENBLAS_NUM_THREADS": "1"},
    "2 threads": {"OPENBLAS_NUM_THREADS": "2"},
    "8 threads": {"OPENBLAS_NUM_THREADS": "8"},
    "OPENBLAS_CORETYPE=Haswell": {"OPENBLAS_NUM_THREADS": "1", "OPENBLAS_CORETYPE": "Haswell"},
    "OPENBLAS_CORETYPE=SkylakeX": {"OPENBLAS_NUM_THREADS": "1", "OPENBLAS_CORETYPE": "SkylakeX"},
    "OPENBLAS_CORETYPE=Sandybridge": {"OPENBLAS_NUM_THREADS": "1", "OPENBLAS_CORETYPE": "Sandybridge"},
    "OPENBLAS_CORETYPE=Prescott": {"OPENBLAS_NUM_THREADS": "1", "OPENBLAS_CORETYPE": "Prescott"},
    "Prescott, 2 threads, numpy without AVX-512": {
        "OPENBLAS_NUM_THREADS": "2", "OPENBLAS_CORETYPE": "Prescott",
        "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR"},
}


def float32_decode(data: bytes) -> np.ndarray | None:
    """SIREN and SCI payloads evaluated the way the decoder did before it was exact: weights
    dequantised to float32 (``quant.decode_tensors``), ``siren_forward`` in float32 through the
    BLAS (None for other methods)."""
    from inr_codecs import payload, quant
    from inr_codecs.codec import denormalise
    from inr_codecs.methods.sci import format as sci
    from inr_codecs.methods.siren import format as siren
    from inr_codecs.nn import coord_axes, grid_coords, siren_forward, siren_shapes
    from inr_codecs.payload import Reader

    header, body = payload.unpack(data)
    r = Reader(body)
    shape, axes = header.shape, coord_axes(header.shape)
    if header.method == siren.METHOD_ID:
        f = siren.read_body_fixed(r)
        params = quant.decode_tensors(r, siren_shapes(len(axes), f.width, f.depth), f.encoding, f.bits)
        n = int(np.prod(shape))
        y = np.empty(n, np.float32)
        for start in range(0, n, 1 << 16):
            idx = np.arange(start, min(n, start + (1 << 16)))
            y[idx] = siren_forward(np, params, grid_coords(shape, idx), f.w0)[:, 0]
        return denormalise(y, f.lo, f.hi, header.dtype).reshape(shape)
    if header.method == sci.METHOD_ID:
        b = sci.read_body_fixed(shape, r)
        ids = [i for i, w in enumerate(b.widths) if w != (0, 0)]
        shapes = [sci.layer_shapes(len(axes), *b.widths[i], b.depth) for i in ids]
        flat = quant.decode_tensors(r, [s for sh in shapes for s in sh], b.encoding, b.bits) if ids else []
        nets, off = {}, 0
        for i, sh in zip(ids, shapes):
            nets[i], off = flat[off:off + len(sh)], off + len(sh)
        y = np.empty(shape, np.float32)
        for i, blk in enumerate(b.blocks):
            if i in b.constants:
                y[blk.slices] = b.constants[i]
                continue
            out = np.empty(blk.size, np.float32)
            for start in range(0, blk.size, 1 << 16):
                idx = np.arange(start, min(blk.size, start + (1 << 16)))
                out[idx] = sci.forward(np, nets[i], grid_coords(blk.shape, idx, axes), b.w0)[:, 0]
            y[blk.slices] = out.reshape(blk.shape)
        y = sci.deblock(y, b.blocks, b.deblock)
        return denormalise(y.ravel(), b.lo, b.hi, header.dtype).reshape(shape)
    return None


def make_payloads(folder: Path, steps: int) -> dict:
    from inr_codecs import LatentGridCodec, SCICodec, SIRENCodec
    from inr_codecs.datasets import load
    nuclei = np.ascontiguousarray(load("nuclei")[:64, 64:128, 64:128])
    nuclei = np.pad(nuclei, ((0, 64 - nuclei.shape[0]), (0, 0), (0, 0)), mode="edge")
    neuron = np.ascontiguousarray(load("neuron")[8:40, 96:160, 96:160])
    cases = {}
    for chunk_name, chunk in (("nuclei u2 64^3", nuclei), ("neuron f4 32x64x64", neuron)):
        for name, codec in (("siren 64x", SIRENCodec(64, steps=steps, device="cpu")),
                            ("siren 16x", SIRENCodec(16, steps=steps, device="cpu")),
                            ("sci 64x", SCICodec(64, steps=steps, device="cpu")),
                            ("sci paper 64x", SCICodec.paper(64, steps=steps, device="cpu")),
                            ("latent_grid 64x", LatentGridCodec(64, steps=steps, device="cpu"))):
            key = f"{name}, {chunk_name}"
            data = codec.encode(chunk)
            (folder / f"{len(cases)}.bin").write_bytes(data)
            cases[key] = {"file": f"{len(cases)}.bin", "bytes": len(data), "voxels": int(chunk.size),
                          "nbytes": int(chunk.nbytes)}
            print(f"encoded {key}: {len(data)} B", flush=True)
    return cases


def child(folder: str, out: str) -> None:
    """Decode every payload of ``folder`` both ways; save the arrays to ``out`` (npz)."""
    from inr_codecs import decode
    arrays = {}
    for f in sorted(Path(folder).glob("*.bin")):
        data = f.read_bytes()
        arrays[f"exact_{f.stem}"] = decode(data)
        old = float32_decode(data)
        if old is not None:
            arrays[f"float32_{f.stem}"] = old
    np.savez(out, **arrays)


def differences(a: np.ndarray, b: np.ndarray) -> dict:
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return {"voxels": int(np.count_nonzero(a != b)), "max_abs": float(diff.max())}


def timing(folder: Path, cases: dict, threads: int) -> dict:
    """Best-of-5 decode times, exact and float32, in one fresh process at ``threads``."""
    code = f"""
import json, sys, time
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).parent)!r})
from decode_determinism import float32_decode
from inr_codecs import decode
out = {{}}
for f in sorted(Path({str(folder)!r}).glob("*.bin")):
    data = f.read_bytes()
    row = {{}}
    for way, fn in (("exact", decode), ("float32", float32_decode)):
        if fn(data) is None:
            continue
        best = 1e9
        for _ in range(5):
            t = time.perf_counter(); fn(data); best = min(best, time.perf_counter() - t)
        row[way] = best
    out[f.name] = row
print(json.dumps(out))
"""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": str(threads)}
    res = json.loads(subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True,
                                    text=True).stdout)
    table = {}
    for key, case in cases.items():
        row = res[case["file"]]
        table[key] = {f"{way}_MBps": round(case["nbytes"] / 1e6 / s, 2) for way, s in row.items()}
        if "float32" in row:
            table[key]["exact_time_over_float32"] = round(row["exact"] / row["float32"], 3)
    return table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", default="benchmarks/results/decode_determinism_cpu.json")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(*a.child)
    from inr_codecs.bench import results as schema
    res = schema.new("decode_determinism", {"steps": a.steps, "environments": ENVIRONMENTS},
                     schema.command_line())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cases = make_payloads(folder, a.steps)
        decoded = {}
        for env_name, env in ENVIRONMENTS.items():
            out = folder / f"{len(decoded)}.npz"
            subprocess.run([sys.executable, __file__, "--child", str(folder), str(out)],
                           env={**os.environ, **env}, check=True)
            decoded[env_name] = dict(np.load(out))
            print(f"decoded under {env_name}", flush=True)
        base_name = next(iter(ENVIRONMENTS))
        base = decoded[base_name]
        rows = []
        for key, case in cases.items():
            stem = case["file"].removesuffix(".bin")
            row = {"section": "determinism", "case": key, "payload_bytes": case["bytes"], "voxels": case["voxels"],
                   "exact_sha256": hashlib.sha256(base[f"exact_{stem}"].tobytes()).hexdigest()[:16]}
            for way in ("exact", "float32"):
                name = f"{way}_{stem}"
                if name in base:
                    row[way] = {env_name: differences(d[name], base[name])
                                for env_name, d in decoded.items() if env_name != base_name}
            rows.append(row)
            print(json.dumps(row), flush=True)
        for t in (1, 2):
            for key, row in timing(folder, cases, t).items():
                rows.append({"section": "speed", "case": key, "openblas_threads": t, **row})
                print(json.dumps(rows[-1]), flush=True)
        res["runs"] = rows
    schema.write(res, a.out)


if __name__ == "__main__":
    main()
