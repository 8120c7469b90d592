"""The inr-codecs command line: compress from each source format, info, export."""
import json
import subprocess
import sys

import numpy as np
import pytest
import zarr
from conftest import fast_codec, fast_serializer, smooth_volume

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
    assert info["payload_methods"] == {"siren": 8} and info["complete"] is True    # inner payloads, read too
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
    assert main([*cmd[:cmd.index("--ratios") + 1], "8,2", *cmd[cmd.index("--ratios") + 2:]]) == 2
    err = capsys.readouterr().err
    assert "exists with different settings: --ratios 8,4 (asked 8,2); pass --overwrite" in err, err


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


def _small_v2(tmp_path, vol, capsys, name="a.zarr"):
    """``vol`` compressed by the CLI into 4 chunks of a Zarr v2 array (keys '0.0.0' ...)."""
    np.save(tmp_path / "v.npy", vol)
    target = tmp_path / name
    assert main(["compress", str(tmp_path / "v.npy"), str(target), "--ratio", "8", "--chunks", "16,16,16",
                 "--zarr-format", "2", "--no-progress", *FAST]) == 0
    capsys.readouterr()
    return target


def test_info_counts_unreadable_chunks_names_them_and_fails(tmp_path, vol, capsys):
    """A chunk whose header is intact but whose body is not, and one failing its checksum, are
    counted as unreadable (named by chunk and key) and info goes on, then exits 1; --check also
    decodes, catching a body whose fixed fields read but whose network does not."""
    from inr_codecs import payload
    target = _small_v2(tmp_path, vol, capsys)
    good = (target / "0.0.0").read_bytes()
    header, body = payload.unpack(good)
    (target / "0.0.1").write_bytes(payload.pack(header, b"\x00\x01\x02"))      # CRC-valid, body too short
    (target / "0.1.0").write_bytes(good[:-1] + bytes([good[-1] ^ 1]))         # checksum mismatch
    (target / "0.1.1").write_bytes(payload.pack(header, bytes(body[:-4])))     # network truncated
    assert main(["info", str(target), "--json"]) == 1
    out, err = capsys.readouterr()
    info = json.loads(out)
    assert (info["chunks_unreadable"], info["payload_methods"], info["complete"]) == (2, {"siren": 2}, True)
    assert [(u["chunk"], u["key"]) for u in info["unreadable"]] == [([0, 0, 1], "0.0.1"), ([0, 1, 0], "0.1.0")]
    assert "chunk (0, 0, 1) (key '0.0.1') is unreadable" in err and "2 of 4 chunks are unreadable" in err
    assert main(["info", str(target), "--json", "--check"]) == 1
    info = json.loads(capsys.readouterr().out)
    assert [u["key"] for u in info["unreadable"]] == ["0.0.1", "0.1.0", "0.1.1"]


def test_info_reports_an_interrupted_compress(tmp_path, vol, capsys):
    from inr_codecs import compress

    def stop(result):
        raise KeyboardInterrupt

    target = str(tmp_path / "i.zarr")
    with pytest.raises(KeyboardInterrupt):
        compress(vol, target, fast_codec(8), chunks=(16, 16, 16), batch=1, scheduler="sync", progress=False,
                 on_group=stop)
    assert main(["info", target, "--json"]) == 1
    out, err = capsys.readouterr()
    info = json.loads(out)
    assert (info["complete"], info["chunks_stored"], info["chunks_absent"]) == (False, 1, 3)
    assert len(info["absent"]) == 3
    assert "incomplete" in err and "3 of 4 chunks are missing or empty" in err and "rerun" in err
    assert main(["compress", str(_npy(tmp_path, vol)), target, "--ratio", "8", "--chunks", "16,16,16",
                 "--zarr-format", "2", "--batch", "1", "--no-progress", *FAST]) == 0
    capsys.readouterr()
    assert main(["info", target, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["complete"], info["chunks_stored"], info["chunks_absent"]) == (True, 4, 0)


def _npy(tmp_path, vol):
    np.save(tmp_path / "v.npy", vol)
    return tmp_path / "v.npy"


@pytest.mark.parametrize("shards", [None, (16, 32, 32)], ids=["unsharded", "sharded"])
def test_info_reads_payloads_zarr_wrapped_in_zstd(tmp_path, vol, capsys, shards):
    """A Zarr v3 array created without compressors=None stores zstd(payload): info reads the
    payloads through it and says what it costs and how to avoid it."""
    z = zarr.create_array(str(tmp_path / "w.zarr"), shape=vol.shape, chunks=(16, 16, 16), shards=shards,
                          dtype=vol.dtype, serializer=fast_serializer(8))
    z[:] = vol
    assert main(["info", str(tmp_path / "w.zarr"), "--json", "--check"]) == 0
    out, err = capsys.readouterr()
    info = json.loads(out)
    assert info["payload_methods"] == {"siren": 4} and info["chunks_unreadable"] == 0
    assert info["wrapped_in"] == ["zstd"] and "compressors=None" in info["note"] and "ceiling" in info["note"]
    assert "compressors=None" in err


def test_missing_extras_say_what_to_install_and_write_nothing(tmp_path, vol, capsys, monkeypatch):
    target = _small_v2(tmp_path, vol, capsys)
    monkeypatch.setitem(sys.modules, "tensorstore", None)
    assert main(["export", str(target), str(tmp_path / "e.zarr")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'inr-codecs[io]'" in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "e.zarr").exists()
    monkeypatch.setitem(sys.modules, "dask", None)
    assert main(["compress", str(tmp_path / "v.npy"), str(tmp_path / "n.zarr"), "--ratio", "8", *FAST]) == 2
    err = capsys.readouterr().err
    assert "pip install 'inr-codecs[fit]'" in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "n.zarr").exists()


def test_export_names_a_corrupt_chunk_and_skip_corrupt_writes_the_fill_value(tmp_path, vol, capsys):
    import tensorstore as ts
    target = _small_v2(tmp_path, vol, capsys)
    decoded = zarr.open_array(str(target), mode="r")[:]
    good = (target / "0.1.0").read_bytes()
    (target / "0.1.0").write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    assert main(["export", str(target), str(tmp_path / "e.zarr")]) == 2
    err = capsys.readouterr().err
    assert "chunk (0, 1, 0) (key '0.1.0') cannot be read" in err and "--skip-corrupt" in err
    assert main(["export", str(target), str(tmp_path / "e.zarr"), "--overwrite", "--skip-corrupt"]) == 1
    err = capsys.readouterr().err
    assert "chunk (0, 1, 0) (key '0.1.0')" in err and "1 unreadable chunk(s) written as the fill value 0" in err
    got = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(tmp_path / "e.zarr")}}
                  ).result().read().result()
    assert (got[:, 16:, :16] == 0).all()
    decoded[:, 16:, :16] = 0
    assert np.array_equal(got, decoded)


def test_resume_with_other_settings_names_only_the_differences_as_options(tmp_path, vol, capsys):
    """The CLI resumes an existing target (as --help and the docs say); with other settings it
    names just the differing ones, spelled as its options."""
    target = _small_v2(tmp_path, vol, capsys)
    assert main(["compress", str(tmp_path / "v.npy"), str(target), "--ratio", "12", "--chunks", "16,16,16",
                 "--zarr-format", "2", "--option", "w0=25", *FAST]) == 2
    err = capsys.readouterr().err
    assert err.strip().endswith("exists with different settings: --ratio 8 (asked 12), --option w0=20 (asked 25); "
                                "pass --overwrite to replace it, or the same settings to resume it"), err
    assert "overwrite=True" not in err
