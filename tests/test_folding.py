"""Products folded into the forward loads of the sums that read them (pcc.backend.folding): which ops fold in
which layout, and bitwise the same log-likelihoods and EM steps as with every product stored."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from randgen import random_inputs
from test_backend import CIRCUITS, _dense_everywhere

from pcc import optimize, parse
from pcc.backend import folding
from pcc.backend.flowmap import forward_order, read_rows, written_rows
from pcc.backend.plan import ZERO, ProdOp, SumOp, build_plan
from pcc.backend.runtime import CircuitModel
from pcc.backend.triton_exec import TritonExecutor
from pcc.backend.valuemap import recomputed, value_map


def _pd():
    return build_plan(optimize(parse("examples/pd8x8.pc")))


def test_which_products_fold_in_which_layout():
    """PD's partitions (two regions each, read by sums only) fold: all of them for log_prob, for training those
    the backward would compute again (neither pass stores them then), none where every node keeps its row."""
    plan = _pd()
    ops = dict(forward_order(plan))
    cands = folding.candidates(plan)
    assert cands and all(isinstance(ops[k], ProdOp) and ops[k].children.shape[1] == 2 for k in cands)
    folded_rows = np.concatenate([written_rows(ops[k]) for k in cands])
    for key, op in forward_order(plan):  # only sums read them
        if not isinstance(op, SumOp):
            assert not np.isin(read_rows(op), folded_rows).any()
    root, train, full = (value_map(plan, layout) for layout in ("root", "train", "all"))
    assert root.folded == cands and not full.folded
    assert train.folded == frozenset(k for k in cands if k in recomputed(plan)) and train.folded
    for vmap in (root, train):
        rows = np.concatenate([written_rows(ops[k]) for k in vmap.folded])
        assert (vmap.rows[rows] == ZERO).all()  # no forward rows
    trained = np.concatenate([written_rows(ops[k]) for k in train.folded])
    assert (train.back_rows[trained] == ZERO).all()  # nor backward rows: the backward adds the children too
    assert not set(train.folded) & {k for keys in train.recompute.values() for k in keys}  # nothing computed again


def test_the_root_product_and_products_read_by_products_do_not_fold():
    plan = _pd()
    for key, op in forward_order(plan):
        if isinstance(op, ProdOp) and op.start <= plan.root_row < op.start + op.n:
            assert key not in folding.candidates(plan)


def test_folding_off_folds_nothing(monkeypatch):
    monkeypatch.setattr(folding, "FOLD", False)
    plan = _pd()
    assert not folding.candidates(plan) and not value_map(plan, "root").folded
    assert "FOLDED=True" not in TritonExecutor(plan, "cpu").source


def _both(make_model, monkeypatch):
    """``(folded, stored)``: models built with folding on and off (same plan, same parameters)."""
    out = []
    for on in (True, False):
        monkeypatch.setattr(folding, "FOLD", on)
        out.append(make_model())
    return out


@pytest.mark.parametrize("dense", [False, True], ids=["generic", "dense"])
@pytest.mark.parametrize("name,make", CIRCUITS[:16] + [("pd8x8", lambda: parse("examples/pd8x8.pc"))],
                         ids=[c[0] for c in CIRCUITS[:16]] + ["pd8x8"])
def test_folded_forward_and_em_step_are_bitwise_the_stored_ones(name, make, dense, monkeypatch):
    """log_prob (the root layout folds every candidate) and an EM step (training folds the recomputed ones) give
    exactly the numbers of the same model with every product stored, on the generic and the dense kernels."""
    if dense:
        _dense_everywhere(monkeypatch)
    c = make()
    x, m = random_inputs(c, np.random.default_rng(3), batch=11)
    xt, mt = torch.tensor(x, dtype=torch.float32), torch.tensor(m)
    models = _both(lambda: CircuitModel(optimize(c), "cpu", executor="triton"), monkeypatch)
    lls = [model.log_prob(xt, mt) for model in models]
    assert torch.equal(lls[0], lls[1])
    steps = [model.em_step(xt, mt, step_size=0.5, pseudocount=0.1) for model in models]
    assert torch.equal(steps[0], steps[1])
    for a, b in zip(models[0].params.tensors().values(), models[1].params.tensors().values()):
        assert torch.equal(a, b)
    if name == "pd8x8":
        assert "FOLDED=True" in models[0].executor.source


def test_products_that_compute_fused_inputs_do_not_fold(monkeypatch):
    """A plan's candidates follow the fusion setting in effect (the same plan, fusion off then on): the HMM's
    products of an emission and a sum fold until their emissions are fused into them."""
    from pcc.backend import fusion
    plan = build_plan(optimize(parse("examples/hmm.pc")))
    monkeypatch.setattr(fusion, "FUSE", False)
    unfused = folding.candidates(plan)
    monkeypatch.setattr(fusion, "FUSE", True)
    fused = fusion.state(plan).products
    assert fused and unfused and not folding.candidates(plan) & set(fused)
    assert folding.candidates(plan) == unfused - set(fused)
