"""Rate-distortion benchmark: every inr-codecs codec against the classical codecs, at equal bytes.

    inr-codecs bench nuclei --ratios 64 256 1024 --out rd_nuclei.json --plot rd.png --montage m.png

The volume is cut into the same chunk grid for every codec (default: each axis halved, at most
128), as a Zarr user would store it. An INR codec writes a real Zarr v3 array with its
serializer at the requested ratio (its payloads never exceed ``chunk bytes / ratio``). A classical
codec encodes every chunk with one setting of its rate knob, searched so that the chunks' total
bytes are the largest that fit ``volume bytes / ratio`` (see :meth:`classical.Classical.steer`); the knob is
recorded, and a ratio the codec cannot reach is recorded as unreachable with the ratio its most
compressing setting gets. A codec that is not installed is recorded as skipped.

Reported per run: achieved ratio (raw bytes / stored bytes), PSNR (peak = max - min of the
original), SSIM (3D, scikit-image, same data range), max abs error, encode and decode MB/s of raw
data (the final encode only, not the knob search), and Acc(tau) for the thresholds given: the
fraction of voxels whose binarisation at tau agrees with the original's, as the SCI and TINC
papers report for sparse fluorescence data.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

from .. import registry
from ..sources import chunk_regions, parse_ints
from ..metrics import psnr, round_trip
from . import classical, results as schema



def inr_default() -> list[str]:
    """Every registered method at its defaults, and at its paper's settings where it has a preset."""
    return ([m.name for m in registry.codecs()]
            + [f"{m.name}:preset=paper" for m in registry.codecs() if m.codec.paper_settings is not None])

CLASSICAL_DEFAULT = tuple(classical.CODECS)


def parse_spec(spec: str) -> tuple[str, dict]:
    """``"sci:optimizer=adam,steps=300"`` -> ``("sci", {"optimizer": "adam", "steps": 300})``."""
    name, _, rest = spec.partition(":")
    cfg = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"codec option {item!r} in {spec!r} is not key=value")
        for kind in (int, float):
            try:
                value = kind(value)
                break
            except ValueError:
                pass
        else:
            value = {"true": True, "false": False, "none": None}.get(value.lower(), value)
        cfg[key.strip()] = value
    return name, cfg


def spec_label(spec: str) -> str:
    name, cfg = parse_spec(spec)
    if name in classical.CODECS:
        return classical.CODECS[name].label
    extra = ", ".join(("paper" if k == "preset" else f"{k}={v}") for k, v in cfg.items() if k != "steps")
    label = registry.get(name).label if name in registry.names() else name
    return label + (f" ({extra})" if extra else "")


def default_chunks(shape) -> tuple[int, ...]:
    """Each axis halved (rounded up), at most 128: a few chunks per volume, real per-chunk limits."""
    return tuple(min(128, -(-s // 2)) for s in shape)


def quality(vol, out, acc_thresholds=()) -> dict:
    """PSNR, 3D SSIM, max abs error and Acc(tau) of a decoded volume."""
    from skimage.metrics import structural_similarity
    x, y = vol.astype(np.float64), out.astype(np.float64)
    rng = float(x.max() - x.min())
    row = {"psnr_db": round(psnr(vol, out), 3),
           "ssim": round(float(structural_similarity(x, y, data_range=rng)), 4) if min(x.shape) >= 7 else None,
           "max_abs_error": float(np.max(np.abs(x - y)))}
    if acc_thresholds:
        row["acc"] = {str(t): round(float(np.mean((x > t) == (y > t))), 5) for t in acc_thresholds}
    return row


def run_inr(vol, chunks, ratio, spec, steps):
    """Write ``vol`` with an inr-codecs serializer to a temporary Zarr v3 array and read it back.
    A codec with networks shared per array fits them first (timed as encoding), and its stored
    bytes include the array's metadata file, which carries them."""
    from ..codec import BudgetError
    from ..pipeline import with_shared_networks
    from ..sources import open_source
    from ..zarr3 import serializer_for
    name, cfg = parse_spec(spec)
    cfg = {"steps": steps, **cfg}
    row = {"kind": "inr", "knob": {"ratio": ratio, **cfg}}
    try:
        serializer = serializer_for(registry.make(name, ratio, **cfg))
        serializer.codec.check_chunk(chunks, vol.dtype)
    except BudgetError as e:
        return {**row, "unreachable": str(e)}, None
    t = time.perf_counter()
    serializer = with_shared_networks(serializer, None, open_source(vol), chunks)
    networks_s = time.perf_counter() - t
    shared = getattr(serializer.codec, "networks", None) is not None
    with tempfile.TemporaryDirectory() as tmp:
        rt = round_trip(vol, os.path.join(tmp, "a.zarr"), chunks, serializer)
        metadata = os.path.getsize(os.path.join(tmp, "a.zarr", "zarr.json")) if shared else 0
    return {**row, "stored_bytes": rt.stored_bytes + metadata, "encode_s": rt.encode_s + networks_s,
            "decode_s": rt.decode_s, **({"metadata_bytes": metadata} if shared else {})}, rt.decoded


def run_classical(vol, chunks, ratio, name):
    codec = classical.CODECS[name]
    row = {"kind": "classical"}
    why = codec.missing()
    if why is None and vol.ndim not in codec.ndims:
        why = f"{codec.label} takes {' or '.join(map(str, codec.ndims))}-d arrays, not {vol.ndim}-d"
    if why:
        return {**row, "skipped": why}, None
    where = list(chunk_regions(vol.shape, chunks))
    pieces = [np.ascontiguousarray(vol[r]) for r in where]
    budget = int(vol.nbytes // ratio)
    try:
        knob, _, tries = codec.steer(pieces, budget)
    except classical.Unreachable as e:
        return {**row, "knob": {codec.knob: _plain(e.knob)}, "unreachable": str(e),
                "max_ratio": round(vol.nbytes / e.nbytes, 1)}, None
    except (ValueError, RuntimeError) as e:   # the library refused the data: report, go on
        return {**row, "skipped": f"{codec.label} failed: {e}"}, None
    t = time.perf_counter()
    data = [codec.encode(p, knob) for p in pieces]
    encode_s = time.perf_counter() - t
    out = np.empty_like(vol)
    t = time.perf_counter()
    for r, d, p in zip(where, data, pieces):
        out[r] = codec.decode(d, p.shape, vol.dtype)
    decode_s = time.perf_counter() - t
    return {**row, "knob": {codec.knob: _plain(knob)}, "knob_search_encodes": tries,
            "stored_bytes": sum(map(len, data)), "encode_s": encode_s, "decode_s": decode_s}, out


def _plain(k):
    if isinstance(k, tuple):
        return [int(v) for v in k]
    return round(float(k), 6) if isinstance(k, float) else k


def run(vol, name, ratios, specs, *, chunks=None, steps=300, acc_thresholds=(), out=None,
        update=None, command=None, log=print) -> dict:
    """Every codec spec at every ratio on ``vol``; returns (and, with ``out``, keeps writing) the
    results (:mod:`.results` schema, benchmark ``"rd"``; ``command``: the command line to record).
    Each decoded volume's middle slice along axis 0 is kept in ``results["slices"]`` (written
    beside the JSON, see :func:`write_json`) for :func:`plots.montage`. With ``update`` (earlier
    results of the same volume and settings) rows of the same codec and ratio are replaced and the
    others kept."""
    for spec in specs:   # a typo fails here, not after hours of fitting
        if parse_spec(spec)[0] not in (*registry.names(), *classical.CODECS):
            raise ValueError(f"unknown codec {parse_spec(spec)[0]!r}; available: "
                             f"{', '.join([*registry.names(), *classical.CODECS])}")
    chunks = tuple(chunks or default_chunks(vol.shape))
    if len(chunks) != vol.ndim:
        raise ValueError(f"chunks {chunks} have {len(chunks)} values but the volume has {vol.ndim} axes {vol.shape}")
    mb = vol.nbytes / 1e6
    settings = {"volume": name, "shape": list(vol.shape), "dtype": str(vol.dtype), "chunks": list(chunks),
                "steps": steps, "acc_thresholds": list(acc_thresholds)}
    results = schema.new("rd", settings, command)
    mid = vol.shape[0] // 2
    slices = {"original": np.array(vol[mid])}
    if update:
        for key in ("shape", "dtype", "chunks", "steps", "acc_thresholds"):
            before = update["settings"][key]
            if before != settings[key]:
                raise ValueError(f"cannot update results with {key}={before} using {key}={settings[key]}")
        results.update(machine=update["machine"], date=update["date"], command=update["command"],
                       updated=results["date"], runs=list(update["runs"]))
        slices.update(update.get("slices", {}))
    results["slices"] = slices
    for ratio in ratios:
        for spec in specs:
            t = time.perf_counter()
            cname = parse_spec(spec)[0]
            if cname in classical.CODECS:
                row, dec = run_classical(vol, chunks, ratio, cname)
            else:
                row, dec = run_inr(vol, chunks, ratio, spec, steps)
            row = {"codec": spec, "label": spec_label(spec), "ratio_requested": ratio, **row}
            if dec is not None:
                row["ratio_achieved"] = round(vol.nbytes / row["stored_bytes"], 2)
                row.update(quality(vol, dec, acc_thresholds))
                row["encode_MBps"] = round(mb / row.pop("encode_s"), 4)
                row["decode_MBps"] = round(mb / row.pop("decode_s"), 3)
                slices[(spec, ratio)] = np.array(dec[mid])
            else:
                slices.pop((spec, ratio), None)
            row["wall_s"] = round(time.perf_counter() - t, 1)
            same = [i for i, r in enumerate(results["runs"]) if (r["codec"], r["ratio_requested"]) == (spec, ratio)]
            if same:
                results["runs"][same[0]] = row
            else:
                results["runs"].append(row)
            log(json.dumps(row))
            if out:
                write_json(results, out)
    return results


def _slices_path(path):
    return os.path.splitext(path)[0] + ".slices.npz"


def write_json(results, path) -> None:
    """The results as JSON at ``path`` (:func:`.results.write`) and the kept slices beside it
    (``<name>.slices.npz``)."""
    schema.write({k: v for k, v in results.items() if k != "slices"}, path)
    if results.get("slices"):
        keys = {"|".join(map(str, k)) if isinstance(k, tuple) else k: v for k, v in results["slices"].items()}
        np.savez_compressed(_slices_path(path) + ".tmp.npz", **keys)
        os.replace(_slices_path(path) + ".tmp.npz", _slices_path(path))


def read_json(path) -> dict:
    """Results written by :func:`write_json` (validated), with their slices when the .npz is there."""
    results = schema.read(path)
    if os.path.exists(_slices_path(path)):
        with np.load(_slices_path(path)) as z:
            ratios = {str(r["ratio_requested"]): r["ratio_requested"] for r in results["runs"]}
            results["slices"] = {k if k == "original" else (k.rsplit("|", 1)[0], ratios[k.rsplit("|", 1)[1]]): z[k]
                                 for k in z.files}
    return results


def _fmt(row, key, digits=2):
    v = row.get(key)
    return "–" if v is None else f"{v:.{digits}f}"


def table_markdown(results: dict) -> str:
    """The runs of one volume as a markdown table, best PSNR first within each ratio."""
    thresholds = results["settings"].get("acc_thresholds") or []
    head = ["ratio", "codec", "achieved", "PSNR dB", "SSIM", "max err", *[f"Acc({t})" for t in thresholds],
            "enc MB/s", "dec MB/s", "knob"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by_ratio = {}
    for r in results["runs"]:
        by_ratio.setdefault(r["ratio_requested"], []).append(r)
    for ratio, rows in by_ratio.items():
        rows = sorted(rows, key=lambda r: -(r.get("psnr_db") or -1e9))
        for r in rows:
            knob = ", ".join(f"{k}={v}" for k, v in (r.get("knob") or {}).items() if k != "ratio")
            if "psnr_db" in r:
                cells = [f"{r['ratio_achieved']:.1f}×", _fmt(r, "psnr_db"), _fmt(r, "ssim", 4),
                         f"{r['max_abs_error']:.0f}",
                         *[f"{r['acc'][str(t)]:.4f}" for t in thresholds],
                         _fmt(r, "encode_MBps", 3), _fmt(r, "decode_MBps", 2), knob]
            else:
                why = ("skipped" if "skipped" in r else
                       f"max {r['max_ratio']}×" if "max_ratio" in r else "unreachable")
                cells = [why] + ["–"] * (len(head) - 4) + [knob]
            lines.append("| " + " | ".join([f"{ratio}×", r["label"], *cells]) + " |")
    return "\n".join(lines) + "\n"


def best_table(all_results: list[dict]) -> str:
    """Each inr-codecs codec against the best classical codec, per volume and ratio (PSNR dB)."""
    inr_labels = []
    for res in all_results:
        for r in res["runs"]:
            if r["kind"] == "inr" and r["label"] not in inr_labels:
                inr_labels.append(r["label"])
    head = ["volume", "ratio", *inr_labels, "best classical", "PSNR dB", "2nd classical", "PSNR dB "]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for res in all_results:
        ratios = list(dict.fromkeys(r["ratio_requested"] for r in res["runs"]))
        for ratio in ratios:
            rows = [r for r in res["runs"] if r["ratio_requested"] == ratio]
            inr = {r["label"]: r for r in rows if r["kind"] == "inr"}
            cls = sorted((r for r in rows if r["kind"] == "classical" and "psnr_db" in r),
                         key=lambda r: -r["psnr_db"])[:2]
            cells = [_fmt(inr.get(lab, {}), "psnr_db") for lab in inr_labels]
            for r in cls:
                cells += [r["label"], _fmt(r, "psnr_db")]
            cells += ["–"] * (len(head) - 2 - len(cells))
            lines.append("| " + " | ".join([res["settings"]["volume"], f"{ratio}×", *cells]) + " |")
    return "\n".join(lines) + "\n"


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="inr-codecs bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("volume", help="a sample volume name (inr_codecs.datasets) or a .npy/.tif/.nii/Zarr path")
    p.add_argument("--ratios", type=float, nargs="+", default=[64, 256, 1024])
    p.add_argument("--codecs", nargs="+", default=[*inr_default(), *CLASSICAL_DEFAULT],
                   help="codec specs: inr-codecs names with options (sci:optimizer=adam,w0=30) and "
                        f"classical names ({', '.join(classical.CODECS)}); 'inr' and 'classical' expand "
                        "to the default sets")
    p.add_argument("--steps", type=int, default=300, help="fitting steps of the INR codecs (default 300)")
    p.add_argument("--chunks", help="chunk shape, e.g. 30,128,128 (default: each axis halved, <= 128)")
    p.add_argument("--acc", type=float, nargs="*", default=None,
                   help="thresholds tau for Acc(tau) (default: the sample volume's own, if any)")
    p.add_argument("--out", default="rd.json", help="JSON results (rewritten after every run)")
    p.add_argument("--plot", help="rate-distortion plot PNG")
    p.add_argument("--montage", help="slice montage PNG (original, each codec, error maps)")
    p.add_argument("--montage-ratio", type=float, help="ratio shown in the montage (default: the middle one)")
    p.add_argument("--update", action="store_true",
                   help="keep the other rows of an existing --out file (same volume and settings), "
                        "replacing those of the codecs and ratios run now")
    return p


def expand(codecs) -> list[str]:
    out = []
    for c in codecs:
        out += {"inr": inr_default(), "classical": list(CLASSICAL_DEFAULT)}.get(c, [c])
    return out


def load_volume(spec: str):
    """A sample volume by name (with its default Acc thresholds) or an array read from a path."""
    from .. import datasets
    if spec in datasets.VOLUMES:
        return datasets.load(spec), spec, tuple(datasets.info(spec).acc_thresholds or ())
    from ..sources import read_source
    name = os.path.basename(spec.rstrip("/")).split(".")[0]
    return np.asarray(read_source(spec)[...]), name, ()


def main(argv=None, args=None) -> int:
    a = args or build_parser().parse_args(argv)
    vol, name, taus = load_volume(a.volume)
    if a.acc is not None:
        taus = tuple(a.acc)
    specs = expand(a.codecs)
    ratios = [int(r) if float(r).is_integer() else r for r in a.ratios]
    previous = read_json(a.out) if a.update and os.path.exists(a.out) else None
    res = run(vol, name, ratios, specs, chunks=parse_ints(a.chunks), steps=a.steps, acc_thresholds=taus, out=a.out,
              update=previous, command=schema.command_line(), log=lambda s: print(s, file=sys.stderr, flush=True))
    ratios = list(dict.fromkeys(r["ratio_requested"] for r in res["runs"]))
    print(table_markdown(res))
    from . import plots
    if a.plot:
        plots.rd_plot(res, a.plot)
    if a.montage:
        plots.montage(res, a.montage, a.montage_ratio or ratios[len(ratios) // 2])
    return 0
