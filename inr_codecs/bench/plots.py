"""Figures of a benchmark run: rate-distortion curves and a slice montage (matplotlib, PNG)."""
from __future__ import annotations

import numpy as np


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def rd_plot(results: dict, path: str) -> None:
    """PSNR and SSIM against achieved ratio, one line per codec; inr-codecs solid, classical dashed."""
    plt = _pyplot()
    settings = results["settings"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    curves = {}
    for r in results["runs"]:
        if "psnr_db" in r:
            curves.setdefault((r["kind"], r["label"]), []).append(r)
    colours = plt.get_cmap("tab20").colors
    for i, ((kind, label), rows) in enumerate(curves.items()):
        rows.sort(key=lambda r: r["ratio_achieved"])
        style = dict(ls="-", lw=2.2, marker="o") if kind == "inr" else dict(ls="--", lw=1.2, marker="s", ms=4)
        style["color"] = colours[(2 * i) % 20 + (2 * i) // 20]
        x = [r["ratio_achieved"] for r in rows]
        axes[0].plot(x, [r["psnr_db"] for r in rows], label=label, **style)
        if all(r.get("ssim") is not None for r in rows):
            axes[1].plot(x, [r["ssim"] for r in rows], label=label, **style)
    shape = "×".join(map(str, settings["shape"]))
    for ax, what in zip(axes, ("PSNR (dB, peak = max − min)", "SSIM (3D)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("compression ratio (raw bytes / stored bytes)")
        ax.set_ylabel(what)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7.5, loc="center left", bbox_to_anchor=(1.02, 0.5))
    title = f"{settings['volume']} ({shape} {settings['dtype']}, chunks {'×'.join(map(str, settings['chunks']))})"
    if any(kind == "inr" for kind, _ in curves):
        title += f"; INR codecs at {settings['steps']} steps on {results['machine'].get('device', 'cpu')}"
    fig.suptitle(title, fontsize=9.5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def montage(results: dict, path: str, ratio) -> None:
    """The middle slice (axis 0): original and each codec at ``ratio`` (top), |error| (bottom)."""
    plt = _pyplot()
    slices = results["slices"]
    orig = slices["original"].astype(np.float64)
    rows = [r for r in results["runs"] if r["ratio_requested"] == ratio and (r["codec"], ratio) in slices]
    rows.sort(key=lambda r: -r["psnr_db"])
    n = len(rows) + 1
    fig, axes = plt.subplots(2, n, figsize=(2.1 * n, 4.6), squeeze=False)
    lo, hi = np.percentile(orig, [0.5, 99.8])
    errs = [np.abs(slices[(r["codec"], ratio)].astype(np.float64) - orig) for r in rows]
    # one error scale for all: the median codec's 99.5th percentile, so one bad codec does not wash out the rest
    emax = float(np.median([np.percentile(e, 99.5) for e in errs])) if errs else 1.0
    axes[0, 0].imshow(orig, cmap="gray", vmin=lo, vmax=hi)
    axes[0, 0].set_title("original", fontsize=8)
    for j, (r, e) in enumerate(zip(rows, errs), start=1):
        axes[0, j].imshow(slices[(r["codec"], ratio)], cmap="gray", vmin=lo, vmax=hi)
        axes[0, j].set_title(f"{r['label']}\n{r['ratio_achieved']:.0f}×, {r['psnr_db']:.1f} dB", fontsize=7)
        im = axes[1, j].imshow(e, cmap="magma", vmin=0, vmax=emax)
    for ax in axes.ravel():
        ax.set_axis_off()
    if rows:
        fig.colorbar(im, ax=axes[1, 0], fraction=0.9, label="|error|")
    fig.suptitle(f"{results['settings']['volume']}: middle slice at {ratio}× requested", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
