"""SCI: spectrum-concentrated implicit neural compression (Yang et al., AAAI 2023).

A chunk is cut into blocks by an octree partition that maximises spectrum concentration
(paper Eqs. 8-12, solved exactly by dynamic programming on the tree); every block gets its own
funnel-shaped SIREN (a first sine layer ``fr`` times wider than the rest) whose size is
proportional to ``|x_i| / D(x_i)``; all blocks of a chunk are trained together as one batched
model; at decode time a deblocking filter smooths the block faces on every axis.
"""
from ...registry import Method
from .encoder import SCICodec
from .format import METHOD_ID, Body, decode_body, describe, describe_body

METHOD = Method(METHOD_ID, "sci", decode_body, describe_body, lambda f: {"blocks": len(f.blocks), "bits": f.bits},
                SCICodec, "SCI")

__all__ = ["METHOD", "Body", "SCICodec", "describe"]
