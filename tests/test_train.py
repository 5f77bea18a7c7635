"""Training and evaluation end to end: EM on real data, checkpoints, and bad inputs."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from pcc.backend.runtime import CircuitModel, load_checkpoint
from pcc.frontend import load_text
from pcc.api import optimize

MIXTURE = """
var X[16] : binary
let K = 24
seed 5
for v in 0..16 { leaf[v] = input(X[v], bernoulli, n=K) }
p = prod(leaf[0..16])
top = sum(p, n=1)
root top
"""


def pcc(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pcc", *map(str, args)], capture_output=True, text=True, cwd=cwd)


@pytest.fixture
def nltcs(shared_data):
    d = shared_data / "twenty" / "nltcs"
    return {s: d / f"nltcs.{s}.data.gz" for s in ("train", "valid", "test")}


def test_train_and_eval_nltcs_on_cpu(nltcs, tmp_path):
    model = tmp_path / "mix.pc"
    model.write_text(MIXTURE)
    ckpt = tmp_path / "m.ckpt"
    r = pcc("train", model, "--data", nltcs["train"], "--valid", nltcs["valid"], "--epochs", "4",
            "--device", "cpu", "-o", ckpt)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("epoch ") == 4 and "valid -" in r.stdout
    r = pcc("train", ckpt, "--data", nltcs["train"], "--em", "full", "--epochs", "2", "--device", "cpu", "-o", ckpt)
    assert r.returncode == 0 and "epoch 6" in r.stdout, r.stderr  # continues from the checkpoint
    r = pcc("eval", ckpt, "--data", nltcs["test"], "--device", "cpu")
    assert r.returncode == 0, r.stderr
    ll = float(r.stdout.split("mean log-likelihood ")[1].split()[0])
    assert ll > -6.3, r.stdout  # published: -6.0 to -6.1


def test_full_batch_em_never_decreases_train_ll(nltcs):
    from pcc import data
    x = data.load(nltcs["train"])
    model = CircuitModel(optimize(load_text(MIXTURE)), "cpu", dtype=torch.float64, executor="torch")
    history = []
    for _ in range(8):
        total = sum(model.accumulate(x[i : i + 4096]).sum().item() for i in range(0, len(x), 4096))
        model.em_update(1.0, 0.0)  # pseudocount 0: EM on the likelihood itself, monotone by theory
        history.append(total / len(x))
    assert all(b >= a - 1e-9 for a, b in zip(history, history[1:])), history
    assert history[-1] > history[0] + 0.1


def test_full_batch_equals_sum_of_parts():
    """Flows accumulated over two halves give the same update as one batch (full-batch EM)."""
    c = optimize(load_text(MIXTURE))
    x = np.random.default_rng(0).integers(0, 2, size=(64, 16))
    a = CircuitModel(c, "cpu", torch.float64, "torch")
    b = CircuitModel(c, "cpu", torch.float64, "torch")
    a.accumulate(x)
    a.em_update(1.0, 0.3)
    b.accumulate(x[:20])
    b.accumulate(x[20:])
    b.em_update(1.0, 0.3)
    assert torch.allclose(a.params.sum_w, b.params.sum_w, atol=1e-12)
    assert torch.allclose(a.params.bern, b.params.bern, atol=1e-12)


def test_checkpoint_round_trip(tmp_path):
    c = optimize(load_text(MIXTURE))
    m = CircuitModel(c, "cpu", executor="torch")
    x = np.random.default_rng(1).integers(0, 2, size=(32, 16))
    m.em_step(x, step_size=0.5, pseudocount=0.1)
    m.save(tmp_path / "c.ckpt", {"epochs": 1})
    c2, meta = load_checkpoint(tmp_path / "c.ckpt")
    assert meta == {"epochs": 1}
    assert torch.allclose(CircuitModel(c2, "cpu").log_prob(x), m.log_prob(x))


def _bad(r, fragment):
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert fragment in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_bad_inputs(tmp_path, nltcs):
    model = tmp_path / "mix.pc"
    model.write_text(MIXTURE)
    out = tmp_path / "never.ckpt"
    outside = tmp_path / "outside.csv"
    outside.write_text("\n".join(",".join(["0"] * 15 + ["2"]) for _ in range(3)))
    _bad(pcc("train", model, "--data", outside, "-o", out, "--device", "cpu"), "outside the domain of variable 15")
    narrow = tmp_path / "narrow.csv"
    narrow.write_text("0,1\n1,0\n")
    _bad(pcc("train", model, "--data", narrow, "-o", out, "--device", "cpu"), "has 2 columns, the model has 16 variables")
    _bad(pcc("train", model, "--data", tmp_path / "nope.csv", "-o", out, "--device", "cpu"), "not found")
    assert not out.exists()  # nothing half-written
    ckpt = tmp_path / "ok.ckpt"
    assert pcc("train", model, "--data", nltcs["valid"], "--epochs", "1", "-o", ckpt, "--device", "cpu").returncode == 0
    raw = ckpt.read_bytes()
    for cut in (len(raw) // 2, 100, 7):
        (tmp_path / "cut.ckpt").write_bytes(raw[:cut])
        _bad(pcc("eval", tmp_path / "cut.ckpt", "--data", nltcs["test"], "--device", "cpu"), "malformed tensor file")
    _bad(pcc("eval", model.with_suffix(".nope"), "--data", nltcs["test"]), "no such model file")
    (tmp_path / "foreign.ckpt").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    _bad(pcc("eval", tmp_path / "foreign.ckpt", "--data", nltcs["test"]), "not a pcc checkpoint")
    _bad(pcc("train", model, "--data", nltcs["valid"], "--step-size", "0", "-o", out), "--step-size")


def test_keep_best_and_patience(nltcs, tmp_path):
    model = tmp_path / "mix.pc"
    model.write_text(MIXTURE)
    ckpt = tmp_path / "best.ckpt"
    r = pcc("train", model, "--data", nltcs["valid"], "--valid", nltcs["valid"], "--epochs", "6", "--step-size", "1.0",
            "--pseudocount", "0", "--keep-best", "--patience", "2", "--device", "cpu", "-o", ckpt)
    assert r.returncode == 0, r.stderr
    valids = [float(line.split("valid ")[1].split()[0]) for line in r.stdout.splitlines() if "valid " in line]
    _, meta = load_checkpoint(ckpt)
    assert abs(meta["valid_ll"] - max(valids)) < 1e-3  # the checkpoint holds the best epoch
    r = pcc("train", model, "--data", nltcs["valid"], "--keep-best", "-o", ckpt, "--device", "cpu")
    assert r.returncode == 1 and "need --valid" in r.stderr


@pytest.mark.parametrize("example,cats,flags", [("pd8x8", 17, ["--no-recompute"]), ("hmm", 8, ["--recompute", "all"]),
                                                ("hmm", 8, ["--fuse-inputs"])])
def test_recompute_levels_train_the_same_model(tmp_path, example, cats, flags):
    """``pcc train --no-recompute`` (products kept for the backward) and ``--recompute all`` (inputs and their
    products computed again too) and ``--fuse-inputs`` (inputs computed by their products) give the checkpoint the
    default (products of sums computed again) gives: the same EM on the same numbers."""
    data = tmp_path / "x.npy"
    width = 64 if example == "pd8x8" else 128
    np.save(data, np.random.default_rng(0).integers(0, cats, size=(32, width)))
    params = []
    for flag in ([], flags):
        ckpt = tmp_path / f"m{len(flag)}.ckpt"
        r = pcc("train", f"examples/{example}.pc", "--data", data, "--epochs", "1", "--batch-size", "16",
                "--device", "cpu", "--executor", "triton", *flag, "-o", ckpt)
        assert r.returncode == 0, r.stderr
        circuit, _ = load_checkpoint(ckpt)
        params.append(np.concatenate([np.ravel(t.data) for t in circuit.tensors.values() if t.dtype == "f64"]))
    np.testing.assert_array_equal(*params)
