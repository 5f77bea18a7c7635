"""Value-row layouts (pcc.backend.valuemap): a replay shows no launch reads a value another node has
overwritten, and training steps, forward passes and EM steps in the compact layouts equal the full layout's."""
from __future__ import annotations

import bisect

import numpy as np
import pytest
import torch
from randgen import random_inputs
from test_backend import CIRCUITS, setup
from test_flowmap import _children, _own

from pcc import optimize, parse
from pcc.backend.flowmap import backward_order, forward_order
from pcc.backend.folding import pair_rows
from pcc.backend import folding, fusion
from pcc.backend.fusion import fused_mask
from pcc.backend.params import Flows, Params
from pcc.backend.plan import FIRST_ROW, NEG, PAD, ZERO, InputOp, ProdOp, SumOp, build_plan
from pcc.backend.runtime import CircuitModel
from pcc.backend.triton_exec import TritonExecutor
from pcc.backend.arena import joint_maps
from pcc.backend.valuemap import LAYOUTS, recomputed, value_map


def _launches(plan, vmap, train: bool):
    """``(reads, writes)`` per launch as ``(plan row, value row)`` pairs: the forward, then (``train``) the sums'
    backward, each after the products it computes again (reading children and writing rows through
    ``vmap.back``)."""
    fwd, back = vmap.rows, vmap.back_rows
    inline = fused_mask(plan) & bool(vmap.fused)  # fused inputs: their products compute them, no rows
    pair = lambda rows, m: [(int(r), int(m[r])) for r in rows if not inline[r]]  # noqa: E731
    pa, pb = pair_rows(plan, vmap.folded)  # folded products: their readers read their two children instead (both passes)

    def forward_reads(op) -> np.ndarray:
        kids = _children(op)
        if isinstance(op, SumOp):
            kids = np.unique(np.concatenate([pa[kids], pb[kids]]))
        return kids[kids >= FIRST_ROW]

    out = [(pair(forward_reads(op), fwd), pair(_own(op), fwd)) for key, op in forward_order(plan)
           if key not in vmap.fused and key not in vmap.folded]
    if train:
        ops = dict(forward_order(plan))
        for key, op in backward_order(plan):
            for pkey in vmap.recompute.get(key, []):
                out.append((pair(_children(ops[pkey]), back), pair(_own(ops[pkey]), back)))
            if isinstance(op, SumOp):
                out.append((pair(_own(op), back) + pair(forward_reads(op), back), []))
    return out


def _replay(plan, vmap, train: bool) -> None:
    """Every read finds the value its plan row's latest write put there; no write hits a value still to be read.
    A value is ``(plan row, life)``: a product computed again in the backward has a second life, maybe in the
    same value row as its first."""
    launches = _launches(plan, vmap, train)
    writes = {}  # plan row -> launches writing it
    for i, (_, written) in enumerate(launches):
        for r, _ in written:
            writes.setdefault(r, []).append(i)
    life = lambda r, i: bisect.bisect_left(writes.get(r, []), i) - 1  # noqa: E731  (the latest write before i)
    last = {}  # (plan row, life) -> its last reading launch
    for i, (read, _) in enumerate(launches):
        last.update({(r, life(r, i)): i for r, _ in read})
    owner = {}  # value row -> (plan row, life) whose value it holds
    for i, (read, written) in enumerate(launches):
        for r, v in read:
            assert owner.get(v) == (r, life(r, i)), f"launch {i} reads row {r}, overwritten by {owner.get(v)}"
        for r, v in written:
            assert FIRST_ROW <= v < vmap.size
            prev = owner.get(v)
            assert prev is None or (last.get(prev, -1) < i and prev[0] != plan.root_row), f"launch {i}: row {r} overwrites live {prev}"
            owner[v] = (r, life(r, i + 1))
    assert owner[int(vmap.rows[plan.root_row])][0] == plan.root_row  # the root's value is there at the end


@pytest.fixture(params=[False, True], ids=["unfused", "fused"])
def fuse(request, monkeypatch):
    """Both settings of ``fusion.FUSE`` (inputs fused into the products that read them, or not)."""
    monkeypatch.setattr(fusion, "FUSE", request.param)
    return request.param


@pytest.mark.parametrize("name,make", CIRCUITS, ids=[c[0] for c in CIRCUITS])
def test_no_launch_reads_an_overwritten_value(name, make, fuse):
    c = make()
    plan = setup(c, 1)[0]
    for layout, level in (("train", "sums"), ("train", "all"), ("train", "off"), ("root", "sums")):
        vmap = value_map(plan, layout, level)
        assert list(vmap.rows[[ZERO, NEG, PAD]]) == [ZERO, NEG, PAD]
        _replay(plan, vmap, train=layout == "train")
    sizes = [value_map(plan, layout).size for layout in LAYOUTS]
    assert sizes[0] == plan.rows and sizes[0] >= sizes[1] >= sizes[2]


def test_compact_layouts_save_rows_on_the_examples():
    """Inputs under products are dead once the products are computed: training keeps fewer rows than nodes
    (the HMM: its 2048 emission rows, a third); a forward pass fewer again."""
    for name, most in (("hmm", 0.7), ("pd8x8", 0.65)):  # measured: 4099 of 6116 rows, 1412 of 2356
        plan = build_plan(optimize(parse(f"examples/{name}.pc")))
        train, root = value_map(plan, "train").size, value_map(plan, "root").size
        assert root < train <= plan.rows * most, (name, plan.rows, train, root)


def test_products_of_sums_are_computed_again_in_the_backward(monkeypatch):
    """PD's partitions (products of sums) are not kept for the backward (1844 rows before, 1412 after). With
    folding (the default, tests/test_folding.py) these products have no rows at all; here it is off."""
    monkeypatch.setattr(folding, "FOLD", False)
    pd = build_plan(optimize(parse("examples/pd8x8.pc")))
    vmap = value_map(pd, "train")
    again = [op for key, op in forward_order(pd) if key in recomputed(pd)]
    assert again and all(isinstance(op, ProdOp) for op in again)
    rows = np.concatenate([np.arange(op.start, op.start + op.n) for op in again])
    assert (vmap.back[rows] >= FIRST_ROW).all() and (vmap.back[rows] < vmap.size).all()
    assert sorted(sum(vmap.recompute.values(), [])) == sorted(recomputed(pd))
    kept = value_map(pd, "train", recompute=False)  # the option that keeps them
    assert kept.back is None and not kept.recompute and kept.size > vmap.size


def test_inputs_and_their_products_are_computed_again_where_that_saves_rows(monkeypatch):
    """Without fusion (``fusion.FUSE = False``): the HMM's products (an emission and a sum) and its emissions
    (input pieces) are computed again in the backward at level "all", inputs before the products that read them:
    4099 training rows before, 2308 after (the sums and one input piece). A RAT-SPN-like circuit, whose one
    input op the first products read, keeps those products: computing them again would bring back all its
    inputs at once (``recomputed`` compares both)."""
    monkeypatch.setattr(fusion, "FUSE", False)
    hmm = build_plan(optimize(parse("examples/hmm.pc")))
    again = recomputed(hmm, "all")
    ops = dict(forward_order(hmm))
    assert {type(ops[k]) for k in again} == {InputOp, ProdOp} and not recomputed(hmm)  # default: "sums"
    vmap = value_map(hmm, "train", "all")
    for skey, keys in vmap.recompute.items():
        kinds = [isinstance(ops[k], InputOp) for k in keys]
        assert kinds == sorted(kinds, reverse=True), skey  # inputs first
    assert vmap.size < 0.6 * 4099 < value_map(hmm, "train", recompute=False).size  # measured: 2308
    rat = build_plan(optimize(parse(RAT)))
    first = [key for key, op in forward_order(rat) if isinstance(op, ProdOp)][0]
    assert first not in recomputed(rat, "all")
    assert value_map(rat, "train", "all").size <= value_map(rat, "train", recompute=False).size


def test_fused_inputs_have_no_rows_and_their_products_are_computed_again(monkeypatch):
    """With fusion (``fusion.FUSE``): the HMM's emissions, which only products read, have no rows in the training and
    log_prob layouts (they map to ZERO), only in "all"; their products, now as cheap to compute again as
    products of sums, are computed again at the default level ("sums"). Measured: 4099 training rows without
    fusion at level "sums", 2308 with it (2052 at "all", which also computes the one unfused input op again)."""
    monkeypatch.setattr(fusion, "FUSE", True)
    hmm = build_plan(optimize(parse("examples/hmm.pc")))
    keys = fusion.fused_inputs(hmm)
    ops = dict(forward_order(hmm))
    assert keys and all(isinstance(ops[k], InputOp) for k in keys)
    rows = fusion.fused_mask(hmm)
    for layout in ("train", "root"):
        vmap = value_map(hmm, layout)
        assert vmap.fused == keys and (vmap.rows[rows] == ZERO).all()
    assert (value_map(hmm, "all").rows[rows] >= FIRST_ROW).all()
    again = recomputed(hmm)
    assert again and {type(ops[k]) for k in again} == {ProdOp} and set(again) <= set(recomputed(hmm, "all"))
    assert value_map(hmm, "train", "all").size <= value_map(hmm, "train").size < 0.6 * 4099


@pytest.mark.parametrize("example", ["hmm", "random10", "random31"])
def test_fused_models_train_bitwise_like_unfused_ones(example):
    """``CircuitModel(..., fuse_inputs=True)`` (``pcc.compile``'s option): fewer training rows where inputs fuse,
    (the HMM's), and the same log-likelihoods and parameters after EM steps, bit for bit; the module default is
    left alone."""
    circuit = optimize(dict(CIRCUITS)[example]())
    x, m = random_inputs(circuit, np.random.default_rng(5), batch=7)
    fused = CircuitModel(circuit, "cpu", executor="triton", fuse_inputs=True)
    plain = CircuitModel(circuit, "cpu", executor="triton")
    assert fused.executor.fuse_inputs and not plain.executor.fuse_inputs and not fusion.FUSE
    rows = fused.executor.values["train"].size, plain.executor.values["train"].size
    assert rows[0] < rows[1] if example == "hmm" else rows[0] <= rows[1]  # tiny random circuits may tie
    for _ in range(2):
        assert torch.equal(fused.em_step(x, m, step_size=0.5, pseudocount=0.1),
                           plain.em_step(x, m, step_size=0.5, pseudocount=0.1))
    assert torch.equal(fused.log_prob(x, m), plain.log_prob(x, m))
    for a, b in zip(fused.params.tensors().values(), plain.params.tensors().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("example", ["hmm", "pd8x8", "mixture", "reuse"])
def test_recompute_levels_nest(example):
    """Each level computes again a subset of the next one's ops, before the same sum ops and in the same order:
    the generated code's launches (level "all", :func:`schedule`) serve every level's tables."""
    plan = build_plan(optimize(parse(f"examples/{example}.pc")))
    every = recomputed(plan, "all")
    for level in ("off", "sums"):
        mine = recomputed(plan, level)
        assert all(every.get(k) == s for k, s in mine.items())
        assert [k for k in every if k in mine] == list(mine)
    with pytest.raises(ValueError):
        recomputed(plan, "most")


# inputs all in one op, read by products of inputs, then sums and products of sums (a small RAT-SPN)
RAT = """
var X[8] : categorical(4)
for i in 0..8 {
    a[i] = input(X[i], categorical, n=16)
}
p0 = prod(a[0], a[1])
p1 = prod(a[2], a[3])
p2 = prod(a[4], a[5])
p3 = prod(a[6], a[7])
s0 = sum(p0, n=8)
s1 = sum(p1, n=8)
s2 = sum(p2, n=8)
s3 = sum(p3, n=8)
q0 = prod(s0, s1)
q1 = prod(s2, s3)
t0 = sum(q0, n=8)
t1 = sum(q1, n=8)
r = prod(t0, t1)
top = sum(r, n=1)
root top
"""


def test_executor_that_keeps_products_trains_alike():
    """``recompute=False`` (products kept, no second launches) gives the same training flows."""
    plan, _, p, x, m = setup(parse("examples/pd8x8.pc"), 4, torch.float32, executor="triton")
    xt, mt = torch.tensor(x, dtype=torch.float32), torch.tensor(m)
    flows = []
    for again in (True, False):
        ex = TritonExecutor(plan, "cpu", recompute=again)
        f = Flows.zeros_like(p)
        ex.backward(p, ex.forward(p, xt, mt, values="train"), xt, mt, f, node_flows=False, values="train")
        flows.append(f.all())
    for a, b in zip(*flows):
        assert torch.equal(a, b)


def test_training_flows_with_products_computed_again_on_dense_kernels(monkeypatch):
    """The dense kernels' backward reads the recomputed children (``bdchild``): the same flows as the full layout."""
    from pcc.backend import codegen
    monkeypatch.setattr(codegen, "DENSE_MIN_WORK", 0)
    test_layouts_give_the_same_values_and_flows("pd8x8", lambda: parse("examples/pd8x8.pc"), False)


@pytest.mark.parametrize("name,make", CIRCUITS[:24], ids=[c[0] for c in CIRCUITS[:24]])
def test_layouts_give_the_same_values_and_flows(name, make, fuse):
    c = make()
    plan, ex, p, x, m = setup(c, 4, torch.float32, executor="triton")
    xt, mt = torch.tensor(x, dtype=torch.float32), torch.tensor(m)
    full = ex.forward(p, xt, mt)
    root = ex.forward(p, xt, mt, values="root")
    train = ex.forward(p, xt, mt, values="train")
    # a training step's buffer is the arena of its values and flows (pcc.backend.arena): at least the values' rows
    assert root.shape[0] == value_map(plan, "root").size and train.shape[0] == ex.values["train"].size
    assert train.shape[0] >= value_map(plan, "train").size
    want = full[plan.root_row]
    for layout, vals in (("root", root), ("train", train)):
        assert torch.equal(vals[ex.root_row(layout)], want), layout
    a, b = Flows.zeros_like(p), Flows.zeros_like(p)
    ex.backward(p, full, xt, mt, a, node_flows=False)
    ex.backward(p, train, xt, mt, b, node_flows=False, values="train")
    for fa, fb in zip(a.all(), b.all()):
        assert torch.equal(fa, fb)  # the same launches on the same numbers, only in other rows
    with pytest.raises(ValueError):
        ex.backward(p, root, xt, mt, Flows.zeros_like(p), node_flows=False, values="root")


@pytest.mark.parametrize("name,make", CIRCUITS[:24], ids=[c[0] for c in CIRCUITS[:24]])
def test_computing_inputs_again_gives_the_same_flows(name, make, fuse):
    """``recompute="all"``: inputs, and products of inputs and sums, computed again in the backward (where that
    saves rows) give the full layout's parameter flows exactly."""
    plan, ex, p, x, m = setup(make(), 4, torch.float32, executor="triton")
    xt, mt = torch.tensor(x, dtype=torch.float32), torch.tensor(m)
    again = TritonExecutor(plan, "cpu", recompute="all")
    # the training buffer is the arena of the values and flows (pcc.backend.arena)
    assert again.values["train"].size == joint_maps(plan, "all")[0].size >= value_map(plan, "train", "all").size
    a, b = Flows.zeros_like(p), Flows.zeros_like(p)
    ex.backward(p, ex.forward(p, xt, mt), xt, mt, a, node_flows=False)
    again.backward(p, again.forward(p, xt, mt, values="train"), xt, mt, b, node_flows=False, values="train")
    for fa, fb in zip(a.all(), b.all()):
        assert torch.equal(fa, fb)


@pytest.mark.parametrize("example,level", [("hmm", "sums"), ("pd8x8", "sums"), ("mixture", "sums"), ("hmm", "all"),
                                           ("pd8x8", "all")])
def test_triton_model_steps_equal_the_torch_model_s(example, level):
    """CircuitModel on the Triton executor trains in the compact layouts with the fused EM update: its
    log-likelihoods and parameters after EM steps match the torch executor's (full rows, torch EM)."""
    circuit = optimize(parse(f"examples/{example}.pc"))
    x, m = random_inputs(circuit, np.random.default_rng(2), batch=7)
    fast = CircuitModel(circuit, "cpu", executor="triton", recompute=level)
    ref = CircuitModel(circuit, "cpu", executor="torch")
    for _ in range(2):
        ll_fast, ll_ref = fast.em_step(x, m, step_size=0.5, pseudocount=0.1), ref.em_step(x, m, step_size=0.5, pseudocount=0.1)
        torch.testing.assert_close(ll_fast, ll_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.log_prob(x, m), ref.log_prob(x, m), rtol=1e-5, atol=1e-5)
    fast.accumulate(x, m)
    ref.accumulate(x, m)
    fast.em_update(1.0, 0.1)
    ref.em_update(1.0, 0.1)
    torch.testing.assert_close(fast.params.sum_w, ref.params.sum_w, rtol=1e-4, atol=1e-6)
    for k in ref.params.cat:
        torch.testing.assert_close(fast.params.cat[k], ref.params.cat[k], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("example", ["hmm", "pd8x8"])
def test_whole_input_ops_train_like_the_torch_model(example, monkeypatch):
    """Input ops in one piece each (plan.INPUT_CHUNKS = 1; 8 pieces below their readers by default), computed
    again whole: the Triton model's EM steps still match the torch executor's."""
    from pcc.backend import plan as planning
    monkeypatch.setattr(planning, "INPUT_CHUNKS", 1)
    test_triton_model_steps_equal_the_torch_model_s(example, "all")
