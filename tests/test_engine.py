"""The fitting engine serves every method: SCI's block networks get early stopping and error
sampling from the same loop as SIREN's; options are validated by name, once; presets and
defaults; the registry's dispatch of payloads."""
import json
import struct
import zlib

import numpy as np
import pytest
from conftest import DATA, fast_sci, smooth_volume

from inr_codecs import PayloadError, SCICodec, SIRENCodec, decode, payload, registry
from inr_codecs.fit import OPTION_NAMES, FitOptions
from inr_codecs.metrics import psnr
from inr_codecs.methods.sci import describe


@pytest.fixture(scope="module")
def blocks_chunk():
    """A chunk SCI cuts into 8 blocks (equidistant), each with a network."""
    return smooth_volume((16, 32, 32), "uint16", seed=3)


def test_sci_early_stopping_per_block(blocks_chunk):
    pytest.importorskip("torch")
    kw = dict(ratio=4, a_max=8, partition="equidistant", steps=120)
    full = fast_sci(**kw).encode(blocks_chunk)
    early = fast_sci(**kw, target_psnr=14.0).encode_batch([blocks_chunk])[0]
    assert len(describe(full).blocks) == 8
    assert 12 + 10 <= early.steps < 120          # stopped (checks every 10 steps), then 12 QAT steps
    assert psnr(blocks_chunk, decode(early.payload)) >= 14.0 - 1.5
    assert psnr(blocks_chunk, decode(full)) > psnr(blocks_chunk, decode(early.payload))
    stalled = fast_sci(**kw, plateau_steps=20, lr=1e-7, lr_schedule="constant").encode_batch([blocks_chunk])[0]
    # no progress beyond sampling noise: every block stops long before the budget (each after at
    # least one check and plateau_steps without gain, then its 12 QAT steps)
    assert 10 + 20 + 12 <= stalled.steps <= 10 + 2 * 20 + 12


def test_sci_error_sampling(blocks_chunk):
    pytest.importorskip("torch")
    kw = dict(ratio=4, a_max=8, partition="equidistant", steps=40, batch_size=2048)
    uniform = decode(fast_sci(**kw).encode(blocks_chunk))
    err = decode(fast_sci(**kw, sampling="error").encode(blocks_chunk))
    assert psnr(blocks_chunk, err) > psnr(blocks_chunk, uniform) - 1.0
    assert not np.array_equal(err, uniform)      # the draws differ: the sampler was used


def test_options_by_name():
    assert set(OPTION_NAMES) <= set(SIRENCodec(8).get_config()) and set(OPTION_NAMES) <= set(SCICodec(8).get_config())
    with pytest.raises(TypeError, match="'stpes'"):
        SIRENCodec(8, stpes=10)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        SCICodec(8, optimizer="sgd")
    with pytest.raises(ValueError, match="SCICodec needs an integer bit depth"):
        SCICodec(8, bits=None)
    assert SCICodec(8, steps=np.int64(7)).steps == 7 and type(SCICodec(8, steps=np.int64(7)).steps) is int
    assert SCICodec(8).fit_options() == FitOptions(optimizer="adam")
    assert SIRENCodec(8, lr=2e-3).fit_options(steps=5) == FitOptions(lr=2e-3, steps=5)


def test_paper_preset_is_the_former_default():
    """``SCICodec.paper`` is exactly the configuration SCICodec had by default before its defaults
    were measured (the golden payload sci_adaptive_adamax was written with it)."""
    golden = json.loads((DATA / "encode_v1" / "manifest.json").read_text())["cases"]["sci_adaptive_adamax"]
    new_options = {"sampling": "uniform", "target_psnr": None, "plateau_steps": None}   # SCI has them now
    # the configuration keeps fr as given (2.2); the golden one recorded its float32 value, which is
    # all that payloads and network sizes use
    assert np.float32(golden["config"]["fr"]) == np.float32(2.2)
    assert SCICodec.paper(16, steps=24, device="cpu", seed=5).get_config() == {**golden["config"], **new_options,
                                                                                "fr": 2.2}
    assert SCICodec.paper(16, optimizer="adam").optimizer == "adam"
    assert registry.make("sci", 16, preset="paper").optimizer == "adamax"
    with pytest.raises(ValueError, match="no paper preset"):
        SIRENCodec.paper(16)
    with pytest.raises(ValueError, match="unknown codec 'nope'"):
        registry.make("nope", 16)


def test_unknown_method_id_is_a_payload_error():
    good = SIRENCodec(8).encode(np.full((4, 4), 7, np.uint8))          # a constant chunk: no fit
    frame = bytearray(good[:-4])
    frame[5] = 99                                                     # method id
    forged = bytes(frame) + struct.pack("<I", zlib.crc32(bytes(frame)))
    assert payload.unpack(forged)[0].method == 99
    with pytest.raises(PayloadError, match="unknown method id 99"):
        decode(forged)
    with pytest.raises(PayloadError, match="unknown method id 99"):
        registry.describe(forged)
