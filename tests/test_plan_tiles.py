"""The plan's derived tables for the backward kernels: single-variable row tiles and child-tile uses."""
import numpy as np

import pytest

from conftest import EXAMPLES
from randgen import random_circuits

from pcc import optimize, parse
from pcc.backend.plan import NEG, PAD, ZERO, InputOp, ProdOp, SumOp, build_plan
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
