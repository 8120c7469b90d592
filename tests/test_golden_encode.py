"""Encoding is pinned: fixed chunks and settings give exactly the payload bytes recorded in
tests/data/encode_v1 (written before the method registry and fitting engine were restructured),
on CPU with the torch version recorded there. Covers every fitting path: full-grid and sampled
SIREN, error sampling, both early stops, the bit-depth search, float16, a 2-D chunk, batches,
a learned initialisation, and SCI's adaptive / equidistant / no partition, float16 and batches."""
import hashlib
import json

import numcodecs
import numpy as np
import pytest
from conftest import DATA

torch = pytest.importorskip("torch")
GOLDEN = DATA / "encode_v1"
MANIFEST = json.loads((GOLDEN / "manifest.json").read_text())
pytestmark = pytest.mark.skipif(torch.__version__ != MANIFEST["torch"],
                                reason=f"payload bytes are pinned for torch {MANIFEST['torch']}")


def _inputs():
    crop = np.load(DATA / "nuclei_16x64x64.npy")
    return {
        "u2_16x64x64": crop,
        "u2_8x32x32": crop[4:12, 16:48, 16:48],
        "i2_16x32x32": (crop[:, :32, :32].astype(np.int32) - 20000).clip(-32768, 32767).astype(np.int16),
        "f4_8x32x32": (crop[:8, 32:, 32:] / 1000).astype(np.float32),
        "u1_64x64": (crop[8] >> 8).astype(np.uint8),
        "pair_u2_8x32x32": np.stack([crop[:8, :32, :32], crop[8:, 32:, 32:]]),
    }


@pytest.mark.parametrize("case", sorted(MANIFEST["cases"]))
def test_payload_bytes_unchanged(case):
    import inr_codecs  # noqa: F401  (registers the codecs with numcodecs)
    spec = MANIFEST["cases"][case]
    codec = numcodecs.get_codec(dict(spec["config"]))
    x = _inputs()[spec["input"]]
    if spec["input"].startswith("pair_"):
        init = codec.learn_init(list(x), rounds=2, inner_steps=5) if case == "siren_meta" else None
        payloads = [e.payload for e in codec.encode_batch(list(x), init=init)]
    else:
        payloads = [codec.encode(x)]
    got = [hashlib.sha256(p).hexdigest() for p in payloads]
    assert got == spec["payloads"], [len(p) for p in payloads]
    for i, p in enumerate(payloads):
        assert p == (GOLDEN / f"{case}_{i}.bin").read_bytes()
