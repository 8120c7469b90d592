"""inr-codecs: lossy implicit-neural-representation codecs for chunked arrays in Zarr.

``import inr_codecs`` and decoding need numpy (and the entropy coder) only; torch is imported
when a chunk is compressed.
"""
from numcodecs.registry import register_codec as _register

from .codec import BudgetError, decode
from .payload import PayloadError
from .siren import SIRENCodec

# Entry points find the codecs in a fresh process; registering on import also covers
# environments where the package is on sys.path without its metadata.
_register(SIRENCodec)

__version__ = "0.1.0"
__all__ = ["SIRENCodec", "SIRENSerializer", "decode", "BudgetError", "PayloadError", "__version__"]


def __getattr__(name):
    if name == "SIRENSerializer":   # zarr v3 adapter; imports zarr, so only on demand
        from .zarr3 import SIRENSerializer
        return SIRENSerializer
    raise AttributeError(f"module 'inr_codecs' has no attribute {name!r}")
