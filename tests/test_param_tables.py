"""Parameter tables travel to the device block by block (``backend/plan.Tables``, ``backend/params._stacked``).

Contract: a plan's categorical tables are kept as the row blocks they were placed in; read whole
(``plan.cat[k]``) they are those blocks concatenated, and ``Params.from_plan`` gives the same table in the
model's dtype as converting the whole table would, without making the whole float64 table first.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from conftest import EXAMPLES

from pcc import optimize, parse
from pcc.backend.params import Params, _stacked
from pcc.backend.plan import Tables, build_plan

CATEGORICAL = [p for p in EXAMPLES if p.stem in ("hmm", "pd8x8", "reuse")]


@pytest.mark.parametrize("path", CATEGORICAL, ids=[p.stem for p in CATEGORICAL])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_tables_upload_as_their_concatenation(path, dtype) -> None:
    plan = build_plan(optimize(parse(path)))
    assert isinstance(plan.cat, Tables) and len(plan.cat)
    params = Params.from_plan(plan, "cpu", dtype)
    for k, blocks in plan.cat.parts.items():
        whole = np.concatenate(blocks)
        assert plan.cat.rows(k) == len(whole)
        assert np.array_equal(plan.cat[k], whole)
        assert params.cat[k].dtype == dtype
        assert torch.equal(params.cat[k], torch.as_tensor(whole, dtype=dtype))


def test_whole_tables_are_one_block_each() -> None:
    """A plan made from whole tables (a loaded module's) wraps them as one block each."""
    plan = build_plan(optimize(parse(CATEGORICAL[0])))
    whole = {k: plan.cat[k].copy() for k in plan.cat}
    again = dataclasses.replace(plan, cat=whole)
    assert isinstance(again.cat, Tables)
    assert all(len(again.cat.parts[k]) == 1 and np.array_equal(again.cat[k], whole[k]) for k in whole)


def test_a_whole_table_is_a_new_array() -> None:
    """Reading a table whole never hands out the circuit's own arrays (the blocks), even for one block."""
    plan = build_plan(optimize(parse(CATEGORICAL[0])))
    for k, blocks in plan.cat.parts.items():
        assert not any(np.shares_memory(plan.cat[k], b) for b in blocks)


def test_stacked_blocks_in_order_and_in_a_dtype_numpy_lacks() -> None:
    rng = np.random.default_rng(0)
    blocks = [rng.random((n, 5)) for n in (3, 1, 4)]
    want = torch.as_tensor(np.concatenate(blocks))
    assert torch.equal(_stacked(blocks, torch.float64, "cpu"), want)
    assert torch.equal(_stacked(blocks, torch.float32, "cpu"), want.float())
    assert torch.equal(_stacked(blocks, torch.bfloat16, "cpu"), want.bfloat16())


@pytest.mark.parametrize("stage_rows", [1, 3, 4, 5, 100], ids=lambda r: f"stage{r}")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_staged_upload_equals_the_concatenation(stage_rows, dtype) -> None:
    """The GPU path (a reused host stage of ``stage_bytes``, here forced on the CPU): runs of blocks that fill
    the stage, blocks longer than the stage on their own, float64 and float32 blocks mixed; the same table."""
    rng = np.random.default_rng(1)
    blocks = [rng.random((n, 5)).astype(np.float32 if i % 2 else np.float64)
              for i, n in enumerate((3, 1, 4, 7, 2, 2, 1))]
    want = torch.as_tensor(np.concatenate(blocks, dtype=np.float64), dtype=dtype)
    itemsize = torch.empty(0, dtype=dtype).element_size()
    got = _stacked(blocks, dtype, "cpu", stage_bytes=stage_rows * 5 * itemsize)
    assert got.dtype == dtype and torch.equal(got, want)
    assert not any(np.shares_memory(got.numpy(), b) for b in blocks)


def test_staged_runs_never_exceed_the_stage_but_for_one_long_block() -> None:
    from pcc.backend.params import _runs_within
    blocks = [np.zeros((n, 2)) for n in (2, 2, 5, 1, 1, 1)]
    runs = [[len(b) for b in run] for run in _runs_within(blocks, 4)]
    assert runs == [[2, 2], [5], [1, 1, 1]]
