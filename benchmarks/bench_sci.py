"""SCICodec against SIRENCodec at equal bytes and equal steps, and the paper's ablations, as JSON.

    python benchmarks/bench_sci.py --volumes nuclei --steps 300 --out benchmarks/results/sci_cpu_nuclei.json

Each run writes the whole volume to a local Zarr v3 array (chunks --chunks, default one chunk per
128x128 tile of half the slices) and reads it back (see ``bench_siren.run_one`` for the measures).
Variants (paper Table 2 names): ``siren`` (SIRENCodec: one SIREN per chunk, fr = 1, Adam; ``siren_adamax``),
``sci`` (SCICodec with the paper's settings, ``SCICodec.paper_settings``: adaptive partition,
fr = 2.2, |x|/D allocation, Adamax), ``sci_adam`` (the same with Adam), ``NP`` (no partition), ``EP`` (equidistant
partition), ``fr1`` (fr = 1), ``equal``, ``size``, ``d`` (allocation rules), ``sci_a8``
(a_max = 8: the partition where the budget-derived a_max gives none), ``no_deblock`` and
``NP_adam``, each a change of the paper's settings; ``default`` is ``SCICodec``'s own defaults
(files written before the defaults changed ran ``sci`` as the then default, the same
settings). ``--one-chunk`` crops each volume to one chunk at its centre (for step studies).
"""
from __future__ import annotations

import itertools

from bench_siren import parser, record, run_one

from inr_codecs import BudgetError, SCICodec
from inr_codecs.bench import results as schema
from inr_codecs.datasets import load
from inr_codecs.zarr3 import SCISerializer, SIRENSerializer

PAPER = SCICodec.paper_settings      # the paper's settings; every ablation changes one of them

VARIANTS = {
    "siren": (SIRENSerializer, {}),
    "siren_adamax": (SIRENSerializer, {"optimizer": "adamax"}),
    "sci": (SCISerializer, PAPER),
    "sci_adam": (SCISerializer, {**PAPER, "optimizer": "adam"}),
    "NP": (SCISerializer, {**PAPER, "partition": "none"}),
    "EP": (SCISerializer, {**PAPER, "partition": "equidistant"}),
    "fr1": (SCISerializer, {**PAPER, "fr": 1.0}),
    "equal": (SCISerializer, {**PAPER, "allocation": "equal"}),
    "size": (SCISerializer, {**PAPER, "allocation": "size"}),
    "d": (SCISerializer, {**PAPER, "allocation": "d"}),
    "sci_a8": (SCISerializer, {**PAPER, "a_max": 8}),
    "NP_adam": (SCISerializer, {**PAPER, "partition": "none", "optimizer": "adam"}),
    "no_deblock": (SCISerializer, {**PAPER, "deblock": "off"}),
    "default": (SCISerializer, {}),
}

#: Variants that differ from ``sci`` only in how blocks are chosen, funded or filtered.
ONE_BLOCK_SAME_AS_SCI = ("NP", "EP", "equal", "size", "d", "no_deblock", "sci_a8")


def blocks_per_chunk(vol, chunks, ratio, cfg) -> int | None:
    """Blocks SCI's partition gives the first chunk (None for SIREN). Raises BudgetError."""
    if cfg[0] is not SCISerializer:
        return None
    codec = SCICodec(ratio, **cfg[1])
    codec.check_chunk(chunks, vol.dtype)
    x = vol[tuple(slice(0, c) for c in chunks)]
    return len(codec.plan(x, float(x.min()), float(x.max())).blocks) if x.min() < x.max() else 1


def main(argv=None):
    ap = parser(__doc__)
    ap.add_argument("--chunks", nargs=3, type=int, help="default: (z/2, 128, 128) of each volume")
    ap.add_argument("--steps", type=int, nargs="+", default=[300], help="one or more step counts")
    ap.add_argument("--variants", nargs="+", default=[v for v in VARIANTS if v not in ("NP_adam", "siren_adamax")],
                    choices=list(VARIANTS))
    ap.add_argument("--one-chunk", action="store_true", help="use only the chunk at the volume's centre")
    ap.add_argument("--out", default="benchmarks/results/sci.json")
    a = ap.parse_args(argv)
    results = schema.new("sci", {"volumes": a.volumes, "ratios": a.ratios, "chunks": a.chunks, "steps": a.steps,
                                 "variants": a.variants, "one_chunk": a.one_chunk}, schema.command_line())
    for name in a.volumes:
        vol = load(name)
        chunks = tuple(a.chunks) if a.chunks else (-(-vol.shape[0] // 2), 128, 128)
        if a.one_chunk:
            vol = vol[tuple(slice((n - c) // 2, (n - c) // 2 + c) for n, c in zip(vol.shape, chunks))]
        sci_blocks = {}   # blocks the default SCI gives a chunk, per ratio (None: refused)
        for ratio in a.ratios:
            try:
                sci_blocks[ratio] = blocks_per_chunk(vol, chunks, ratio, VARIANTS["sci"])
            except BudgetError:
                sci_blocks[ratio] = None
        for ratio, steps, label in itertools.product(a.ratios, a.steps, a.variants):
            ser, cfg = VARIANTS[label]
            cfg = {"steps": steps, **cfg}
            row = {"volume": name, "shape": list(vol.shape), "dtype": str(vol.dtype), "chunks": list(chunks),
                   "ratio_requested": ratio, "variant": label, "codec": ser.codec_cls.codec_id, "config": cfg}
            try:
                row["blocks_per_chunk"] = blocks = blocks_per_chunk(vol, chunks, ratio, (ser, cfg))
                if label in ONE_BLOCK_SAME_AS_SCI and blocks == sci_blocks[ratio] == 1:
                    row["same_as"] = "sci"   # both one block: the variant's knob has no effect
                elif label == "sci_a8" and (sci_blocks[ratio] or 0) > 1:
                    row["same_as"] = "sci"   # run only where the default a_max gives no partition
                else:
                    row.update(run_one(vol, chunks, ratio, serializer=ser, **cfg))
            except BudgetError as e:
                row["skipped"] = str(e)
            record(results, row, a.out)


if __name__ == "__main__":
    main()
