"""Print benchmark JSON results as a Markdown table.

    python benchmarks/table.py benchmarks/results/siren_cpu_*.json
"""
import json
import sys


def rows(paths):
    for p in paths:
        with open(p) as f:
            res = json.load(f)
        for r in res["runs"]:
            yield r


def main(paths):
    print("| volume | ratio asked | weights | ratio achieved | PSNR dB | SSIM | max abs err | encode MB/s | decode MB/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows(paths):
        if "skipped" in r:
            print(f"| {r['volume']} | {r['ratio_requested']:g} | {r['encoding']} | cannot reach | | | | | |")
            continue
        print(f"| {r['volume']} | {r['ratio_requested']:g} | {r['encoding']} | {r['ratio_achieved']} | "
              f"{r['psnr_db']:.2f} | {r['ssim']:.3f} | {r['max_abs_error']:.0f} | {r['encode_MBps']:.3f} | "
              f"{r['decode_MBps']:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
