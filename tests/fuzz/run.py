"""Fuzz the payload decoders for N payloads or M minutes (a maintainer's run; CI runs a short
version, ``tests/test_fuzz.py``).

    python tests/fuzz/run.py --count 100000 --out benchmarks/results/fuzz_cpu.json
    python tests/fuzz/run.py --minutes 30

Mutants of valid seed payloads (``tests/fuzzing.py``: every method, six chunk kinds, float16 and
quantised weights, constants; CRC-32 fixed up for half of them) are decoded in worker processes,
each three ways (``inr_codecs.decode``, the numcodecs codec's ``decode``, ``decode(out=...)``),
under ``INR_CODECS_MAX_CHUNK_BYTES`` (``--limit``, default 1 MiB: a reader of chunks up to that
size). Reported: payloads, outcomes by exception type and way, broken promises (a decode that
succeeds with another shape or dtype than declared, or non-finite values), the slowest decode
(one way of one payload),
the largest allocation beyond the declared chunk's bytes (numpy's, by tracemalloc) and each
worker's peak RSS. A decode still running after ``--hang`` seconds is killed and counted.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import select
import struct
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))            # tests/: fuzzing.py


def _send(stream, obj) -> None:
    data = pickle.dumps(obj)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _recv(stream):
    head = stream.read(8)
    if len(head) < 8:
        raise EOFError
    (n,) = struct.unpack("<Q", head)
    return pickle.loads(stream.read(n))


def _peak_rss_kb() -> int:
    """This process's peak resident set (kB): Linux's VmHWM, which starts afresh at exec
    (``ru_maxrss`` keeps the forking parent's peak), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def worker(seed_dir: str) -> None:
    """Decode mutants sent on stdin; reply with each way's outcome, the slowest way's seconds and
    the peak allocation (numpy's, traced) beyond the declared chunk over the three ways."""
    import tracemalloc

    from fuzzing import outcome

    from inr_codecs import PayloadError, decode, payload
    likes = {p.stem: decode(p.read_bytes()) for p in Path(seed_dir).glob("*.bin")}
    tracemalloc.start()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            name, data = _recv(stdin)
        except EOFError:
            return
        try:
            declared = payload.unpack(data)[0].nbytes
        except PayloadError:
            declared = 0
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        res = outcome(data, likes[name])
        peak = tracemalloc.get_traced_memory()[1] - base
        _send(stdout, {"ways": res, "seconds": max(r["seconds"] for r in res.values()), "declared": declared,
                       "beyond": max(0, peak - declared),
                       "rss_kb": _peak_rss_kb()})


class Worker:
    def __init__(self, seed_dir: Path, limit: int):
        env = {**os.environ, "INR_CODECS_MAX_CHUNK_BYTES": str(limit), "OPENBLAS_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", str(seed_dir)], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def ask(self, msg, timeout: float):
        _send(self.proc.stdin, msg)
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        return _recv(self.proc.stdout)

    def kill(self):
        self.proc.kill()
        self.proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=100_000, help="mutants to decode (each three ways)")
    ap.add_argument("--minutes", type=float, help="stop after this long instead")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--limit", type=int, default=1 << 20, help="INR_CODECS_MAX_CHUNK_BYTES of the readers")
    ap.add_argument("--hang", type=float, default=30.0, help="seconds after which a decode counts as hung")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", default=str(HERE / ".seeds"), help="folder caching the seed payloads")
    ap.add_argument("--out", help="write the report here (benchmark results JSON)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a.worker)

    import numpy as np
    from fuzzing import make_seeds, mutate
    seed_dir = Path(a.seeds)
    if not any(seed_dir.glob("*.bin")):
        seed_dir.mkdir(parents=True, exist_ok=True)
        for i, (name, data) in enumerate(sorted(make_seeds().items())):
            (seed_dir / f"{i:02d}.bin").write_bytes(data)
            (seed_dir / f"{i:02d}.txt").write_text(name)
    seeds = {p.stem: p.read_bytes() for p in sorted(seed_dir.glob("*.bin"))}
    names, others = sorted(seeds), [seeds[k] for k in sorted(seeds)]
    rng = np.random.default_rng(a.seed)
    workers = [Worker(seed_dir, a.limit) for _ in range(a.workers)]
    counts: dict = {"payloads": 0, "crc_fixed": 0, "by_way": {}, "by_mutation": {}, "problems": [],
                    "hangs": [], "slowest": {"seconds": 0.0}, "most_memory_beyond_declared": {"bytes": 0},
                    "max_rss_mb": 0.0}
    start = time.time()
    try:
        while counts["payloads"] < a.count and (a.minutes is None or time.time() - start < 60 * a.minutes):
            i = counts["payloads"]
            name = names[i % len(names)]
            kind, crc, data = mutate(rng, seeds[name], others)
            w = workers[i % len(workers)]
            reply = w.ask((name, data), a.hang)
            counts["payloads"] += 1
            counts["crc_fixed"] += crc
            counts["by_mutation"][kind] = counts["by_mutation"].get(kind, 0) + 1
            if reply is None:
                counts["hangs"].append({"seed": name, "mutation": kind, "crc_fixed": crc, "hex": data.hex()})
                w.kill()
                workers[i % len(workers)] = Worker(seed_dir, a.limit)
                continue
            for way, res in reply["ways"].items():
                key = res["result"]
                counts["by_way"].setdefault(way, {})
                counts["by_way"][way][key] = counts["by_way"][way].get(key, 0) + 1
                if key not in ("PayloadError", "ok") or res.get("problem"):
                    counts["problems"].append({"seed": name, "mutation": kind, "crc_fixed": crc, "way": way,
                                               **res, "hex": data.hex()})
            if reply["seconds"] > counts["slowest"]["seconds"]:
                counts["slowest"] = {"seconds": round(reply["seconds"], 4), "seed": name, "mutation": kind,
                                     "declared_bytes": reply["declared"]}
            if reply["beyond"] > counts["most_memory_beyond_declared"]["bytes"]:
                counts["most_memory_beyond_declared"] = {"bytes": reply["beyond"], "seed": name,
                                                         "declared_bytes": reply["declared"]}
            counts["max_rss_mb"] = max(counts["max_rss_mb"], round(reply["rss_kb"] / 1024, 1))
            if counts["payloads"] % 2000 == 0:
                print(json.dumps({k: counts[k] for k in ("payloads", "by_way", "slowest", "max_rss_mb")}),
                      flush=True)
    finally:
        for w in workers:
            w.kill()
    counts["seconds"] = round(time.time() - start, 1)
    counts["problems"] = counts["problems"][:50]
    print(json.dumps({k: v for k, v in counts.items() if k != "problems"}, indent=1))
    print(f"{len(counts['problems'])} problems, {len(counts['hangs'])} hangs")
    if a.out:
        from inr_codecs.bench import results as schema
        res = schema.new("fuzz", {"count": a.count, "minutes": a.minutes, "workers": a.workers,
                                  "limit_bytes": a.limit, "hang_seconds": a.hang, "seed": a.seed},
                         schema.command_line())
        res["runs"] = [counts]
        schema.write(res, a.out)


if __name__ == "__main__":
    main()
