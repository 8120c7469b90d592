"""Reproduce the rate-distortion results in the docs: the six sample volumes at 64x, 256x and 1024x.

    pip install -e ".[fit,bench]"
    python benchmarks/rd.py                 # all codecs; about 40 minutes on 2 CPU cores
    python benchmarks/rd.py --report-only   # tables and plots again from the JSON
    python benchmarks/rd.py --codecs zfp    # re-run one codec, keep the other rows

Writes benchmarks/results/rd_<volume>.json (and the decoded middle slices beside it, .slices.npz,
not committed), docs/img/rd_<volume>.png, docs/img/montage_<volume>.png (at 256x) and
docs/_generated/rd_table.md (included by docs/benchmarks.md). Every run is
`inr-codecs bench <volume>` with the defaults below; see `inr-codecs bench --help`.
"""
from __future__ import annotations

import argparse
import os
import sys

from inr_codecs.bench import plots, rd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
IMG = os.path.join(ROOT, "docs", "img")
TABLE = os.path.join(ROOT, "docs", "_generated", "rd_table.md")
MONTAGE_RATIO = 256
DEFAULT_VOLUMES = ("nuclei", "ct", "tomo", "neuron", "mni152", "timelapse2d")
# Chunks as a user would store each volume: each axis halved (at most 128, `inr-codecs bench`'s
# default), except the time-lapse, kept whole in time (30 frames) and cut into 256x256 tiles.
CHUNKS = {"timelapse2d": "30,256,256"}


def report(volumes) -> None:
    all_results = []
    for v in volumes:
        if not os.path.exists(os.path.join(RESULTS, f"rd_{v}.json")):
            continue
        res = rd.read_json(os.path.join(RESULTS, f"rd_{v}.json"))
        plots.rd_plot(res, os.path.join(IMG, f"rd_{v}.png"))
        shown = [(r["codec"], MONTAGE_RATIO) for r in res["runs"]
                 if r["ratio_requested"] == MONTAGE_RATIO and "psnr_db" in r]
        if all(k in res.get("slices", {}) for k in shown):   # slices: beside the JSON, not committed
            plots.montage(res, os.path.join(IMG, f"montage_{v}.png"), MONTAGE_RATIO)
        else:
            print(f"montage_{v}.png kept: the decoded slices of some codecs are not at hand")
        all_results.append(res)
    parts = ["### Each inr-codecs codec against the best classical codecs (PSNR dB)\n", rd.best_table(all_results)]
    for res in all_results:
        m, s = res["machine"], res["settings"]
        parts += [f"\n### {s['volume']}: {'×'.join(map(str, s['shape']))} {s['dtype']}, chunks "
                  f"{'×'.join(map(str, s['chunks']))}\n",
                  f"Measured {res['date']} on {m['processor']}, {m['cpus']} CPUs ({m['platform']}); "
                  f"INR codecs at {s['steps']} fitting steps on {m.get('device', 'cpu')}.\n\n",
                  rd.table_markdown(res)]
    os.makedirs(os.path.dirname(TABLE), exist_ok=True)
    with open(TABLE, "w") as f:
        f.write("".join(parts))
    print("".join(parts))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--volumes", nargs="+", default=list(DEFAULT_VOLUMES))
    ap.add_argument("--ratios", nargs="+", default=["64", "256", "1024"])
    ap.add_argument("--steps", default="300")
    ap.add_argument("--codecs", nargs="+", help="run only these codecs, keeping the other rows of the JSON")
    ap.add_argument("--report-only", action="store_true")
    a = ap.parse_args(argv)
    if not a.report_only:
        os.makedirs(IMG, exist_ok=True)
        for v in a.volumes:
            rd.main(["--ratios", *a.ratios, "--steps", a.steps, "--out", os.path.join(RESULTS, f"rd_{v}.json"),
                     *(["--chunks", CHUNKS[v]] if v in CHUNKS else []),
                     *(["--codecs", *a.codecs, "--update"] if a.codecs else []), v])
    # the table covers every volume with results, not only those run now
    report(list(dict.fromkeys([*DEFAULT_VOLUMES, *a.volumes])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
