"""Latent grid: entropy-coded multi-resolution latent grids and a tiny per-voxel network
(the design of Cool-chic, Ladune et al. 2023, and C3, Kim et al. 2024, in N dimensions).

A chunk is stored as L single-channel grids of integers at 1/2 ... 1/2**L of its resolution,
linearly upsampled and mapped to each voxel's value by a small MLP. A context MLP predicts each
latent's Laplace distribution from the coarser level and, in a second checkerboard pass, its
decoded neighbours; latents and weights share one ANS stream with tables built identically on
every machine. The numpy decoder is exact fixed-point arithmetic.
"""
from ...registry import Method
from .encoder import LatentGridCodec
from .format import METHOD_ID, Body, decode_body, describe, describe_body

METHOD = Method(METHOD_ID, "latent_grid", decode_body, describe_body,
                lambda f: {"levels": f.levels, "hidden": "x".join(map(str, f.hidden)) or "0"},
                LatentGridCodec, "Latent grid")

__all__ = ["METHOD", "Body", "LatentGridCodec", "describe"]
