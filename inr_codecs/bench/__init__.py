"""Benchmarking inr-codecs against classical lossy codecs (``inr-codecs bench``).

Needs the ``bench`` extra (scikit-image, matplotlib, scipy, imagecodecs, zfpy, imageio-ffmpeg);
importing this package without scikit-image, scipy or matplotlib raises ImportError. A classical
codec whose library is missing is reported as skipped.
"""
from .._extras import require

#: Modules of the bench extra that the metrics and plots need (the classical codecs' libraries are optional).
REQUIRED = ("skimage", "scipy", "matplotlib")
require("inr_codecs.bench", "bench", REQUIRED)
