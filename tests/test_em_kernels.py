"""The fused EM update (Triton kernels, run in the interpreter on the CPU) against the torch update."""
from __future__ import annotations

import re

import numpy as np
import pytest
import sm90
import torch
from conftest import EXAMPLES
from randgen import random_circuits

from pcc import optimize, parse
from pcc.backend.em_kernels import aligned_classes, edge_runs
from pcc.backend.params import EMUpdate, Flows, Params
from pcc.backend.plan import build_plan
from pcc.ir.params import randomize

CIRCUITS = [(p.stem, lambda p=p: parse(p)) for p in EXAMPLES] + [
    (f"random{i}", lambda i=i: random_circuits(300 + i, 1)[0]) for i in range(8)]


@pytest.mark.parametrize("longest", [1, 3, 64])
def test_edge_runs_cover_every_edge_once_in_groups(longest):
    parent = np.repeat(np.random.default_rng(0).permutation(40), np.random.default_rng(1).integers(1, 150, 40))
    parent = np.concatenate([parent, parent[:100]])  # a group may come back later (tiled blocks do)
    start, length, group = edge_runs(parent, longest)
    assert (length >= 1).all() and (length <= longest).all()
    edges = np.concatenate([np.arange(s, s + n) for s, n in zip(start, length)])
    np.testing.assert_array_equal(edges, np.arange(len(parent)))  # in order, each once
    np.testing.assert_array_equal(np.repeat(group, length), parent)  # one group per run
    assert [len(a) for a in edge_runs(np.zeros(0, dtype=np.int64))] == [0, 0, 0]


@pytest.mark.parametrize("chunk", [1, 2, 7, 1 << 18])
def test_changes_chunked_equal_the_whole_comparison(chunk):
    """``_changes`` (edge_runs' run starts, compared a chunk at a time) against one whole comparison, with runs
    across chunk borders and arrays of 0, 1 and 2 entries."""
    from pcc.backend.plan import _changes
    rng = np.random.default_rng(chunk)
    for a in [np.zeros(0, np.int32), np.array([3], np.int32), np.array([3, 3], np.int32), np.array([3, 4], np.int32),
              np.repeat(rng.integers(0, 5, 300), rng.integers(1, 9, 300)).astype(np.int32)]:
        np.testing.assert_array_equal(_changes(a, chunk), np.flatnonzero(a[1:] != a[:-1]) + 1)


def test_aligned_classes_split_the_runs_by_alignment():
    rng = np.random.default_rng(2)
    length = rng.choice([4, 8, 64, 3, 1, 32], 500).astype(np.int32)
    start = np.concatenate([[0], np.cumsum(length)[:-1]]).astype(np.int64) + 2  # a shifted start: some unaligned
    group = rng.integers(0, 50, 500).astype(np.int32)
    classes = aligned_classes(start, length, group, 4)
    assert [a for a, _ in classes] == [4, 1]
    for align, (s, n, g) in classes:
        assert (s % align == 0).all() and (n % align == 0).all()
        assert (np.diff(s) > 0).all()  # each class keeps the runs' order
    got = sorted(zip(*(np.concatenate(parts) for parts in zip(*(r for _, r in classes)))))
    assert got == sorted(zip(start, length, group))  # every run once, with its length and group
    assert [a for a, _ in aligned_classes(start, length, group, 1)] == [1]  # no hint: one class
    wide = length * 4
    starts = np.concatenate([[0], np.cumsum(wide)[:-1]]).astype(np.int64)
    assert [a for a, _ in aligned_classes(starts, wide, group, 4)] == [4]  # all aligned: one class


def test_aligned_runs_compile_to_vector_accesses():
    """Compiled for an H100: the alignment hint turns the runs' 4-byte accesses into 16-byte vectors."""
    sig = {"w": "*fp32", "flow": "*fp32", "totals": "*fp32", "fanin": "*fp32", "start": "*i64", "length": "*i32",
           "group": "*i32", "n": "i32", "a": "fp32", "step": "fp32"}
    variants = [{"CH": 64, "BR": 32, "ALIGN": align} for align in (1, 4)]
    counts = [(len(re.findall(r"ld\.global\.v4", p)), len(re.findall(r"st\.global\.v4", p)))
              for p in sm90.ptx("pcc.backend.em_kernels", "em_sums", sig, variants, ["w", "flow"])]
    assert counts[0] == (0, 0)  # no hint: every flow and weight access is 4 bytes
    assert counts[1][0] >= 2 and counts[1][1] >= 1  # flows and weights loaded, weights stored, 16 bytes at a time


@pytest.mark.parametrize("name,make", CIRCUITS[:3] + [("holed", None)], ids=[c[0] for c in CIRCUITS[:3]] + ["holed"])
def test_fused_update_counts_each_groups_edges_as_the_torch_update(name, make):
    """The fused update counts a group's edges from its runs; the torch update from every edge's group id. Holed
    tensors (their holes and the pad slot in one group) included."""
    from randgen import tile_ordered_circuit
    pipeline = "collapse-chains,dce,dedupe,layerize,block-edges{max-holes=8}"
    plan = build_plan(optimize(tile_ordered_circuit(), pipeline) if make is None else optimize(make()))
    fanin = EMUpdate(plan, "cpu", fused=True).fanin
    assert make is not None or fanin[-1] > 1  # the holed plan: holes beside the pad slot in its group
    assert torch.equal(fanin, EMUpdate(plan, "cpu").fanin)



@pytest.mark.parametrize("name,make", [("holed", None)] + CIRCUITS, ids=["holed"] + [c[0] for c in CIRCUITS])
def test_plan_runs_give_the_runs_of_the_whole_parent_array(name, make):
    """``Plan.sum_runs`` (made a tensor at a time) spell out ``sum_parent`` and give the fused update the runs
    that the whole array's runs give, holes left out."""
    from randgen import tile_ordered_circuit
    pipeline = "collapse-chains,dce,dedupe,layerize,block-edges{max-holes=8}"
    plan = build_plan(optimize(tile_ordered_circuit(), pipeline) if make is None else optimize(make()))
    start, length, group = plan.sum_runs
    assert (length > 0).all() and (start == np.concatenate([[0], np.cumsum(length)[:-1]])).all()
    parent = plan.sum_parent
    assert parent[-1] == plan.sum_groups and len(parent) == len(plan.sum_w)
    whole = edge_runs(parent[:-1])
    real = whole[2] != plan.sum_groups
    em = EMUpdate(plan, "cpu", fused=True)
    got = [np.concatenate([r[i].numpy() for _, r in em.runs]) for i in range(3)]
    want = [a[real] for a in whole]
    order = np.argsort(got[0], kind="stable")  # the update keeps its runs in alignment classes
    assert all(np.array_equal(g[order], w) for g, w in zip(got, want))

def _random_flows(p: Params, rng) -> Flows:
    """Flows with whole groups of zeros (kept parameters when the pseudocount is 0) and wide ranges."""
    f = Flows.zeros_like(p)
    f.sum_w.copy_(torch.as_tensor(rng.exponential(size=len(p.sum_w)) * (rng.random(len(p.sum_w)) < 0.7)))
    f.sum_w[-1] = 0.0  # the pad slot receives no flow
    for k, t in f.cat.items():
        rows = torch.as_tensor(rng.random(len(t)) < 0.8, dtype=t.dtype)[:, None]
        t.copy_(torch.as_tensor(rng.exponential(size=t.shape) * 1e3) * rows)
    return f


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("step,alpha", [(1.0, 0.0), (1.0, 0.5), (0.3, 0.1), (0.0, 0.1)])
@pytest.mark.parametrize("name,make", CIRCUITS, ids=[c[0] for c in CIRCUITS])
def test_fused_update_equals_torch_update(name, make, step, alpha, dtype):
    c = make()
    randomize(c, 3)
    plan = build_plan(optimize(c))
    rng = np.random.default_rng(len(name))
    ref, got = Params.from_plan(plan, "cpu", dtype), Params.from_plan(plan, "cpu", dtype)
    flows = _random_flows(ref, rng)
    before = Params.from_plan(plan, "cpu", dtype)
    EMUpdate(plan, "cpu").apply(ref, Flows(flows.sum_w.clone(), {k: v.clone() for k, v in flows.cat.items()},
                                           flows.bern.clone(), flows.gauss.clone()), step, alpha)
    EMUpdate(plan, "cpu", fused=True).apply(got, flows, step, alpha)
    tol = 1e-6 if dtype == torch.float32 else 1e-13  # float64: the scalars in float64 (em_kernels.in_dtype_of)
    distinct = zip(got.tensors().values(), ref.tensors().values())
    assert all(a.data_ptr() != b.data_ptr() for a, b in distinct if a.numel())
    torch.testing.assert_close(got.sum_w, ref.sum_w, rtol=tol, atol=tol)
    assert got.sum_w[-1] == 0  # the pad slot stays zero
    for k in ref.cat:
        torch.testing.assert_close(got.cat[k], ref.cat[k], rtol=tol, atol=tol)
    if step == 0.0:  # a zero step (the CUDA-graph warm-up) leaves every parameter exactly as it was
        assert torch.equal(got.sum_w, before.sum_w) and all(torch.equal(got.cat[k], before.cat[k]) for k in got.cat)
