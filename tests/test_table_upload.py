"""The Triton executor's index tables travel to the device as one buffer (backend/triton_exec.upload_tables).

Contract: every table comes back as a contiguous int32 tensor of its own shape and values (converted as
``torch.as_tensor(..., dtype=torch.int32)`` converts them), each a view of one shared buffer, each starting
at a multiple of ``TABLE_ALIGN`` elements; empty tables keep their shape.
"""
from __future__ import annotations

import numpy as np
import torch

from conftest import EXAMPLES

from pcc import optimize, parse
from pcc.backend.codegen import tables
from pcc.backend.plan import build_plan
from pcc.backend.triton_exec import TABLE_ALIGN, TritonExecutor, upload_tables


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"a": rng.integers(-5, 1000, (7, 3)), "b": np.arange(1), "empty": np.zeros((0, 4), dtype=np.int64),
            "c": rng.integers(0, 2**31 - 1, 33), "d": np.full((2, 3, 5), -1), "e": np.arange(6)[::2]}


def test_tables_keep_shape_values_and_int32() -> None:
    arrays = _arrays()
    out = upload_tables(arrays, "cpu")
    assert list(out) == list(arrays)
    for k, a in arrays.items():
        t = out[k]
        assert t.dtype == torch.int32 and t.is_contiguous() and tuple(t.shape) == a.shape
        assert torch.equal(t, torch.as_tensor(a, dtype=torch.int32)), k


def test_tables_share_one_aligned_buffer() -> None:
    out = upload_tables(_arrays(), "cpu")
    bases = {t.untyped_storage().data_ptr() for t in out.values()}
    assert len(bases) == 1
    base = bases.pop()
    for t in out.values():
        if t.numel():  # an empty tensor reports address 0
            assert (t.data_ptr() - base) % (4 * TABLE_ALIGN) == 0


def test_tables_do_not_overlap() -> None:
    out = upload_tables(_arrays(), "cpu")
    spans = sorted((t.data_ptr(), t.data_ptr() + 4 * t.numel()) for t in out.values() if t.numel())
    assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:]))


def test_executor_tables_equal_the_plan_s() -> None:
    plan = build_plan(optimize(parse(EXAMPLES[0])))
    ex = TritonExecutor(plan, "cpu")
    for k, a in tables(plan).items():
        assert torch.equal(ex.t[k], torch.as_tensor(a, dtype=torch.int32)), k


def test_an_array_under_two_names_is_sent_once() -> None:
    """The b-tables of a layout that computes nothing again are the forward tables themselves (codegen._same):
    they share one view instead of a second copy."""
    a, b = np.arange(40).reshape(8, 5), np.arange(3)
    out = upload_tables({"x": a, "y": b, "x_again": a, "y_copy": b.copy()}, "cpu")
    assert out["x"].data_ptr() == out["x_again"].data_ptr() and out["y"].data_ptr() != out["y_copy"].data_ptr()
    assert torch.equal(out["x_again"], torch.as_tensor(a, dtype=torch.int32))
    sizes = upload_tables({"x": a}, "cpu")["x"].untyped_storage().nbytes(), out["x"].untyped_storage().nbytes()
    assert sizes[1] < 2 * sizes[0] + 2 * TABLE_ALIGN * 4


def test_hmm_sums_read_their_own_child_tables_backward_by_default() -> None:
    """The HMM computes nothing again at the default level: its sums' ``bchild`` tables are their ``child``
    tables (one upload), while at level "all" they differ."""
    from pcc.backend.codegen import value_tables
    from pcc.backend.valuemap import value_map
    plan = build_plan(optimize(parse("examples/hmm.pc")))
    for level, same in (("sums", True), ("all", False)):
        t = value_tables(plan, value_map(plan, "train", level))
        pairs = [(t[k], t[k[:-len("bchild")] + "child"]) for k in t if k.endswith(".bchild")]
        assert pairs and any(b is not c for b, c in pairs) != same
