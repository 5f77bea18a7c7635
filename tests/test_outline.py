"""Generated schedules whose ops share code call one helper per shared block (``codegen._Outliner``): the same
values, flows and EM steps, bit for bit, as the schedule with every op's launches written out."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import EXAMPLES
from randgen import random_circuits, random_inputs

import pcc
from pcc.backend import codegen
from pcc.backend.runtime import CircuitModel
from pcc.frontend import load_text
from pcc.ir.params import randomize
from pcc.structures.hmm import hmm_source

CASES = [(p.stem, lambda p=p: pcc.parse(p)) for p in EXAMPLES if p.stem in ("pd8x8", "hmm", "reuse")] + [
    (f"random{i}", lambda i=i: random_circuits(200 + i, 1)[0]) for i in (0, 3)] + [
    ("hmm12", lambda: load_text(hmm_source(12, 16, 5), "h.pc"))]


def _model(layered, monkeypatch, least: int, lines: int) -> CircuitModel:
    monkeypatch.setattr(codegen, "OUTLINE_MIN", least)
    monkeypatch.setattr(codegen, "OUTLINE_LINES", lines)
    return CircuitModel(layered, "cpu", executor="triton")


@pytest.mark.parametrize("name,make", CASES, ids=[c[0] for c in CASES])
def test_outlined_schedule_equals_the_written_out_one(name, make, monkeypatch):
    """Every shared block outlined (at least two ops, any length) against none: log-likelihoods, then two
    mini-batch EM steps with missing entries (the parameters after them), equal bit for bit."""
    c = make()
    randomize(c, 7)
    layered = pcc.optimize(c)
    plain = _model(layered, monkeypatch, 0, 3)
    outlined = _model(layered, monkeypatch, 2, 1)
    assert "def _" not in plain.executor.source
    x, m = random_inputs(c, np.random.default_rng(7), batch=24)
    assert torch.equal(plain.log_prob(x, m), outlined.log_prob(x, m))
    for _ in range(2):
        plain.em_step(x, m, step_size=0.5, pseudocount=0.1)
        outlined.em_step(x, m, step_size=0.5, pseudocount=0.1)
    for key, a in plain.params.tensors().items():
        assert torch.equal(a, outlined.params.tensors()[key]), key


def test_an_hmm_shares_its_transitions_code(monkeypatch):
    """The defaults outline a long HMM's transitions: one helper per pass, called once per transition, and
    a schedule a fraction of the written-out one's size."""
    layered = pcc.optimize(load_text(hmm_source(24, 16, 5), "h.pc"))
    outlined = _model(layered, monkeypatch, 4, 3).executor.source
    plain = _model(layered, monkeypatch, 0, 3).executor.source
    assert "def _forward_0(" in outlined and "def _backward_0(" in outlined
    assert outlined.count('_forward_0(vals, x, miss, t, p, B, BN, BB, nb, "L') >= 20
    assert len(outlined) < 0.5 * len(plain)
