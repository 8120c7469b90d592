"""Table and rate-distortion plot of ``bench_sci.py`` results.

    python benchmarks/sci_report.py benchmarks/results/sci_cpu.json --plot benchmarks/results/sci_cpu_rd.png

Prints one Markdown table per volume: PSNR (dB) of each variant at each requested ratio, with the
difference to ``sci``; "= sci" where the variant is the same codec there (one block per chunk).
"""
from __future__ import annotations

import argparse

from inr_codecs.bench import results as schema

LINES = ("siren", "sci", "sci_adam", "NP", "fr1")   # variants drawn as curves; others as markers


def label_steps(runs):
    """Where a file holds several step counts, name variants ``variant@steps``."""
    if len({r["config"]["steps"] for r in runs}) > 1:
        runs = [{**r, "variant": f"{r['variant']}@{r['config']['steps']}"} for r in runs]
    return runs


def by_key(runs):
    return {(r["volume"], r["variant"], r["ratio_requested"]): r for r in runs}


def table(runs) -> str:
    idx = by_key(runs)
    out = []
    for vol in dict.fromkeys(r["volume"] for r in runs):
        ratios = sorted({r["ratio_requested"] for r in runs if r["volume"] == vol})
        variants = list(dict.fromkeys(r["variant"] for r in runs if r["volume"] == vol))
        out.append(f"**{vol}** (PSNR dB; blocks per chunk; Δ to sci)\n")
        out.append("| variant | " + " | ".join(f"{q:g}×" for q in ratios) + " |")
        out.append("|---|" + "---|" * len(ratios))
        for v in variants:
            cells = []
            for q in ratios:
                r, ref = idx.get((vol, v, q)), idx.get((vol, "sci", q))
                if r is None:
                    cells.append("")
                elif "same_as" in r:
                    cells.append("= sci")
                elif "skipped" in r:
                    cells.append("refused")
                else:
                    delta = "" if v == "sci" or ref is None or "psnr_db" not in ref else \
                        f" ({r['psnr_db'] - ref['psnr_db']:+.2f})"
                    blocks = "" if r.get("blocks_per_chunk") is None else f"; {r['blocks_per_chunk']}"
                    cells.append(f"{r['psnr_db']:.2f}{blocks}{delta}")
            out.append(f"| {v} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def speed(runs) -> str:
    out = ["| volume | variant | ratio | ratio achieved | encode MB/s | decode MB/s |", "|---|---|---|---|---|---|"]
    for r in runs:
        if "psnr_db" in r and r["variant"] in ("siren", "sci"):
            out.append(f"| {r['volume']} | {r['variant']} | {r['ratio_requested']:g} | {r['ratio_achieved']} | "
                       f"{r['encode_MBps']:.3f} | {r['decode_MBps']:.2f} |")
    return "\n".join(out)


def plot(runs, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    vols = list(dict.fromkeys(r["volume"] for r in runs))
    fig, axes = plt.subplots(1, len(vols), figsize=(6 * len(vols), 4.5), squeeze=False)
    idx = by_key(runs)
    for ax, vol in zip(axes[0], vols):
        # a variant that is the same codec as another at some ratio takes that run's point
        rows = [idx.get((vol, r["same_as"], r["ratio_requested"]), r) | {"variant": r["variant"]}
                if "same_as" in r else r for r in runs if r["volume"] == vol]
        rows = [r for r in rows if "psnr_db" in r]
        for v in dict.fromkeys(r["variant"] for r in rows):
            pts = sorted((r["ratio_achieved"], r["psnr_db"]) for r in rows if r["variant"] == v)
            style = "-o" if v.split("@")[0] in LINES else "x"
            ax.plot(*zip(*pts), style, label=v)
        ax.set_xscale("log")
        ax.set_xlabel("compression ratio achieved (raw / stored bytes)")
        ax.set_ylabel("PSNR dB (peak = max - min)")
        ax.set_title(f"{vol} {rows[0]['shape']} {rows[0]['dtype']}, chunks {rows[0]['chunks']}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results")
    ap.add_argument("--plot", help="write the rate-distortion plot here (PNG)")
    a = ap.parse_args(argv)
    data = schema.read(a.results)
    data["runs"] = label_steps(data["runs"])
    print(table(data["runs"]))
    print(speed(data["runs"]))
    if a.plot:
        plot(data["runs"], a.plot)


if __name__ == "__main__":
    main()
