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
