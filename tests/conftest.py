import pathlib

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

DATA = pathlib.Path(__file__).parent / "data"

settings.register_profile("ci", max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")


@pytest.fixture(scope="session")
def nuclei_crop():
    """Real confocal data: uint16 (16, 64, 64)."""
    return np.load(DATA / "nuclei_16x64x64.npy")


def fast_codec(ratio=8, **kw):
    """A SIREN codec with few steps and a fixed bit depth: tests check properties, not quality."""
    from inr_codecs import SIRENCodec
    kw.setdefault("steps", 12)
    kw.setdefault("bits", 8)
    kw.setdefault("device", "cpu")
    return SIRENCodec(ratio, **kw)


def fast_sci(ratio=8, **kw):
    """An SCI codec with few steps (Adam: it gets somewhere in tens of steps, Adamax does not)."""
    from inr_codecs import SCICodec
    kw.setdefault("steps", 12)
    kw.setdefault("optimizer", "adam")
    kw.setdefault("device", "cpu")
    return SCICodec(ratio, **kw)


def fast_serializer(ratio=8, **kw):
    """The Zarr v3 counterpart of :func:`fast_codec` (same configuration)."""
    from inr_codecs.zarr3 import SIRENSerializer
    cfg = fast_codec(ratio, **kw).get_config()
    return SIRENSerializer(**{k: v for k, v in cfg.items() if k != "id"})


def smooth_volume(shape, dtype, seed=0):
    """A smooth random field scaled into the dtype's range (a stand-in with structure)."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij")
    f = sum(np.sin(2 * np.pi * (rng.uniform(0.5, 2) * g + rng.uniform())) for g in grids)
    f = (f - f.min()) / (np.ptp(f) or 1)
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        lo, hi = max(info.min, -30000), min(info.max, 60000)
        return (lo + f * (hi - lo)).round().astype(dt)
    return (f * 200 - 50).astype(dt)
