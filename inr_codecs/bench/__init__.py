"""Benchmarking inr-codecs against classical lossy codecs (``inr-codecs bench``).

Needs the ``bench`` extra (scikit-image, matplotlib, scipy, imagecodecs, zfpy, imageio-ffmpeg);
a classical codec whose library is missing is reported as skipped.
"""
