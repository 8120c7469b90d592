"""OME-Zarr (OME-NGFF) image pyramids whose levels are INR-compressed, written by the pipeline.

    from inr_codecs import SIRENCodec
    from inr_codecs.ome import write_ome
    results = write_ome("nuclei.tif", "nuclei.ome.zarr", SIRENCodec(ratio=64), levels=3,
                        ratios=(64, 32, 16), axes="zyx")

:func:`write_ome` writes a multiscale image group: level 0 is the source, level ``i`` its
block mean over ``downscale**i`` voxels along the spatial axes (x, y and z), computed lazily
with Dask from the source (never from decoded levels, so errors do not compound). Each level
is an array ``"0"``, ``"1"``, ... of the group, created with the codec at that level's ratio and
filled by :func:`inr_codecs.pipeline.compress` (batched, parallel, resumable). The multiscales
metadata is written with ome-zarr-py, so ``ome_zarr.reader.Reader`` (and viewers built on it,
such as napari-ome-zarr) read the image in any process where inr-codecs is installed.

OME-NGFF 0.4 is a Zarr v2 group (the codec as each array's compressor, ``/`` chunk keys);
OME-NGFF 0.5 a Zarr v3 group (the codec's serializer, no compressors, optionally sharded).

Zarr, Dask and ome-zarr-py are imported when :func:`write_ome` runs: this module imports
with numpy alone.
"""
from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .codec import BudgetError, InrCodec

if TYPE_CHECKING:  # pragma: no cover
    from .pipeline import Result
    from .sources import Source

__all__ = ["NGFF_VERSIONS", "default_axes", "level_shapes", "max_levels", "write_ome"]

#: OME-NGFF versions :func:`write_ome` writes, and the Zarr format of each.
NGFF_VERSIONS = {"0.4": 2, "0.5": 3}
AXES = "tczyx"              # ome-zarr-py's axis letters, in the order NGFF requires
SPATIAL = "zyx"
DEFAULT_AXES = {2: "yx", 3: "zyx", 4: "czyx", 5: "tczyx"}
ATTR = "inr_codecs"         # group attribute holding the settings a resume must match
_OWN_KWARGS = ("chunks", "zarr_format", "overwrite", "codec")
_OME_ZARR_FOR_05 = "0.11"   # first ome-zarr-py release with FormatV05 (OME-NGFF 0.5, Zarr v3)


def default_axes(ndim: int) -> str:
    """ome-zarr-py's axes for an array of ``ndim`` dimensions: "yx", "zyx", "czyx", "tczyx"."""
    try:
        return DEFAULT_AXES[ndim]
    except KeyError:
        raise ValueError(f"OME-NGFF images have 2 to 5 axes; this source has {ndim}") from None


def _check_axes(axes, ndim: int) -> str:
    if axes is None:
        return default_axes(ndim)
    if not isinstance(axes, str):
        try:
            axes = "".join(axes)
        except TypeError:
            raise TypeError(f"axes must be a string of letters from {AXES!r} (e.g. 'zyx'), not {axes!r}") from None
    axes = axes.lower()
    if len(axes) != ndim:
        raise ValueError(f"axes {axes!r} name {len(axes)} axes but the source has {ndim}")
    order = [AXES.find(a) for a in axes]
    if -1 in order or order != sorted(set(order)) or "y" not in axes or "x" not in axes:
        raise ValueError(f"axes {axes!r} must be letters from {AXES!r}, each at most once, in that order, "
                         "with y and x (e.g. 'yx', 'zyx', 'czyx', 'tzyx', 'tczyx')")
    return axes


def _factors(axes: str, downscale: int, level: int) -> tuple[int, ...]:
    return tuple(downscale ** level if a in SPATIAL else 1 for a in axes)


def max_levels(shape, axes: str, downscale: int = 2) -> int:
    """The most pyramid levels ``shape`` has before a spatial axis falls below 1 voxel."""
    n = 1
    while all(s // f >= 1 for s, f in zip(shape, _factors(axes, downscale, n))):
        n += 1
    return n


def level_shapes(shape, axes: str, levels: int, downscale: int = 2) -> list[tuple[int, ...]]:
    """Each level's shape: spatial axes divided by ``downscale**level``, rounded down (the
    excess voxels are trimmed, as ``dask.array.coarsen(trim_excess=True)`` does)."""
    most = max_levels(shape, axes, downscale)
    if levels > most:
        raise ValueError(f"levels={levels} is too many for shape {tuple(shape)} (axes {axes!r}) with "
                         f"downscale {downscale}: a spatial axis would fall below 1 voxel; at most "
                         f"{most} levels")
    return [tuple(s // f for s, f in zip(shape, _factors(axes, downscale, i))) for i in range(levels)]


def _ints(value, ndim: int, what: str) -> tuple[int, ...]:
    if isinstance(value, (int, np.integer)):
        value = (value,) * ndim
    try:
        out = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be an int or one int per axis, not {value!r}") from None
    if len(out) != ndim or min(out) < 1:
        raise ValueError(f"{what} {value!r} must have {ndim} positive values, one per axis")
    return out


def _level_codec(codec: InrCodec, ratio, level: int, shape, chunks, dtype) -> InrCodec:
    """``codec`` at ``ratio``, checked to leave its bytes for ``chunks`` of level ``level``."""
    cfg = {k: v for k, v in codec.get_config().items() if k != "id"}
    c = type(codec)(**{**cfg, "ratio": ratio})
    try:
        c.check_chunk(chunks, dtype)
    except BudgetError as e:
        raise BudgetError(f"level {level} (shape {shape}, chunks {chunks}, ratio {c.ratio:g}): {e}") from None
    return c


class _SourceArray:
    """A :class:`~inr_codecs.sources.Source` as the array-like ``dask.array.from_array`` wants."""

    def __init__(self, source):
        self.source = source
        self.shape, self.dtype, self.ndim = source.shape, source.dtype, source.ndim

    def __getitem__(self, region):
        return self.source.read(region)


def _downsampled(src, data, factors, chunks, dtype):
    """Lazy block mean of ``src`` over ``factors`` (excess trimmed), back in ``dtype`` (rounded
    for integers), as a dask array whose input blocks map onto the level's chunks."""
    import dask.array as da
    if data is None:        # not a dask array: read the source in blocks of one level chunk each
        from .sources import ArraySource
        arr = src.array if isinstance(src, ArraySource) else _SourceArray(src)
        blocks = tuple(min(c * f, s) for c, f, s in zip(chunks, factors, src.shape))
        data = da.from_array(arr, chunks=blocks, asarray=False, lock=False, fancy=False,
                             name=f"inr-ome-source-{uuid.uuid4().hex}")
    mean = da.coarsen(np.mean, data.astype(np.float64),
                      {i: f for i, f in enumerate(factors) if f > 1}, trim_excess=True)
    if np.dtype(dtype).kind in "iub":
        mean = mean.round()
    return mean.astype(dtype)


def _import_ome(ngff: str):
    """ome-zarr-py's writer function and the Format for ``ngff``, or a clear ImportError."""
    import warnings
    try:
        import ome_zarr
        from ome_zarr import format as ome_format
        with warnings.catch_warnings():     # ome-zarr >= 0.14 warns about its own Scaler on import
            warnings.simplefilter("ignore", DeprecationWarning)
            from ome_zarr.writer import write_multiscales_metadata
    except ImportError as e:
        raise ImportError(f"write_ome needs ome-zarr-py: pip install ome-zarr ({e})") from None
    name = {"0.4": "FormatV04", "0.5": "FormatV05"}[ngff]
    fmt = getattr(ome_format, name, None)
    if fmt is None:
        raise ImportError(f"OME-NGFF {ngff} needs ome-zarr >= {_OME_ZARR_FOR_05} (which has "
                          f"ome_zarr.format.{name}); installed: ome-zarr "
                          f"{getattr(ome_zarr, '__version__', 'unknown')}. pip install -U ome-zarr, "
                          "or write ngff='0.4'")
    return write_multiscales_metadata, fmt()


def _normalised(obj):
    return json.loads(json.dumps(obj))


def _existing(path, zarr_format: int, settings: dict):
    """The group at ``path`` if an earlier write_ome with these settings made it (to resume),
    None if ``path`` is absent or an empty directory; ValueError otherwise."""
    import zarr
    if not os.path.exists(path):
        return None
    if os.path.isdir(path) and not os.listdir(path):
        return None
    hint = "pass overwrite=True to replace it, or another path"
    try:
        group = zarr.open_group(path, mode="r+", zarr_format=zarr_format)
    except Exception as e:
        raise ValueError(f"{path} exists and is not a Zarr v{zarr_format} group ({type(e).__name__}: {e}); "
                         f"{hint}") from None
    own = group.attrs.get(ATTR)
    have = own.get("write_ome") if isinstance(own, dict) else None
    if have is None:
        raise ValueError(f"{path} exists and was not written by write_ome; {hint}")
    want = _normalised(settings)
    diff = [(k, have.get(k), want[k]) for k in want if k != "codecs" and have.get(k) != want[k]]
    if any(k == "levels" for k, _, _ in diff):      # then every per-level list differs: say just that
        diff = [d for d in diff if d[0] not in ("chunks", "shards")]
    if not diff and have.get("codecs") != want["codecs"]:
        diff = _codec_differences(have.get("codecs") or [], want["codecs"])
    if diff:
        from .zarr_io import SettingsMismatch
        raise SettingsMismatch(path, diff)
    return group


def _codec_differences(have: list, want: list) -> list:
    """The differing codec settings of two images with the same number of levels, as
    write_ome's keywords name them: ``codec``, ``ratios`` (one per level), or a codec parameter
    (one value, or one per level where they differ between levels)."""
    ids = ([c.get("id") for c in have], [c.get("id") for c in want])
    if ids[0] != ids[1]:
        return [("codec", *(i[0] if len(set(i)) == 1 else i for i in ids))]
    out = []
    for key in dict.fromkeys(k for c in have + want for k in c):
        values = ([c.get(key) for c in have], [c.get(key) for c in want])
        if values[0] != values[1]:
            name = "ratios" if key == "ratio" else key
            out.append((name, *(v if name == "ratios" or len(set(map(repr, v))) > 1 else v[0] for v in values)))
    return out


def write_ome(source, path, codec, *, ratios=None, levels: int = 1, downscale: int = 2, axes: str | None = None,
              chunks=None, ngff: str = "0.5", overwrite: bool = False, **compress_kwargs) -> list[Result]:
    """Write ``source`` as an OME-Zarr multiscale image of ``levels`` INR-compressed levels.

    Parameters
    ----------
    source
        Anything :func:`inr_codecs.sources.open_source` reads: numpy or dask array, zarr array,
        a path (.npy, .tif, .nii(.gz), Zarr array), a TensorStore spec.
    path
        Directory of the new OME-Zarr group. If it holds an image an earlier (interrupted)
        call wrote with the same settings, that image is resumed: chunks stored intact are
        kept, the rest are written.
    codec
        ``SIRENCodec(...)`` or ``SCICodec(...)`` (or its Zarr v3 serializer); every level gets
        a copy with its own ratio.
    ratios
        One compression ratio per level (default: the codec's ratio for every level).
    levels
        Number of pyramid levels, the full-size source included.
    downscale
        Integer factor between successive levels along the spatial axes (z, y, x); level ``i``
        is the block mean of the source over ``downscale**i`` voxels per spatial axis (integer
        dtypes rounded), trimmed where the shape does not divide.
    axes
        Axis letters from "tczyx" in that order, one per source axis; default by dimension:
        "yx", "zyx", "czyx", "tczyx" (pass e.g. "tzyx" for a 4-D time series).
    chunks
        Chunk shape of level 0 (an int for every axis, or one per axis; default 64), clipped
        to each level's shape.
    ngff
        "0.5" (Zarr v3, the codec's serializer; ``shards=`` may be passed) or "0.4" (Zarr v2,
        the codec as compressor).
    overwrite
        Replace whatever is at ``path``. Without it nothing is deleted.
    **compress_kwargs
        Passed to :func:`inr_codecs.pipeline.compress` for every level (``scheduler``,
        ``workers``, ``batch``, ``verify``, ``progress``, ...); ``shards`` (NGFF 0.5 only,
        clipped per level like the chunks) and ``fill_value`` (default 0) are used to create
        the level arrays.

    Returns
    -------
    list of :class:`~inr_codecs.pipeline.Result`, one per level.

    Raises
    ------
    BudgetError
        A level's ratio leaves too few bytes for its chunks (checked for every level before
        anything is written).
    ValueError
        Bad settings, too many levels for the shape, or ``path`` holding something other than
        this image (without ``overwrite``).
    ImportError
        zarr, dask or ome-zarr-py (or an ome-zarr-py with the requested NGFF version) missing.
    """
    plan = _plan(source, codec, ngff, ratios, levels, downscale, axes, chunks, compress_kwargs)
    write_metadata, fmt = _import_ome(ngff)
    from .pipeline import require_fit
    require_fit()      # PyTorch and Dask (the lower levels are dask arrays): fail before writing
    group = _open_group(path, plan, overwrite)
    results = [_write_level(group, path, plan, i, compress_kwargs) for i in range(plan.levels)]
    _write_multiscales(group, path, plan, write_metadata, fmt)
    return results


# --- what write_ome writes: every check before anything is touched -------------------------

@dataclass
class _Plan:
    """An image to write, checked: the source, its axes, and each level's shape, chunks,
    shards (None if unsharded) and codec."""

    ngff: str
    src: Source
    axes: str
    downscale: int
    shapes: list[tuple[int, ...]]
    chunks: list[tuple[int, ...]]
    shards: list[tuple[int, ...] | None]
    codecs: list[InrCodec]
    fill_value: Any

    @property
    def levels(self) -> int:
        return len(self.shapes)

    @property
    def zarr_format(self) -> int:
        return NGFF_VERSIONS[self.ngff]

    @property
    def fill(self):
        """The fill value of every level, as a plain value (default 0)."""
        fill = self.fill_value
        return 0 if fill is None else fill.item() if hasattr(fill, "item") else fill

    def factors(self, level: int) -> tuple[int, ...]:
        return _factors(self.axes, self.downscale, level)

    def settings(self) -> dict:
        """What a resume must match, as the group's attributes hold it."""
        return _normalised({"ngff": self.ngff, "shape": list(self.src.shape),
                            "dtype": np.dtype(self.src.dtype).str, "axes": self.axes, "levels": self.levels,
                            "downscale": self.downscale, "chunks": [list(c) for c in self.chunks],
                            "shards": [list(s) if s else None for s in self.shards],
                            "codecs": [c.get_config() for c in self.codecs], "fill_value": self.fill})


def _plan(source, codec, ngff, ratios, levels, downscale, axes, chunks, compress_kwargs: dict) -> _Plan:
    """write_ome's arguments checked and turned into each level's settings; ``shards`` and
    ``fill_value`` are taken out of ``compress_kwargs``. Writes nothing."""
    from .sources import open_source
    from .zarr3 import as_codec
    if ngff not in NGFF_VERSIONS:
        raise ValueError(f"ngff must be one of {list(NGFF_VERSIONS)}, not {ngff!r}")
    inr = as_codec(codec)
    shards, fill_value = _array_kwargs(compress_kwargs, NGFF_VERSIONS[ngff])
    levels, downscale = _int_at_least("levels", levels, 1), _int_at_least("downscale", downscale, 2)
    ratios = _level_ratios(ratios, inr.ratio, levels)
    src = open_source(source)
    axes = _check_axes(axes, src.ndim)
    shapes = level_shapes(src.shape, axes, levels, downscale)
    chunks0 = _ints(chunks, src.ndim, "chunks") if chunks is not None else tuple(min(64, s) for s in src.shape)
    shards0 = _ints(shards, src.ndim, "shards") if shards is not None else None
    if shards0 and any(s % c for s, c in zip(shards0, chunks0)):
        raise ValueError(f"shards {shards0} must be multiples of chunks {chunks0}")
    level_chunks = [tuple(min(c, s) for c, s in zip(chunks0, shape)) for shape in shapes]
    level_shards = [tuple(min(sh, -(-s // c) * c) for sh, c, s in zip(shards0, ch, shape)) if shards0 else None
                    for ch, shape in zip(level_chunks, shapes)]
    codecs = [_level_codec(inr, r, i, shape, ch, src.dtype)
              for i, (r, shape, ch) in enumerate(zip(ratios, shapes, level_chunks))]
    return _Plan(ngff, src, axes, downscale, shapes, level_chunks, level_shards, codecs, fill_value)


def _array_kwargs(compress_kwargs: dict, zarr_format: int):
    """The ``shards`` and ``fill_value`` of the level arrays, taken out of ``compress_kwargs``
    (TypeError if it holds a setting write_ome makes itself)."""
    bad = sorted(set(compress_kwargs) & set(_OWN_KWARGS))
    if bad:
        raise TypeError(f"write_ome sets {', '.join(bad)} itself (use chunks= and ngff= of write_ome)")
    shards = compress_kwargs.pop("shards", None)
    fill_value = compress_kwargs.pop("fill_value", None)
    if shards is not None and zarr_format != 3:
        raise ValueError("shards need ngff='0.5' (Zarr v3); OME-NGFF 0.4 is Zarr v2")
    return shards, fill_value


def _int_at_least(name: str, value, least: int) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, not {value!r}")
    return int(value)


def _level_ratios(ratios, default, levels: int) -> list:
    """One compression ratio per level (``default`` for each if ``ratios`` is None)."""
    if ratios is None:
        return [default] * levels
    if isinstance(ratios, (int, float, np.number)):
        raise TypeError(f"ratios must be one ratio per level (a list of {levels}), not {ratios!r}; "
                        "for one ratio everywhere set the codec's ratio")
    ratios = list(ratios)
    if len(ratios) != levels:
        raise ValueError(f"ratios {ratios} must have one value per level ({levels})")
    return ratios


# --- writing -------------------------------------------------------------------------------

def _open_group(path, plan: _Plan, overwrite: bool):
    """The image's group: the one an earlier call with the same settings wrote (resumed), or
    a new one holding the settings."""
    import zarr
    settings = plan.settings()
    group = None if overwrite else _existing(path, plan.zarr_format, settings)
    if group is None:
        if os.path.isfile(path) and overwrite:
            os.remove(path)
        group = zarr.open_group(path, mode="w" if overwrite else "a", zarr_format=plan.zarr_format)
        group.attrs[ATTR] = {"write_ome": settings}
    return group


def _write_level(group, path, plan: _Plan, i: int, compress_kwargs: dict) -> Result:
    """Compress level ``i`` into its array of ``group`` (created, or resumed)."""
    from .pipeline import compress
    arr = _level_array(group, path, plan, i)
    level = _level_source(plan, i, compress_kwargs.get("scheduler", "threads"))
    if tuple(level.shape) != tuple(plan.shapes[i]):   # pragma: no cover  (coarsen and level_shapes agree)
        raise RuntimeError(f"level {i} came out {level.shape}, expected {plan.shapes[i]}")
    return compress(level, arr, plan.codecs[i], **compress_kwargs)


def _level_array(group, path, plan: _Plan, i: int):
    """Level ``i``'s array: the one ``group`` holds, or a new one with the level's codec."""
    import zarr

    from .zarr3 import serializer_for
    name = str(i)
    if name in group:
        arr = group[name]
        if not isinstance(arr, zarr.Array):
            raise ValueError(f"{path}/{name} is a group, not the array of level {i}; pass overwrite=True")
        return arr
    kw = dict(name=name, shape=plan.shapes[i], chunks=plan.chunks[i], dtype=plan.src.dtype, fill_value=plan.fill,
              filters=None)
    if plan.zarr_format == 2:
        return group.create_array(compressors=plan.codecs[i], chunk_key_encoding={"name": "v2", "separator": "/"},
                                  **kw)
    return group.create_array(serializer=serializer_for(plan.codecs[i]), compressors=None, shards=plan.shards[i],
                              dimension_names=list(plan.axes), **kw)


def _level_source(plan: _Plan, i: int, scheduler) -> Source:
    """Level ``i`` of the source: the source itself, or its lazy block mean."""
    from .sources import ArraySource, DaskSource
    src = plan.src
    if i == 0:
        return src
    data = src.array if isinstance(src, DaskSource) else None
    level = DaskSource(_downsampled(src, data, plan.factors(i), plan.chunks[i], src.dtype))
    if isinstance(src, ArraySource) and scheduler not in ("threads", "sync"):
        # the source is in memory already; other processes get this (smaller) level's
        # blocks rather than a graph holding the whole source, once per task
        level = ArraySource(level.array.compute(scheduler="sync"), f"level {i} of {src.name}")
    return level


def _write_multiscales(group, path, plan: _Plan, write_metadata, fmt) -> None:
    """The multiscales metadata (with ome-zarr-py's ``write_metadata`` and Format ``fmt``),
    written last: a reader sees the image once every level is there."""
    datasets = [{"path": str(i), "coordinateTransformations": [
        {"type": "scale", "scale": [float(f) for f in plan.factors(i)]}]} for i in range(plan.levels)]
    name = os.path.basename(os.path.normpath(os.fspath(path)))
    write_metadata(group, datasets, fmt=fmt, axes=list(plan.axes), name=name)
