"""Data-parallel EM: two gloo processes train exactly as one process does."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from pcc.ir.params import array
from pcc.backend.runtime import load_checkpoint

MODEL = """
var X[12] : binary
seed 4
for v in 0..12 { leaf[v] = input(X[v], bernoulli, n=8) }
p = prod(leaf[0..12])
mid = sum(p, n=8)
q = prod(leaf[0..6])
r = prod(leaf[6..12])
pq = prod(q, r)
top = sum(mid, pq, n=1)
root top
"""


def train(tmp_path, name, *extra):
    out = tmp_path / f"{name}.ckpt"
    r = subprocess.run([sys.executable, "-m", "pcc", "train", tmp_path / "m.pc", "--data", tmp_path / "d.csv",
                        "--batch-size", "37", "--device", "cpu", "--dtype", "float64", "--seed", "3", "-o", out,
                        *map(str, extra)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return load_checkpoint(out)[0], r.stdout


@pytest.mark.parametrize("em,epochs", [("mini", 3), ("full", 3)])
def test_two_gloo_processes_equal_one(tmp_path, em, epochs):
    (tmp_path / "m.pc").write_text(MODEL)
    x = np.random.default_rng(0).integers(0, 2, size=(300, 12))
    x[:, 1] = x[:, 0]  # some structure to learn
    np.savetxt(tmp_path / "d.csv", x, fmt="%d", delimiter=",")
    one, log1 = train(tmp_path, "one", "--em", em, "--epochs", epochs, "--step-size", "0.3")
    two, log2 = train(tmp_path, "two", "--em", em, "--epochs", epochs, "--step-size", "0.3", "--nproc", 2)
    assert log1.count("epoch") == epochs and log2.count("epoch") == epochs  # rank 0 alone reports
    for name in one.tensors:
        if one.tensors[name].dtype == "f64":
            np.testing.assert_allclose(array(two, name), array(one, name), rtol=0, atol=1e-6)
    train_ll = [float(line.split("train ")[1].split()[0]) for line in log2.splitlines()]
    assert train_ll == [float(line.split("train ")[1].split()[0]) for line in log1.splitlines()]
