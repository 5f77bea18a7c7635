"""The plan's derived tables for the backward kernels: single-variable row tiles and child-tile uses."""
import numpy as np

from pcc.backend.plan import NEG, ZERO, InputOp, ProdOp, SumOp


def test_var_tiles_split_at_size_and_variable_changes():
    op = InputOp("categorical", 4, 10, np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2]), np.arange(10))
    assert op.var_tiles(2).tolist() == [0, 2, 3, 5, 7, 9]
    assert op.var_tiles(8).tolist() == [0, 3, 5]


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
