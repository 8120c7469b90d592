"""The registry of methods: the one place that knows which methods exist.

Each method is a package under ``inr_codecs/methods/`` whose ``METHOD`` (a :class:`Method`)
names its payload method id, its numcodecs codec class, its numpy decoder and its
``describe``; :data:`BUILTIN` lists them (adding a method = its package + one line there, plus
its two entry points in ``pyproject.toml`` so that a fresh process reads its arrays).
:func:`decode`, the Zarr v3 serializers (``inr_codecs.zarr3``), the CLI, the benchmark,
``inr_codecs``' exports and the docs' method table read from here. A method may also be
registered at run time with :func:`register` (a plug-in, or a test's toy method).
"""
from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numcodecs.compat import ensure_contiguous_ndarray

from . import payload
from .codec import CONSTANT, decode_constant
from .payload import Header, PayloadError, Reader


@dataclass(frozen=True)
class Method:
    """One method of the registry.

    id : the method id payloads carry (one byte; 0 is the constant chunk).
    name : short name: the CLI's ``--codec``, the codec id ``inr_codecs.<name>``.
    decode_body : ``(header, reader) -> ndarray`` of the chunk's values (flat or shaped), numpy only.
    describe_body : ``(header, reader) -> fields``: the body's fixed fields without decoding.
    summary : ``fields -> {key: value}``: what ``inr-codecs info`` counts per payload.
    codec : the numcodecs codec class (None for the constant chunk, which every codec writes).
    label : the method's name in tables and plots.
    """

    id: int
    name: str
    decode_body: Callable[[Header, Reader], np.ndarray]
    describe_body: Callable[[Header, Reader], Any] | None = None
    summary: Callable[[Any], dict] | None = None
    codec: type | None = None
    label: str = ""

    @property
    def codec_id(self) -> str:
        return f"inr_codecs.{self.name}"

    @property
    def serializer_name(self) -> str:
        """Name of its Zarr v3 serializer class: ``<Name>Codec`` -> ``<Name>Serializer``."""
        return self.codec.__name__.removesuffix("Codec") + "Serializer"


_BY_ID: dict[int, Method] = {}
_BY_NAME: dict[str, Method] = {}
_LISTENERS: list[Callable[[Method], None]] = []


def register(method: Method) -> Method:
    """Add ``method`` (its codec is registered with numcodecs, and with zarr once
    ``inr_codecs.zarr3`` is imported). Re-registering the same method is a no-op; a clash of
    id or name with another method is a ValueError."""
    for known in (_BY_ID.get(method.id), _BY_NAME.get(method.name)):
        if known is not None and known != method:
            raise ValueError(f"method {method.name!r} (id {method.id}) clashes with registered method "
                             f"{known.name!r} (id {known.id})")
    if not 0 <= method.id <= 255:
        raise ValueError(f"method ids are one byte (0..255), not {method.id}")
    if method.codec is not None and method.codec.codec_id != method.codec_id:
        raise ValueError(f"{method.codec.__name__}.codec_id is {method.codec.codec_id!r}, "
                         f"expected {method.codec_id!r}")
    if method.id in _BY_ID:
        return method
    _BY_ID[method.id], _BY_NAME[method.name] = method, method
    if method.codec is not None:
        from numcodecs.registry import register_codec
        register_codec(method.codec)
        for listener in _LISTENERS:
            listener(method)
    return method


def unregister(name: str) -> None:
    """Remove a method registered at run time (tests); its zarr/numcodecs entries stay."""
    method = _BY_NAME.pop(name)
    del _BY_ID[method.id]


def on_register(listener: Callable[[Method], None]) -> None:
    """Call ``listener`` for every method with a codec, now and as they are registered."""
    _LISTENERS.append(listener)
    for method in codecs():
        listener(method)


def get(key: str | int) -> Method:
    """The method of a name or a payload method id."""
    table = _BY_ID if isinstance(key, int) else _BY_NAME
    try:
        return table[key]
    except KeyError:
        raise KeyError(f"unknown method {key!r}; registered: {', '.join(names())}") from None


def codecs() -> list[Method]:
    """The methods that have a codec, in registration order."""
    return [m for m in _BY_NAME.values() if m.codec is not None]


def names() -> list[str]:
    """Names of the methods that have a codec (what ``--codec`` accepts)."""
    return [m.name for m in codecs()]


def make(name: str, ratio, *, preset: str | None = None, **options):
    """The named method's codec at ``ratio``: ``preset="paper"`` starts from its paper's
    settings (``paper_settings``), which ``options`` override. ValueError for an unknown
    name or preset."""
    if name not in names():
        raise ValueError(f"unknown codec {name!r}; available: {', '.join(names())}")
    cls = get(name).codec
    if preset not in (None, "paper"):
        raise ValueError(f"unknown preset {preset!r}; available: 'paper'")
    return cls.paper(ratio, **options) if preset == "paper" else cls(ratio, **options)


def method_of(codec) -> Method:
    """The method of a codec instance or class."""
    cls = codec if isinstance(codec, type) else type(codec)
    for m in codecs():
        if issubclass(cls, m.codec):
            return m
    raise TypeError(f"{cls.__name__} is not the codec of a registered method")


def method_for(header: Header) -> Method:
    """The method of a payload's header; PayloadError for an unknown method id."""
    try:
        return _BY_ID[header.method]
    except KeyError:
        raise PayloadError(f"unknown method id {header.method} in payload") from None


def decode(buf) -> np.ndarray:
    """Decode any inr-codecs payload to an array of its recorded shape, dtype and order."""
    return decode_unpacked(*payload.unpack(ensure_contiguous_ndarray(buf)))


#: What numpy, struct or a method's own checks may raise on a payload no check caught: reported
#: as PayloadError (format.md 7: a malformed payload raises nothing else).
_MALFORMED = (ValueError, TypeError, IndexError, KeyError, OverflowError, ZeroDivisionError,
              FloatingPointError, struct.error)


def _read_body(method: Method, read, header: Header, body, **options):
    """``read(header, Reader(body), **options)``, any error of a malformed body a PayloadError."""
    try:
        return read(header, Reader(body), **options)
    except PayloadError:
        raise
    except _MALFORMED as e:
        raise PayloadError(f"malformed {method.name} payload ({type(e).__name__}: {e})") from e


def decode_unpacked(header: Header, body, **options) -> np.ndarray:
    """:func:`decode` of a payload :func:`payload.unpack` has checked; ``options`` go to the
    method's ``decode_body`` (e.g. a latent-grid array's shared networks). Any error of a
    malformed body is a PayloadError naming the method."""
    method = method_for(header)
    out = _read_body(method, method.decode_body, header, body, **options)
    return np.asarray(out.reshape(header.shape), order=header.order)


def describe(data) -> tuple[Method, Header, Any]:
    """The method, header and fixed body fields of a payload, without decoding it."""
    header, body = payload.unpack(data)
    method = method_for(header)
    fields = _read_body(method, method.describe_body, header, body) if method.describe_body else None
    return method, header, fields


from .methods import latent_grid, sci, siren  # noqa: E402  (the methods build on the engine imported above)

#: The built-in methods, in id order: a new method is a package under methods/ and a line here.
BUILTIN = (
    Method(CONSTANT, "constant", decode_constant, label="constant"),
    siren.METHOD,
    sci.METHOD,
    latent_grid.METHOD,
)
for _m in BUILTIN:
    register(_m)
