"""The rate-distortion benchmark: classical codec adapters, rate steering, the runner and the CLI."""
import numpy as np
import pytest

pytest.importorskip("inr_codecs.bench", reason="the benchmark needs the bench extra", exc_type=ImportError)

from inr_codecs.bench import classical, rd, results  # noqa: E402
from inr_codecs.metrics import psnr  # noqa: E402

CODECS = list(classical.CODECS.values())


def _available(codec):
    why = codec.missing()
    if why:
        pytest.skip(f"{codec.name}: {why}")
    return codec


@pytest.fixture(scope="module")
def crop(nuclei_crop):
    return nuclei_crop[:, :48, :48].copy()   # (16, 48, 48) uint16, real confocal data


def test_to_dtype_rounds_and_clips():
    out = classical.to_dtype(np.array([-3.6, 0.4, 0.6, 70000.2]), np.uint16)
    assert out.dtype == np.uint16 and out.tolist() == [0, 0, 1, 65535]
    assert classical.to_dtype(np.array([1.25]), np.float32).dtype == np.float32


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
@pytest.mark.parametrize("dtype", ["uint16", "int16", "float32"])
def test_round_trip_keeps_shape_dtype_and_quality(codec, dtype, crop):
    """At its least compressing setting every codec gives back the chunk closely, in its dtype."""
    _available(codec)
    a = crop.astype(np.float64)
    a = {"uint16": crop, "int16": (a - 1000).astype(np.int16), "float32": (a / 1000).astype(np.float32)}[dtype]
    if isinstance(codec, classical.Downsample):
        knob = (1, 1, 1)
    else:
        knob = codec.hi if codec.larger_when_up else codec.lo
    out = codec.decode(codec.encode(a, knob), a.shape, a.dtype)
    assert out.shape == a.shape and out.dtype == a.dtype
    assert psnr(a, out) > 40


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
def test_steer_stays_within_budget_and_says_when_it_cannot(codec, crop):
    _available(codec)
    pieces = [crop[:8], crop[8:]]
    budget = crop.nbytes // 24
    try:
        knob, data, tries = codec.steer(pieces, budget)
    except classical.Unreachable as e:   # image/video codecs on 48x48 slices: headers alone exceed it
        assert isinstance(codec, (classical._PerSlice, classical._Video12)), e
        assert e.nbytes > budget and str(e)
    else:
        assert 0 < sum(map(len, data)) <= budget
        assert tries >= 1
        # the bytes steer reports are the bytes encode produces at that knob
        assert [len(codec.encode(p, knob)) for p in pieces] == list(map(len, data))
    with pytest.raises(classical.Unreachable) as e:
        codec.steer(pieces, 8)
    assert e.value.nbytes > 8 and "cannot reach" in str(e.value)


def test_downsample_reproduces_a_linear_ramp_inside():
    """Block means of a linear field sit on it, and linear interpolation between them is exact
    away from the border (where it holds the edge value)."""
    z, y, x = np.meshgrid(np.arange(16), np.arange(24), np.arange(24), indexing="ij")
    ramp = (100 + 3 * z + 2 * y + x).astype(np.float32)
    ds = classical.Downsample()
    out = ds.decode(ds.encode(ramp, (2, 4, 4)), ramp.shape, ramp.dtype)
    np.testing.assert_allclose(out[2:-2, 4:-4, 4:-4], ramp[2:-2, 4:-4, 4:-4], atol=1e-3)


def test_downsample_steer_picks_most_bytes_within_budget():
    import itertools
    ds = classical.Downsample()
    vol = np.zeros((16, 32, 32), np.uint16)
    budget = vol.nbytes // 64
    f, data, _ = ds.steer([vol], budget)
    stored = sum(map(len, data))
    assert stored == ds.nbytes(vol.shape, 2, f) <= budget
    sizes = [ds.nbytes(vol.shape, 2, g) for g in itertools.product(range(1, 17), range(1, 33), range(1, 33))]
    assert stored == max(n for n in sizes if n <= budget)
    assert ds._max_factors((100, 100, 100, 100)) == (37, 37, 37, 37)   # 4-d: a bounded search, not none


def test_parse_spec_and_labels():
    assert rd.parse_spec("sci:optimizer=adam,steps=30,w0=20.5") == ("sci", {"optimizer": "adam", "steps": 30, "w0": 20.5})
    assert rd.spec_label("sci:optimizer=adam") == "SCI (optimizer=adam)"
    assert rd.spec_label("sperr") == "SPERR 3D"
    with pytest.raises(ValueError, match="key=value"):
        rd.parse_spec("sci:adam")


def test_run_records_every_codec_and_keeps_the_ceiling(tmp_path, crop, monkeypatch):
    """INR and classical codecs at equal budgets; a missing codec is skipped, not a crash."""
    monkeypatch.setattr(classical.SZ3, "missing", lambda self: "pretend it is not installed")
    out = tmp_path / "r.json"
    res = rd.run(crop, "crop", [24], ["siren:steps=4,bits=8", "downsample", "sperr", "sz3"], chunks=(8, 48, 48),
                 acc_thresholds=(2000,), out=str(out), log=lambda s: None)
    rows = {r["codec"]: r for r in res["runs"]}
    assert rows["sz3"]["skipped"] == "pretend it is not installed"
    for spec in ("siren:steps=4,bits=8", "downsample", "sperr"):
        r = rows[spec]
        assert r["stored_bytes"] <= crop.nbytes / 24, r            # the requested ratio is a ceiling
        assert r["ratio_achieved"] >= 24
        assert 0 < r["psnr_db"] < 99 and -1 <= r["ssim"] <= 1 and 0 <= r["acc"]["2000"] <= 1
        assert (spec, 24) in res["slices"]
    saved = results.read(out)
    assert saved["benchmark"] == "rd" and saved["settings"]["chunks"] == [8, 48, 48]
    assert [r["codec"] for r in saved["runs"]] == [r["codec"] for r in res["runs"]]
    assert "slices" not in saved and saved["machine"]["cpus"] >= 1
    table = rd.table_markdown(saved)
    assert "SPERR 3D" in table and "skipped" in table
    assert "SIREN" in rd.best_table([saved])


def test_cli_bench_writes_json_plot_and_montage(tmp_path, crop):
    from inr_codecs.cli import main
    src = tmp_path / "crop.npy"
    np.save(src, crop)
    paths = {k: tmp_path / f"{k}.{e}" for k, e in (("out", "json"), ("plot", "png"), ("montage", "png"))}
    rc = main(["bench", str(src), "--ratios", "16", "32", "--codecs", "downsample", "sperr", "--chunks", "8,48,48",
               *[a for k, p in paths.items() for a in (f"--{k}", str(p))]])
    assert rc == 0
    res = results.read(paths["out"])
    assert {r["ratio_requested"] for r in res["runs"]} == {16, 32}
    assert res["command"] and res["settings"]["volume"] == "crop"
    for k in ("plot", "montage"):
        assert paths[k].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_bench_rejects_an_unknown_codec_before_fitting(tmp_path, crop, capsys):
    from inr_codecs.cli import main
    src = tmp_path / "crop.npy"
    np.save(src, crop)
    assert main(["bench", str(src), "--codecs", "siren", "jpeg3000", "--out", str(tmp_path / "r.json")]) == 2
    assert "unknown codec 'jpeg3000'" in capsys.readouterr().err
    assert main(["bench", str(src), "--chunks", "8,48", "--out", str(tmp_path / "r.json")]) == 2
    assert "2 values but the volume has 3 axes" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_update_replaces_rows_and_keeps_slices(tmp_path, crop):
    """A re-run of one codec replaces its rows, keeps the others, and the montage still has all."""
    out = str(tmp_path / "r.json")
    first = rd.run(crop, "crop", [16, 32], ["downsample", "sperr"], chunks=(8, 48, 48), out=out, log=lambda s: None)
    again = rd.read_json(out)
    assert set(again["slices"]) == set(first["slices"])
    np.testing.assert_array_equal(again["slices"][("sperr", 32)], first["slices"][("sperr", 32)])
    with pytest.raises(ValueError, match="chunks"):
        rd.run(crop, "crop", [16], ["sperr"], chunks=(16, 48, 48), update=again, log=lambda s: None)
    res = rd.run(crop, "crop", [32], ["sperr"], chunks=(8, 48, 48), out=out, update=again, log=lambda s: None)
    keys = [(r["codec"], r["ratio_requested"]) for r in rd.read_json(out)["runs"]]
    assert keys == [("downsample", 16), ("sperr", 16), ("downsample", 32), ("sperr", 32)]
    assert res["updated"] and ("downsample", 16) in rd.read_json(out)["slices"]


@pytest.mark.parametrize("dtype", ["int32", "uint8", "float64"])
def test_per_slice_codecs_round_trip_other_dtypes(dtype, crop):
    codec = _available(classical.JPEG2000())
    a = (crop.astype(np.float64) / 300).astype(dtype) if dtype != "int32" else crop.astype(np.int32) - 5
    out = codec.decode(codec.encode(a, codec.hi), a.shape, a.dtype)
    assert out.dtype == a.dtype and psnr(a, out) > 35
