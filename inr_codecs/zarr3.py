"""Zarr v3 array-to-bytes codecs (serializers) over the same core as the numcodecs codecs.

    zarr.create_array(store, shape=..., chunks=..., dtype=...,
                      serializer=SIRENSerializer(ratio=64), compressors=None)

Every method of the registry gets one, generated from its codec: ``<Name>Codec`` gets
``<Name>Serializer`` (``SIRENSerializer``, ``SCISerializer``, ...), registered with zarr under
the codec's id (``inr_codecs.siren``, ...). The JSON metadata is
``{"name": "inr_codecs.siren", "configuration": {...}}`` with the codec's configuration keys.
Encoding and decoding run in a worker thread so zarr's event loop stays free; decodes share
:data:`inr_codecs.codec.decode_slots` (as many at once as there are cores).
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.common import parse_named_configuration
from zarr.registry import register_codec

from . import payload, registry
from .codec import InrCodec, decode_slots, expect_chunk


def _smallest_chunk(chunk_grid) -> tuple[int, ...] | None:
    """The smallest chunk a grid declares: regular grids (zarr 3.1 objects, 3.4 metadata) have
    ``chunk_shape``; rectilinear ones (zarr >= 3.4) ``chunk_shapes`` per axis."""
    try:
        shape = getattr(chunk_grid, "chunk_shape", None)
    except ValueError:      # zarr 3.4's ChunkGrid raises for irregular grids
        shape = None
    if shape is not None:
        return tuple(int(c) for c in shape)
    per_axis = getattr(chunk_grid, "chunk_shapes", None)
    if per_axis is None:
        return None
    return tuple(int(a) if isinstance(a, int) else int(min(a)) for a in per_axis)


def _native(dtype) -> np.dtype:
    return dtype.to_native_dtype() if hasattr(dtype, "to_native_dtype") else np.dtype(dtype)


@dataclass(frozen=True)
class InrSerializer(ArrayBytesCodec):
    """Base adapter: wraps one numcodecs :class:`InrCodec` (``codec_cls``) for Zarr v3."""

    codec_cls: ClassVar[type[InrCodec]]
    is_fixed_size = False
    codec: InrCodec

    def __init__(self, ratio=None, **config):
        object.__setattr__(self, "codec", self.codec_cls(ratio, **config))

    @property
    def configuration(self) -> dict:
        cfg = self.codec.get_config()
        cfg.pop("id")
        return cfg

    def __hash__(self):
        return hash((type(self), json.dumps(self.configuration, sort_keys=True)))

    def __repr__(self):
        return f"{type(self).__name__}({self.codec!r})"

    @classmethod
    def from_dict(cls, data):
        _, cfg = parse_named_configuration(data, cls.codec_cls.codec_id)
        return cls(**(cfg or {}))

    def to_dict(self):
        return {"name": self.codec_cls.codec_id, "configuration": self.configuration}

    def validate(self, *, shape, dtype, chunk_grid) -> None:
        chunk = _smallest_chunk(chunk_grid)
        if chunk is not None:
            self.codec.check_chunk(chunk, _native(dtype))

    def compute_encoded_size(self, input_byte_length, chunk_spec):
        raise NotImplementedError

    def _encode_sync(self, chunk_array, chunk_spec):
        arr = chunk_array.as_numpy_array()
        if tuple(arr.shape) != tuple(chunk_spec.shape):
            # zarr's numcodecs filters (zarr.codecs.numcodecs.Delta, FixedScaleOffset, ...) hand on
            # flattened chunks: what would be stored is a fit of the filter's output, unreadable
            # as the array's chunks
            raise ValueError(
                f"{type(self).__name__} received a chunk of shape {tuple(arr.shape)} for chunks of shape "
                f"{tuple(chunk_spec.shape)}: an array-to-array codec before it (filters=...) changed the "
                "chunk, so the network would fit the filter's output, not the data. inr-codecs must see "
                "each chunk's own values: create the array with filters=None.")
        out = self.codec.encode_batch([arr])[0].payload
        return chunk_spec.prototype.buffer.from_bytes(out)

    def _decode_sync(self, chunk_bytes, chunk_spec):
        buf = chunk_bytes.as_numpy_array()
        want = _native(chunk_spec.dtype)
        header, _ = payload.unpack(buf)        # before decoding: a chunk of another array is refused unread
        expect_chunk(header, chunk_spec.shape, want)
        with decode_slots:
            arr = self.codec.decode_payload(buf)
        return chunk_spec.prototype.nd_buffer.from_numpy_array(arr.astype(want, copy=False))

    async def _encode_single(self, chunk_array, chunk_spec):
        return await asyncio.to_thread(self._encode_sync, chunk_array, chunk_spec)

    async def _decode_single(self, chunk_bytes, chunk_spec):
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)


_SERIALIZERS: dict[str, type[InrSerializer]] = {}


def _install(method: registry.Method) -> None:
    """Generate, register with zarr and expose (as a module attribute) a method's serializer."""
    name = method.serializer_name
    cls = dataclass(frozen=True, init=False, repr=False, eq=False)(     # inherits __eq__ and __hash__
        type(name, (InrSerializer,), {"codec_cls": method.codec, "__module__": __name__, "__qualname__": name,
                                      "__doc__": f"Zarr v3 serializer for :class:`{method.codec.__name__}` "
                                                 "(same parameters)."}))
    _SERIALIZERS[method.name] = cls
    register_codec(method.codec_id, cls)


def serializer(name: str) -> type[InrSerializer]:
    """The Zarr v3 serializer class of a registered method, by name."""
    registry.get(name)
    return _SERIALIZERS[name]


def __getattr__(attr: str):
    for cls in _SERIALIZERS.values():
        if cls.__name__ == attr:
            return cls
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def serializer_for(codec: InrCodec) -> InrSerializer:
    """The Zarr v3 serializer of a numcodecs inr-codecs codec, with the same configuration."""
    cls = serializer(registry.method_of(codec).name)
    return cls(**{k: v for k, v in codec.get_config().items() if k != "id"})


def as_codec(codec) -> InrCodec:
    """The numcodecs codec of an inr-codecs codec or of its Zarr v3 serializer."""
    if isinstance(codec, InrSerializer):
        return codec.codec
    if isinstance(codec, InrCodec):
        return codec
    raise TypeError(f"codec must be an inr-codecs codec (e.g. SIRENCodec(ratio=64)) or its Zarr v3 "
                    f"serializer, not {type(codec).__name__}")

registry.on_register(_install)
