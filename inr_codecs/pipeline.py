"""Whole-array compression: many chunks fitted at once, in parallel with Dask, resumable.

    from inr_codecs import SIRENCodec, compress
    result = compress("nuclei.tif", "nuclei.zarr", SIRENCodec(ratio=64), chunks=(64, 64, 64))
    print(result.ratio, result.psnr, result.seconds)

How it works: the array's write units (chunks, or shards of a sharded Zarr v3 array) are
cut into fixed *groups*; one Dask task reads a group's chunks from the source, trains their
networks together (:meth:`InrCodec.encode_batch`) and writes the payloads straight into the
store (:class:`~inr_codecs.zarr_io.Layout`), so the result is a normal Zarr array that the
codec reads. The groups depend only on the array's geometry and ``batch``, never on what is
already written; a rerun of the same call skips every unit already stored intact and fits
the groups still missing one, exactly as the first run would have (so on CPU, given the
codec's seed, the result is byte for byte that of an uninterrupted run), writing only the
missing units. A unit is written by one store operation, so no chunk is written twice; a
unit left truncated by a killed process fails its checksum and is written again.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .codec import InrCodec, available_cores
from .sources import ArraySource, Source, open_source

SCHEDULERS = ("threads", "processes", "sync")
WARM_STARTS = (None, "meta")
META_SAMPLE = 8             # chunks a learned initialisation is fitted to
SHARED_SAMPLE = 8           # chunks the networks shared per array are fitted to


@dataclass
class Result:
    """What :func:`compress` did. Byte counts are of chunk data (metadata excluded)."""

    target: str
    shape: tuple[int, ...]
    dtype: str
    chunks: tuple[int, ...]
    codec: dict
    chunks_total: int = 0
    chunks_encoded: int = 0     # fitted and written by this call
    chunks_skipped: int = 0     # already stored intact (resumed)
    chunks_empty: int = 0       # equal to the fill value everywhere: not stored, as zarr does
    raw_bytes: int = 0
    stored_bytes: int = 0
    seconds: float = 0.0
    fit_steps: int = 0          # optimiser steps over the chunks encoded by this call
    psnr: float | None = None   # over the whole array, peak = max - min (None without verify)
    max_abs_error: float | None = None
    _voxels: int = field(default=0, repr=False)     # of the chunks done so far
    _sq_err: float = field(default=0.0, repr=False)
    _lo: float = field(default=math.inf, repr=False)
    _hi: float = field(default=-math.inf, repr=False)

    @property
    def ratio(self) -> float:
        """Raw bytes of the array over stored chunk bytes."""
        return self.raw_bytes / self.stored_bytes if self.stored_bytes else math.inf

    @property
    def mb_per_s(self) -> float:
        """Megabytes of source compressed (or checked) per second of this call."""
        return self.raw_bytes / 1e6 / self.seconds if self.seconds else math.inf

    def add(self, part: dict) -> None:
        for k in ("chunks_encoded", "chunks_skipped", "chunks_empty", "stored_bytes", "fit_steps"):
            setattr(self, k, getattr(self, k) + part[k])
        self._voxels += part["voxels"]
        self._sq_err += part["sq_err"]
        self._lo, self._hi = min(self._lo, part["lo"]), max(self._hi, part["hi"])
        if part["max_abs"] is not None:
            self.max_abs_error = max(self.max_abs_error or 0.0, part["max_abs"])

    def running_psnr(self) -> float | None:
        """PSNR over the chunks checked so far (None before any was)."""
        if self._hi < self._lo:
            return None
        from .metrics import psnr_from
        return psnr_from(self._sq_err / self._voxels, self._hi - self._lo)

    def summary(self) -> dict:
        """JSON-ready summary."""
        out = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        out.update(shape=list(self.shape), chunks=list(self.chunks), ratio=round(self.ratio, 3),
                   mb_per_s=round(self.mb_per_s, 4), seconds=round(self.seconds, 3))
        if self.psnr is not None:
            out["psnr"] = round(self.psnr, 3)
        return out


# --- the task ------------------------------------------------------------------------------

def _encode_group(layout, source, units, init, verify: bool, torch_threads: int | None) -> dict:
    """Fit and write one group of write units; returns its statistics (see ``Result.add``).

    ``source`` is a :class:`Source` or a dict of each unit's region data (small sources sent
    to process workers). Units already stored intact are not written; if any unit of the
    group must be written, every non-empty chunk of the group is fitted (same batch as an
    uninterrupted run), and only the missing units' payloads are written.
    """
    if torch_threads:
        _set_torch_threads(torch_threads)
    stats = dict(chunks_encoded=0, chunks_skipped=0, chunks_empty=0, stored_bytes=0, fit_steps=0,
                 sq_err=0.0, lo=math.inf, hi=-math.inf, max_abs=None, voxels=0)
    status = {u: layout.status(u) for u in units}
    chunks = [c for u in units for c in layout.unit_chunks(u)]
    data = {}
    for u in units:
        region = layout.unit_region(u)
        block = source[u] if isinstance(source, dict) else source.read(region)
        for c in layout.unit_chunks(u):
            cr = layout.chunk_region(c)
            data[c] = block[tuple(slice(a.start - r.start, a.stop - r.start) for a, r in zip(cr, region))]
    todo = [u for u in units if status[u] != "ok"]
    payloads: dict = {}
    if todo:
        fit_chunks = [c for c in chunks if not layout.is_empty(data[c])]
        encoded = layout.codec.encode_batch([layout.pad(data[c]) for c in fit_chunks], init=init)
        payloads = {c: e.payload for c, e in zip(fit_chunks, encoded)}
        steps = {c: e.steps for c, e in zip(fit_chunks, encoded)}
        for u in todo:
            members = layout.unit_chunks(u)
            stats["stored_bytes"] += layout.write(u, [payloads.get(c) for c in members])
            stats["chunks_encoded"] += sum(c in payloads for c in members)
            stats["chunks_empty"] += sum(c not in payloads for c in members)
            stats["fit_steps"] += sum(steps.get(c, 0) for c in members)
    for u in units:
        if status[u] == "ok":
            stored = layout.read_payloads(u)
            stats["stored_bytes"] += sum(len(p) for p in stored if p is not None)
            stats["chunks_skipped"] += sum(p is not None for p in stored)
            stats["chunks_empty"] += sum(p is None for p in stored)
            payloads.update({c: p for c, p in zip(layout.unit_chunks(u), stored) if p is not None})
    if verify:
        for c in chunks:
            x = np.asarray(data[c], np.float64)
            p = payloads.get(c)
            y = (np.asarray(layout.decode_chunk(p, c), np.float64)[tuple(slice(0, s) for s in x.shape)]
                 if p is not None else np.full(x.shape, float(layout.fill_value)))
            err = np.abs(x - y)
            stats["sq_err"] += float(np.sum(err ** 2))
            stats["max_abs"] = max(stats["max_abs"] or 0.0, float(err.max()))
            stats["lo"], stats["hi"] = min(stats["lo"], float(x.min())), max(stats["hi"], float(x.max()))
    stats["voxels"] = sum(data[c].size for c in chunks)
    return stats


def _torch_threads() -> int | None:
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


def _set_torch_threads(n: int) -> None:
    try:
        import torch
    except ImportError:     # the fit will say torch is missing
        return
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


# --- driver --------------------------------------------------------------------------------

def compress(source, target, codec=None, *, chunks=None, shards=None, zarr_format=None,
             overwrite: bool = False, scheduler="threads", workers: int | None = None,
             batch: int | None = None, warm_start: str | None = None, verify: bool = True,
             progress: bool = True, resources: dict | None = None, fill_value=None,
             on_group=None) -> Result:
    """Compress a whole array into a Zarr array, many chunks per fit, in parallel.

    Parameters
    ----------
    source
        numpy or dask array, zarr array, a path (.npy, .tif, .nii(.gz), Zarr array), or a
        tensorstore spec (see :func:`inr_codecs.sources.open_source`).
    target
        a path (created, or resumed if it exists with the same settings) or a zarr.Array
        whose codec is an inr-codecs codec (v2 compressor or v3 serializer, sharded or not).
    codec
        ``SIRENCodec(...)`` / ``SCICodec(...)`` (Zarr v2 unless ``zarr_format=3`` or
        ``shards``) or a serializer (Zarr v3); None to use an existing target's codec. A codec
        that shares networks per array (``LatentGridCodec(shared=True)``) gets them fitted
        first (:func:`with_shared_networks`), then the chunks are fitted under them.
    chunks, shards
        chunk shape (default 64 per axis) and shard shape (Zarr v3) of a new array.
    overwrite
        replace an existing array at ``target`` instead of resuming it.
    scheduler
        "threads" (default), "processes", "sync", or a ``dask.distributed.Client``.
    workers
        parallel tasks for the local schedulers (default: 1 on CUDA, else 1 with all cores
        to torch). Each of ``workers`` threads gets ``cores // workers`` torch threads (cores:
        those the process may use, at most ``OMP_NUM_THREADS`` where it is set).
    batch
        write units per task (one fit): default one shard if sharded, else 8 chunks on CPU
        and 64 on CUDA. Part of what makes a rerun identical: keep it between runs.
    warm_start
        None, or "meta": fit a learned initialisation (``SIRENCodec.learn_init``) to up to
        8 chunks spread over the array, then start every chunk from it.
    verify
        decode each chunk after writing it and report PSNR and max abs error (a chunk that
        cannot be decoded stops the run with a PayloadError naming it and its key).
    progress
        show a tqdm progress bar (chunks, MB/s, ETA, running PSNR).
    resources
        Dask resources each task needs on a distributed cluster, e.g. ``{"GPU": 1}`` with
        workers started as ``dask worker ... --resources GPU=1`` (one per GPU).
    on_group
        called in this process with the running :class:`Result` after each finished group;
        raising from it stops the run (what was written stays; a rerun resumes).

    Notes
    -----
    The array's ``inr_codecs_complete`` attribute (:data:`~inr_codecs.zarr_io.COMPLETE_ATTR`)
    is set to False before the first chunk is written and to True after the last one (and its
    verification): an interrupted run leaves False, and
    :func:`~inr_codecs.zarr_io.is_complete` (or ``inr-codecs info``) tells such an array from a
    finished one. An existing target with other settings raises
    :class:`~inr_codecs.zarr_io.SettingsMismatch` (a ValueError) naming each difference; the
    PyTorch and Dask of the ``fit`` extra are checked for (ImportError) before anything is
    written.
    """
    from .zarr_io import Layout, mark_complete, open_target
    src = open_source(source)
    client = _check_args(scheduler, warm_start, batch, workers)
    require_fit()
    codec = with_shared_networks(codec, target, src, chunks, overwrite)
    z = open_target(target, src, codec, chunks=chunks, shards=shards, zarr_format=zarr_format,
                    overwrite=overwrite, fill_value=fill_value)
    layout = Layout.from_array(z)
    if layout.in_memory and scheduler != "threads" and scheduler != "sync":
        raise ValueError("an in-memory (MemoryStore) target can only be written by scheduler='threads' or 'sync'")
    groups, n_workers, threads = _plan(layout, batch, workers)
    mark_complete(z, False)     # before any chunk is written: an interrupted run is marked as one
    t0 = time.perf_counter()
    init = _warm_start(layout, src, warm_start) if warm_start else None
    result = _new_result(target, layout)
    bar = _bar(result.chunks_total, src.name) if progress else None
    done = _Progress(result, layout.dtype.itemsize, t0, bar, on_group)
    try:
        inputs = _inputs(src, layout, groups, scheduler)
        if client is not None:
            _run_distributed(client, layout, inputs, groups, init, verify, resources, done)
        else:
            _run_local(scheduler, n_workers, layout, inputs, groups, init, verify, threads, done)
    finally:
        done.close()
    mark_complete(z, True)      # every group's chunks are written (and verified): the last write
    result.seconds = time.perf_counter() - t0
    result.psnr = result.running_psnr()
    return result


def require_fit() -> None:
    """ImportError naming the ``fit`` extra unless what compressing needs (PyTorch, Dask) is
    installed: checked before anything is written."""
    from ._extras import require
    require("compressing", "fit", ("torch", "dask"))


def _check_args(scheduler, warm_start, batch, workers):
    """The dask.distributed Client ``scheduler`` is (None for a local scheduler's name), after
    checking the settings compress takes as they are."""
    if warm_start not in WARM_STARTS:
        raise ValueError(f"warm_start must be one of {WARM_STARTS}, not {warm_start!r}")
    client = None if isinstance(scheduler, str) else scheduler
    if client is None and scheduler not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {SCHEDULERS} or a dask.distributed Client, not {scheduler!r}")
    if batch is not None and batch < 1:
        raise ValueError(f"batch must be >= 1, not {batch}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, not {workers}")
    return client


def _plan(layout, batch: int | None, workers: int | None):
    """The groups of write units (one task, one fit each), the number of local workers, and
    the torch threads each gets (None on CUDA)."""
    cuda = _uses_cuda(layout.codec)
    units = layout.units()
    per_task = 1 if layout.sharded else (batch or (64 if cuda else 8))
    groups = [units[i:i + per_task] for i in range(0, len(units), per_task)]
    n_workers = workers or 1
    threads = None if cuda else max(1, _cores() // n_workers)
    return groups, n_workers, threads


def _cores() -> int:
    """The cores this process may use, at most ``OMP_NUM_THREADS`` where that is set (a user's cap
    on compute threads)."""
    cores = available_cores()
    cap = os.environ.get("OMP_NUM_THREADS", "")
    return min(cores, int(cap)) if cap.isdigit() and int(cap) > 0 else cores


def _new_result(target, layout) -> Result:
    """An empty :class:`Result` for writing ``layout``'s array at ``target``."""
    return Result(str(target if not hasattr(target, "store_path") else target.store_path), layout.shape,
                  str(layout.dtype), layout.chunks, layout.codec.get_config(),
                  chunks_total=math.prod(layout.chunk_grid),
                  raw_bytes=int(np.prod(layout.shape)) * layout.dtype.itemsize)


class _Progress:
    """Called with each finished group's statistics: adds them to the :class:`Result`, moves
    the progress bar (if any) and calls ``on_group`` (if given)."""

    def __init__(self, result: Result, itemsize: int, t0: float, bar, on_group):
        self.result, self.itemsize, self.t0, self.bar, self.on_group = result, itemsize, t0, bar, on_group

    def __call__(self, part: dict) -> None:
        result = self.result
        result.add(part)
        result.seconds = time.perf_counter() - self.t0
        if self.bar is not None:
            n = part["chunks_encoded"] + part["chunks_skipped"] + part["chunks_empty"]
            mb_s = result._voxels * self.itemsize / 1e6 / max(result.seconds, 1e-9)
            post = {"MB/s": f"{mb_s:.3g}"}
            p = result.running_psnr()
            if p is not None:
                post["PSNR"] = f"{p:.2f}"
            self.bar.set_postfix(post, refresh=False)
            self.bar.update(n)
        if self.on_group is not None:
            self.on_group(result)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _uses_cuda(codec: InrCodec) -> bool:
    device = getattr(codec, "device", "cpu")
    if device == "auto":
        try:
            import torch
        except ImportError:
            return False
        return torch.cuda.is_available()
    return str(device).startswith("cuda")


def _inputs(src: Source, layout, groups, scheduler):
    """What each task reads from: the source itself, or (an in-memory array going to other
    processes) just its units' data, so a task does not carry the whole array."""
    if isinstance(src, ArraySource) and scheduler not in ("threads", "sync"):
        return [{u: src.read(layout.unit_region(u)) for u in g} for g in groups]
    return [src] * len(groups)


def _spread(total: int, n: int) -> np.ndarray:
    """Flat indices of up to 4 n of ``total`` chunks, evenly spread (the same every run): the
    candidates for a sample of n non-constant chunks."""
    return np.unique(np.linspace(0, total - 1, min(total, 4 * n)).round().astype(int))


def with_shared_networks(codec, target, src: Source, chunks, overwrite: bool = False):
    """``codec``, or for one that shares networks per array and has none yet
    (``LatentGridCodec(shared=True)``): the codec of the array being resumed at ``target`` if it
    is otherwise the same, else the codec with networks fitted to up to SHARED_SAMPLE full,
    non-constant chunks spread evenly over the source (the same chunks every run)."""
    import zarr

    from .zarr3 import InrSerializer, as_codec, serializer_for
    from .zarr_io import Layout
    inr = None if codec is None else as_codec(codec)
    if inr is None or not getattr(inr, "shared", False) or inr.networks is not None:
        return codec
    fitted = None
    if not overwrite and isinstance(target, (str, os.PathLike)) and os.path.exists(target):
        try:
            existing = Layout.from_array(zarr.open_array(target, mode="r")).codec
        except Exception:        # not an inr-codecs array: open_target says what is wrong
            existing = None
        if type(existing) is type(inr) and {**existing.get_config(), "networks": None} == inr.get_config():
            fitted = existing
    if fitted is None:
        shape = tuple(int(c) for c in chunks) if chunks else tuple(min(s, 64) for s in src.shape)
        grid = [s // c for s, c in zip(src.shape, shape)]          # full chunks only: one shape
        total = math.prod(grid)
        sample = []
        for flat in _spread(total, SHARED_SAMPLE):
            index = np.unravel_index(flat, grid)
            data = src.read(tuple(slice(i * c, (i + 1) * c) for i, c in zip(index, shape)))
            if data.min() != data.max():
                sample.append(data)
            if len(sample) == SHARED_SAMPLE:
                break
        if not sample:
            raise ValueError(f"networks shared per array are fitted to full chunks of {shape} that are not "
                             "constant; the source has none")
        fitted = inr.fit_networks(sample)
    return serializer_for(fitted) if isinstance(codec, InrSerializer) else fitted


def _warm_start(layout, src: Source, kind: str) -> list[np.ndarray] | None:
    """A learned initialisation fitted to up to META_SAMPLE non-empty chunks spread evenly
    over the array (the same chunks every run)."""
    if not hasattr(layout.codec, "learn_init"):
        raise ValueError(f"warm_start={kind!r} needs a codec with learn_init (SIRENCodec), not "
                         f"{type(layout.codec).__name__}")
    grid = [math.ceil(s / c) for s, c in zip(layout.shape, layout.chunks)]
    total = int(np.prod(grid))
    sample = []
    for flat in _spread(total, META_SAMPLE):
        data = src.read(layout.chunk_region(np.unravel_index(flat, grid)))
        padded = layout.pad(data)
        if not layout.is_empty(data) and padded.min() != padded.max():
            sample.append(padded)
        if len(sample) == META_SAMPLE:
            break
    if not sample:
        return None
    return layout.codec.learn_init(sample)


def _run_local(scheduler, n_workers, layout, inputs, groups, init, verify, threads, done):
    import dask
    from dask.callbacks import Callback

    tasks = [dask.delayed(_encode_group, pure=False)(layout, inp, g, init, verify,
                                                     None if scheduler == "threads" else threads)
             for inp, g in zip(inputs, groups)]
    saved = _torch_threads()
    if scheduler == "threads" and threads:
        _set_torch_threads(threads)       # torch's pool is per process: shared by the worker threads

    class Progress(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            if isinstance(result, dict) and "voxels" in result:
                done(result)

    kw = {"num_workers": n_workers} if scheduler != "sync" else {}
    if scheduler == "processes":
        import multiprocessing
        kw["pool"] = _process_pool(n_workers, multiprocessing)
    try:
        with Progress():
            dask.compute(*tasks, scheduler=scheduler, **kw)
    finally:
        if "pool" in kw:
            kw["pool"].shutdown(wait=True, cancel_futures=True)
        if saved:
            _set_torch_threads(saved)


def _process_pool(n, multiprocessing):
    """Spawned worker processes (fork is unsafe once torch or tensorstore started threads)."""
    from concurrent.futures import ProcessPoolExecutor
    return ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"))


def _run_distributed(client, layout, inputs, groups, init, verify, resources, done):
    from distributed import as_completed
    futures = [client.submit(_encode_group, layout, inp, g, init, verify, None, pure=False,
                             resources=resources, retries=2)
               for inp, g in zip(inputs, groups)]
    try:
        for fut in as_completed(futures):
            done(fut.result())
    except BaseException:
        client.cancel(futures)
        raise


def _bar(total, name):
    try:
        from tqdm.auto import tqdm
    except ImportError:     # progress is a nicety; the work goes on without it
        return None
    return tqdm(total=total, desc=f"compress {name}", unit="chunk", file=sys.stderr, smoothing=0.1)


__all__ = ["Result", "compress"]
