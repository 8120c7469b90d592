"""Two source trees of inr-codecs, side by side: are the payloads the same, is it as fast?

    python benchmarks/ab_trees.py --trees /path/to/old/checkout . --out benchmarks/results/ab_trees_registry.json

For a restructuring that must not change a byte (or a change that should not cost speed): each
tree, in its own process (``PYTHONPATH=<tree>``), encodes the centre chunk of each sample
volume (the RD benchmark's chunk shape) with the RD benchmark's INR codec configurations at
each ratio, then decodes every payload (best of ``--decode-repeats``). Trees alternate
``--repeats`` times, so machine noise falls on both alike. Reported: each payload's SHA-256 per
tree (identical or not) and the median encode and decode seconds per tree and their ratio.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time

CONFIGS = {   # the RD benchmark's INR codecs, spelled out so that every tree builds the same codec
    "siren": {"id": "inr_codecs.siren"},
    "sci (paper, Adamax)": {"id": "inr_codecs.sci", "optimizer": "adamax", "partition": "adaptive"},
    "sci (paper, Adam)": {"id": "inr_codecs.sci", "optimizer": "adam", "partition": "adaptive"},
}


def worker(volumes, ratios, steps, decode_repeats) -> list[dict]:
    """Runs inside one tree's process: encode and decode every (volume, ratio, codec)."""
    import numcodecs

    import inr_codecs  # noqa: F401  (registers the codecs)
    from inr_codecs.datasets import load
    rows = []
    for name in volumes:
        vol = load(name)
        chunk = tuple(min(128, -(-s // 2)) for s in vol.shape)
        x = vol[tuple(slice((n - c) // 2, (n - c) // 2 + c) for n, c in zip(vol.shape, chunk))]
        for ratio in ratios:
            for label, cfg in CONFIGS.items():
                codec = numcodecs.get_codec({**cfg, "ratio": ratio, "steps": steps, "device": "cpu"})
                t = time.perf_counter()
                data = codec.encode(x)
                encode_s = time.perf_counter() - t
                decode_s = []
                for _ in range(decode_repeats):
                    t = time.perf_counter()
                    codec.decode(data)
                    decode_s.append(time.perf_counter() - t)
                rows.append({"volume": name, "ratio": ratio, "codec": label, "bytes": len(data),
                             "sha256": hashlib.sha256(data).hexdigest(), "encode_s": encode_s,
                             "decode_s": min(decode_s)})
    return rows


def run_tree(tree, args) -> list[dict]:
    code = (f"import json, sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
            f"from ab_trees import worker; print(json.dumps(worker({args.volumes!r}, {args.ratios!r}, "
            f"{args.steps}, {args.decode_repeats})))")
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trees", nargs=2, required=True, help="the two source trees (A, B)")
    ap.add_argument("--volumes", nargs="+", default=["nuclei", "ct"])
    ap.add_argument("--ratios", nargs="+", type=float, default=[64, 256, 1024])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--decode-repeats", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results/ab_trees.json")
    a = ap.parse_args(argv)
    from inr_codecs.bench import results     # the worker side imports only the tree it measures
    res = results.new("ab_trees", {"trees": a.trees, "volumes": a.volumes, "ratios": a.ratios, "steps": a.steps,
                                   "repeats": a.repeats, "decode_repeats": a.decode_repeats,
                                   "configs": CONFIGS}, results.command_line())
    for rep in range(a.repeats):
        for side, tree in zip("AB", a.trees):
            for row in run_tree(tree, a):
                res["runs"].append({"tree": side, "repeat": rep, **row})
                print(json.dumps(res["runs"][-1]), file=sys.stderr, flush=True)
            results.write(res, a.out)
    print(summary(res))


def summary(res) -> str:
    """Per case: payload identical across trees, median encode and decode seconds, B / A."""
    cases = {}
    for r in res["runs"]:
        cases.setdefault((r["volume"], r["ratio"], r["codec"]), {}).setdefault(r["tree"], []).append(r)
    lines = ["| volume | ratio | codec | bytes | same payload | encode s A / B (B/A) | decode s A / B (B/A) |",
             "|---|---|---|---|---|---|---|"]
    totals = {"A": [0.0, 0.0], "B": [0.0, 0.0]}
    for (vol, ratio, codec), by in cases.items():
        same = len({r["sha256"] for rows in by.values() for r in rows}) == 1
        med = {t: (statistics.median(r["encode_s"] for r in rows), statistics.median(r["decode_s"] for r in rows))
               for t, rows in by.items()}
        for t in med:
            totals[t][0] += med[t][0]
            totals[t][1] += med[t][1]
        lines.append(f"| {vol} | {ratio:g}× | {codec} | {by['A'][0]['bytes']} | {'yes' if same else 'NO'} | "
                     f"{med['A'][0]:.2f} / {med['B'][0]:.2f} ({med['B'][0] / med['A'][0]:.3f}) | "
                     f"{med['A'][1]:.3f} / {med['B'][1]:.3f} ({med['B'][1] / med['A'][1]:.3f}) |")
    (ea, da), (eb, db) = totals["A"], totals["B"]
    lines.append(f"| all | | | | | {ea:.1f} / {eb:.1f} ({eb / ea:.3f}) | {da:.2f} / {db:.2f} ({db / da:.3f}) |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
