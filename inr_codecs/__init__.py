"""inr-codecs: lossy implicit-neural-representation codecs for chunked arrays in Zarr.

``import inr_codecs`` and decoding need numpy (and the entropy coder) only; torch is imported
when a chunk is compressed. Every method of :mod:`inr_codecs.registry` is exported here: its
numcodecs codec (``SIRENCodec``, ``SCICodec``, ...) and, on first use (they import zarr), its
Zarr v3 serializer (``SIRENSerializer``, ``SCISerializer``, ...).
"""
from . import registry
from .codec import BudgetError, Encoded
from .payload import PayloadError
from .pipeline import Result, compress
from .registry import decode

__version__ = "0.1.0"
__all__ = sorted(["BudgetError", "Encoded", "PayloadError", "Result", "__version__", "compress", "decode",
                  "write_ome", *(m.codec.__name__ for m in registry.codecs()),
                  *(m.serializer_name for m in registry.codecs())])


def __getattr__(name):
    if name.endswith("Serializer"):     # zarr v3 adapters import zarr: on demand
        from . import zarr3
        return getattr(zarr3, name)
    if name == "write_ome":
        from .ome import write_ome
        return write_ome
    codec = next((m.codec for m in registry.codecs() if m.codec.__name__ == name), None)
    if codec is not None:               # every registered method's codec, built-in or plug-in
        return codec
    raise AttributeError(f"module 'inr_codecs' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
