"""Compact flow rows (pcc.backend.flowmap): lifetimes never overlap, reused rows are cleared or overwritten,
and a training step's parameter flows with compact rows equal those with every node's own row and the
float64 reference's."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from randgen import random_inputs
from test_backend import CIRCUITS, PAIRED, setup

from pcc import optimize, parse
from pcc.backend import codegen
from pcc.backend.flowmap import (_lifetimes, backward_order, compact_flows, full_flows, group_lifetimes,
                                  overwriting_ops, shared_products)
from pcc.backend.params import Flows, Params
from pcc.backend.plan import FIRST_ROW, NEG, PAD, ZERO, InputOp, ProdOp, build_plan
from pcc.backend.torch_exec import TorchExecutor
from pcc.backend.triton_exec import TritonExecutor


def _children(op) -> np.ndarray:
    if isinstance(op, InputOp):
        return np.zeros(0, dtype=np.int64)
    kids = (op.children if isinstance(op, ProdOp) else op.child_rows).reshape(-1)
    return np.unique(kids[kids >= FIRST_ROW])


def _own(op) -> np.ndarray:
    if isinstance(op, (InputOp, ProdOp)):
        return np.arange(op.start, op.start + op.n)
    rows = op.out_rows.reshape(-1)
    return rows[rows >= FIRST_ROW]


def _replay(plan, fmap, zeroed: bool) -> None:
    """Walk the backward pass over the flow rows: a row an op adds to must hold zero or its owner's flow
    (zeroed at the start, cleared, or first stored by an overwriting op), and no two live nodes may share a
    row unless they are one group of ``fmap.shared`` (a shared product and its children, whose product runs
    no launch and whose row lives until its last member is done). ``zeroed``: the buffer starts all zeros
    (node flows); else only the reserved rows are (training)."""
    order = backward_order(plan)
    overwriting = overwriting_ops(plan)
    group = shared_products(plan)[1] if fmap.shared else np.arange(plan.rows)
    members = {}                   # group -> its rows not done yet
    for r in range(FIRST_ROW, plan.rows):
        members.setdefault(int(group[r]), set()).add(r)
    owner = {}                     # flow row -> group whose flow it holds now
    stale = set() if zeroed else set(range(FIRST_ROW, fmap.size))  # rows holding garbage or a finished flow
    owner[int(fmap.rows[plan.root_row])] = plan.root_row
    stale.discard(int(fmap.rows[plan.root_row]))
    for key, op in order:
        for r in fmap.zero.get(key, ()):
            assert int(r) not in owner, f"{key} clears row {r} of a live flow"
            stale.discard(int(r))
        for c in ([] if key in fmap.shared else _children(op)):
            fr, g = int(fmap.rows[c]), int(group[c])
            assert fr >= FIRST_ROW, f"{key}: written flow of row {c} maps to a reserved row"
            assert g == c, f"{key} writes row {c}, which shares its product's flow row"
            if owner.get(fr) == g:
                continue
            assert fr not in owner, f"{key}: rows {owner.get(fr)} and {c} share flow row {fr} while both alive"
            assert fr not in stale or key in overwriting, f"{key} adds to row {fr} left over from a finished flow"
            owner[fr] = g
            stale.discard(fr)
        for r in _own(op):
            fr, g = int(fmap.rows[r]), int(group[r])
            assert fr == int(fmap.rows[g]), f"row {r} is not in its group's flow row"
            members[g].discard(int(r))
            if fr == PAD or (fr not in owner and fr not in stale):  # never written: reads a zero row
                continue
            assert owner.get(fr) == g, f"{key}: row {r}'s flow row {fr} holds row {owner.get(fr)}"
            if not members[g]:
                del owner[fr]
                stale.add(fr)


@pytest.mark.parametrize("name,make", CIRCUITS, ids=[c[0] for c in CIRCUITS])
def test_compact_rows_never_overlap_and_every_added_row_is_cleared(name, make):
    plan, _, _, _, _ = setup(make(), 3)
    fmap = compact_flows(plan)
    assert list(fmap.rows[:FIRST_ROW]) == [ZERO, NEG, PAD]
    assert FIRST_ROW <= fmap.size <= plan.rows and fmap.rows.max() < fmap.size
    _replay(plan, fmap, zeroed=False)
    _replay(plan, full_flows(plan), zeroed=True)
    # the buffer holds exactly the most flows alive at once (the colouring is optimal), a shared group's one
    order = backward_order(plan)
    group = shared_products(plan)[1]
    own, first = group_lifetimes(*_lifetimes(plan, order), group)
    live = (own >= 0) & (first < len(order)) & (group == np.arange(plan.rows))
    counts = np.zeros(len(order) + 2, dtype=np.int64)
    np.add.at(counts, first[live] + 1, 1)
    np.add.at(counts, own[live] + 2, -1)
    assert fmap.size == FIRST_ROW + int(np.cumsum(counts).max())


def test_overwriting_ops_write_first_flows():
    plan, _, _, _, _ = setup(CIRCUITS[0][1](), 3)
    order = backward_order(plan)
    _, first = _lifetimes(plan, order)
    keys = overwriting_ops(plan)
    assert keys  # the hmm example's chain: every layer writes its children's first flows
    for t, (key, op) in enumerate(order):
        if key in keys:
            assert not op.shared_children or (isinstance(op, ProdOp) and op.gathers)
            assert (first[_children(op)] == t).all()


@pytest.mark.parametrize("scale_kmax", [2, 1], ids=["default", "all-sums-prescaled"])
@pytest.mark.parametrize("name,make", CIRCUITS[:24], ids=[c[0] for c in CIRCUITS[:24]])
def test_compact_training_flows_match_node_flows_and_reference(name, make, scale_kmax, monkeypatch):
    """Training flows (compact rows, and G precomputed in place where ``SCALE_KMAX`` allows: forced on every
    sum op by ``all-sums-prescaled``, since the small test circuits have one child tile per parent tile).
    The compact buffer starts as NaN: a flow row read before it is cleared or stored would poison the flows."""
    monkeypatch.setattr(codegen, "SCALE_KMAX", scale_kmax)
    monkeypatch.setattr(TritonExecutor, "_uninitialised", staticmethod(_garbage))
    c = make()
    plan, ex, p, x, m = setup(c, 5, torch.float32, executor="triton")
    xt, mt = torch.tensor(x, dtype=torch.float32), torch.tensor(m)
    vals = ex.forward(p, xt, mt)
    full, compact = Flows.zeros_like(p), Flows.zeros_like(p)
    ex.backward(p, vals, xt, mt, full)
    assert ex.backward(p, vals, xt, mt, compact, node_flows=False) is None
    for a, b in zip(full.all(), compact.all()):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-7)
    exact = TorchExecutor(plan, "cpu", torch.float64)
    p64 = Params.from_plan(plan, "cpu", torch.float64)
    ref = Flows.zeros_like(p64)
    exact.backward(p64, exact.forward(p64, xt.double(), mt), xt.double(), mt, ref)
    for a, b in zip(compact.all(), ref.all()):
        assert torch.allclose(a.double(), b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,make", CIRCUITS[:12] + PAIRED, ids=[c[0] for c in CIRCUITS[:12] + PAIRED])
def test_training_flows_with_parent_tiles_in_pairs(name, make, monkeypatch):
    """Paired launches (sum_fwd and sum_bwd PAIR, sum_scale per pair, the parameter flows' SCALE_PAIR) forced
    on every pairable sum, every sum prescaled: training flows still equal node flows and the reference."""
    monkeypatch.setattr(codegen, "PAIR_MIN_CHILDREN", 0)
    monkeypatch.setattr(codegen, "BWD_PAIR_USES", 0)
    monkeypatch.setattr(codegen, "PAIR_FILL", 0)
    test_compact_training_flows_match_node_flows_and_reference(name, make, 1, monkeypatch)


@pytest.mark.parametrize("name,make", CIRCUITS[:12] + PAIRED, ids=[c[0] for c in CIRCUITS[:12] + PAIRED])
def test_training_flows_on_dense_kernels(name, make, monkeypatch):
    """The dense kernels (every dense sum) in training steps: compact flows, NaN-filled buffer, the reference."""
    monkeypatch.setattr(codegen, "DENSE_MIN_WORK", 0)
    test_compact_training_flows_match_node_flows_and_reference(name, make, 2, monkeypatch)


def _garbage(rows: int, vals: torch.Tensor) -> torch.Tensor:
    return torch.full((rows, vals.shape[1]), float("nan"), dtype=vals.dtype, device=vals.device)


def test_atomic_product_backward_still_matches_the_reference(monkeypatch):
    """Product ops whose shared children would need a badly padded gather table add atomically instead
    (``child_parents`` is None): forced here on every shared op, in compact and in node-flow mode (the compact
    buffer starting as NaN: atomics add to rows that must have been cleared)."""
    monkeypatch.setattr(TritonExecutor, "_uninitialised", staticmethod(_garbage))
    checked = 0
    for name, make in CIRCUITS:
        c = make()
        plan, _, _, _, _ = setup(c, 7)
        shared = [op for ops in plan.layers for op in ops if isinstance(op, ProdOp) and op.shared_children]
        if not shared:
            continue
        for op in shared:
            op.__dict__["child_parents"] = None  # overrides the cached property: the atomic path
        ex = TritonExecutor(plan, "cpu")
        assert "K.prod_bwd_gather" not in ex.source
        p, p64 = Params.from_plan(plan, "cpu"), Params.from_plan(plan, "cpu", torch.float64)
        x, m = random_inputs(c, np.random.default_rng(7), batch=9)
        xt, mt = torch.tensor(x, dtype=torch.float32), torch.tensor(m)
        exact = TorchExecutor(plan, "cpu", torch.float64)
        ref = Flows.zeros_like(p64)
        node_ref = exact.backward(p64, exact.forward(p64, xt.double(), mt), xt.double(), mt, ref)
        vals = ex.forward(p, xt, mt)
        for node_flows in (True, False):
            got = Flows.zeros_like(p)
            node = ex.backward(p, vals, xt, mt, got, node_flows=node_flows)
            if node_flows:
                assert torch.allclose(node.double(), node_ref, rtol=1e-4, atol=1e-5)
            for a, b in zip(got.all(), ref.all()):
                assert torch.allclose(a.double(), b, rtol=1e-4, atol=1e-5)
        checked += 1
        if checked == 4:
            break
    assert checked == 4


def _pieces_below_readers(plan) -> dict[int, int]:
    """Every input piece lies below each op that reads its rows; the pieces hold every input row once."""
    layer_of = {}
    for li, ops in enumerate(plan.layers):
        for op in ops:
            if isinstance(op, InputOp):
                for r in range(op.start, op.start + op.n):
                    assert r not in layer_of, f"input row {r} in two pieces"
                    layer_of[r] = li
    for li, ops in enumerate(plan.layers):
        for op in ops:
            kids = _children(op)
            low = [layer_of[int(r)] for r in kids if int(r) in layer_of]
            assert all(l < li for l in low), f"an input piece at layer {max(low)} is read at layer {li}"
    return layer_of


@pytest.mark.parametrize("name,make", CIRCUITS, ids=[c[0] for c in CIRCUITS])
def test_input_pieces_sit_below_their_readers(name, make, monkeypatch):
    from pcc.backend import plan as planning
    monkeypatch.setattr(planning, "INPUT_CHUNKS", 8)
    plan = setup(make(), 1)[0]
    rows = _pieces_below_readers(plan)
    monkeypatch.setattr(planning, "sink_inputs", lambda layers, rows: layers)
    whole = [op for op in planning.build_plan(make_layered(make)).layers[0] if isinstance(op, InputOp)]
    assert sorted(rows) == sorted(r for op in whole for r in range(op.start, op.start + op.n))
    assert sum(isinstance(op, InputOp) for ops in plan.layers for op in ops) <= planning.INPUT_CHUNKS * len(whole)


def make_layered(make):
    c = make()
    setup(c, 1)  # optimised in place, as the plan above
    return c


def test_hmm_emission_flows_die_with_their_step(monkeypatch):
    """The HMM's emission inputs come in pieces along the sequence, each counted right after the products that
    read it: the training flows need 291 rows instead of 2067 (one piece: every emission flow until the end)."""
    from pcc.backend import plan as planning
    monkeypatch.setattr(planning, "INPUT_CHUNKS", 8)
    plan = build_plan(optimize(parse("examples/hmm.pc")))
    pieces = [(li, op) for li, ops in enumerate(plan.layers) for op in ops if isinstance(op, InputOp)]
    assert len(pieces) == 8 and len({li for li, _ in pieces}) == 8
    _pieces_below_readers(plan)
    assert compact_flows(plan).size <= 300


@pytest.mark.parametrize("seed", range(6))
def test_colour_intervals_is_an_optimal_colouring(seed):
    """Rows handed to intervals ``[start, end]`` (op times): owners of one row never overlap (the next starts
    after the last ended), ``prev`` is the previous owner's end (-2: a fresh row), and the rows used are the
    most intervals alive at one time."""
    from pcc.backend.flowmap import colour_intervals
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    start = rng.integers(0, 60, n)
    end = start + rng.integers(0, 1 + int(rng.integers(1, 40)), n)
    rows, size, prev = colour_intervals(start, end, 7)
    assert rows.min() >= 7 and rows.max() < size
    alive = max(int(((start <= t) & (t <= end)).sum()) for t in range(int(end.max()) + 1))
    assert size - 7 == alive
    for r in np.unique(rows):
        owners = np.flatnonzero(rows == r)
        owners = owners[np.argsort(start[owners], kind="stable")]
        assert (end[owners[:-1]] < start[owners[1:]]).all()
        assert prev[owners[0]] == -2 and (prev[owners[1:]] == end[owners[:-1]]).all()
