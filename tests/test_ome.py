"""write_ome: OME-Zarr pyramids of INR-compressed levels, read back by ome-zarr-py in a fresh process."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import fast_codec, smooth_volume

pytest.importorskip("ome_zarr")
pytest.importorskip("dask.array")
zarr = pytest.importorskip("zarr")

from inr_codecs import BudgetError  # noqa: E402
from inr_codecs.metrics import psnr, stored_chunk_bytes  # noqa: E402
from inr_codecs.ome import _check_axes, _downsampled, level_shapes, max_levels, write_ome  # noqa: E402
from inr_codecs.sources import open_source  # noqa: E402
from inr_codecs.zarr_io import SettingsMismatch  # noqa: E402

SHAPE, CHUNKS, RATIOS = (16, 64, 64), (16, 32, 32), (8, 4)   # level 1: (8, 32, 32), one chunk
VERSIONS = ("0.4", "0.5")


def block_mean(vol, f):
    """Reference downsampling: mean over f x f x f blocks (excess trimmed), rounded to the dtype."""
    z, y, x = (s // f for s in vol.shape)
    m = vol[:z * f, :y * f, :x * f].astype(np.float64).reshape(z, f, y, f, x, f).mean(axis=(1, 3, 5))
    return np.round(m).astype(vol.dtype) if vol.dtype.kind in "iu" else m.astype(vol.dtype)


def _write(vol, path, ngff, **kw):
    kw = {"ratios": RATIOS, "levels": 2, "chunks": CHUNKS, "progress": False, **kw}
    return write_ome(vol, path, fast_codec(8), ngff=ngff, **kw)


@pytest.fixture(scope="module")
def volume():
    return smooth_volume(SHAPE, "uint16")


@pytest.fixture(scope="module")
def images(tmp_path_factory, volume):
    """Both NGFF versions written once: {ngff: (path, results)}."""
    root = tmp_path_factory.mktemp("ome")
    return {v: (str(root / f"img-{v}.ome.zarr"), _write(volume, str(root / f"img-{v}.ome.zarr"), v))
            for v in VERSIONS}


READER = r"""
import json, os, sys
import numpy as np
assert "inr_codecs" not in sys.modules
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader
out = {}
for ngff, path in json.loads(sys.argv[1]).items():
    node = list(Reader(parse_url(path))())[0]
    levels = [np.asarray(d.compute()) for d in node.data]
    for i, a in enumerate(levels):
        np.save(os.path.join(sys.argv[2], f"{ngff}-{i}.npy"), a)
    out[ngff] = {"axes": node.metadata["axes"], "transforms": node.metadata["coordinateTransformations"],
                 "shapes": [list(a.shape) for a in levels], "dtypes": [str(a.dtype) for a in levels]}
print(json.dumps(out))
"""


def test_read_back_by_ome_zarr_in_fresh_process(images, volume, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    paths = {v: p for v, (p, _) in images.items()}
    run = subprocess.run([sys.executable, "-c", READER, json.dumps(paths), str(tmp_path)], capture_output=True,
                         text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    refs = [volume, block_mean(volume, 2)]
    for v in VERSIONS:
        meta = got[v]
        assert [a["name"] for a in meta["axes"]] == ["z", "y", "x"]
        assert meta["transforms"] == [[{"type": "scale", "scale": [1.0, 1.0, 1.0]}],
                                      [{"type": "scale", "scale": [2.0, 2.0, 2.0]}]]
        assert meta["shapes"] == [list(SHAPE), [8, 32, 32]]
        assert meta["dtypes"] == ["uint16", "uint16"]
        for i, (ref, result) in enumerate(zip(refs, images[v][1])):
            dec = np.load(tmp_path / f"{v}-{i}.npy")
            p = psnr(ref, dec)
            assert np.isfinite(p) and p > 15, (v, i, p)
            assert p == pytest.approx(result.psnr, abs=0.01)     # what compress verified is what reads back


@pytest.mark.parametrize("ngff", VERSIONS)
def test_levels_carry_their_ratio(images, ngff):
    path, results = images[ngff]
    root = zarr.open_group(path, mode="r")
    assert root.metadata.zarr_format == {"0.4": 2, "0.5": 3}[ngff]
    for i, (r, result) in enumerate(zip(RATIOS, results)):
        arr = root[str(i)]
        if ngff == "0.4":
            codec = arr.metadata.compressor
            assert arr.metadata.dimension_separator == "/"
        else:
            (ser,) = arr.metadata.codecs
            codec = ser.codec
            assert arr.metadata.dimension_names == ("z", "y", "x")
        assert codec.ratio == r
        stored, files = stored_chunk_bytes(os.path.join(path, str(i)))
        achieved = arr.nbytes / stored
        assert r <= achieved <= 1.1 * r, (i, achieved)
        assert result.ratio == pytest.approx(achieved)
        assert result.chunks_encoded == len(files) == {0: 4, 1: 1}[i]
        assert result.chunks_skipped == 0


@pytest.mark.parametrize("ngff", VERSIONS)
def test_rerun_resumes(images, volume, tmp_path, ngff):
    path = str(tmp_path / "copy.ome.zarr")
    shutil.copytree(images[ngff][0], path)
    again = _write(volume, path, ngff)
    assert [r.chunks_encoded for r in again] == [0, 0]
    assert [r.chunks_skipped for r in again] == [4, 1]
    if ngff == "0.5":     # killed before level 1 and the metadata: resumes there
        shutil.rmtree(os.path.join(path, "1"))
        g = zarr.open_group(path, mode="r+")
        del g.attrs["ome"]
        again = _write(volume, path, ngff)
        assert [(r.chunks_encoded, r.chunks_skipped) for r in again] == [(0, 4), (1, 0)]
        assert zarr.open_group(path, mode="r").attrs["ome"]["multiscales"][0]["datasets"][1]["path"] == "1"


def test_different_settings_refused_unless_overwrite(images, volume, tmp_path):
    path = str(tmp_path / "copy.ome.zarr")
    shutil.copytree(images["0.5"][0], path)
    before = sorted(os.listdir(path))
    with pytest.raises(SettingsMismatch, match=r"different settings: ratios=\[8.0, 4.0\] \(asked \[8.0, 2.0\]\); "
                                               r"pass overwrite=True"):
        _write(volume, path, "0.5", ratios=(8, 2))
    with pytest.raises(ValueError, match=r"different settings: levels=2 \(asked 1\);"):
        _write(volume, path, "0.5", ratios=(8,), levels=1)
    with pytest.raises(ValueError, match="not a Zarr v2 group"):
        _write(volume, path, "0.4")
    assert sorted(os.listdir(path)) == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a Zarr v3 group|not written by write_ome"):
        _write(volume, str(other), "0.5")
    assert (other / "notes.txt").read_text() == "keep me"
    small = volume[:8, :32, :32]
    (res,) = write_ome(small, path, fast_codec(8), levels=1, chunks=(8, 32, 32), progress=False, overwrite=True)
    assert res.chunks_encoded == 1 and sorted(os.listdir(path)) == ["0", "zarr.json"]


def test_too_many_levels(volume, tmp_path):
    path = tmp_path / "x.ome.zarr"
    assert max_levels(SHAPE, "zyx") == 5        # 16 -> 8 -> 4 -> 2 -> 1
    with pytest.raises(ValueError, match="at most 5 levels"):
        write_ome(volume, str(path), fast_codec(8), levels=6, progress=False)
    assert not path.exists()


def test_budget_checked_for_every_level_before_writing(volume, tmp_path):
    path = tmp_path / "x.ome.zarr"
    with pytest.raises(BudgetError, match=r"level 1 \(shape \(8, 32, 32\).*ratio <= 28.8"):
        write_ome(volume, str(path), fast_codec(8), ratios=(8, 40), levels=2, chunks=CHUNKS, progress=False)
    assert not path.exists()


def test_bad_arguments(volume, tmp_path):
    path = str(tmp_path / "x.ome.zarr")
    with pytest.raises(ValueError, match="ngff"):
        write_ome(volume, path, fast_codec(8), ngff="0.3")
    with pytest.raises(ValueError, match="shards need ngff='0.5'"):
        write_ome(volume, path, fast_codec(8), ngff="0.4", shards=(16, 64, 64))
    with pytest.raises(ValueError, match="one value per level"):
        write_ome(volume, path, fast_codec(8), ratios=(8, 4, 2), levels=2)
    with pytest.raises(TypeError, match="sets zarr_format"):
        write_ome(volume, path, fast_codec(8), zarr_format=3)
    assert not os.path.exists(path)


def test_ngff_05_needs_format_v05(volume, tmp_path, monkeypatch):
    import ome_zarr.format
    monkeypatch.delattr(ome_zarr.format, "FormatV05")
    path = tmp_path / "x.ome.zarr"
    with pytest.raises(ImportError, match="OME-NGFF 0.5 needs ome-zarr >= 0.11"):
        write_ome(volume, str(path), fast_codec(8), ngff="0.5")
    assert not path.exists()


def test_axes():
    assert _check_axes(None, 2) == "yx" and _check_axes(None, 3) == "zyx"
    assert _check_axes(None, 4) == "czyx" and _check_axes(None, 5) == "tczyx"
    assert _check_axes("tzyx", 4) == "tzyx" and _check_axes(["c", "y", "x"], 3) == "cyx"
    for bad, ndim in [("xyz", 3), ("zyx", 4), ("tcz", 3), ("qyx", 3), ("yyx", 3)]:
        with pytest.raises(ValueError):
            _check_axes(bad, ndim)
    with pytest.raises(ValueError, match="2 to 5 axes"):
        _check_axes(None, 1)
    # only z, y and x shrink; t and c keep their size
    assert level_shapes((3, 2, 9, 20, 21), "tczyx", 3) == [(3, 2, 9, 20, 21), (3, 2, 4, 10, 10), (3, 2, 2, 5, 5)]
    assert level_shapes((5, 12, 40, 40), "tzyx", 2, downscale=3) == [(5, 12, 40, 40), (5, 4, 13, 13)]


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_downsampling_is_block_mean(dtype):
    vol = smooth_volume((9, 20, 22), dtype, seed=3)
    for f in (2, 4):
        got = _downsampled(open_source(vol), None, (f, f, f), (4, 8, 8), np.dtype(dtype)).compute()
        ref = block_mean(vol, f)
        assert got.dtype == vol.dtype and got.shape == ref.shape
        np.testing.assert_allclose(got.astype(np.float64), ref.astype(np.float64), rtol=1e-6)
        import dask.array as da     # a dask source is coarsened as it is chunked
        lazy = _downsampled(None, da.from_array(vol, chunks=(5, 7, 9)), (f, f, f), None, np.dtype(dtype))
        np.testing.assert_allclose(lazy.compute().astype(np.float64), ref.astype(np.float64), rtol=1e-6)
