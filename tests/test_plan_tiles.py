"""The plan's derived tables for the backward kernels: single-variable row tiles and child-tile uses."""
import numpy as np

import pytest
import torch

from conftest import EXAMPLES
from randgen import random_circuits, tile_ordered_circuit

from pcc import optimize, parse
from pcc.backend.plan import NEG, PAD, ZERO, InputOp, ProdOp, SumOp, TileOrder, build_plan
from pcc.backend.runtime import CircuitModel
from pcc.ir.circuit import SumBlock
from pcc.ir.params import array, normalize_sum
from pcc.frontend import load_text
from pcc.structures.hmm import hmm_source
from pcc.structures.pd import pd_source


def test_var_tiles_split_at_size_and_variable_changes():
    op = InputOp("categorical", 4, 10, np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2]), np.arange(10))
    assert op.var_tiles(2).tolist() == [[0, 2], [2, 3], [3, 5], [5, 7], [7, 9], [9, 10]]
    assert op.var_tiles(8).tolist() == [[0, 3], [3, 5], [5, 10]]
    again = InputOp("categorical", 4, 6, np.array([0, 0, 1, 1, 0, 0]), np.arange(6))  # variable 0 comes back
    assert again.var_tiles(8).tolist() == [[0, 2], [2, 4], [4, 6]]  # its first tile ends at row 2, not 6


def test_child_tiles_list_every_reader_once_and_drop_padding():
    child = np.array([[10, 11, 12, 13], [12, 13, NEG, NEG]])
    op = SumOp(2, 2, np.array([[5, 6], [7, 8]]), child, np.zeros((2, 2, 4), dtype=np.int64))
    rows, uses = op.child_tiles
    assert rows.tolist() == [[10, 11], [12, 13]]
    # flat index t * kmax + k: tile (12, 13) is read by parent tile 0 slot 1 and parent tile 1 slot 0
    assert sorted(u for u in uses[1] if u >= 0) == [1, 2]
    assert [u for u in uses[0] if u >= 0] == [0]
    assert not op.shared_children


def _child_tiles_of_every_tile(op: SumOp) -> tuple[np.ndarray, np.ndarray]:
    """``SumOp.child_tiles`` worked out from all ``T * kmax`` tiles, as it is where tiles differ."""
    rows, inverse = np.unique(op.child_rows.reshape(-1, op.tile_c), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    uses = [np.flatnonzero(inverse == u) for u in range(len(rows))]
    keep = ~(rows == NEG).all(axis=1)
    return rows[keep], [u for u, k in zip(uses, keep) if k]


def test_same_children_only_when_every_parent_tile_reads_the_same_rows():
    """An HMM's transitions: every parent tile reads the same child rows; their child tiles and uses are worked
    out from one tile's row and equal those from all tiles (the device keeps one row of the child table)."""
    weights = np.zeros((3, 2, 6), dtype=np.int64)
    same = SumOp(2, 2, np.array([[5, 6], [7, 8], [9, PAD]]), np.array([[10, 11, 12, 13, 14, NEG]] * 3), weights)
    other = SumOp(2, 2, np.array([[5, 6], [7, 8], [9, PAD]]),
                  np.array([[10, 11, 12, 13, 14, NEG]] * 2 + [[12, 13, 10, 11, 14, NEG]]), weights)
    one = SumOp(2, 2, np.array([[5, 6]]), np.array([[10, 11, 12, 13]]), np.zeros((1, 2, 4), dtype=np.int64))
    assert same.same_children and not other.same_children and not one.same_children
    plans = [build_plan(optimize(load_text(hmm_source(3, L, 5), "h.pc"))) for L in (128, 192)]
    ops = [op for plan in plans for ops in plan.layers for op in ops if isinstance(op, SumOp)]
    assert sum(op.same_children for op in ops) >= 4
    for op in [same, other] + ops:
        rows, uses = op.child_tiles
        want_rows, want_uses = _child_tiles_of_every_tile(op)
        assert np.array_equal(rows, want_rows)
        assert [u[u >= 0].tolist() for u in uses] == [u.tolist() for u in want_uses]


def test_shared_children_when_a_row_lies_in_two_child_tiles():
    child = np.array([[10, 11], [11, 12]])
    op = SumOp(2, 2, np.array([[5, 6], [7, 8]]), child, np.zeros((2, 2, 2), dtype=np.int64))
    assert op.shared_children


def test_product_children_shared_only_when_repeated():
    assert not ProdOp(20, np.array([[3, 4], [5, ZERO]])).shared_children
    assert ProdOp(20, np.array([[3, 4], [3, 5]])).shared_children


def test_affine_tiles_give_base_and_stride_with_padding_masked():
    # one parent tile of 2 rows (the second PAD) over 2 child slots of 2 columns (the last column NEG)
    pad = 99
    child = np.array([[10, 11, 12, NEG]])
    wids = np.array([[[40, 41, 50, pad], [pad, pad, pad, pad]]])
    op = SumOp(2, 2, np.array([[5, PAD]]), child, wids)
    base, stride = op.affine
    assert base.tolist() == [[40, 50]]
    assert stride.tolist() == [[0, 0]]  # row 1 is padding: no stride to read


def test_affine_strides_of_a_dense_tile():
    ids = np.arange(16).reshape(1, 4, 4)  # a dense 4 x 4 weight block: row stride 4
    op = SumOp(4, 2, np.array([[5, 6, 7, 8]]), np.array([[10, 11, 12, 13]]), ids)
    assert op.affine[0].tolist() == [[0, 2]] and op.affine[1].tolist() == [[4, 4]]


def test_not_affine_when_a_tile_has_a_hole_or_is_permuted():
    hole = np.array([[[0, 1], [2, 9]]])  # the pad slot (9) between a real parent and a real child: no edge
    assert SumOp(2, 2, np.array([[5, 6]]), np.array([[10, 11]]), hole).affine is None
    permuted = np.array([[[1, 0], [2, 3]]])
    assert SumOp(2, 2, np.array([[5, 6]]), np.array([[10, 11]]), permuted).affine is None


@pytest.mark.parametrize("text", [hmm_source(4, 32, 5), pd_source((8, 8), 16, num_cats=5)], ids=["hmm", "pd"])
def test_library_structures_are_affine(text):
    plan = build_plan(optimize(load_text(text, "s.pc")))
    sums = [op for ops in plan.layers for op in ops if isinstance(op, SumOp)]
    assert sums and all(op.affine is not None for op in sums)


def _sum_ops(plan):
    return [op for ops in plan.layers for op in ops if isinstance(op, SumOp)]


def test_strided_layout_agrees_with_the_table_it_stands_for():
    """Dense sums carry (base, stride) instead of a table; the table built from it is checked affine
    again from scratch and must give the same layout (examples and random circuits, padded tiles included)."""
    circuits = [parse(p) for p in EXAMPLES] + random_circuits(7, 20)
    seen = 0
    for circuit in circuits:
        for op in _sum_ops(build_plan(optimize(circuit))):
            if op.strided is None:
                continue
            seen += 1
            again = SumOp(op.tile_p, op.tile_c, op.out_rows, op.child_rows, op.weight_ids).affine
            assert again is not None
            assert np.array_equal(again[0], op.affine[0]) and np.array_equal(again[1], op.affine[1])
    assert seen > 20


def test_dense_sums_never_build_their_weight_table():
    """HMM 4096's table would be 17 GB: the plan and the Triton module's tables must not ask for it."""
    from pcc.backend.codegen import tables
    plan = build_plan(optimize(load_text(hmm_source(4, 32, 5), "s.pc")))
    tables(plan)
    assert all(op.strided is not None and "weight_ids" not in vars(op) for op in _sum_ops(plan))


def test_a_sum_op_takes_exactly_one_weight_layout():
    with pytest.raises(ValueError):
        SumOp(2, 2, np.array([[5, 6]]), np.array([[10, 11]]))


def test_an_op_of_padding_only_is_not_dense():
    """A one-row tile whose only parent is padding has no dense form (it used to raise IndexError)."""
    op = SumOp(1, 2, np.array([[PAD]]), np.array([[10, 11]]), np.full((1, 1, 2), 7, dtype=np.int64))
    assert op.dense is None


def test_mixed_runs_of_4_is_the_plain_definition():
    """``_mixed_runs_of_4`` (runs read as uint32 words, for ``SumOp.walign``) against any/all over each run."""
    from pcc.backend.plan import _mixed_runs_of_4
    rng = np.random.default_rng(5)
    for shape in [(4,), (3, 8), (16, 64), (2, 5, 12)]:
        for p in (0.0, 0.02, 0.5, 1.0):
            runs = rng.random((int(np.prod(shape)) // 4, 1)) < 0.5  # uniform runs, then a few flips
            flags = (np.repeat(runs, 4, axis=1) ^ (rng.random((len(runs), 4)) < p)).reshape(shape)
            want = bool((flags.reshape(-1, 4).any(axis=1) & ~flags.reshape(-1, 4).all(axis=1)).any())
            assert _mixed_runs_of_4(flags) == want
            assert _mixed_runs_of_4(flags[..., ::-1]) == want  # a strided view: runs stay aligned


def _tile_ordered_plan():
    c = optimize(tile_ordered_circuit())
    return c, build_plan(c)


def test_weights_of_op_tiles_larger_than_the_tensors_own_are_stored_by_op_tile():
    c, plan = _tile_ordered_plan()
    sparse = {b.params for b in c.blocks if isinstance(b, SumBlock) and b.tiles is not None}
    assert set(plan.sum_orders) == sparse and len(sparse) == 4  # the tied sum shares its tensor's order
    ops = [op for ops in plan.layers for op in ops if isinstance(op, SumOp)]
    assert all(op.affine is not None for op in ops)  # every weight tile a strided block: no index table
    assert any(op.dense is not None and op.dense.groups > 1 for op in ops)  # 32 x 64 pairs: grouped dense
    for name in sparse:  # read back in the tensor's own order: its values and its normalisation groups
        np.testing.assert_array_equal(plan.tensor_values(name, plan.sum_w), array(c, name).reshape(-1))
        parents = plan.tensor_values(name, plan.sum_parent)
        b = next(b for b in c.blocks if getattr(b, "params", None) == name)
        rows = (array(c, b.tiles)[:, :1] * b.block + np.arange(b.block))[:, :, None]
        own = np.broadcast_to(rows, (len(rows), b.block, b.block)).reshape(-1)
        assert len(np.unique(np.stack([parents, own]), axis=1)[0]) == b.n  # one group per parent node
    order = plan.sum_orders[next(iter(plan.sum_orders))]
    assert sorted(order.positions().tolist()) == list(range(order.tiles.shape[0] * order.block ** 2))


def test_a_parent_tiles_fan_in_is_one_row_major_block():
    # 16 x 16 tiles of a 64 x 96 tensor, op tiles 32 x 32: parent tile 0 reads all three child op tiles, parent
    # tile 1 the first and the last. Each parent tile's fan-in must be one row-major block (what SumOp.dense
    # needs), whatever order the tensor lists its tiles in.
    tiles = [(r, c) for r in (0, 1) for c in range(6)] + [(r, c) for r in (2, 3) for c in (0, 1, 4, 5)]
    tiles = np.array(tiles)[np.random.default_rng(0).permutation(len(tiles))]
    order = TileOrder(tiles, 16, 64, 96, 32, 32)
    i = np.arange(16)
    parent = (tiles[:, 0, None] * 16 + i)[:, :, None] + 0 * i
    child = (tiles[:, 1, None] * 16 + i)[:, None, :] + 0 * i[:, None]
    col = np.where(child < 32, child, child - 32)  # parent tile 1 skips child op tile 1
    want = np.where(parent < 32, parent * 96 + child, 32 * 96 + (parent - 32) * 64 + col)
    np.testing.assert_array_equal(order.positions(), want.reshape(-1))


def test_a_partly_filled_op_tile_keeps_the_tensors_own_order():
    c = tile_ordered_circuit()
    b = next(b for b in c.blocks if isinstance(b, SumBlock) and b.block == 8)
    tiles = array(c, b.tiles)[1:]  # the first 8 x 8 tile gone: op tile (0, 0) of 32 x 16 is no longer full
    c.tensors[b.tiles].data, c.tensors[b.tiles].shape = tiles, tiles.shape
    w = array(c, b.params)[1:]
    c.tensors[b.params].data, c.tensors[b.params].shape = w, w.shape
    c.tensors[b.params].data = normalize_sum(c, b, w)  # its first row lost some edges
    c = optimize(c, "collapse-chains,dce,dedupe,layerize,block-edges{max-holes=1}")  # not stored with holes
    plan = build_plan(c)
    assert b.params not in plan.sum_orders and len(plan.sum_orders) == 3
    np.testing.assert_array_equal(plan.tensor_values(b.params, plan.sum_w), array(c, b.params).reshape(-1))


def test_a_float32_model_builds_float32_weights_equal_to_rounding_the_float64_ones():
    """A float32 model's plan writes float32 weights (no float64 table of every edge on the way); they are the
    float64 plan's rounded once, so its parameters are the ones the float64 plan gave, bit for bit."""
    from pcc.backend.params import Params
    c, plan64 = _tile_ordered_plan()  # tile-ordered and holed tensors: every way a weight is written
    plan32 = build_plan(c, weights=np.float32)
    assert plan64.sum_w.dtype == np.float64 and plan32.sum_w.dtype == np.float32
    np.testing.assert_array_equal(plan32.sum_w, plan64.sum_w.astype(np.float32))
    np.testing.assert_array_equal(plan32.sum_parent, plan64.sum_parent)
    model = CircuitModel(c, "cpu", torch.float32, executor="torch")
    assert model.plan.sum_w.dtype == np.float32
    assert torch.equal(model.params.sum_w, Params.from_plan(plan64, "cpu", torch.float32).sum_w)
    assert CircuitModel(c, "cpu", torch.float64, executor="torch").plan.sum_w.dtype == np.float64


def test_a_model_writes_tile_ordered_weights_back_in_the_tensors_order():
    c, _ = _tile_ordered_plan()
    model = CircuitModel(c, "cpu", torch.float64, executor="torch")
    back = model.to_circuit()
    for name in model.plan.sum_orders:
        np.testing.assert_array_equal(array(back, name), array(c, name))


def test_tied_tensors_are_never_holed():
    """At any ``max-holes`` a tensor that two sums read keeps its tiles (its readers may fill different places);
    the others are holed, and the model still gives the reference's log-likelihoods."""
    from pcc.ir import log_likelihood
    from randgen import random_inputs
    c = tile_ordered_circuit()
    layered = optimize(c, "collapse-chains,dce,dedupe,layerize,block-edges{max-holes=8}")
    sums = [b for b in layered.blocks if isinstance(b, SumBlock) and b.tiles is not None]
    tied = {b.params for b in sums if sum(o.params == b.params for o in sums) > 1}
    assert tied and all(not b.attrs.get("holes") for b in sums if b.params in tied)
    assert any(b.attrs.get("holes") for b in sums if b.params not in tied)
    plan = build_plan(layered)
    assert all(plan.tensor_slots[name][2] == layered.tensors[name].size for name in tied)  # no hole slots
    assert any(plan.tensor_slots[b.params][2] > layered.tensors[b.params].size for b in sums if b.attrs.get("holes"))
    x, m = random_inputs(c, np.random.default_rng(5), batch=16)
    got = CircuitModel(layered, "cpu", executor="torch", dtype=torch.float64).log_prob(x, m).numpy()
    np.testing.assert_allclose(got, log_likelihood(c, x, m), rtol=1e-9, atol=1e-9)


def test_op_tiles_counted_per_tensor_tile_as_per_weight():
    """``TileOrder._keys`` counts whole tensor tiles where each lies in one op tile: the same op tiles, counts
    and per-weight indices as counting weight by weight (its other branch, taken where op tiles are smaller)."""
    rng = np.random.default_rng(1)
    tiles = np.array([(r, c) for r in range(4) for c in range(6) if rng.random() < 0.7])
    for tp, tc in [(32, 32), (32, 64), (8, 32)]:  # 16 x 16 tensor tiles; the last splits each tile in rows
        order = TileOrder(tiles, 16, 64, 96, tp, tc)
        keys, which, counts = order._keys()
        P, Q, _, _ = order._coarse()
        cols = -(-96 // tc)
        want = np.unique((P * cols + Q).reshape(-1), return_inverse=True, return_counts=True)
        np.testing.assert_array_equal(keys, want[0])
        np.testing.assert_array_equal(np.broadcast_to(which, (len(tiles), 16, 16)).reshape(-1), want[1].reshape(-1))
        np.testing.assert_array_equal(counts, want[2])


@pytest.mark.parametrize("holes", ["1", "8"])
def test_tile_rows_written_whole_as_weight_by_weight(holes, monkeypatch):
    """``_ParamTables._fill`` moves tile rows whole where the placement allows: the same ``sum_w`` and
    ``sum_parent`` as placing every weight on its own (tensors stored by op tiles, and holed ones)."""
    from pcc.backend import plan as plan_module
    c = optimize(tile_ordered_circuit(), f"collapse-chains,dce,dedupe,layerize,block-edges{{max-holes={holes}}}")
    fast = build_plan(c)
    monkeypatch.setattr(plan_module.TileOrder, "whole_rows", False)
    slow = build_plan(c)
    assert fast.sum_orders
    np.testing.assert_array_equal(fast.sum_w, slow.sum_w)
    np.testing.assert_array_equal(fast.sum_parent, slow.sum_parent)
