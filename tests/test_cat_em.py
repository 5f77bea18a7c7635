"""Mini-batch EM steps whose categorical tables are updated in their counting launches
(:func:`pcc.backend.codegen.em_tables`, ``kernels.input_bwd_cat``'s ``EM``): the same parameters as the separate
update pass over a count table and as the float64 torch model's, with no count table of those tables made."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import EXAMPLES
from randgen import random_circuits, random_inputs

import pcc
from pcc.backend import codegen
from pcc.backend.plan import build_plan
from pcc.backend.runtime import CircuitModel
from pcc.ir.params import randomize
from pcc.structures.ratspn import ratspn_source

CASES = [(p.stem, lambda p=p: pcc.parse(p)) for p in EXAMPLES if p.stem in ("pd8x8", "reuse")] + [
    (f"random{i}", lambda i=i: random_circuits(100 + i, 1)[0]) for i in (0, 5, 9)] + [
    ("ratspn", lambda: pcc.parse(ratspn_source(8, 2, 2, 3, num_cats=4)))]  # a variable's rows in two runs


@pytest.fixture(autouse=True)
def _em_in_the_counts(monkeypatch):
    """The update in the counts on for steps of up to 2048 samples (opt-in: off by default)."""
    monkeypatch.setattr(codegen, "CAT_EM_MAX_BATCH", 2048)


def _models(make, seed: int):
    c = make()
    randomize(c, seed)
    layered = pcc.optimize(c)
    fused = CircuitModel(layered, "cpu", executor="triton")
    plain = CircuitModel(layered, "cpu", executor="triton")
    exact = CircuitModel(layered, "cpu", dtype=torch.float64, executor="torch")
    x, m = random_inputs(c, np.random.default_rng(seed), batch=40)
    return fused, plain, exact, x, m


@pytest.mark.parametrize("step", [0.5, 1.0])
@pytest.mark.parametrize("name,make", CASES, ids=[c[0] for c in CASES])
def test_em_in_the_counts_equals_the_update_pass_and_float64(name, make, step, monkeypatch):
    """Two EM steps (missing entries included): the fused model's parameters equal those of the model whose
    counts go to a table first (``CAT_EM_MAX_BATCH`` 0) and the float64 torch model's; it made no count table of
    the tables it updates in the backward."""
    fused, plain, exact, x, m = _models(make, 3)
    tables = fused.executor.em_tables
    assert tables and "EM=True" in fused.executor.source
    for _ in range(2):
        a = fused.em_step(x, m, step_size=step, pseudocount=0.1)
        monkeypatch.setattr(codegen, "CAT_EM_MAX_BATCH", 0)
        b = plain.em_step(x, m, step_size=step, pseudocount=0.1)
        monkeypatch.setattr(codegen, "CAT_EM_MAX_BATCH", 2048)
        exact.em_step(x, m, step_size=step, pseudocount=0.1)
        assert torch.allclose(a, b, atol=1e-5)
    for (key, f), p, e in zip(fused.params.tensors().items(), plain.params.tensors().values(),
                              exact.params.tensors().values()):
        if f.numel():
            assert (f.double() - e).abs().max().item() <= 1e-4, key
            assert (f - p).abs().max().item() <= 1e-5, key
    assert fused._flows is None  # accumulate's full flows were never made
    assert not set(fused._em_flows[1].cat) & tables and set(plain.flows.cat) == set(plain.params.cat)


def test_tied_tables_keep_the_update_pass():
    """A table whose rows several input rows share (the HMM example's emissions, tied across steps) gets no
    update in the counts: a counting program would hold only part of a row's counts."""
    hmm = build_plan(pcc.optimize(pcc.parse(next(p for p in EXAMPLES if p.stem == "hmm"))))
    assert hmm.cat and not codegen.em_tables(hmm)
    model = CircuitModel(pcc.optimize(pcc.parse(next(p for p in EXAMPLES if p.stem == "hmm"))), "cpu",
                         executor="triton")
    assert not model.executor.em_tables and "EM=True" not in model.executor.source


def test_large_batches_keep_the_update_pass():
    """Steps of more than ``CAT_EM_MAX_BATCH`` samples are not updated in the counts (each program loops over the
    whole batch, which the counts' batch splits would otherwise share out)."""
    plan = build_plan(pcc.optimize(pcc.parse(next(p for p in EXAMPLES if p.stem == "pd8x8"))))
    assert codegen.em_tables(plan) == {17}
    model = CircuitModel(pcc.optimize(pcc.parse(next(p for p in EXAMPLES if p.stem == "pd8x8"))), "cpu",
                         executor="triton")
    assert model._em_tables(codegen.CAT_EM_MAX_BATCH) == {17} and not model._em_tables(codegen.CAT_EM_MAX_BATCH + 1)


@pytest.mark.parametrize("trans", [64, 0])
def test_em_in_counts_of_several_category_blocks(trans, monkeypatch):
    """pd8x8's 17 categories in two blocks of 16 (``CAT_EM_KB``): each program updates its block, finding the
    row's total from the flows and the old row; missing entries included, both product orders."""
    monkeypatch.setattr(codegen, "CAT_EM_KB", 16)
    monkeypatch.setattr(codegen, "CAT_TRANSPOSED_BELOW", trans)
    fused, plain, exact, x, m = _models(CASES[0][1], 5)
    assert "KB=16" in fused.executor.source and "KBLOCKS=2" in fused.executor.source
    for _ in range(2):
        fused.em_step(x, m, step_size=0.5, pseudocount=0.1)
        exact.em_step(x, m, step_size=0.5, pseudocount=0.1)
    for key, f in fused.params.tensors().items():
        e = exact.params.tensors()[key]
        if f.numel():
            assert (f.double() - e).abs().max().item() <= 1e-4, key
    assert (fused.params.cat[17].sum(1) - 1).abs().max().item() < 1e-5


@pytest.mark.parametrize("name,make", [CASES[0], CASES[-1]], ids=[CASES[0][0], CASES[-1][0]])
def test_em_in_untransposed_counts(name, make, monkeypatch):
    """The same with the counts' plain product (``CAT_TRANSPOSED_BELOW`` 0; these small tiles take the
    transposed one otherwise)."""
    monkeypatch.setattr(codegen, "CAT_TRANSPOSED_BELOW", 0)
    fused, _, exact, x, m = _models(make, 4)
    assert "TRANS=True" not in fused.executor.source
    fused.em_step(x, m, step_size=0.5, pseudocount=0.1)
    exact.em_step(x, m, step_size=0.5, pseudocount=0.1)
    for f, e in zip(fused.params.tensors().values(), exact.params.tensors().values()):
        if f.numel():
            assert (f.double() - e).abs().max().item() <= 1e-4
