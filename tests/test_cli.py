"""The inr-codecs command line: compress from each source format, info, export."""
import json
import subprocess
import sys

import numpy as np
import pytest
import zarr
from conftest import smooth_volume

from inr_codecs.cli import main

FAST = ["--steps", "12", "--bits", "8", "--device", "cpu"]


@pytest.fixture(scope="module")
def vol():
    return smooth_volume((16, 32, 32), "uint16")


def _sources(tmp_path, vol):
    import nibabel
    import tifffile
    np.save(tmp_path / "v.npy", vol)
    tifffile.imwrite(tmp_path / "v.tif", vol)
    nibabel.save(nibabel.Nifti1Image(vol, np.eye(4)), tmp_path / "v.nii.gz")
    z = zarr.create_array(str(tmp_path / "src.zarr"), shape=vol.shape, chunks=(8, 16, 16), dtype=vol.dtype)
    z[:] = vol
    return ["v.npy", "v.tif", "v.nii.gz", "src.zarr"]


def test_compress_every_source_format(tmp_path, vol, capsys):
    for i, src in enumerate(_sources(tmp_path, vol)):
        fmt = "2" if i % 2 else "3"
        target = str(tmp_path / f"out{i}.zarr")
        rc = main(["compress", str(tmp_path / src), target, "--ratio", "8", "--chunks", "16,32,32",
                   "--zarr-format", fmt, "--json", *FAST])
        assert rc == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["ratio_achieved"] >= 8 and summary["psnr_db"] > 10
        out = zarr.open_array(target, mode="r")
        assert out.shape == vol.shape and out.metadata.zarr_format == int(fmt)


def test_sharded_info_and_export(tmp_path, vol, capsys):
    np.save(tmp_path / "v.npy", vol)
    target = str(tmp_path / "s.zarr")
    assert main(["compress", str(tmp_path / "v.npy"), target, "--ratio", "4", "--chunks", "8,16,16",
                 "--shards", "16,32,32", "--no-verify", *FAST]) == 0
    capsys.readouterr()
    assert main(["info", target, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["codecs"][0]["name"] == "sharding_indexed" and info["ratio_achieved"] >= 4
    exported = str(tmp_path / "e.zarr")
    assert main(["export", target, exported]) == 0
    import tensorstore as ts
    got = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": exported}}).result().read().result()
    assert np.array_equal(got, zarr.open_array(target, mode="r")[:])


def test_info_summarises_payloads(tmp_path, vol, capsys):
    np.save(tmp_path / "v.npy", vol)
    target = str(tmp_path / "a.zarr")
    assert main(["compress", str(tmp_path / "v.npy"), target, "--ratio", "8", "--chunks", "16,16,16",
                 "--zarr-format", "2", "--no-verify", *FAST]) == 0
    capsys.readouterr()
    assert main(["info", target, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["payload_methods"] == {"siren": 4} and info["stored_files"] == 4
    assert set(info["siren_bits"]) == {"8"} and info["ratio_achieved"] >= 8
    exported = str(tmp_path / "e2.zarr")
    assert main(["export", target, exported, "--zarr-format", "2"]) == 0
    import tensorstore as ts
    got = ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": exported}}).result().read().result()
    assert np.array_equal(got, zarr.open_array(target, mode="r")[:])


def test_errors_are_clear_and_nothing_is_overwritten(tmp_path, vol, capsys):
    np.save(tmp_path / "v.npy", vol)
    target = tmp_path / "a.zarr"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    assert main(["compress", str(tmp_path / "v.npy"), str(target), "--ratio", "8", *FAST]) == 2
    assert "exists" in capsys.readouterr().err and (target / "keep.txt").read_text() == "mine"
    assert main(["compress", str(tmp_path / "v.npy"), str(tmp_path / "b.zarr"), "--ratio", "4096", *FAST]) == 2
    assert "ratio 4096" in capsys.readouterr().err and not (tmp_path / "b.zarr").exists()
    assert main(["compress", str(tmp_path / "v.npy"), str(tmp_path / "c.zarr"), "--ratio", "8",
                 "--chunks", "8,8", *FAST]) == 2
    assert "--chunks" in capsys.readouterr().err


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "inr_codecs.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "compress" in out.stdout
