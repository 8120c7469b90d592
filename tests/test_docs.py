"""The documentation site builds without warnings, and the example scripts it includes run.

The docs need the ``docs`` extra (mkdocs-material, mkdocstrings); the OME-Zarr example needs
``ome-zarr``. Each is skipped, saying so, where its packages are missing.
"""
import glob
import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = sorted(p for p in glob.glob(os.path.join(ROOT, "examples", "*.py"))
                  if os.path.basename(p) != "demo.py" and not os.path.basename(p).startswith("_"))
# Short fits: the test checks that the code runs, not the quality it reaches.
FAST_ARGS = {"quickstart.py": []}
NEEDS = {"ome_ngff.py": "ome_zarr"}


def _env() -> dict:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    # zarr runs several encodes at once; one PyTorch thread each avoids oversubscribing small CPUs.
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def test_docs_build_strict(tmp_path):
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python"):
        if importlib.util.find_spec(module.split(".")[0]) is None or importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: pip install -e '.[docs]' to build the docs")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                        str(tmp_path / "site")], cwd=ROOT, env=_env(), capture_output=True,
                       text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "WARNING" not in out, out
    assert (tmp_path / "site" / "index.html").exists()
    # snippets were expanded: the guides show the example scripts themselves
    page = (tmp_path / "site" / "guides" / "zarr-v3" / "index.html").read_text()
    assert "create_array" in page and "--8&lt;--" not in page


@pytest.mark.parametrize("script", EXAMPLES, ids=os.path.basename)
def test_example_runs(script, tmp_path):
    name = os.path.basename(script)
    if name in NEEDS and importlib.util.find_spec(NEEDS[name]) is None:
        pytest.skip(f"{name} needs {NEEDS[name]}: pip install ome-zarr")
    args = FAST_ARGS.get(name, ["--steps", "20"])
    r = subprocess.run([sys.executable, script, *args], cwd=tmp_path, env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PSNR" in r.stdout
    assert os.listdir(tmp_path) == [], "examples write into a temporary directory by default"


def test_example_refuses_existing_path(tmp_path):
    """Given a path that exists, an example stops before writing anything."""
    target = tmp_path / "vol.zarr"
    target.mkdir()
    (target / "keep").write_text("user data")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "zarr_v2.py"), str(target)],
                       cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "exists" in r.stderr
    assert os.listdir(target) == ["keep"]
