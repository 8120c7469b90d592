"""SCICodec: partition optimality, allocation, budget, deblocking, round trips."""
import itertools
import json

import numcodecs

import numpy as np
import pytest
from conftest import DATA, fast_sci, smooth_volume
from hypothesis import assume, given
from hypothesis import strategies as st

from inr_codecs import BudgetError, PayloadError, SCICodec, decode, payload, registry
from inr_codecs.methods.sci import encoder as sci_encoder
from inr_codecs.methods.sci import format as sci_format
from inr_codecs.methods.sci import partition
from inr_codecs.nn import param_count
from inr_codecs.metrics import psnr


# --- partition ------------------------------------------------------------------------------

def _all_partitions(tree, node):
    """Every set of nodes with exactly one node on each root-to-leaf path (brute force)."""
    out = [[node]]
    kids = tree.kids[node]
    if kids:
        for combo in itertools.product(*(_all_partitions(tree, c) for c in kids)):
            out.append([n for part in combo for n in part])
    return out


@pytest.mark.parametrize("shape,levels", [((16, 16), 2), ((8, 8, 8), 1), ((16, 8, 8), 2),
                                          ((13, 21), 2), ((8, 8, 8, 8), 1), ((12, 8, 17), 2)])
def test_partition_equals_brute_force(shape, levels):
    tree = partition.Tree(shape, levels)
    partitions = _all_partitions(tree, tree.root)
    rng = np.random.default_rng(len(tree.nodes))
    for trial in range(20):
        value = {n: float(rng.uniform(0, 1)) * n.size / tree.root.size for n in tree.nodes}
        for a_max in sorted({1, 4, len(tree.kids[tree.root]), 7, 12, 40}):
            got = partition.best_partition(tree, value, a_max)
            feasible = [p for p in partitions if len(p) <= a_max]
            best = max(sum(value[n] for n in p) for p in feasible)
            assert len(got) <= a_max
            assert sum(value[n] for n in got) == pytest.approx(best, rel=1e-12)
            # the blocks tile the chunk exactly once
            cover = np.zeros(shape, int)
            for b in got:
                cover[b.slices] += 1
            assert (cover == 1).all()


def test_partition_equals_the_papers_ilp_solved_by_highs():
    """Eqs. 8-12 as an integer program (scipy's HiGHS) on a tree too large to enumerate."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    tree = partition.Tree((32, 32, 32), 2)         # 1 + 8 + 64 nodes, 2^8 + 1 ... far too many sets
    nodes = tree.nodes
    index = {n: i for i, n in enumerate(nodes)}
    parent = {c: p for p in nodes for c in tree.kids[p]}
    leaves = [n for n in nodes if not tree.kids[n]]
    rows = []
    for leaf in leaves:                      # Eq. 12: one chosen node on every root-to-leaf path
        row, n = np.zeros(len(nodes)), leaf
        while True:
            row[index[n]] = 1
            if n not in parent:
                break
            n = parent[n]
        rows.append(row)
    rng = np.random.default_rng(3)
    for a_max in (1, 8, 15, 22, 36, 57):
        value = {n: float(rng.uniform(0.2, 1)) * n.size / tree.root.size for n in nodes}
        c = -np.array([value[n] for n in nodes])
        cons = [LinearConstraint(np.array(rows), 1, 1), LinearConstraint(np.ones((1, len(nodes))), 0, a_max)]
        res = milp(c, constraints=cons, integrality=np.ones(len(nodes)), bounds=Bounds(0, 1))
        got = partition.best_partition(tree, value, a_max)
        assert sum(value[n] for n in got) == pytest.approx(-res.fun, rel=1e-9)


def test_split_rule_handles_uneven_and_short_axes():
    kids = sci_format.children(sci_format.Node((0, 0, 0), (9, 12, 7), 0))
    # axis 0 (9) splits 4 | 5, axis 1 (12) splits 6 | 6, axis 2 (7 < 2 * MIN_SIDE) is not split
    assert [(k.start, k.stop) for k in kids] == [
        ((0, 0, 0), (4, 6, 7)), ((0, 6, 0), (4, 12, 7)), ((4, 0, 0), (9, 6, 7)), ((4, 6, 0), (9, 12, 7))]
    assert sci_format.children(sci_format.Node((0, 0), (7, 7), 0)) == []


@given(data=st.data())
def test_partition_flags_round_trip(data):
    shape = tuple(data.draw(st.lists(st.integers(1, 40), min_size=1, max_size=4)))
    tree = partition.Tree(shape, data.draw(st.integers(0, 3)))
    value = {n: data.draw(st.floats(0, 1)) for n in tree.nodes}
    chosen = partition.best_partition(tree, value, data.draw(st.integers(1, 30)))
    blocks, flags = partition.preorder(tree.kids, tree.root, chosen)
    back = sci_format.read_partition(shape, np.array(flags))
    assert [(b.start, b.stop) for b in back] == [(b.start, b.stop) for b in blocks]


def test_bad_partition_flags_are_payload_errors():
    with pytest.raises(PayloadError, match="cannot be split"):
        sci_format.read_partition((7, 7), np.array([1, 0, 0, 0, 0]))
    with pytest.raises(PayloadError, match="left after"):
        sci_format.read_partition((16, 16), np.array([0, 0]))
    with pytest.raises(PayloadError, match="end before"):
        sci_format.read_partition((16, 16), np.array([1, 0]))


def test_spectrum_concentration():
    assert partition.spectrum_concentration(np.zeros((4, 4))) == 1.0
    assert partition.spectrum_concentration(np.full((4, 4), 3.0)) == pytest.approx(1.0)
    noise = np.random.default_rng(0).uniform(0, 1, (16, 16))
    smooth = np.add.outer(np.linspace(0, 1, 16), np.linspace(0, 1, 16))
    assert partition.spectrum_concentration(noise) < partition.spectrum_concentration(smooth)
    assert partition.spectrum_concentration(noise, M=8) > partition.spectrum_concentration(noise, M=1)


# --- allocation -----------------------------------------------------------------------------

@given(total=st.integers(0, 10**6), weights=st.lists(st.floats(1e-3, 1e3), min_size=1, max_size=60),
       floor=st.integers(0, 600))
def test_allocation_sums_exactly_and_respects_the_floor(total, weights, floor):
    if total < floor * len(weights):
        with pytest.raises(ValueError):
            partition.allocate(total, np.array(weights), floor)
        return
    out = partition.allocate(total, np.array(weights), floor)
    assert out.sum() == total and (out >= floor).all()
    # above the floor, shares follow the weights (up to integer rounding)
    free = out > floor + 1
    if free.sum() >= 2:
        per = out[free] / np.array(weights)[free]
        assert per.max() - per.min() <= 2 / np.array(weights)[free].min() + 1e-9


def test_allocation_rules():
    sizes, D = np.array([100, 100, 800]), np.array([0.5, 0.25, 0.5])
    assert np.allclose(partition.allocation_weights("size_over_d", sizes, D), [200, 400, 1600])
    assert np.allclose(partition.allocation_weights("size", sizes, D), sizes)
    assert np.allclose(partition.allocation_weights("d", sizes, D), [2, 4, 2])
    assert np.allclose(partition.allocation_weights("equal", sizes, D), 1)


# --- the codec ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def crop():
    return np.load(DATA / "nuclei_16x64x64.npy")


@pytest.mark.parametrize("partition", sci_encoder.PARTITIONS)
def test_partition_options_and_block_budget(crop, partition):
    codec = fast_sci(ratio=8, a_max=8, partition=partition, steps=60)
    p = codec.encode(crop)
    d = sci_format.describe(p)
    assert len(p) <= crop.nbytes // 8
    assert len(d.blocks) == (1 if partition == "none" else 8)
    cover = np.zeros(crop.shape, int)
    for b in d.blocks:
        cover[b.slices] += 1
    assert (cover == 1).all()
    assert psnr(crop, decode(p)) > psnr(crop, np.full_like(crop, crop.mean())) + 3


def test_allocation_follows_size_over_d(crop):
    codec = fast_sci(ratio=8, partition="adaptive", a_max=8)
    plan = codec.plan(crop, float(crop.min()), float(crop.max()))
    weights = np.array([b.size for b in plan.blocks]) / plan.D
    params = [param_count(sci_format.layer_shapes(3, *w, codec.depth)) for w in plan.widths]
    # more weight, more parameters (ties aside, widths are integers)
    order = np.argsort(weights)
    assert all(params[i] <= params[j] + 300 for i, j in zip(order[:-1], order[1:]))
    assert params[order[-1]] > params[order[0]]
    assert plan.widths[0][0] == round(2.2 * plan.widths[0][1])   # funnel


@given(ratio=st.floats(2, 40), seed=st.integers(0, 3), bits=st.sampled_from([6, 8]),
       a_max=st.sampled_from([None, 1, 8, 15]))
def test_ratio_is_a_hard_ceiling(ratio, seed, bits, a_max):
    x = smooth_volume((16, 32, 32), "uint16", seed=seed)
    codec = fast_sci(ratio=ratio, bits=bits, partition="adaptive", a_max=a_max, steps=3)
    try:
        codec.check_chunk(x.shape, x.dtype)
    except BudgetError:
        assume(False)   # draw a chunk the codec stores
    assert len(codec.encode(x)) <= x.nbytes // ratio


def test_float16_weights(crop):
    p = fast_sci(ratio=8, partition="adaptive", a_max=8, encoding="float16", steps=150).encode(crop)
    d = sci_format.describe(p)
    assert d.encoding == 1 and d.bits == 0 and len(d.blocks) == 8
    assert len(p) <= crop.nbytes // 8
    assert psnr(crop, decode(p)) > psnr(crop, np.full_like(crop, crop.mean())) + 3


@pytest.mark.parametrize("dtype", ["uint8", "int16", "uint32", "float32", "float64"])
@pytest.mark.parametrize("order", ["C", "F"])
def test_round_trip_dtype_and_order(dtype, order):
    x = np.asarray(smooth_volume((16, 16, 24), dtype), order=order)
    codec = fast_sci(ratio=4, partition="adaptive", a_max=8, steps=60)
    y = codec.decode(codec.encode(x))
    assert y.dtype == x.dtype and y.shape == x.shape
    assert y.flags.f_contiguous if order == "F" else y.flags.c_contiguous
    assert y.min() >= x.min() and y.max() <= x.max()
    assert psnr(x, y) > psnr(x, np.full_like(x, x.mean())) + 3


@pytest.mark.parametrize("shape", [(128, 96), (8, 8, 16, 16), (1, 64, 1, 64), (4096,)])
def test_round_trip_nd(shape):
    x = smooth_volume(shape, "uint16")
    codec = fast_sci(ratio=2, a_max=16, steps=60, partition="equidistant")
    p = codec.encode(x)
    assert len(sci_format.describe(p).blocks) > 1
    y = decode(p)
    assert y.shape == x.shape
    assert psnr(x, y) > psnr(x, np.full_like(x, x.mean())) + 3


def test_constant_blocks_cost_no_network():
    x = smooth_volume((16, 32, 32), "uint16")
    x[:8] = 123        # the lower half along z is one constant region
    p = fast_sci(ratio=6, partition="adaptive", a_max=8).encode(x)
    d = sci_format.describe(p)
    assert len(d.constants) == 4 and all(d.widths[i] == (0, 0) for i in d.constants)
    assert (decode(p)[:8] == 123).all()


def _face_jump(y, blocks):
    """Mean |difference| across block faces, and between neighbours elsewhere, over all axes."""
    face, inner = [], []
    for a in range(y.ndim):
        diff = np.abs(np.diff(y.astype(np.float64), axis=a))
        at_face = np.zeros(diff.shape, bool)
        for b in blocks:
            if b.start[a] > 0:
                sl = list(b.slices)
                sl[a] = b.start[a] - 1
                at_face[tuple(sl)] = True
        face.append(diff[at_face])
        inner.append(diff[~at_face])
    return np.concatenate(face).mean(), np.concatenate(inner).mean()


def test_deblocking_lowers_the_jump_across_block_faces():
    x = smooth_volume((32, 32, 32), "float32", seed=2)
    common = dict(ratio=16, a_max=8, steps=150, partition="equidistant")   # smooth: adaptive keeps one block
    raw = fast_sci(deblock="off", **common).encode(x)
    filtered = fast_sci(deblock=0.32, **common).encode(x)   # same seed: the same networks
    blocks = sci_format.describe(raw).blocks
    assert len(blocks) == 8 and sci_format.describe(raw).deblock == 0 and sci_format.describe(filtered).deblock > 0
    jump_raw, inner_raw = _face_jump(decode(raw), blocks)
    jump_filtered, _ = _face_jump(decode(filtered), blocks)
    assert jump_raw > 1.5 * inner_raw          # the blocks are visible ...
    assert jump_filtered < 0.8 * jump_raw      # ... and the filter lowers the jumps (measured 0.5x)
    assert psnr(x, decode(filtered)) > psnr(x, decode(raw))


def test_deblocking_keeps_real_edges():
    y = np.zeros((4, 16), np.float32)
    y[:, 8:] = 1.0                              # an edge that happens to lie on a block face
    blocks = sci_format.read_partition((4, 16), np.array([1, 0, 0]))
    assert np.array_equal(sci_format.deblock(y, blocks, 0.2), y)
    y[:, 8:] = 0.05                             # a small step between flat sides is smoothed
    out = sci_format.deblock(y, blocks, 0.2)
    assert 0 < out[0, 7] < out[0, 8] < 0.05


def test_auto_deblocking_never_hurts(crop):
    off = fast_sci(ratio=8, partition="adaptive", a_max=8, deblock="off", steps=40).encode(crop)
    auto = fast_sci(ratio=8, partition="adaptive", a_max=8, deblock="auto", steps=40).encode(crop)
    assert psnr(crop, decode(auto)) >= psnr(crop, decode(off)) - 1e-9


def test_config_round_trip_and_validation():
    c = SCICodec(32, fr=1.5, a_max=9, partition="equidistant", allocation="equal", deblock=0.02)
    again = numcodecs.get_codec(json.loads(json.dumps(c.get_config())))
    assert again.get_config() == c.get_config()
    for bad in [dict(partition="quad"), dict(allocation="by_size"), dict(deblock="on"), dict(fr=0),
                dict(M=0), dict(a_max=0), dict(bits=None), dict(depth=1), dict(optimizer="sgd")]:
        with pytest.raises(ValueError):
            SCICodec(32, **bad)


def test_budget_refusal_names_what_would_work():
    with pytest.raises(BudgetError) as e:
        SCICodec(ratio=256).check_chunk((16, 16, 16), "uint16")
    msg = str(e.value)
    assert "SCI" in msg and "ratio <=" in msg
    SCICodec(ratio=float(msg.split("ratio <= ")[1].split(",")[0])).check_chunk((16, 16, 16), "uint16")


def test_seeded_encoding_is_deterministic(crop):
    kw = dict(ratio=8, partition="adaptive", a_max=8)
    assert fast_sci(**kw).encode(crop) == fast_sci(**kw).encode(crop)


def test_quality_floor_on_real_data(crop):
    """Real confocal crop at 8x, the paper's SCI with 8 blocks, 300 steps (measured 28.3 dB; 29.0 dB
    unpartitioned)."""
    y = decode(SCICodec.paper(8, a_max=8, steps=300, device="cpu").encode(crop))
    assert psnr(crop, y) > 27.5


@pytest.mark.skipif(not __import__("importlib").util.find_spec("torch") or
                    not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_cuda_fit_round_trips(crop):
    p = fast_sci(ratio=8, partition="adaptive", a_max=8, device="cuda", steps=50).encode(crop)
    assert len(p) <= crop.nbytes // 8 and decode(p).shape == crop.shape


def test_sci_payload_method_id():
    p = fast_sci(ratio=8).encode(smooth_volume((16, 16, 16), "uint16"))
    assert registry.get(payload.unpack(p)[0].method).name == "sci"
