"""Print benchmark JSON results as a Markdown table, one row per run, labelled by file.

    python benchmarks/table.py benchmarks/results/siren_cpu_*.json
"""
import os
import sys

from inr_codecs.bench import results as schema


def main(paths):
    print("| results file | volume | ratio asked | weights | bits | ratio achieved | PSNR dB | SSIM | max abs err "
          "| encode MB/s | decode MB/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for p in paths:
        runs = schema.read(p)["runs"]
        name = os.path.splitext(os.path.basename(p))[0]
        for r in runs:
            bits = "-" if r["encoding"] == "float16" else r.get("bits", "default")
            head = f"| {name} | {r['volume']} | {r['ratio_requested']:g} | {r['encoding']} | {bits} |"
            if "skipped" in r:
                print(head + " refused | | | | | |")
                continue
            print(head + f" {r['ratio_achieved']} | {r['psnr_db']:.2f} | {r['ssim']:.3f} | "
                  f"{r['max_abs_error']:.0f} | {r['encode_MBps']:.3f} | {r['decode_MBps']:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
