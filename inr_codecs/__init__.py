"""inr-codecs: lossy implicit-neural-representation codecs for chunked arrays in Zarr.

``import inr_codecs`` and decoding need numpy (and the entropy coder) only; torch is imported
when a chunk is compressed.
"""
from numcodecs.registry import register_codec as _register

from .codec import BudgetError, Encoded, decode
from .payload import PayloadError
from .pipeline import Result, compress
from .sci import SCICodec
from .siren import SIRENCodec

# Entry points find the codecs in a fresh process; registering on import also covers
# environments where the package is on sys.path without its metadata.
_register(SIRENCodec)
_register(SCICodec)

__version__ = "0.1.0"
__all__ = ["BudgetError", "Encoded", "PayloadError", "Result", "SCICodec", "SCISerializer", "SIRENCodec",
           "SIRENSerializer", "__version__", "compress", "decode", "write_ome"]


def __getattr__(name):
    if name in ("SIRENSerializer", "SCISerializer"):   # zarr v3 adapters import zarr: on demand
        from . import zarr3
        return getattr(zarr3, name)
    if name == "write_ome":
        from .ome import write_ome
        return write_ome
    raise AttributeError(f"module 'inr_codecs' has no attribute {name!r}")
