"""Whole-array compression: batched fits, Dask schedulers, resuming, dead workers."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr
from conftest import DATA, fast_codec, fast_sci, smooth_volume

from inr_codecs import PayloadError, compress, decode, payload
from inr_codecs.metrics import psnr, stored_chunk_bytes
from inr_codecs.zarr_io import SettingsMismatch, is_complete

CHUNKS = (16, 32, 32)


@pytest.fixture(scope="module")
def vol():
    """Real confocal data, 16 x 64 x 96: six chunks of 16 x 32 x 32."""
    crop = np.load(DATA / "nuclei_16x64x64.npy")
    return np.concatenate([crop, crop[:, :, :32][:, ::-1]], axis=2)


def _chunk_files(path):
    return {f: (path / f).read_bytes() for f in stored_chunk_bytes(path)[1]}


@pytest.fixture(scope="module")
def reference(vol, tmp_path_factory):
    """An uninterrupted run: every chunk file's bytes."""
    path = tmp_path_factory.mktemp("ref") / "ref.zarr"
    r = compress(vol, str(path), fast_codec(8), chunks=CHUNKS, batch=2, progress=False)
    assert r.chunks_encoded == 6 and r.chunks_skipped == 0
    return _chunk_files(path)


def test_batched_fit_matches_one_at_a_time(vol):
    """Same payload format and the same quality whether chunks train alone or together."""
    chunks = [vol[:, :32, i:i + 32] for i in (0, 32, 64)]
    for codec in (fast_codec(8, steps=20), fast_sci(8, steps=20)):
        alone = [codec.encode(c) for c in chunks]
        together = codec.encode_batch(chunks)
        for c, a, t in zip(chunks, alone, together):
            assert len(t.payload) <= c.nbytes // 8 and t.steps == 20
            assert decode(t.payload).shape == c.shape
            assert abs(psnr(c, decode(a)) - psnr(c, decode(t.payload))) < 0.3


def test_batch_mixes_constant_and_odd_chunks():
    codec = fast_codec(8)
    x = smooth_volume(CHUNKS, "uint16")
    odd = smooth_volume((16, 32, 48), "int16", seed=1)
    out = codec.encode_batch([x, np.full(CHUNKS, 7, np.uint16), odd])
    assert np.array_equal(decode(out[1].payload), np.full(CHUNKS, 7, np.uint16)) and out[1].steps == 0
    assert decode(out[2].payload).dtype == np.int16 and decode(out[2].payload).shape == odd.shape


@pytest.mark.parametrize("kind", ["numpy-v2", "dask-v3", "zarr-sharded", "npy-path-v3"])
def test_compress_reads_every_source_and_writes_every_layout(vol, tmp_path, kind):
    import dask.array as da
    source = {"numpy-v2": vol, "dask-v3": da.from_array(vol, chunks=(8, 32, 32))}.get(kind)
    if kind == "zarr-sharded":
        source = zarr.create_array(str(tmp_path / "src.zarr"), shape=vol.shape, chunks=(8, 16, 16), dtype=vol.dtype)
        source[:] = vol
    if kind == "npy-path-v3":
        np.save(tmp_path / "v.npy", vol)
        source = str(tmp_path / "v.npy")
    kw = {"numpy-v2": {}, "zarr-sharded": {"shards": (16, 64, 64)}}.get(kind, {"zarr_format": 3})
    r = compress(source, str(tmp_path / "out.zarr"), fast_codec(8), chunks=CHUNKS, progress=False, **kw)
    back = zarr.open_array(str(tmp_path / "out.zarr"), mode="r")[:]
    assert back.dtype == vol.dtype and r.chunks_encoded == 6
    assert r.ratio >= 8 and r.stored_bytes == stored_chunk_bytes(tmp_path / "out.zarr")[0]
    assert r.psnr == pytest.approx(psnr(vol, back), abs=1e-6) and r.psnr > 15
    assert r.max_abs_error == np.abs(vol.astype(float) - back).max()


def test_identical_to_codec_encode_through_zarr(vol, tmp_path, reference):
    """Payloads written directly are those zarr would store through the codec (batch of 1)."""
    z = zarr.create_array(str(tmp_path / "z.zarr"), shape=vol.shape, chunks=CHUNKS, dtype=vol.dtype,
                          zarr_format=2, compressors=fast_codec(8), fill_value=0)
    z[:] = vol
    r = compress(vol, str(tmp_path / "c.zarr"), fast_codec(8), chunks=CHUNKS, batch=1, progress=False)
    assert r.chunks_encoded == 6
    assert _chunk_files(tmp_path / "c.zarr") == _chunk_files(tmp_path / "z.zarr")


def test_interrupted_run_resumes_to_the_same_bytes(vol, tmp_path, reference):
    path = tmp_path / "a.zarr"

    def stop(result):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compress(vol, str(path), fast_codec(8), chunks=CHUNKS, batch=2, scheduler="sync", progress=False,
                 on_group=stop)
    first = _chunk_files(path)
    assert len(first) == 2
    assert is_complete(str(path)) is False          # the interrupted run is marked as one
    stamps = {f: os.stat(path / f).st_mtime_ns for f in first}
    r = compress(vol, str(path), fast_codec(8), chunks=CHUNKS, batch=2, progress=False)
    assert (r.chunks_encoded, r.chunks_skipped) == (4, 2)
    assert is_complete(str(path)) is True
    assert {f: os.stat(path / f).st_mtime_ns for f in first} == stamps     # not written again
    assert _chunk_files(path) == reference
    # a truncated chunk (a process killed mid-write) fails its checksum and is written again; a
    # rerun marks the array incomplete before it writes, so one interrupted again says so
    victim = sorted(first)[0]
    (path / victim).write_bytes(first[victim][:40])
    with pytest.raises(KeyboardInterrupt):
        compress(vol, str(path), fast_codec(8), chunks=CHUNKS, batch=2, scheduler="sync", progress=False,
                 on_group=stop)
    assert is_complete(str(path)) is False
    r = compress(vol, str(path), fast_codec(8), chunks=CHUNKS, batch=2, progress=False)
    assert _chunk_files(path) == reference and is_complete(str(path)) is True


def test_killed_cli_run_resumes_with_the_same_command(vol, tmp_path, reference):
    np.save(tmp_path / "v.npy", vol)
    target = tmp_path / "k.zarr"
    cmd = [sys.executable, "-m", "inr_codecs.cli", "compress", str(tmp_path / "v.npy"), str(target),
           "--ratio", "8", "--chunks", ",".join(map(str, CHUNKS)), "--zarr-format", "2", "--batch", "2",
           "--steps", "12", "--bits", "8", "--device", "cpu", "--scheduler", "sync", "--no-progress", "--json"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and len(_files(target)) < 2:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = _chunk_files(target)
    assert 0 < len(written) < 6, "the run should have been killed part-way"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    import json
    summary = json.loads(done.stdout)
    assert summary["chunks_skipped"] + summary["chunks_encoded"] == 6
    intact = sum(_is_payload(b) for b in written.values())    # a file caught mid-write is redone
    assert (summary["chunks_skipped"], summary["chunks_encoded"]) == (intact, 6 - intact)
    assert _chunk_files(target) == reference


def _is_payload(data) -> bool:
    try:
        decode(data)
    except ValueError:
        return False
    return True


def _files(path):
    try:
        return stored_chunk_bytes(path)[1]
    except FileNotFoundError:
        return []


def test_process_scheduler(vol, tmp_path, reference):
    r = compress(vol, str(tmp_path / "p.zarr"), fast_codec(8), chunks=CHUNKS, batch=2, scheduler="processes",
                 workers=2, progress=False)
    assert r.chunks_encoded == 6 and _chunk_files(tmp_path / "p.zarr") == reference


def test_local_cluster_with_a_worker_killed_mid_run(vol, tmp_path, monkeypatch):
    """Two worker processes; one is killed after the first group finishes: its groups are
    retried elsewhere and the array equals an uninterrupted run on the same cluster (payload
    bytes depend on torch's thread count, so the reference runs on the same workers)."""
    distributed = pytest.importorskip("distributed")
    # distributed's nanny sets these in this process's environment (its 'pre-spawn-environ'),
    # which later subprocesses would inherit: restore them afterwards
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.setenv(var, os.environ.get(var, ""))     # recorded: teardown restores (or removes) it
        if not os.environ[var]:
            monkeypatch.delenv(var)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  worker_class=distributed.Nanny) as cluster, distributed.Client(cluster) as client:
        run = dict(chunks=CHUNKS, batch=1, scheduler=client, progress=False)
        compress(vol, str(tmp_path / "ref.zarr"), fast_codec(8), **run)
        pids = client.run(os.getpid)
        killed = []

        def kill_one(result):
            if not killed:
                victim = sorted(pids)[0]
                killed.append(victim)
                os.kill(pids[victim], signal.SIGKILL)

        r = compress(vol, str(tmp_path / "d.zarr"), fast_codec(8), on_group=kill_one, **run)
    assert killed and r.chunks_encoded + r.chunks_skipped == 6
    assert _chunk_files(tmp_path / "d.zarr") == _chunk_files(tmp_path / "ref.zarr")
    assert psnr(vol, zarr.open_array(str(tmp_path / "d.zarr"), mode="r")[:]) == pytest.approx(r.psnr)


def test_existing_target_with_other_settings_is_refused_and_kept(vol, tmp_path):
    path = tmp_path / "e.zarr"
    compress(vol, str(path), fast_codec(8), chunks=CHUNKS, progress=False)
    before = _chunk_files(path)
    with pytest.raises(SettingsMismatch) as e:
        compress(vol, str(path), fast_codec(8, steps=13), chunks=CHUNKS, progress=False)
    # only what differs, in the Python API's names
    assert e.value.differences == [("steps", 12, 13)]
    assert "exists with different settings: steps=12 (asked 13); pass overwrite=True" in str(e.value)
    with pytest.raises(ValueError, match=r"^\S+ exists with different settings: chunks=\(16, 32, 32\) "
                                         r"\(asked \(16, 64, 32\)\); pass overwrite=True"):
        compress(vol, str(path), fast_codec(8), chunks=(16, 64, 32), progress=False)
    assert _chunk_files(path) == before
    r = compress(vol, str(path), fast_codec(8, steps=13), chunks=CHUNKS, overwrite=True, progress=False)
    assert r.chunks_encoded == 6


def test_bad_arguments_are_clear(vol, tmp_path):
    with pytest.raises(ValueError, match="scheduler"):
        compress(vol, str(tmp_path / "a.zarr"), fast_codec(8), chunks=CHUNKS, scheduler="gpu", progress=False)
    mem = zarr.create_array(zarr.storage.MemoryStore(), shape=vol.shape, chunks=CHUNKS, dtype=vol.dtype,
                            zarr_format=2, compressors=fast_codec(8))
    with pytest.raises(ValueError, match="MemoryStore"):
        compress(vol, mem, scheduler="processes", progress=False)
    zstd = zarr.create_array(str(tmp_path / "zstd.zarr"), shape=vol.shape, chunks=CHUNKS, dtype=vol.dtype)
    with pytest.raises(ValueError, match="compressors=None"):
        compress(vol, zstd, progress=False)
    other = zarr.create_array(str(tmp_path / "o.zarr"), shape=(16, 64, 64), chunks=CHUNKS, dtype=vol.dtype,
                              zarr_format=2, compressors=fast_codec(8))
    with pytest.raises(ValueError, match="shape"):
        compress(vol, other, progress=False)
    with pytest.raises(ValueError, match="ratio"):
        compress(vol, str(tmp_path / "b.zarr"), fast_codec(4096), chunks=CHUNKS, progress=False)
    assert not (tmp_path / "b.zarr").exists() and not (tmp_path / "a.zarr").exists()


def test_in_memory_array_target(vol):
    z = zarr.create_array(zarr.storage.MemoryStore(), shape=vol.shape, chunks=CHUNKS, dtype=vol.dtype,
                          serializer=_serializer(), compressors=None)
    r = compress(vol, z, progress=False)
    assert r.chunks_encoded == 6 and psnr(vol, z[:]) == pytest.approx(r.psnr)


def _serializer():
    from conftest import fast_serializer
    return fast_serializer(8)


def test_empty_chunks_are_not_stored(tmp_path):
    x = np.zeros((16, 64, 64), np.uint16)
    x[:, :32, :32] = smooth_volume((16, 32, 32), "uint16")
    r = compress(x, str(tmp_path / "z.zarr"), fast_codec(8), chunks=CHUNKS, progress=False)
    assert (r.chunks_encoded, r.chunks_empty) == (1, 3) and len(_chunk_files(tmp_path / "z.zarr")) == 1
    assert np.array_equal(zarr.open_array(str(tmp_path / "z.zarr"))[:, 32:], x[:, 32:])


def test_early_stopping_stops_at_the_target(vol):
    chunks = [vol[:, :32, i:i + 32] for i in (0, 32)]
    full = fast_codec(8, steps=150).encode_batch(chunks)
    early = fast_codec(8, steps=150, target_psnr=20.0).encode_batch(chunks)
    for c, f, e in zip(chunks, full, early):
        assert e.steps < f.steps == 150
        peak_psnr = psnr(c, decode(e.payload))      # peak = the chunk's max - min, as the target
        assert peak_psnr >= 20.0 - 1.5 and psnr(c, decode(f.payload)) > peak_psnr
    # a fit that makes no progress (lr 1e-7) stops once plateau_steps steps gained nothing (checked
    # every CHECK_EVERY steps), then gets its 15 quantisation-aware steps; one that learns goes on
    from inr_codecs.fit import CHECK_EVERY
    stalled = fast_codec(8, steps=150, plateau_steps=20, lr=1e-7, lr_schedule="constant").encode_batch(chunks)
    assert [e.steps for e in stalled] == [CHECK_EVERY + 20 + 15] * 2
    learning = fast_codec(8, steps=150, plateau_steps=20, lr_schedule="constant").encode_batch(chunks)
    assert [e.steps for e in learning] == [150, 150]
    with pytest.raises(ValueError, match="plateau_steps"):
        fast_codec(8, plateau_steps=3)


def test_error_sampling_and_learned_init(vol, tmp_path):
    chunks = [vol[:, :32, i:i + 32] for i in (0, 32, 64)]
    codec = fast_codec(8, steps=30, batch_size=4096)
    init = codec.learn_init(chunks, rounds=3, inner_steps=10)
    assert [p.shape for p in init] == [p.shape for p in codec.learn_init(chunks[:2], rounds=1, inner_steps=2)]
    assert all(np.array_equal(a, b) for a, b in zip(init, codec.learn_init(chunks, rounds=3, inner_steps=10)))
    cold = codec.encode_batch(chunks)
    warm = codec.encode_batch(chunks, init=init)
    err = fast_codec(8, steps=30, batch_size=4096, sampling="error").encode_batch(chunks)
    def mean(enc):
        return np.mean([psnr(c, decode(e.payload)) for c, e in zip(chunks, enc)])

    assert mean(warm) > mean(cold) and mean(err) > mean(cold) - 1.0
    with pytest.raises(ValueError, match="fixed bit depth"):
        fast_codec(8, bits=None).learn_init(chunks)
    with pytest.raises(ValueError, match="init has tensor shapes"):
        codec.encode_batch(chunks, init=init[:-1])
    with pytest.raises(ValueError, match="warm start"):
        fast_sci(8).encode_batch(chunks, init=init)
    r = compress(np.ascontiguousarray(vol), str(tmp_path / "w.zarr"), codec, chunks=CHUNKS, warm_start="meta",
                 progress=False)
    assert r.chunks_encoded == 6 and r.psnr > 10


def test_cuda_batched_compress_decodes_on_numpy(vol, tmp_path):
    """The CUDA path: batched fits with early stopping and error sampling on the GPU; reading
    needs numpy only."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    codec = fast_codec(8, device="cuda", steps=60, sampling="error", target_psnr=18.0, precision="high")
    r = compress(vol, str(tmp_path / "g.zarr"), codec, chunks=CHUNKS, progress=False)
    assert r.chunks_encoded == 6 and r.ratio >= 8 and r.psnr > 12
    assert psnr(vol, zarr.open_array(str(tmp_path / "g.zarr"), mode="r")[:]) == pytest.approx(r.psnr)


def test_verify_names_an_unreadable_chunk_and_the_array_stays_incomplete(tmp_path):
    """A stored chunk whose header is intact (so a resume keeps it) but whose body does not
    decode stops the verifying rerun with a PayloadError naming the chunk and its key."""
    x = smooth_volume((16, 32, 32), "uint16")
    path = tmp_path / "v.zarr"
    compress(x, str(path), fast_codec(8), chunks=(16, 16, 16), zarr_format=2, progress=False)
    header, body = payload.unpack((path / "0.0.1").read_bytes())
    (path / "0.0.1").write_bytes(payload.pack(header, bytes(body[:-4])))     # checksum recomputed
    with pytest.raises(PayloadError, match=r"chunk \(0, 0, 1\) \(key '0\.0\.1'\): "):
        compress(x, str(path), fast_codec(8), chunks=(16, 16, 16), zarr_format=2, progress=False)
    assert is_complete(str(path)) is False


def test_compress_without_the_fit_extra_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "dask", None)       # 'import dask' now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'inr-codecs\[fit\]' \(missing: dask\)"):
        compress(smooth_volume((16, 16, 16), "uint16"), str(tmp_path / "a.zarr"), fast_codec(8), progress=False)
    assert not (tmp_path / "a.zarr").exists()


def test_torch_threads_respect_omp_num_threads(monkeypatch):
    """Fitting threads per worker are the cores this process may use, capped by OMP_NUM_THREADS
    (a user's cap; with 1, a CPU fit's sums do not depend on how threads are scheduled)."""
    from inr_codecs import pipeline
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert pipeline._cores() == 8
    for value, cores in (("1", 1), ("3", 3), ("64", 8), ("", 8), ("x", 8)):
        monkeypatch.setenv("OMP_NUM_THREADS", value)
        assert pipeline._cores() == cores, value
