"""Numeric edge cases: deep circuits, large batches, zero weights, seeds, tampered files. Never a NaN."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import pcc
from pcc.backend.runtime import CircuitModel, load_checkpoint
from pcc.ir import UserError
from pcc.structures import hmm_source


def _finite(model: CircuitModel) -> bool:
    return all(torch.isfinite(t).all() for t in model.params.tensors().values())


@pytest.mark.parametrize("executor", ["torch", "triton"])
def test_very_deep_circuit(executor):
    """An HMM of length 600 (1,200 layers): likelihoods far below float32's exp range, flows and EM finite."""
    model = CircuitModel(pcc.optimize(pcc.parse(hmm_source(600, 4, 3, seed=1))), "cpu", executor=executor)
    x = np.random.default_rng(0).integers(0, 3, size=(8, 600))
    ll = model.log_prob(x)
    assert torch.isfinite(ll).all() and ll.max() < -300
    assert torch.isfinite(model.node_flows(x)).all()
    model.em_step(x, step_size=0.5, pseudocount=0.0)
    assert _finite(model)


def test_large_batch_and_zero_weights():
    src = ("var X[6] : categorical(3)\nfor v in 0..6 { leaf[v] = input(X[v], categorical, n=4) }\n"
           "p = prod(leaf[0..6])\ns = sum(p, n=1, params=[[0.0, 0.5, 0.0, 0.5]])\nroot s\n")
    model = CircuitModel(pcc.optimize(pcc.parse(src)), "cpu", executor="torch")
    x = np.random.default_rng(1).integers(0, 3, size=(50_000, 6))
    for _ in range(3):
        model.em_step(x, step_size=1.0, pseudocount=0.0)  # zero-weight edges get no flow: stay exactly zero
    assert _finite(model)
    w = model.params.sum_w[:4]
    assert w[0] == 0 and w[2] == 0 and abs(w.sum().item() - 1) < 1e-6


def test_fixed_seed_gives_identical_training(tmp_path):
    (tmp_path / "m.pc").write_text(hmm_source(10, 3, 2))
    np.savetxt(tmp_path / "d.csv", np.random.default_rng(2).integers(0, 2, size=(100, 10)), fmt="%d", delimiter=",")
    runs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.ckpt"
        r = subprocess.run([sys.executable, "-m", "pcc", "train", tmp_path / "m.pc", "--data", tmp_path / "d.csv",
                            "--epochs", "2", "--batch-size", "16", "--seed", "7", "--device", "cpu", "-o", out],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        runs.append(out.read_bytes())
    assert runs[0] == runs[1]


def test_tampered_checkpoint_is_detected(tmp_path):
    model = pcc.compile("var X : categorical(100)\na = input(X, categorical, n=2)\ns = sum(a, n=1)\nroot s\n", device="cpu")
    path = tmp_path / "c.ckpt"
    model.save(path)
    raw = bytearray(path.read_bytes())
    raw[-20] ^= 0xFF  # a byte of the 200-value categorical table, stored by checksum
    path.write_bytes(bytes(raw))
    with pytest.raises(UserError, match="checksum"):
        load_checkpoint(path)
