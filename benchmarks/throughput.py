"""Fitting throughput of SIRENCodec: batching, time to a PSNR, whole arrays, GPU; written as JSON.

    python benchmarks/throughput.py --out benchmarks/results/throughput_cpu.json
    python benchmarks/throughput.py --device cuda --out benchmarks/results/throughput_cuda.json
    python benchmarks/throughput.py --quick --out /tmp/throughput_quick.json     # ~1 min smoke run

Every fit is SIRENCodec(ratio, bits=8, steps=--steps, device=--device), everything else at its
defaults. Sections (``--sections``; each is one row of the results' ``runs``, tagged ``section``,
with its exact settings):

batching
    K chunks (default 8 of 30x64x64: the volume's first 30 slices, a 2x4 grid of 64x64 tiles
    around its centre) encoded one at a time (``codec.encode`` in a loop) and together
    (``codec.encode_batch``), equal steps: seconds, speed-up, mean per-chunk PSNR of each. On
    CPU both are timed with torch's default threads and again with 1 thread (the threads' effect).
time_to_psnr
    The same K chunks. A plain baseline fit (uniform sampling, seeded SIREN init, all steps)
    gives the mean per-chunk PSNR P; the target is T = P - --target-offset (1 dB). Then
    baseline, ``sampling="error"``, warm start (``learn_init`` on the same chunks, its cost
    reported apart and in the total) and error + warm start each fit with ``target_psnr=T``,
    at most --steps steps: steps each chunk took (``Encoded.steps``, the quantisation-aware
    steps included), seconds, final PSNR. ``early_stopping``: the plain run against the
    baseline target run, and a ``plateau_steps`` run.
whole_array
    ``compress()`` of a sub-volume (default the first 30 slices, 30x256x256 = 16 chunks of
    30x64x64, ratio 64) into a temporary Zarr v2 directory, scheduler="threads", workers=1 and
    2, batch 8, verify off (PSNR is measured by reading the array back, untimed): MB/min of raw
    input, seconds, PSNR, ratio. With workers=2 each worker thread gets cores // 2 torch threads.
gpu
    On CUDA only: compress() of a 256^3 uint16 volume (the nuclei volume mirrored out to 256^3)
    in 64^3 chunks at ratio 256: seconds, MB/min, PSNR, ratio, steps/s.

PSNR is in dB with peak = max - min of the original (``inr_codecs.metrics.psnr``); a chunk's
PSNR uses the chunk's own range, the mean is over chunks. Ratios are raw bytes / payload
bytes. Timings exclude decoding and a warm-up fit (torch start-up) made before the first.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time

import numpy as np

from inr_codecs import SIRENCodec, compress, decode
from inr_codecs.bench import results as schema
from inr_codecs.datasets import load
from inr_codecs.metrics import psnr

SECTIONS = ("batching", "time_to_psnr", "whole_array", "gpu")
FULL = dict(k=8, chunk=(30, 64, 64), ratio=64.0, array=(30, 256, 256), array_chunks=(30, 64, 64), batch=8,
            plateau=50, gpu_size=256, gpu_chunk=64, gpu_ratio=256.0)
QUICK = dict(k=2, chunk=(16, 32, 32), ratio=8.0, array=(16, 64, 64), array_chunks=(16, 32, 32), batch=2,
             plateau=20, gpu_size=128, gpu_chunk=64, gpu_ratio=256.0, steps=40)


def _torch():
    import torch
    return torch


def grid_shape(k: int) -> tuple[int, int]:
    """Rows x columns of k tiles, as square as k allows (8 -> 2 x 4)."""
    rows = max(d for d in range(1, int(math.isqrt(k)) + 1) if k % d == 0)
    return rows, k // rows


def cut_chunks(vol: np.ndarray, k: int, chunk) -> list[np.ndarray]:
    """k chunks of shape ``chunk`` from the first chunk[0] slices: a grid of tiles around the centre."""
    cz, cy, cx = chunk
    rows, cols = grid_shape(k)
    tiles = centre_crop(vol, (cz, rows * cy, cols * cx))
    return [np.ascontiguousarray(tiles[:, r * cy:(r + 1) * cy, c * cx:(c + 1) * cx])
            for r in range(rows) for c in range(cols)]


def centre_crop(vol: np.ndarray, shape) -> np.ndarray:
    """The first shape[0] slices, centre-cropped in y and x."""
    if any(s > v for s, v in zip(shape, vol.shape)):
        raise ValueError(f"sub-volume {tuple(shape)} does not fit in {vol.shape}")
    y0, x0 = (vol.shape[1] - shape[1]) // 2, (vol.shape[2] - shape[2]) // 2
    return np.ascontiguousarray(vol[:shape[0], y0:y0 + shape[1], x0:x0 + shape[2]])


def mirror_to(vol: np.ndarray, size: int) -> np.ndarray:
    """``vol`` centre-cropped or mirrored (symmetric padding) out to size^3."""
    out = vol
    for ax in range(3):
        n = out.shape[ax]
        if n >= size:
            out = np.take(out, np.arange((n - size) // 2, (n - size) // 2 + size), axis=ax)
        else:
            pad = [(0, 0)] * 3
            pad[ax] = ((size - n) // 2, size - n - (size - n) // 2)
            out = np.pad(out, pad, mode="symmetric")
    return np.ascontiguousarray(out)


def quality(chunks, payloads) -> dict:
    """Per-chunk and mean PSNR of decoded payloads, and the achieved ratio."""
    per = [psnr(c, decode(p)) for c, p in zip(chunks, payloads)]
    raw = sum(c.nbytes for c in chunks)
    return {"psnr_db_mean": round(float(np.mean(per)), 3), "psnr_db_per_chunk": [round(p, 3) for p in per],
            "ratio_achieved": round(raw / sum(len(p) for p in payloads), 2)}


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


class Bench:
    def __init__(self, a, vol):
        self.a, self.vol = a, vol
        self.torch = _torch()
        self.default_threads = self.torch.get_num_threads()
        self.chunks = cut_chunks(vol, a.k, a.chunk)
        self.raw_mb = sum(c.nbytes for c in self.chunks) / 1e6
        self.plain = None       # the plain batched fit, shared by batching and time_to_psnr

    def codec(self, ratio=None, steps=None, **kw) -> SIRENCodec:
        return SIRENCodec(ratio or self.a.ratio, bits=8, steps=steps or self.a.steps, device=self.a.device, **kw)

    def settings(self, **kw) -> dict:
        return {"k": self.a.k, "chunk": list(self.a.chunk), "dtype": str(self.chunks[0].dtype), "ratio": self.a.ratio,
                "bits": 8, "steps": self.a.steps, "device": self.a.device, **kw}

    def warm_up(self):
        """One tiny fit first, so no timing includes torch's (or CUDA's) start-up."""
        self.codec(steps=12).encode_batch(self.chunks[:1])

    def batch_fit(self, init=None, **kw) -> dict:
        codec = self.codec(**kw)
        enc, s = timed(lambda: codec.encode_batch(self.chunks, init=init))
        steps = [int(e.steps) for e in enc]
        return {"codec": codec.get_config(), "seconds": round(s, 3), "steps_mean": round(float(np.mean(steps)), 1),
                "steps_per_chunk": steps, "network_steps_per_s": round(sum(steps) / s, 1),
                **quality(self.chunks, [e.payload for e in enc])}

    def loop_fit(self) -> dict:
        codec = self.codec()
        payloads, s = timed(lambda: [codec.encode(c) for c in self.chunks])
        return {"codec": codec.get_config(), "seconds": round(s, 3),
                "network_steps_per_s": round(len(self.chunks) * self.a.steps / s, 1),
                **quality(self.chunks, payloads)}

    def set_threads(self, n):
        if self.torch.get_num_threads() != n:
            self.torch.set_num_threads(n)

    # --- sections ------------------------------------------------------------------------

    def batching(self) -> dict:
        self.set_threads(self.default_threads)
        one = self.loop_fit()
        log(f"  one at a time: {one['seconds']:.1f} s, {one['psnr_db_mean']:.2f} dB")
        self.plain = together = self.batch_fit()
        log(f"  together:      {together['seconds']:.1f} s, {together['psnr_db_mean']:.2f} dB")
        out = {"settings": self.settings(torch_threads=self.default_threads), "one_at_a_time": one,
               "together": together, "speedup": round(one["seconds"] / together["seconds"], 2),
               "psnr_db_difference": round(together["psnr_db_mean"] - one["psnr_db_mean"], 3)}
        if self.a.device == "cpu" and self.default_threads > 1:
            self.set_threads(1)
            try:
                one1, together1 = self.loop_fit(), self.batch_fit()
            finally:
                self.set_threads(self.default_threads)
            n = self.default_threads
            out["threads"] = {
                "note": f"the same two fits with torch.set_num_threads(1) against the default {n}",
                "one_at_a_time_1_thread_s": one1["seconds"], "together_1_thread_s": together1["seconds"],
                f"one_at_a_time_{n}_threads_s": one["seconds"], f"together_{n}_threads_s": together["seconds"],
                "threads_speedup_one_at_a_time": round(one1["seconds"] / one["seconds"], 2),
                "threads_speedup_together": round(together1["seconds"] / together["seconds"], 2),
                "batching_speedup_1_thread": round(one1["seconds"] / together1["seconds"], 2)}
            log(f"  1 thread: one at a time {one1['seconds']:.1f} s, together {together1['seconds']:.1f} s")
        return out

    def time_to_psnr(self) -> dict:
        a = self.a
        self.set_threads(self.default_threads)
        plain = self.plain
        reused = plain is not None
        if plain is None:
            plain = self.plain = self.batch_fit()
        target = round(a.target_psnr if a.target_psnr is not None else plain["psnr_db_mean"] - a.target_offset, 3)
        log(f"  plain run: {plain['seconds']:.1f} s, {plain['psnr_db_mean']:.2f} dB -> target_psnr {target} dB")
        learner = self.codec()
        inner = a.meta_inner or max(1, a.steps // 10)
        init, meta_s = timed(lambda: learner.learn_init(self.chunks, rounds=a.meta_rounds, inner_steps=inner,
                                                        meta_lr=a.meta_lr))
        meta_s = round(meta_s, 3)
        log(f"  learn_init: {meta_s:.1f} s ({a.meta_rounds} rounds x {inner} steps)")
        configs = {"baseline": dict(sampling="uniform"), "error": dict(sampling="error"),
                   "warm_start": dict(sampling="uniform", init=init),
                   "error_warm_start": dict(sampling="error", init=init)}
        runs = {}
        for name, cfg in configs.items():
            init_ = cfg.pop("init", None)
            r = self.batch_fit(init=init_, target_psnr=target, **cfg)
            r["reached_target"] = sum(s < a.steps for s in r["steps_per_chunk"])
            r["steps_fraction_mean"] = round(r["steps_mean"] / a.steps, 3)
            if init_ is not None:
                r["learn_init_seconds"] = meta_s
                r["total_seconds"] = round(meta_s + r["seconds"], 3)
            runs[name] = r
            log(f"  {name:17s} steps {r['steps_mean']:6.1f}, {r['seconds']:6.1f} s"
                + (f" (+{meta_s:.1f} s learn_init)" if init_ is not None else "")
                + f", {r['psnr_db_mean']:.2f} dB, {r['reached_target']}/{len(self.chunks)} reached T")
        base = runs["baseline"]
        for r in runs.values():
            r["steps_vs_baseline"] = round(r["steps_mean"] / base["steps_mean"], 3)
            r["seconds_vs_baseline"] = round(r["seconds"] / base["seconds"], 3)
            if "total_seconds" in r:
                r["total_seconds_vs_baseline"] = round(r["total_seconds"] / base["seconds"], 3)
        plateau = self.batch_fit(plateau_steps=a.plateau)
        log(f"  plateau_steps={a.plateau}: steps {plateau['steps_mean']:.1f}, {plateau['seconds']:.1f} s, "
            f"{plateau['psnr_db_mean']:.2f} dB")
        qat = round(0.1 * a.steps)
        return {
            "settings": self.settings(torch_threads=self.default_threads, target_psnr=target,
                                      target_rule=("given" if a.target_psnr is not None else
                                                   f"mean per-chunk PSNR of the plain run - {a.target_offset} dB"),
                                      learn_init=dict(rounds=a.meta_rounds, inner_steps=inner, meta_lr=a.meta_lr,
                                                      chunks="the same K chunks", sampling="uniform")),
            "note": ("target_psnr is the codec's smoothed training PSNR of the float network (peak = the chunk's "
                     f"range); steps include the {qat} quantisation-aware steps every chunk gets after stopping, "
                     f"so a chunk that never reached T shows {a.steps}; the lr schedule is cosine over all "
                     "steps whether or not a chunk stops early. With sampling='error' early stopping watches the "
                     "uniformly drawn half of each step's voxels only, so the target means the same in every run. "
                     "The learned init is fitted to the chunks it is then tested on (an optimistic "
                     "warm start), and costs about one full fit (rounds x inner_steps = steps on all K chunks)."),
            "plain": {**plain, "reused_from": "batching.together" if reused else None},
            "runs": runs,
            "early_stopping": {
                "plain_seconds": plain["seconds"], "plain_psnr_db": plain["psnr_db_mean"],
                "target_seconds": base["seconds"], "target_psnr_db": base["psnr_db_mean"],
                "target_steps_mean": base["steps_mean"],
                "speedup_target": round(plain["seconds"] / base["seconds"], 2),
                "plateau": {"plateau_steps": a.plateau, **plateau},
                "speedup_plateau": round(plain["seconds"] / plateau["seconds"], 2)},
        }

    def compress_run(self, vol, chunks, ratio, workers, batch, steps=None) -> dict:
        import zarr
        codec = self.codec(ratio=ratio, steps=steps)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "a.zarr")
            res = compress(vol, path, codec, chunks=chunks, zarr_format=2, scheduler="threads",
                           workers=workers, batch=batch, verify=False, progress=False)
            back = zarr.open_array(path, mode="r")[:]
        minutes = res.seconds / 60
        n_groups = math.ceil(res.chunks_encoded / batch) if batch else None
        return {"workers": workers, "batch": batch, "torch_threads_per_worker": max(1, (os.cpu_count() or 1) // workers)
                if not self.a.device.startswith("cuda") else None,
                "chunks_encoded": res.chunks_encoded, "groups": n_groups, "seconds": round(res.seconds, 3),
                "MB_per_min": round(res.raw_bytes / 1e6 / minutes, 3), "MB_per_s": round(res.mb_per_s, 4),
                "psnr_db": round(psnr(vol, back), 3), "ratio_achieved": round(res.ratio, 2),
                "fit_steps": res.fit_steps, "network_steps_per_s": round(res.fit_steps / res.seconds, 1),
                "codec": codec.get_config()}

    def whole_array(self) -> dict:
        a = self.a
        sub = centre_crop(self.vol, a.array)
        runs = []
        for rep in range(a.repeats):          # interleaved, so a slow spell of the machine hits both
            for w in a.workers:
                r = {"repeat": rep, **self.compress_run(sub, a.array_chunks, a.ratio, w, a.batch)}
                runs.append(r)
                log(f"  workers={w}: {r['seconds']:.1f} s, {r['MB_per_min']:.3f} MB/min, {r['psnr_db']:.2f} dB, "
                    f"{r['ratio_achieved']:.1f}x")
        median = {str(w): float(np.median([r["MB_per_min"] for r in runs if r["workers"] == w])) for w in a.workers}
        return {"settings": {"shape": list(sub.shape), "dtype": str(sub.dtype), "raw_MB": round(sub.nbytes / 1e6, 3),
                             "chunks": list(a.array_chunks), "ratio": a.ratio, "bits": 8, "steps": a.steps,
                             "device": a.device, "scheduler": "threads", "zarr_format": 2, "batch": a.batch,
                             "verify": False, "cpus": os.cpu_count(), "crop": "first slices, centre in y and x"},
                "note": ("MB/min = raw bytes / 1e6 / minutes of compress(); PSNR over the whole sub-volume "
                         "(peak = its max - min), from reading the array back after the timing. With the threads "
                         "scheduler torch's thread pool is per process: workers=w sets it to cores // w threads "
                         "shared by the w worker threads."),
                "median_MB_per_min": median,
                "runs": runs}

    def gpu(self):
        a = self.a
        if not a.device.startswith("cuda"):
            if self.torch.cuda.is_available():
                return "not measured: run with --device cuda"
            return "not measured: no GPU on this machine"
        big = mirror_to(self.vol, a.gpu_size)
        chunks = (a.gpu_chunk,) * 3
        r = self.compress_run(big, chunks, a.gpu_ratio, 1, None)
        n_chunks = r["chunks_encoded"]
        per_task = 64               # compress()'s default batch on CUDA
        groups = math.ceil(n_chunks / per_task)
        r.update(batch="default (64 on CUDA)", groups=groups,
                 batch_steps_per_s=round(groups * a.steps / r["seconds"], 2))
        log(f"  {a.gpu_size}^3: {r['seconds']:.1f} s, {r['MB_per_min']:.2f} MB/min, {r['psnr_db']:.2f} dB, "
            f"{r['ratio_achieved']:.1f}x, {r['batch_steps_per_s']} batched steps/s")
        return {"settings": {"shape": list(big.shape), "dtype": str(big.dtype), "raw_MB": round(big.nbytes / 1e6, 3),
                             "built": f"{a.volume} volume mirrored (symmetric padding) / centre-cropped to "
                                      f"{a.gpu_size}^3", "chunks": list(chunks), "ratio": a.gpu_ratio, "bits": 8,
                             "steps": a.steps, "device": a.device, "gpu": self.torch.cuda.get_device_name(),
                             "scheduler": "threads", "workers": 1, "zarr_format": 2, "verify": False},
                "note": ("network_steps_per_s: optimiser steps summed over chunks per second; batch_steps_per_s: "
                         "steps of the batched model (all chunks of a group at once) per second"),
                **r}


def log(msg):
    print(msg, flush=True)


def ints(text):
    return tuple(int(v) for v in text.replace("x", ",").split(","))


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/results/throughput_cpu.json")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--steps", type=int, help="fitting steps (default 300; 40 with --quick)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes and few steps: a smoke run of about a minute")
    ap.add_argument("--volume", default="nuclei", help="sample volume (inr_codecs.datasets), 3D")
    ap.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    ap.add_argument("--k", type=int, help="chunks for batching / time_to_psnr (default 8; 2 with --quick)")
    ap.add_argument("--chunk", type=ints, help="their shape z,y,x (default 30,64,64; 16,32,32 with --quick)")
    ap.add_argument("--ratio", type=float, help="compression ratio of sections 1-3 (default 64; 8 with --quick)")
    ap.add_argument("--array", type=ints, help="whole_array sub-volume (default 30,256,256; 16,64,64 with --quick)")
    ap.add_argument("--array-chunks", type=ints, help="its chunks (default 30,64,64; 16,32,32 with --quick)")
    ap.add_argument("--batch", type=int, help="compress() batch (default 8; 2 with --quick)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=1, help="whole_array: runs per worker count (interleaved)")
    ap.add_argument("--target-psnr", type=float, help="target PSNR in dB (default: plain run's mean - offset)")
    ap.add_argument("--target-offset", type=float, default=1.0)
    ap.add_argument("--plateau", type=int, help="plateau_steps of the plateau run (default 50; 20 with --quick)")
    ap.add_argument("--meta-rounds", type=int, default=10, help="learn_init rounds")
    ap.add_argument("--meta-inner", type=int, help="learn_init inner steps (default steps // 10)")
    ap.add_argument("--meta-lr", type=float, default=0.5)
    ap.add_argument("--gpu-size", type=int, help="edge of the GPU section's cube (default 256; 128 with --quick)")
    return ap


def resolve(a):
    """Fill the size options left unset from the full or the quick defaults."""
    base = QUICK if a.quick else FULL
    for key in ("k", "chunk", "ratio", "array", "array_chunks", "batch", "plateau", "gpu_size"):
        if getattr(a, key) is None:
            setattr(a, key, base[key])
    for key in ("gpu_chunk", "gpu_ratio"):
        setattr(a, key, base[key])
    if a.steps is None:
        a.steps = base.get("steps", 300)
    a.chunk, a.array, a.array_chunks = tuple(a.chunk), tuple(a.array), tuple(a.array_chunks)
    return a


def summary(res) -> str:
    s, sections = res["settings"], {r["section"]: r for r in res["runs"]}
    lines = [f"throughput on {s['device']} ({res['machine'].get('cpus')} cpus, torch {res['machine']['torch']}, "
             f"{s['torch_threads_default']} threads), {s['steps']} steps"]
    b = sections.get("batching")
    if b:
        lines.append(f"batching {b['settings']['k']} x {tuple(b['settings']['chunk'])}: one at a time "
                     f"{b['one_at_a_time']['seconds']:.1f} s / {b['one_at_a_time']['psnr_db_mean']:.2f} dB, together "
                     f"{b['together']['seconds']:.1f} s / {b['together']['psnr_db_mean']:.2f} dB "
                     f"-> {b['speedup']}x")
        if "threads" in b:
            t = b["threads"]
            lines.append(f"  threads: default vs 1 thread is {t['threads_speedup_one_at_a_time']}x (one at a time), "
                         f"{t['threads_speedup_together']}x (together)")
    t = sections.get("time_to_psnr")
    if t:
        lines.append(f"time to {t['settings']['target_psnr']} dB (max {t['settings']['steps']} steps):")
        for name, r in t["runs"].items():
            extra = f" + {r['learn_init_seconds']:.1f} s learn_init" if "learn_init_seconds" in r else ""
            lines.append(f"  {name:17s} {r['steps_mean']:6.1f} steps {r['seconds']:6.1f} s{extra}  "
                         f"{r['psnr_db_mean']:.2f} dB  ({r['steps_vs_baseline']}x steps, "
                         f"{r['seconds_vs_baseline']}x s of baseline)")
        e = t["early_stopping"]
        lines.append(f"  early stopping: plain {e['plain_seconds']:.1f} s / {e['plain_psnr_db']:.2f} dB, target "
                     f"{e['target_seconds']:.1f} s / {e['target_psnr_db']:.2f} dB ({e['speedup_target']}x), plateau "
                     f"{e['plateau']['seconds']:.1f} s / {e['plateau']['psnr_db_mean']:.2f} dB "
                     f"({e['speedup_plateau']}x)")
    w = sections.get("whole_array")
    if w:
        lines.append(f"whole array {tuple(w['settings']['shape'])} in {tuple(w['settings']['chunks'])}:")
        for r in w["runs"]:
            lines.append(f"  workers={r['workers']}: {r['MB_per_min']:.3f} MB/min ({r['seconds']:.1f} s), "
                         f"{r['psnr_db']:.2f} dB, {r['ratio_achieved']:.1f}x")
    g = sections.get("gpu")
    if g and "skipped" in g:
        lines.append(f"gpu: {g['skipped']}")
    elif g:
        lines.append(f"gpu {tuple(g['settings']['shape'])} at {g['settings']['ratio']:g}x: {g['seconds']:.1f} s, "
                     f"{g['MB_per_min']:.2f} MB/min, {g['psnr_db']:.2f} dB, {g['batch_steps_per_s']} steps/s")
    return "\n".join(lines)


def main(argv=None):
    a = resolve(build_parser().parse_args(argv))
    torch = _torch()
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no CUDA device")
    vol = load(a.volume)
    if vol.ndim != 3:
        sys.exit(f"--volume {a.volume} is {vol.ndim}-d; this benchmark cuts 3D chunks")
    bench = Bench(a, vol)
    res = schema.new("throughput", {"volume": a.volume, "volume_shape": list(vol.shape), "dtype": str(vol.dtype),
                                    "steps": a.steps, "sections": a.sections, "device": a.device, "quick": a.quick,
                                    "torch_threads_default": bench.default_threads}, schema.command_line())
    if a.device == "cuda":
        res["machine"]["gpu"] = torch.cuda.get_device_name()
    bench.warm_up()
    for name in SECTIONS:
        if name in a.sections:
            log(f"{name}:")
            t = time.perf_counter()
            out = getattr(bench, name)()
            if isinstance(out, dict):
                res["runs"].append({"section": name, **out, "wall_s": round(time.perf_counter() - t, 1)})
            else:   # why it was not measured
                log(f"  {out}")
                res["runs"].append({"section": name, "skipped": out})
            schema.write(res, a.out)
    schema.write(res, a.out)
    log("")
    log(summary(res))
    log(f"wrote {a.out}")
    return res


if __name__ == "__main__":
    main()
