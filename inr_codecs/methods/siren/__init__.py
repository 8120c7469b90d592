"""SIREN: one sine-activated MLP fitted to the whole chunk (Sitzmann et al. 2020)."""
from ...registry import Method
from .encoder import SIRENCodec
from .format import METHOD_ID, Body, decode_body, describe, describe_body

METHOD = Method(METHOD_ID, "siren", decode_body, describe_body, lambda f: {"width": f.width, "bits": f.bits},
                SIRENCodec, "SIREN")

__all__ = ["METHOD", "Body", "SIRENCodec", "describe"]
