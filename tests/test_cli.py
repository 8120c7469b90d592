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


def _compress_then_info(tmp_path, vol, capsys, *args):
    """Compress ``vol`` with the CLI, then return the target and ``info --json`` of it."""
    np.save(tmp_path / "v.npy", vol)
    target = str(tmp_path / "a.zarr")
    assert main(["compress", str(tmp_path / "v.npy"), target, "--no-verify", *args, *FAST]) == 0
    capsys.readouterr()
    assert main(["info", target, "--json"]) == 0
    return target, json.loads(capsys.readouterr().out)


def _export_matches(tmp_path, target, fmt):
    """``export`` writes a zstd array that tensorstore reads back equal to the decoded source."""
    import tensorstore as ts
    exported = str(tmp_path / "e.zarr")
    assert main(["export", target, exported, "--zarr-format", str(fmt)]) == 0
    driver = "zarr3" if fmt == 3 else "zarr"
    got = ts.open({"driver": driver, "kvstore": {"driver": "file", "path": exported}}).result().read().result()
    assert np.array_equal(got, zarr.open_array(target, mode="r")[:])


def test_sharded_info_and_export(tmp_path, vol, capsys):
    target, info = _compress_then_info(tmp_path, vol, capsys, "--ratio", "4", "--chunks", "8,16,16",
                                       "--shards", "16,32,32")
    assert info["codecs"][0]["name"] == "sharding_indexed"
    # 8 inner chunks, each payload <= its bytes / 4; the shard index adds 16 bytes a chunk + crc32c
    assert info["stored_bytes"] <= vol.nbytes // 4 + 8 * 16 + 4
    _export_matches(tmp_path, target, 3)


def test_info_summarises_payloads(tmp_path, vol, capsys):
    target, info = _compress_then_info(tmp_path, vol, capsys, "--ratio", "8", "--chunks", "16,16,16",
                                       "--zarr-format", "2")
    assert info["payload_methods"] == {"siren": 4} and info["stored_files"] == 4
    assert set(info["payload_fields"]["siren"]["bits"]) == {"8"} and info["ratio_achieved"] >= 8
    _export_matches(tmp_path, target, 2)


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


def test_cli_lists_every_method():
    from inr_codecs import cli, registry
    choices = next(a for a in cli.build_parser()._subparsers._group_actions[0].choices["compress"]._actions
                   if a.dest == "codec").choices
    assert list(choices) == registry.names() == ["siren", "sci", "latent_grid"]


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "inr_codecs.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "compress" in out.stdout


def test_sci_compress_and_info(tmp_path, capsys):
    x = smooth_volume((16, 32, 32), "uint16")
    _, info = _compress_then_info(tmp_path, x, capsys, "--codec", "sci", "--ratio", "4",
                                  "--chunks", "16,32,32", "--zarr-format", "2")
    assert info["payload_methods"] == {"sci": 1} and info["ratio_achieved"] >= 4
    assert info["compressor"]["id"] == "inr_codecs.sci" and sum(info["payload_fields"]["sci"]["blocks"].values()) == 1


def test_compress_ome_and_resume(tmp_path, capsys):
    """``compress --ome`` writes an OME-NGFF 0.5 pyramid, a ratio per level; the same command
    again resumes and fits nothing."""
    pytest.importorskip("ome_zarr")
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader
    x = smooth_volume((16, 64, 64), "uint16")
    np.save(tmp_path / "v.npy", x)
    cmd = ["compress", str(tmp_path / "v.npy"), str(tmp_path / "o.zarr"), "--ome", "--levels", "2",
           "--ratios", "8,4", "--chunks", "16,32,32", "--json", "--no-progress", *FAST]
    assert main(cmd) == 0
    levels = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [lv["level"] for lv in levels] == [0, 1] and [lv["ratio_requested"] for lv in levels] == [8, 4]
    assert all(lv["ratio_achieved"] >= lv["ratio_requested"] for lv in levels)
    node = next(iter(Reader(parse_url(str(tmp_path / "o.zarr")))()))
    assert [tuple(d.shape) for d in node.data] == [(16, 64, 64), (8, 32, 32)]
    assert main(cmd) == 0
    again = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [lv["chunks_encoded"] for lv in again] == [0, 0]


def test_sci_paper_preset_and_options(tmp_path, capsys):
    """``--preset paper`` starts from SCI's paper settings; ``--option`` sets any other parameter
    and the codec itself refuses what it does not take."""
    x = smooth_volume((16, 32, 32), "uint16")
    _, info = _compress_then_info(tmp_path, x, capsys, "--codec", "sci", "--preset", "paper", "--ratio", "4",
                                  "--chunks", "16,32,32", "--zarr-format", "2", "--option", "a_max=8",
                                  "--option", "deblock=off")
    cfg = info["compressor"]
    assert (cfg["optimizer"], cfg["partition"], cfg["a_max"], cfg["deblock"]) == ("adamax", "adaptive", 8, "off")
    assert sum(info["payload_fields"]["sci"]["blocks"].values()) == 1
    np.save(tmp_path / "x.npy", x)
    assert main(["compress", str(tmp_path / "x.npy"), str(tmp_path / "y.zarr"), "--ratio", "4",
                 "--option", "partition=adaptive", *FAST]) == 2          # SIRENCodec has no partition
    assert "unexpected keyword argument(s) 'partition'" in capsys.readouterr().err


def test_latent_grid_psnr_mode_and_info(tmp_path, vol, capsys):
    np.save(tmp_path / "v.npy", vol)
    target = str(tmp_path / "a.zarr")
    assert main(["compress", str(tmp_path / "v.npy"), target, "--codec", "latent_grid", "--psnr", "25",
                 "--ratio", "4", "--chunks", "16,32,32", "--json", *FAST]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (out["psnr_requested"], out["ratio_requested"]) == (25, 4) and out["ratio_achieved"] >= 4
    assert main(["info", target, "--json"]) == 0
    (config,) = [c["configuration"] for c in json.loads(capsys.readouterr().out)["codecs"]
                 if c["name"] == "inr_codecs.latent_grid"]
    assert (config["psnr"], config["ratio"]) == (25, 4)
    assert main(["compress", str(tmp_path / "v.npy"), str(tmp_path / "b.zarr"), "--psnr", "25", *FAST]) == 2
    assert "psnr" in capsys.readouterr().err and not (tmp_path / "b.zarr").exists()
