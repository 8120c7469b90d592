"""Reading needs numpy only: importing inr_codecs and decoding every kind of chunk never imports torch."""
import subprocess
import sys
import textwrap

import numpy as np
import zarr
from conftest import DATA, fast_codec, fast_serializer, smooth_volume

from inr_codecs.methods.sci import describe
from inr_codecs.zarr3 import SCISerializer



def test_decode_without_torch(tmp_path):
    x = smooth_volume((16, 32, 32), "int16")
    v2 = zarr.create(shape=x.shape, chunks=(16, 16, 16), dtype=x.dtype, zarr_format=2,
                     compressor=fast_codec(ratio=8), store=str(tmp_path / "v2.zarr"))
    v2[:] = x
    v2[:, :, :16] = 5   # constant chunks too
    v3 = zarr.create_array(str(tmp_path / "v3.zarr"), shape=x.shape, chunks=(16, 16, 16), dtype=x.dtype,
                           serializer=fast_serializer(ratio=8),
                           compressors=None)
    v3[:] = x
    sci = zarr.create_array(str(tmp_path / "sci.zarr"), shape=x.shape, chunks=(16, 32, 32), dtype=x.dtype,
                            serializer=SCISerializer(ratio=4, a_max=8, partition="equidistant", steps=12,
                                                     device="cpu"), compressors=None)
    sci[:] = x
    assert len(describe((tmp_path / "sci.zarr" / "c" / "0" / "0" / "0").read_bytes()).blocks) == 8
    np.save(tmp_path / "v2.npy", v2[:])
    np.save(tmp_path / "v3.npy", v3[:])
    np.save(tmp_path / "sci.npy", sci[:])
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None          # any 'import torch' now raises ImportError
        import numpy as np, zarr
        import inr_codecs
        for name in ("v2", "v3", "sci"):
            got = zarr.open_array({str(tmp_path)!r} + f"/{{name}}.zarr", mode="r")[:]
            assert np.array_equal(got, np.load({str(tmp_path)!r} + f"/{{name}}.npy")), name
        inr_codecs.decode(open({str(DATA / 'golden_v1_siren.bin')!r}, "rb").read())
        inr_codecs.decode(open({str(DATA / 'golden_v1_sci.bin')!r}, "rb").read())
        inr_codecs.decode(open({str(DATA / 'latent_grid_v1' / 'nuclei_16x64x64_r64.bin')!r}, "rb").read())
        try:
            inr_codecs.SIRENCodec(ratio=8).encode(np.random.rand(16, 16, 16))
        except ImportError as e:
            assert "needs PyTorch" in str(e), e
        else:
            raise AssertionError("encoding without torch should fail clearly")
        print("decoded without torch")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "decoded without torch" in out.stdout


def test_tooling_is_off_the_runtime_import_path():
    """Importing the package, its Zarr adapters, the pipeline and the CLI (and building the CLI's
    parser) never imports the benchmark or the dataset fetcher; the fetcher names its extra."""
    code = textwrap.dedent("""
        import sys
        import inr_codecs, inr_codecs.zarr3, inr_codecs.pipeline, inr_codecs.ome, inr_codecs.cli
        inr_codecs.cli.build_parser()
        tooling = sorted(m for m in sys.modules if m.startswith(("inr_codecs.bench", "inr_codecs.datasets")))
        assert not tooling, tooling
        sys.modules["tifffile"] = None
        try:
            import inr_codecs.datasets
        except ImportError as e:
            assert "pip install 'inr-codecs[io]'" in str(e) and "tifffile" in str(e), e
        else:
            raise AssertionError("inr_codecs.datasets imported without tifffile")
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
