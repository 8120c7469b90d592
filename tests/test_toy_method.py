"""A method registered from outside the package (examples/toy_method.py, the docs' worked
example) works everywhere a built-in one does: Zarr v2 and v3 (sharded too), ``compress``,
the CLI's ``compress`` and ``info``, ``inr_codecs.decode``; the codec refuses the fitting
options it does not support. Nothing in the package names it."""
import importlib.util
import json
import pathlib

import numcodecs
import numpy as np
import pytest
import zarr
from conftest import smooth_volume

import inr_codecs
from inr_codecs import compress, decode, registry
from inr_codecs.cli import main
from inr_codecs.metrics import psnr

pytest.importorskip("torch")
EXAMPLE = pathlib.Path(__file__).parents[1] / "examples" / "toy_method.py"


@pytest.fixture(scope="module")
def toy():
    spec = importlib.util.spec_from_file_location("toy_method", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    registry.unregister("toy")


@pytest.fixture(scope="module")
def vol():
    return smooth_volume((8, 32, 32), "uint16")


def _fits(x, y, ratio_stored):
    assert y.dtype == x.dtype and y.shape == x.shape
    assert psnr(x, y) > psnr(x, np.full_like(x, x.mean())) + 3
    assert ratio_stored >= 8


def test_registered_everywhere(toy):
    assert "toy" in registry.names() and registry.get(200) is toy.METHOD
    assert inr_codecs.ToyCodec is toy.ToyCodec
    from inr_codecs.zarr3 import ToySerializer
    assert ToySerializer.codec_cls is toy.ToyCodec
    assert zarr.registry.get_codec_class("inr_codecs.toy") is ToySerializer
    assert type(numcodecs.get_codec({"id": "inr_codecs.toy", "ratio": 8})) is toy.ToyCodec


def test_zarr_v2_and_v3(toy, vol, tmp_path):
    v2 = zarr.create_array(str(tmp_path / "v2.zarr"), shape=vol.shape, chunks=(8, 16, 32), dtype=vol.dtype,
                           zarr_format=2, compressors=toy.ToyCodec(ratio=8, steps=60), filters=None)
    v2[:] = vol
    from inr_codecs.zarr3 import ToySerializer
    v3 = zarr.create_array(str(tmp_path / "v3.zarr"), shape=vol.shape, chunks=(8, 16, 32), shards=(8, 32, 32),
                           dtype=vol.dtype, serializer=ToySerializer(ratio=8, steps=60), compressors=None)
    v3[:] = vol
    for path in ("v2.zarr", "v3.zarr"):
        z = zarr.open_array(str(tmp_path / path), mode="r")
        _fits(vol, z[:], 8)
    chunk = (tmp_path / "v2.zarr" / "0.0.0").read_bytes()
    assert len(chunk) <= vol[:, :16].nbytes // 8
    assert np.array_equal(decode(chunk), zarr.open_array(str(tmp_path / "v2.zarr"))[:, :16])


def test_compress_and_cli(toy, vol, tmp_path, capsys):
    r = compress(vol, str(tmp_path / "a.zarr"), toy.ToyCodec(ratio=8, steps=60), chunks=(8, 16, 16),
                 progress=False)
    assert r.chunks_encoded == 4 and r.ratio >= 8 and r.psnr > 20
    np.save(tmp_path / "v.npy", vol)
    assert main(["compress", str(tmp_path / "v.npy"), str(tmp_path / "b.zarr"), "--codec", "toy", "--ratio", "8",
                 "--chunks", "8,16,16", "--steps", "60", "--no-progress", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["codec"] == "toy" and summary["ratio_achieved"] >= 8
    assert main(["info", str(tmp_path / "a.zarr"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["payload_methods"] == {"toy": 4} and info["compressor"]["id"] == "inr_codecs.toy"
    assert sum(info["payload_fields"]["toy"]["width"].values()) == 4


def test_refuses_what_it_does_not_support(toy, tmp_path, capsys):
    with pytest.raises(ValueError, match="ToyCodec does not support target_psnr=30.0"):
        toy.ToyCodec(ratio=8, target_psnr=30)
    toy.ToyCodec(ratio=8, target_psnr=None)      # the default is fine (stored configurations carry it)
    np.save(tmp_path / "v.npy", np.zeros((8, 8), np.uint16))
    assert main(["compress", str(tmp_path / "v.npy"), str(tmp_path / "c.zarr"), "--codec", "toy",
                 "--ratio", "2", "--plateau-steps", "50"]) == 2
    assert "does not support plateau_steps=50" in capsys.readouterr().err
    with pytest.raises(ValueError, match="clashes"):
        registry.register(registry.Method(200, "other", toy.decode_body, codec=None))
