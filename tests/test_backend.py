"""The plan and both executors against the float64 reference: values, flows, EM updates.

The Triton executor runs its real kernels in Triton's interpreter here (``TRITON_INTERPRET=1``, set by
conftest), in float32; the torch executor runs in float64 and float32.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import EXAMPLES
from randgen import random_circuits, random_inputs, shared_halves_circuit, sparse_halves_circuit, tile_ordered_circuit
from torch_reference import Reference, expected_input_flows

from pcc import optimize, parse
from pcc.backend.params import EMUpdate, Flows, Params
from pcc.backend import folding
from pcc.backend.flowmap import forward_order
from pcc.backend.plan import InputOp, SumOp, build_plan
from pcc.backend.torch_exec import TorchExecutor
from pcc.backend.triton_exec import TritonExecutor
from pcc.frontend import load_text
from pcc.structures.hmm import hmm_source

def gathering_executor(plan, device, dtype):
    """The Triton executor with every sum op on its gather path (weights read through ``weight_ids``)."""
    for op in (op for ops in plan.layers for op in ops):
        if isinstance(op, SumOp):
            op.__dict__["affine"] = None  # overrides the cached property: kernels specialise on AFFINE=False
    return TritonExecutor(plan, device, dtype)


EXECUTORS = {"torch": TorchExecutor, "triton": TritonExecutor, "triton-gather": gathering_executor}
# (executor, dtype, log-likelihood tolerance, flow tolerance)
MODES = [("torch", torch.float64, 1e-9, 1e-6), ("torch", torch.float32, 1e-5, 1e-4), ("triton", torch.float32, 1e-5, 1e-4),
         ("triton-gather", torch.float32, 1e-5, 1e-4)]
MODE_IDS = [f"{e}-{str(d)[6:]}" for e, d, _, _ in MODES]
from pcc.ir import SumBlock, log_likelihood
from pcc.ir.params import array, randomize

CIRCUITS = [(p.stem, lambda p=p: parse(p)) for p in EXAMPLES] + [
    (f"random{i}", lambda i=i: random_circuits(100 + i, 1)[0]) for i in range(40)]
CIRCUITS.append(("tile-ordered", tile_ordered_circuit))  # weights stored by op tiles (plan.TileOrder)
CIRCUITS.append(("shared-halves", shared_halves_circuit))  # parent tiles sharing some children: holed by default
CIRCUITS.append(("sparse-halves", sparse_halves_circuit))  # the same, too sparse to hole: generic kernels' shared tiles
TILE_ORDERED = CIRCUITS[-3:]


def setup(circuit, seed, dtype=torch.float64, batch=9, executor="torch"):
    """Randomise, optimise and plan; ``circuit`` is replaced in place by its optimised form."""
    randomize(circuit, seed, zero_fraction=0.1 if seed % 2 else 0.0)
    layered = optimize(circuit)
    circuit.blocks, circuit.tensors, circuit.root, circuit.attrs = layered.blocks, layered.tensors, layered.root, layered.attrs
    plan = build_plan(circuit)
    ex = EXECUTORS[executor](plan, "cpu", dtype)
    p = Params.from_plan(plan, "cpu", dtype)
    x, m = random_inputs(circuit, np.random.default_rng(seed), batch=batch)
    return plan, ex, p, x, m


@pytest.mark.parametrize("name,make", CIRCUITS, ids=[c[0] for c in CIRCUITS])
@pytest.mark.parametrize("executor,dtype,tol,_", MODES, ids=MODE_IDS)
def test_forward_matches_reference(name, make, executor, dtype, tol, _):
    c = make()
    plan, ex, p, x, m = setup(c, 1, dtype, executor=executor)
    ref = log_likelihood(c, x, m)
    got = ex.forward(p, torch.tensor(x, dtype=dtype), torch.tensor(m))[plan.root_row].double().numpy()
    finite = np.isfinite(ref)
    assert np.array_equal(finite, np.isfinite(got))
    np.testing.assert_allclose(got[finite], ref[finite], rtol=tol, atol=tol)


PAIRED = [(f"hmm{L}", lambda L=L: load_text(hmm_source(3, L, 5), "h.pc")) for L in (128, 192, 256)]


@pytest.mark.parametrize("name,make", CIRCUITS[:20] + PAIRED, ids=[c[0] for c in CIRCUITS[:20] + PAIRED])
def test_forward_with_parent_tiles_in_pairs(name, make, monkeypatch):
    """sum_fwd's PAIR = 2 launches (taken on large dense sums at large grids), forced on every pairable op."""
    from pcc.backend import codegen
    monkeypatch.setattr(codegen, "PAIR_MIN_CHILDREN", 0)
    monkeypatch.setattr(codegen, "BWD_PAIR_USES", 0)
    monkeypatch.setattr(codegen, "PAIR_FILL", 0)
    test_forward_matches_reference(name, make, "triton", torch.float32, 1e-5, None)


@pytest.mark.parametrize("name,make", CIRCUITS[:12] + PAIRED, ids=[c[0] for c in CIRCUITS[:12] + PAIRED])
def test_node_flows_with_parent_tiles_in_pairs(name, make, monkeypatch):
    """sum_bwd's PAIR = 2 (two parent tiles per iteration) on node flows, forced on every bwd-pairable op."""
    from pcc.backend import codegen
    monkeypatch.setattr(codegen, "PAIR_MIN_CHILDREN", 0)
    monkeypatch.setattr(codegen, "BWD_PAIR_USES", 0)
    test_flows_match_autograd(name, make, "triton", torch.float32, None, 1e-4)


def test_dense_hmm_layers_pair_and_odd_tile_counts_do_not():
    plans = {L: build_plan(optimize(load_text(hmm_source(3, L, 5), "h.pc"))) for L in (128, 192)}
    sums = {L: [op for ops in p.layers for op in ops if isinstance(op, SumOp) and len(op.out_rows) > 1]
            for L, p in plans.items()}
    assert sums[128] and all(op.pairable and op.bwd_pairable for op in sums[128])  # 2 tiles of 64, same children
    assert sums[192] and not any(op.pairable for op in sums[192])  # 3 tiles


def _flows(c, seed, executor="torch", dtype=torch.float64):
    plan, ex, p, x, m = setup(c, seed, dtype, executor=executor)
    xt, mt = torch.tensor(x, dtype=dtype), torch.tensor(m)
    vals = ex.forward(p, xt, mt)
    flows = Flows.zeros_like(p)
    node = ex.backward(p, vals, xt, mt, flows)
    ref = Reference(c, x, m)
    ll = ref.log_likelihood()
    ok = torch.isfinite(ll)
    ll[ok].sum().backward()
    return plan, node, flows, ref, ok.numpy()


@pytest.mark.parametrize("name,make", CIRCUITS, ids=[c[0] for c in CIRCUITS])
@pytest.mark.parametrize("executor,dtype,_,rtol", MODES, ids=MODE_IDS)
def test_flows_match_autograd(name, make, executor, dtype, _, rtol):
    c = make()
    plan, node, flows, ref, ok = _flows(c, 2, executor, dtype)
    atol = 1e-9 if dtype == torch.float64 else 1e-6
    node, flows = node.double(), _double(flows)
    for i, b in enumerate(c.blocks):  # node flows = d log p / d log v for every node of every block
        want = ref.offset[i].grad.numpy().T[:, ok]
        got = node[plan.block_rows[i] : plan.block_rows[i] + b.n].numpy()[:, ok]
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    for name, t in ref.theta.items():
        kind, start, size = plan.tensor_slots[name]
        if kind == "sum":
            got = plan.tensor_values(name, flows.sum_w).numpy()
            blk = next(b for b in c.blocks if getattr(b, "params", None) == name)
            want = (t * t.grad).detach().numpy()
            if blk.tiles is not None:
                from pcc.ir.params import gather_tiles
                want = gather_tiles(want, array(c, blk.tiles), blk.block)
            np.testing.assert_allclose(got, want.reshape(-1), rtol=rtol, atol=atol)
        elif kind == "categorical":
            got = flows.cat[t.shape[1]][start : start + size].numpy()
            np.testing.assert_allclose(got, expected_input_flows(ref, name), rtol=rtol, atol=atol)
    for name in ref.bern:
        _, start, size = plan.tensor_slots[name]
        np.testing.assert_allclose(flows.bern[start : start + size].numpy(), expected_input_flows(ref, name), rtol=rtol, atol=atol)


@pytest.mark.parametrize("name,make", CIRCUITS[:16], ids=[c[0] for c in CIRCUITS[:16]])
def test_flows_with_the_rolled_loop_over_parent_tiles(name, make, monkeypatch):
    """sum_bwd's runtime loop over a child tile's parent tiles (taken past UNROLL_USES, as on HMM 4096)."""
    import triton.language as tl

    from pcc.backend import kernels
    monkeypatch.setattr(kernels, "UNROLL_USES", tl.constexpr(0))
    test_flows_match_autograd(name, make, "triton", torch.float32, None, 1e-4)


DENSE = CIRCUITS[:12] + PAIRED


def _dense_everywhere(monkeypatch) -> None:
    """Every dense sum (``SumOp.dense``: HMM transitions, PD regions, single-parent roots) on the dense kernels."""
    from pcc.backend import codegen
    monkeypatch.setattr(codegen, "DENSE_MIN_WORK", 0)


@pytest.mark.parametrize("name,make", CIRCUITS[:20] + PAIRED, ids=[c[0] for c in CIRCUITS[:20] + PAIRED])
def test_forward_on_dense_kernels(name, make, monkeypatch):
    """pcc.backend.dense_kernels' forward product (one shift per sample) on every dense sum."""
    _dense_everywhere(monkeypatch)
    test_forward_matches_reference(name, make, "triton", torch.float32, 1e-5, None)


def _wide_dense_kernels(monkeypatch) -> None:
    """Dense ops on the kernels of groups wider than a tile at any width: the forward's shift pass (with the
    transposed copy) and product, the backward's shift, combine and scale launches; not the one-pass forward
    and the fused shift and G of groups of at most ``codegen.DENSE_ONEPASS_P`` / ``DENSE_FUSED_P`` parents."""
    from pcc.backend import codegen
    monkeypatch.setattr(codegen, "DENSE_ONEPASS_P", 0)
    monkeypatch.setattr(codegen, "DENSE_FUSED_P", 0)


DENSE_FORMS = ["narrow", "wide"]  # the dense kernels' two forms (ops wider than a tile take the wide ones always)


@pytest.mark.parametrize("form", DENSE_FORMS)
@pytest.mark.parametrize("name,make", DENSE, ids=[c[0] for c in DENSE])
def test_flows_on_dense_kernels(name, make, form, monkeypatch):
    """Node and parameter flows of the dense kernels: those of groups of at most a tile of parents (the one-pass
    forward, the shift and G in one launch), and those of wider groups at every width."""
    _dense_everywhere(monkeypatch)
    if form == "wide":
        _wide_dense_kernels(monkeypatch)
    test_flows_match_autograd(name, make, "triton", torch.float32, None, 1e-4)


def _small_hclt(latents: int):
    """An HCLT over 6 variables: one dense group per tree node, of ``latents / 64`` parent tiles when wider than
    a tile (the groups of a real HCLT layer)."""
    from pcc.structures import hclt
    rng = np.random.default_rng(latents)
    x = rng.integers(0, 4, size=(200, 6))
    x[:, 1::2] = (x[:, ::2] + rng.integers(0, 2, size=(200, 3))) % 4
    return load_text(hclt(x, latents, "categorical", num_cats=4), "hclt.pc")


GROUPED = [("pd8x8", lambda: parse(EXAMPLES[[p.stem for p in EXAMPLES].index("pd8x8")]))] + [
    (f"hclt{k}", lambda k=k: _small_hclt(k)) for k in (16, 128)]


@pytest.mark.parametrize("name,make", GROUPED, ids=[c[0] for c in GROUPED])
def test_dense_groups_on_their_own_tiles(name, make, monkeypatch):
    """Ops of several dense groups (PD regions, HCLT tree nodes) at full grids, on the tiles codegen gives
    grouped ops (DENSE_GROUPS_FWD / DENSE_GROUPS_PARAMS, forced here at any width; the forward's is a wide
    group's), against the references."""
    from pcc.backend import codegen
    _dense_everywhere(monkeypatch)
    _wide_dense_kernels(monkeypatch)
    for name_, value in (("SUM_FILL", 0), ("FILL", 0), ("DENSE_GROUPS_MIN_C", 0)):
        monkeypatch.setattr(codegen, name_, value)
    plan = build_plan(optimize(make()))
    groups = [op.dense.groups for ops in plan.layers for op in ops if isinstance(op, SumOp) and op.dense is not None]
    assert max(groups) > 1
    assert "num_warps=8)" in codegen.generate(plan).split("D.dense_fwd[")[1].split("\n")[0]
    test_forward_matches_reference(name, make, "triton", torch.float32, 1e-5, None)
    test_flows_match_autograd(name, make, "triton", torch.float32, None, 1e-4)


def _holes_on(monkeypatch) -> None:
    """``block-edges`` holes sums filling at least 80% of their matrix (as the default, 150, does too: the holed
    tests below hold whatever the default becomes)."""
    from pcc.passes import block_edges
    monkeypatch.setattr(block_edges, "MAX_HOLES", 125)


@pytest.mark.parametrize("form", DENSE_FORMS)
@pytest.mark.parametrize("chunks", [False, True], ids=["whole", "chunks"])
def test_holed_sums_on_dense_kernels(chunks, form, monkeypatch):
    """Block-sparse sums stored as their whole matrix with holes (``block-edges``' ``holes``: a converted PD
    region's two parent tiles over different 4 of its 5 products) run as dense groups of 64 x 320, one per
    region, also with the backward in chunks of groups; against the references."""
    from pcc.backend import codegen
    _dense_everywhere(monkeypatch)
    _holes_on(monkeypatch)
    if form == "wide":
        _wide_dense_kernels(monkeypatch)
    if chunks:  # one group per chunk
        monkeypatch.setattr(codegen, "DENSE_SCRATCH_SMALL", 1 << 20)
    layered = optimize(shared_halves_circuit())
    assert [b.attrs.get("holes") for b in layered.blocks if isinstance(b, SumBlock)] == [1, 1, None]
    op = next(op for ops in build_plan(layered).layers for op in ops if isinstance(op, SumOp))
    assert (op.dense.groups, op.dense.stride, op.dense.P, op.dense.C) == (2, 320, 64, 320)
    test_forward_matches_reference("shared-halves", shared_halves_circuit, "triton", torch.float32, 1e-5, None)
    test_flows_match_autograd("shared-halves", shared_halves_circuit, "triton", torch.float32, None, 1e-4)


@pytest.mark.parametrize("work", [0, None], ids=["dense", "generic"])
def test_em_steps_keep_holes_at_zero(work, monkeypatch):
    """Training steps (arena, compact flows, the fused EM update) of holed sums against the torch executor
    (the torch EM update): two mini-batch EM steps with a pseudocount, missing entries, the same parameters,
    every hole still zero, and the parameters read back into the circuit give the model's log-likelihoods."""
    from pcc.backend.runtime import CircuitModel
    if work is not None:
        _dense_everywhere(monkeypatch)
    _holes_on(monkeypatch)
    layered = optimize(shared_halves_circuit())
    models = [CircuitModel(layered, "cpu", executor=e) for e in ("triton", "torch")]
    plan = models[0].plan
    holes = sum(plan.tensor_slots[name][2] - layered.tensors[name].size for name in plan.sum_orders)
    assert holes == 2 * 64 * 64  # each sum's 64 x 320 matrix holds 64 x 256 edges
    x, m = random_inputs(layered, np.random.default_rng(3), batch=24)
    for _ in range(2):
        for model in models:
            model.em_step(x, m, step_size=0.5, pseudocount=0.1)
    got, want = (model.params.tensors() for model in models)
    for key, a in got.items():
        torch.testing.assert_close(a, want[key], rtol=1e-4, atol=1e-6)
    assert int((got["sum_w"] == 0).sum()) == int((want["sum_w"] == 0).sum()) == holes + 1  # and the pad slot
    back = log_likelihood(models[0].to_circuit(), x, m)
    np.testing.assert_allclose(back, models[0].log_prob(x, m).double().numpy(), rtol=1e-5, atol=1e-5)


def test_block_edges_marks_holes_up_to_max_holes(monkeypatch):
    """A block-sparse sum filling 80% of its matrix is holed at ``max-holes`` 1.25 and at the default
    (``MAX_HOLES`` = 150 percent), not at 1.2 nor at 1 (holes off); one filling 60% (1.67 slots per edge)
    only from 1.67 on, not at the default."""
    from pcc.passes import block_edges

    def holes(make, pipeline: str) -> list:
        c = optimize(make(), pipeline)
        return [b.attrs.get("holes") for b in c.blocks if isinstance(b, SumBlock) and b.tiles is not None]
    default = "collapse-chains,dce,dedupe,layerize,block-edges"
    assert holes(shared_halves_circuit, default) == [1, 1]
    assert holes(shared_halves_circuit, default + "{max-holes=1.25}") == [1, 1]
    assert holes(shared_halves_circuit, default + "{max-holes=1.2}") == [None, None]
    assert holes(shared_halves_circuit, default + "{max-holes=1}") == [None, None]
    assert holes(sparse_halves_circuit, default) == [None, None]
    assert holes(sparse_halves_circuit, default + "{max-holes=1.67}") == [1, 1]
    monkeypatch.setattr(block_edges, "MAX_HOLES", 100)
    assert holes(shared_halves_circuit, default) == [None, None]


def _flows_and_float64(plan, ex, p, x, m, p64=None):
    """``(node, node64, flows, flows64)``: node and parameter flows of executor ``ex`` (parameters ``p``) and of
    the float64 torch executor (``p64``, default the plan's parameters) on data ``x`` with missing mask ``m``."""
    exact = TorchExecutor(plan, "cpu", torch.float64)
    p64 = p64 if p64 is not None else Params.from_plan(plan, "cpu", torch.float64)
    xt, mt = torch.as_tensor(x), torch.as_tensor(m)
    flows, want = Flows.zeros_like(p), Flows.zeros_like(p64)
    node = ex.backward(p, ex.forward(p, xt, mt), xt, mt, flows)
    node64 = exact.backward(p64, exact.forward(p64, xt.double(), mt), xt.double(), mt, want)
    return node, node64, flows, want


def _assert_param_flows_close(flows: Flows, want: Flows) -> None:
    for a, b in zip(flows.all(), want.all()):
        assert torch.allclose(a.double(), b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("form", DENSE_FORMS)
@pytest.mark.parametrize("grid", ["small", "full"])
def test_dense_kernels_run_where_asked_and_over_several_batch_blocks(grid, form, monkeypatch):
    """The dense launches replace the generic ones on dense ops only; at batch 130 the products cover three batch
    blocks and the parameter flows split the batch over programs (atomics). ``full``: the tiles for grids of at
    least one wave, forced (the small circuits here would otherwise take the small-grid tiles). ``narrow``: HMM
    128's groups of 128 parents on the one-pass forward and the fused shift and G; ``wide``: on the others."""
    from pcc.backend import codegen
    _dense_everywhere(monkeypatch)
    if form == "wide":
        _wide_dense_kernels(monkeypatch)
    else:  # the one-pass forward at 128 parents too (by default it takes groups of up to 64)
        monkeypatch.setattr(codegen, "DENSE_ONEPASS_P", 128)
    if grid == "full":
        monkeypatch.setattr(codegen, "SUM_FILL", 0)
        monkeypatch.setattr(codegen, "FILL", 0)
    monkeypatch.setattr(folding, "FOLD", False)  # one launch a dense op here (tests/test_folding.py folds)
    c = load_text(hmm_source(3, 128, 5), "h.pc")
    plan, ex, p, x, m = setup(c, 3, torch.float32, batch=130, executor="triton")
    wide = form == "wide"
    assert ex.source.count("D.dense_params[") == 3 and ex.source.count("vt = D.scratch(vals, t, ") == 3 * wide
    assert ex.source.count("D.dense_fwd_onepass[") == 3 * (not wide)
    assert ex.source.count("D.dense_shift_scale[") == 3 * (not wide) and ex.source.count("D.dense_scale[") == 3 * wide
    assert "D.dense_bwd[" in ex.source and "K.sum_fwd[" not in ex.source
    node, node_want, flows, want = _flows_and_float64(plan, ex, p, x, m)
    assert torch.allclose(node.double(), node_want, rtol=1e-4, atol=1e-6)
    _assert_param_flows_close(flows, want)


@pytest.mark.parametrize("latents", [128, 192])
def test_sums_whose_tiles_share_children_read_one_row(latents):
    """An HMM's transition sums, every parent tile reading the same child rows: the generic kernels read a
    one-row child table (``SAME_CHILDREN``) and give float64's node and parameter flows."""
    c = load_text(hmm_source(3, latents, 5), "h.pc")
    plan, ex, p, x, m = setup(c, 5, torch.float32, batch=12, executor="triton")
    same = [key for key, op in forward_order(plan) if isinstance(op, SumOp) and op.same_children]
    assert same and ex.source.count("SAME_CHILDREN=True") >= 2 * len(same)  # sum_fwd and sum_bwd_params
    for key in same:
        assert ex.tv["train"][key + ".child"].shape[0] == 1 and ex.t[key + ".child"].shape[0] == 1
    node, node_want, flows, want = _flows_and_float64(plan, ex, p, x, m)
    assert torch.allclose(node.double(), node_want, rtol=1e-4, atol=1e-6)
    _assert_param_flows_close(flows, want)


@pytest.mark.parametrize("path", ["generic", "dense", "wide"])
def test_backward_keeps_flows_of_parents_far_apart(path, monkeypatch):
    """A shift per sample (per parent tile in the generic kernels) must keep every parent's flow when a layer's
    values spread far: 16 independent chains (identity transitions), state j emitting symbol 0 with weight e^-4j
    and symbol 1 with e^-4(15-j). On (0, 0, 1) the last transition layer's parents lie 120 nats apart, and state
    15 still has flow e^-60. The backward shift is the minimum of ``v - log F`` (state 15's, giving the main
    state ``G = e^-60``); a shift by the minimum value alone gave the main state ``G = e^-120``, zero in fp32,
    and lost its flow (the generic kernels did, before)."""
    if path != "generic":
        _dense_everywhere(monkeypatch)
    if path == "wide":
        _wide_dense_kernels(monkeypatch)
    L = 16
    c = optimize(load_text(hmm_source(3, L, 5), "h.pc"))
    plan = build_plan(c)
    ex, exact = TritonExecutor(plan, "cpu"), TorchExecutor(plan, "cpu", torch.float64)
    p, p64 = Params.from_plan(plan, "cpu"), Params.from_plan(plan, "cpu", torch.float64)
    j = torch.arange(L, dtype=torch.float64)
    emit = torch.stack([torch.exp(-4 * j), torch.exp(-4 * (L - 1 - j))] + [torch.full((L,), 0.25, dtype=torch.float64)] * 3, 1)
    emit /= emit.sum(1, keepdim=True)
    for params in (p, p64):
        for name, (kind, start, size) in plan.tensor_slots.items():
            if kind == "categorical":
                params.cat[5][start:start + size] = emit.to(params.cat[5].dtype)
            elif size == L * L:
                params.sum_w[start:start + size] = torch.eye(L, dtype=params.sum_w.dtype).reshape(-1)
    assert ("D.dense_bwd[" in ex.source) == (path != "generic")
    assert ("D.dense_shift_scale[" in ex.source) == (path == "dense") and ("D.dense_scale[" in ex.source) == (path == "wide")
    x = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    mt = torch.zeros(x.shape, dtype=torch.bool)
    vals64 = exact.forward(p64, x.double(), mt)
    node, node_want, flows, want = _flows_and_float64(plan, ex, p, x, mt, p64)
    dense = [op for ops in plan.layers for op in ops if isinstance(op, SumOp) and op.dense is not None and op.dense.P == L]
    parents = vals64[dense[-1].out_rows.reshape(-1)[:L], 0]
    assert parents.max() - parents.min() > 110 and node_want[dense[-1].out_rows[0, -1], 0] > 1e-30
    assert torch.allclose(node.double(), node_want, rtol=1e-4, atol=1e-6)
    _assert_param_flows_close(flows, want)


def test_dense_kernels_take_over_from_a_batch_size_on(monkeypatch):
    """Dense ops switch to the dense kernels at run time once edges x batch reach DENSE_MIN_WORK; ops that
    would need a batch beyond DENSE_MAX_BATCH (the 128-child root here) never do."""
    from pcc.backend import codegen
    plan = build_plan(optimize(load_text(hmm_source(3, 128, 5), "h.pc")))
    src = codegen.generate(plan)
    assert src.count(f"if B >= {(1 << 28) // (128 * 128)}:") == 4  # two transition sums, forward and backward
    monkeypatch.setattr(codegen, "DENSE_MIN_WORK", 128 * 128 * 16)
    for batch in (9, 20):  # generic, then dense
        c = load_text(hmm_source(3, 128, 5), "h.pc")
        plan, ex, p, x, m = setup(c, 4, torch.float32, batch=batch, executor="triton")
        assert ex.source.count("if B >= 16:") == 4
        _assert_param_flows_close(*_flows_and_float64(plan, ex, p, x, m)[2:])


def test_dense_property_finds_hmm_transitions_and_rejects_other_layouts():
    plan = build_plan(optimize(load_text(hmm_source(3, 128, 5), "h.pc")))
    sums = [op for ops in plan.layers for op in ops if isinstance(op, SumOp)]
    assert [op.dense.key() for op in sums] == [(1, 0, 128, 128, 128)] * 2 + [(1, 16384, 0, 1, 128)]
    pd = build_plan(optimize(parse(EXAMPLES[[p.stem for p in EXAMPLES].index("pd8x8")])))
    keys = [op.dense.key() for ops in pd.layers for op in ops if isinstance(op, SumOp)]
    assert keys == [(64, 0, 8, 8, 8), (16, 4096, 16, 8, 16), (16, 6144, 8, 8, 8), (4, 7168, 16, 8, 16),
                    (4, 7680, 8, 8, 8), (1, 7936, 0, 1, 16)]  # one group per region, each over its partitions
    hclt = build_plan(optimize(_small_hclt(128)))
    grouped = [op for ops in hclt.layers for op in ops if isinstance(op, SumOp) and op.dense.groups > 1]
    assert {op.dense.key()[2:] for op in grouped} == {(128, 128, 128)}  # each tree node's 128 x 128 block
    assert all(len(op.out_rows) == 2 * op.dense.groups for op in grouped)  # two parent tiles per group
    op = sums[0]
    base, stride = op.affine
    op.__dict__["affine"] = (base, stride + 1)  # the second tile's weights no longer continue the block
    op.__dict__.pop("dense", None)
    assert op.dense is None


def _double(f: Flows) -> Flows:
    return Flows(f.sum_w.double(), {k: v.double() for k, v in f.cat.items()}, f.bern.double(), f.gauss.double())


@pytest.mark.parametrize("executor,dtype,_,rtol", MODES, ids=MODE_IDS)
def test_gaussian_statistics_match_autograd(executor, dtype, _, rtol):
    c = parse("var Y[2] : real\na = input(Y[0], gaussian, n=3)\nb = input(Y[1], gaussian, n=3)\n"
              "p = prod(a, b)\ns = sum(p, n=1)\nroot s\n")
    plan, node, flows, ref, ok = _flows(c, 3, executor, dtype)
    flows = _double(flows)
    for i, stats in ref.gstat.items():
        b = c.blocks[i]
        _, start, size = plan.tensor_slots[b.params]
        mu, sd = torch.tensor(array(c, b.params)).T
        s0, s1, s2, miss = [s.grad for s in stats]
        want = torch.stack([s0 + miss, s1 + miss * mu, s2 + miss * (mu * mu + sd * sd)], 1)
        np.testing.assert_allclose(flows.gauss[start : start + size].numpy(), want.numpy(), rtol=max(rtol, 1e-6), atol=1e-6)


@pytest.mark.parametrize("step,alpha", [(1.0, 0.0), (1.0, 0.5), (0.3, 0.1)])
@pytest.mark.parametrize("name,make", CIRCUITS[:12] + TILE_ORDERED, ids=[c[0] for c in CIRCUITS[:12] + TILE_ORDERED])
@pytest.mark.parametrize("executor", ["torch", "triton"])
def test_em_step_equals_closed_form(name, make, step, alpha, executor):
    c = make()
    dtype = torch.float64 if executor == "torch" else torch.float32
    tol = 1e-6 if executor == "torch" else 1e-4
    plan, node, flows, ref, ok = _flows(c, 4, executor, dtype)
    flows = _double(flows)
    p = Params.from_plan(plan, "cpu", torch.float64)
    EMUpdate(plan, "cpu", fused=executor == "triton").apply(p, flows, step, alpha)  # as CircuitModel pairs them
    for name, t in ref.theta.items():
        kind, start, size = plan.tensor_slots[name]
        blk = next(b for b in c.blocks if getattr(b, "params", None) == name)
        if kind == "sum":
            from pcc.ir.params import dense_mask, gather_tiles
            edges = dense_mask(c, blk)
            f = np.where(edges, np.nan_to_num((t * t.grad).detach().numpy()), 0.0)  # log(0) grads are NaN off-edge
            fanin = edges.sum(1, keepdims=True)
            dense_old = t.detach().numpy()
            total = f.sum(1, keepdims=True) + alpha
            with np.errstate(invalid="ignore", divide="ignore"):  # no flow, no pseudocount: keep the old row
                em = np.where(total > 0, np.where(edges, (f + alpha / fanin) / total, 0), dense_old)
            want = (1 - step) * dense_old + step * em
            if blk.tiles is not None:
                want = gather_tiles(want, array(c, blk.tiles), blk.block)
            np.testing.assert_allclose(plan.tensor_values(name, p.sum_w).numpy(), want.reshape(-1), rtol=tol, atol=tol * 1e-3)
        elif kind == "categorical":
            f = expected_input_flows(ref, name)
            k = f.shape[1]
            total = f.sum(1, keepdims=True) + alpha
            with np.errstate(invalid="ignore", divide="ignore"):
                em = np.where(total > 0, (f + alpha / k) / total, t.detach().numpy())
            want = (1 - step) * t.detach().numpy() + step * em
            np.testing.assert_allclose(p.cat[k][start : start + size].numpy(), want, rtol=tol, atol=tol * 1e-3)


@pytest.mark.parametrize("executor", ["torch", "triton"])
def test_impossible_samples_carry_no_flow(executor):
    """p(x) = 0 for a sample: LL -inf, zero flows, and EM learns from the other samples only (no NaN)."""
    src = ("var X[2] : binary\na = input(X[0], bernoulli, n=2, params=[1.0, 0.5])\nb = input(X[1], bernoulli, n=2)\n"
           "p = prod(a, b)\ns = sum(p, n=1, params=[[1.0, 0.0]])\nroot s\n")
    from pcc.backend.runtime import CircuitModel
    models = [CircuitModel(optimize(parse(src)), "cpu", executor=executor) for _ in range(2)]
    both = np.array([[0, 1], [1, 1]])
    ll = models[0].log_prob(both)
    assert ll[0] == -np.inf and np.isfinite(ll[1].item())
    assert torch.isfinite(models[0].node_flows(both)).all()
    models[0].em_step(both, step_size=1.0, pseudocount=0.0)
    models[1].em_step(both[1:], step_size=1.0, pseudocount=0.0)
    for a, b in zip(models[0].params.tensors().values(), models[1].params.tensors().values()):
        assert torch.isfinite(a).all() and torch.allclose(a, b)


def test_batch_block_shrinks_within_one_wave():
    from pcc.backend.kernels import batch_block
    assert batch_block(512, 64, 4, 132) == 16     # 4 tiles x 8 blocks of 64 = 32 programs: 128 at 16 samples
    assert batch_block(512, 64, 16, 132) == 64    # 128 programs: halving would make 256, past one wave
    assert batch_block(512, 64, 8, 132) == 32
    assert batch_block(512, 64, 1, 0) == 64       # fill 0 keeps the block
    assert batch_block(9, 16, 1, 132) == 16       # never below 16 (tl.dot's smallest)


@pytest.mark.parametrize("fill", [0, 1 << 30], ids=["whole", "shrunk"])
def test_batch_blocks_do_not_change_results(fill):
    """At batch 64 the executor's block is 64 samples; a huge fill shrinks every sum launch's to 16."""
    for c in random_circuits(7, 3) + [parse(EXAMPLES[0])]:
        randomize(c, 3)
        c = optimize(c)
        plan = build_plan(c)
        ex, p = TritonExecutor(plan, "cpu", torch.float32, fill=fill), Params.from_plan(plan, "cpu", torch.float32)
        x, m = random_inputs(c, np.random.default_rng(3), batch=64)
        xt, mt = torch.tensor(x, dtype=torch.float32), torch.tensor(m)
        vals = ex.forward(p, xt, mt)
        ref = log_likelihood(c, x, m)
        finite = np.isfinite(ref)
        np.testing.assert_allclose(vals[plan.root_row].double().numpy()[finite], ref[finite], rtol=1e-5, atol=1e-5)
        flows = Flows.zeros_like(p)
        node = ex.backward(p, vals, xt, mt, flows)
        exact = TorchExecutor(plan, "cpu", torch.float64)
        p64, flows64 = Params.from_plan(plan, "cpu", torch.float64), Flows.zeros_like(Params.from_plan(plan, "cpu", torch.float64))
        node64 = exact.backward(p64, exact.forward(p64, xt.double(), mt), xt.double(), mt, flows64)
        np.testing.assert_allclose(node.double().numpy(), node64.numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(flows.sum_w.double().numpy(), flows64.sum_w.numpy(), rtol=1e-4, atol=1e-5)


def test_categorical_tiles_fit_the_rows_of_one_variable():
    from pcc.backend.codegen import CAT_ROWS, cat_rows
    from pcc.backend.plan import InputOp
    def rows(var):
        var = np.array(var, dtype=np.int64)
        return cat_rows(InputOp("categorical", 4, 0, var, var))
    assert rows([0] * 32 + [1] * 32) == 32          # HCLT-32: a 64-row tile would be half masked
    assert rows([0] * 256 + [1] * 256) == CAT_ROWS
    assert rows([0] * 40 + [1] * 3) == 64           # the longest run, rounded up to a power of two
    assert rows([0, 1, 2]) == 16 and rows([]) == 16  # tl.dot's smallest tile


def test_replacing_the_executor_drops_captured_graphs():
    """A captured graph replays its executor's launches over that executor's tables: once the executor is
    replaced (and its tables freed) the model must capture anew rather than replay stale graphs."""
    from pcc.backend.runtime import CircuitModel
    model = CircuitModel(optimize(parse(EXAMPLES[0])), "cpu", executor="torch")
    model._graphs[("forward", 4)] = "a graph of the old executor"
    model.executor = TorchExecutor(model.plan, "cpu")
    assert model._graphs == {} and isinstance(model.executor, TorchExecutor)


def test_categorical_counts_of_a_variable_that_comes_back_within_a_tile():
    """RAT-SPN's repetitions list a variable's input rows again after other variables', within one count tile's
    reach: each tile counts its own rows only (the tiles used to mask by "same variable" and counted such rows
    twice: 3.56 where the reference has 1.78)."""
    from pcc.structures.ratspn import ratspn_source
    c = load_text(ratspn_source(8, 2, 2, 3, num_cats=4), "r.pc")
    plan, ex, p, x, m = setup(c, 3, torch.float32, batch=9, executor="triton")
    op = next(op for ops in plan.layers for op in ops if isinstance(op, InputOp))
    assert len(np.unique(op.var)) < len(np.flatnonzero(np.diff(op.var))) + 1  # some variable has two runs
    _assert_param_flows_close(*_flows_and_float64(plan, ex, p, x, m)[2:])


def _count_settings_agree(monkeypatch, seed: int, batch: int, settings: list[dict], precision: str = "tf32x3") -> None:
    """The HMM example's categorical parameter flows under each ``codegen`` setting of ``settings`` (a training
    step's backward, Triton on the CPU interpreter) equal the float64 torch executor's and each other's; a
    setting's ``"source"`` entry, if any, must appear in the generated code."""
    from pcc.backend import codegen
    from pcc.backend.triton_exec import TritonExecutor
    plan, ref, p64, x, m = setup(parse(open("examples/hmm.pc").read()), seed, batch=batch)
    xt, mt = torch.tensor(x, dtype=torch.float32), torch.tensor(m)
    f64 = Flows.zeros_like(p64)
    ref.backward(p64, ref.forward(p64, xt.double(), mt), xt.double(), mt, f64, node_flows=False)
    p = Params.from_plan(plan, "cpu", torch.float32)
    got = []
    for setting in settings:
        for name, value in setting.items():
            if name != "source":
                monkeypatch.setattr(codegen, name, value)
        ex = TritonExecutor(plan, "cpu", precision=precision)
        assert setting.get("source", "") in ex.source
        f = Flows.zeros_like(p)
        ex.backward(p, ex.forward(p, xt, mt, values="train"), xt, mt, f, node_flows=False, values="train")
        got.append(f)
    for k in f64.cat:
        for f in got:
            np.testing.assert_allclose(f.cat[k].double().numpy(), f64.cat[k].numpy(), rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(f.cat[k].numpy(), got[0].cat[k].numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("precision", ["tf32x3", "ieee"])
def test_transposed_categorical_counts_equal_the_plain_ones(monkeypatch, precision):
    """``codegen.CAT_TRANSPOSED_BELOW``: tiles of fewer rows take the one-hot first in their products
    (``input_bwd_cat``'s ``TRANS``): the same parameter flows as the plain product (missing entries included),
    and the float64 torch executor's."""
    _count_settings_agree(monkeypatch, 4, 70, [{"CAT_TRANSPOSED_BELOW": 0},
                                               {"CAT_TRANSPOSED_BELOW": 1 << 10, "source": "TRANS=True"}], precision)


def test_pipelined_batch_loops_equal_the_plain_ones(monkeypatch):
    """``codegen.CAT_STAGES``/``PARAM_STAGES``: the categorical counts' and parameter flows' loops over the
    batch (``for`` loops over runtime bounds, which the interpreter takes through
    ``kernels._interpreter_loop_bounds``) give the same parameter flows at any pipeline depth, split or not."""
    _count_settings_agree(monkeypatch, 5, 100, [{"CAT_STAGES": 1, "PARAM_STAGES": 1},
                                                {"CAT_STAGES": 3, "PARAM_STAGES": 3, "CAT_FILL": 1 << 12,
                                                 "CAT_SPLIT_MIN": 16, "source": "STAGES=3"}])


def test_categorical_counts_split_over_the_batch(monkeypatch):
    """``codegen.CAT_FILL``: a categorical-count launch of few programs splits its batch into ranges of whole
    blocks, one program each (``kernels.cat_splits``; here 3 ranges of 64, 36 and 0 of 100 samples, with missing
    entries): the parameter flows equal the unsplit launch's and the float64 torch executor's."""
    from pcc.backend import kernels as K
    assert K.cat_splits(10, 100, 0, 32) == 1 and K.cat_splits(10, 100, 40, 32) == 3 and K.cat_splits(50, 100, 40, 32) == 1
    _count_settings_agree(monkeypatch, 3, 100, [{"CAT_FILL": fill, "CAT_SPLIT_MIN": 32, "source": f", {fill}, 32)"}
                                                for fill in (0, 10**6)])


UNEVEN_PRODUCTS = """
var X[6] : binary
for i in 0..6 {
    a[i] = input(X[i], bernoulli, n=4)
}
b = input(X[1], bernoulli, n=4)
p = prod(a[0], a[1])
u = prod(a[0], b)
q = prod(a[2], a[3], a[4], a[5])
sp = sum(p, u, n=4)
sq = sum(q, n=4)
r = prod(sp, sq)
top = sum(r, n=1)
root top
"""


@pytest.mark.parametrize("structure", ["ratspn", "uneven"])
def test_skipped_padding_slots_change_no_bit(monkeypatch, structure):
    """``codegen.SKIP_PADDING``: products' forward (ZERO-padded children) and gathered backward (PAD-padded
    parents) leave their padding slots unread; those rows are zeros, so values and flows are bitwise the ones
    that read them (RAT-SPN: gathers; products of arity 2 and 4 in one op: both)."""
    from pcc.backend import codegen
    from pcc.backend.plan import ZERO
    from pcc.structures.ratspn import ratspn_source
    c = load_text(ratspn_source(8, 2, 2, 3, num_cats=4) if structure == "ratspn" else UNEVEN_PRODUCTS, "t.pc")
    plan, _, _, x, m = setup(c, 6, torch.float32, batch=20, executor="triton")
    ops = [op for ops in plan.layers for op in ops if not isinstance(op, (SumOp, InputOp))]
    assert any(op.gathers for op in ops)
    assert structure == "ratspn" or (any(op.gathers and (op.child_parents[1] < 0).any() for op in ops)
                                     and any((op.children == ZERO).any() for op in ops))
    xt, mt = torch.tensor(x, dtype=torch.float32), torch.tensor(m)
    got = []
    for skip in (False, True):
        monkeypatch.setattr(codegen, "SKIP_PADDING", skip)
        ex = TritonExecutor(plan, "cpu")
        assert ("SKIP=" in ex.source) == skip
        p = Params.from_plan(plan, "cpu", torch.float32)
        f = Flows.zeros_like(p)
        ex.backward(p, ex.forward(p, xt, mt, values="train"), xt, mt, f, node_flows=False, values="train")
        got.append((ex.forward(p, xt, mt), f))
    assert torch.equal(got[0][0], got[1][0])
    for a, b in zip(got[0][1].all(), got[1][1].all()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("small", [0, 1 << 20])
def test_dense_backward_below_the_chunking_batch(small, monkeypatch):
    """Below codegen.DENSE_SCRATCH_FROM a grouped dense op's backward is cut only where its scratch exceeds
    1/DENSE_SCRATCH_SMALL of the buffer (small batches are launch-bound): 0, whole ops (one chunk of every
    group); a large value, one group a chunk. Both against the references."""
    from pcc.backend import codegen
    _dense_everywhere(monkeypatch)
    monkeypatch.setattr(codegen, "DENSE_SCRATCH_SMALL", small)
    plan = build_plan(optimize(GROUPED[0][1]()))
    source = codegen.generate(plan)
    below = f"vals.shape[0] // {small}" if small else "D.group_chunks("
    assert f"if B >= {codegen.DENSE_SCRATCH_FROM} else " in source and below in source
    test_flows_match_autograd(*GROUPED[0], "triton", torch.float32, None, 1e-4)


def test_group_chunks_cover_every_group_once_within_the_limit():
    from pcc.backend.dense_kernels import group_chunks
    assert group_chunks(81, 32, 544) == [(0, 17), (17, 17), (34, 17), (51, 17), (68, 13)]
    assert group_chunks(5, 64, 10) == [(g, 1) for g in range(5)]  # at least one group a chunk
    assert group_chunks(3, 8, 1000) == [(0, 3)]
    assert group_chunks(81, 32, 81 * 32) == [(0, 81)]  # below DENSE_SCRATCH_FROM: the whole op


@pytest.mark.parametrize("form", DENSE_FORMS)
@pytest.mark.parametrize("scratch", [0, 16, 1 << 20])
@pytest.mark.parametrize("name,make", GROUPED, ids=[c[0] for c in GROUPED])
def test_dense_backward_in_chunks_of_groups(name, make, scratch, form, monkeypatch):
    """codegen.DENSE_SCRATCH: a grouped dense op's backward over whole ops (0), chunks of several groups (16: PD
    8x8's 64 groups of 8 rows in chunks of 11, HCLT's in chunks of one) and one group a chunk (a limit below one
    group's rows), against the references, node and training flows."""
    from pcc.backend import codegen
    from test_flowmap import test_compact_training_flows_match_node_flows_and_reference
    _dense_everywhere(monkeypatch)
    monkeypatch.setattr(codegen, "DENSE_SCRATCH", scratch)
    monkeypatch.setattr(codegen, "DENSE_SCRATCH_FROM", 0)  # chunks at the tests' small batches too
    if form == "wide":
        _wide_dense_kernels(monkeypatch)
    plan = build_plan(optimize(make()))
    assert ("D.group_chunks(" in codegen.generate(plan)) == (scratch > 0)
    test_flows_match_autograd(name, make, "triton", torch.float32, None, 1e-4)
    test_compact_training_flows_match_node_flows_and_reference(name, make, 2, monkeypatch)
