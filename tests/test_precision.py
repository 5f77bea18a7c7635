"""The reduced-precision mode: ``precision="bf16"`` rounds matrix-product operands to bfloat16.

On a CPU the kernels run in Triton's interpreter, whose bf16 ``tl.dot`` is wrong, so there the operands
are rounded to bf16 (the interpreter truncates, which is coarser than the GPU's round-to-nearest) and
multiplied in fp32; tests/test_gpu.py checks the tensor-core path. Tolerances are what bf16's 8-bit
mantissa allows: a few 1e-3 relative on log-likelihoods, 1e-3 absolute on updated weights.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import EXAMPLES
from randgen import random_circuits, random_inputs

import pcc
from pcc import optimize, parse
from pcc.backend.codegen import generate
from pcc.backend.params import EMUpdate, Flows, Params
from pcc.backend.plan import build_plan
from pcc.backend.triton_exec import TritonExecutor
from pcc.ir import log_likelihood
from pcc.ir.params import randomize

CIRCUITS = [(p.stem, lambda p=p: parse(p)) for p in EXAMPLES] + [
    (f"random{i}", lambda i=i: random_circuits(100 + i, 1)[0]) for i in range(6)]


def _em_step(circuit, precision: str):
    """Root log-likelihoods before, and sum weights after, one EM step on the Triton executor."""
    plan = build_plan(circuit)
    x, m = random_inputs(circuit, np.random.default_rng(1), batch=9)
    ex, p = TritonExecutor(plan, "cpu", precision=precision), Params.from_plan(plan, "cpu")
    xt, mt = torch.tensor(x, dtype=torch.float32), torch.tensor(m)
    vals = ex.forward(p, xt, mt)
    flows = Flows.zeros_like(p)
    ex.backward(p, vals, xt, mt, flows)
    EMUpdate(plan, "cpu").apply(p, flows, 0.5, 0.1)
    return vals[plan.root_row].double().numpy(), p.sum_w, (x, m)


# bf16x3 (two bfloat16 parts per operand, three products: 16 significant bits) is held far closer than bf16;
# measured on the interpreter (which truncates to bf16): at most 3.4e-5 and 3.9e-6 on these circuits
@pytest.mark.parametrize("precision,ll_tol,w_tol", [("bf16", 2e-2, 5e-3), ("bf16x3", 2e-4, 5e-5)])
@pytest.mark.parametrize("name,make", CIRCUITS, ids=[c[0] for c in CIRCUITS])
def test_bf16_is_close_to_the_reference(name, make, precision, ll_tol, w_tol):
    circuit = make()
    randomize(circuit, 1)
    circuit = optimize(circuit)
    ll, w, (x, m) = _em_step(circuit, precision)
    _, w_exact, _ = _em_step(circuit, "tf32x3")
    ref = log_likelihood(circuit, x, m)
    finite = np.isfinite(ref)
    assert np.array_equal(finite, np.isfinite(ll))
    rel = np.abs(ll[finite] - ref[finite]) / np.maximum(np.abs(ref[finite]), 1.0)
    assert rel.max() < ll_tol
    assert (w - w_exact).abs().max() < w_tol


def test_bf16_really_rounds():
    """The reduced mode is not the exact one under another name: pd8x8's log-likelihoods move by > 1e-5."""
    circuit = parse(next(p for p in EXAMPLES if p.stem == "pd8x8"))
    randomize(circuit, 1)
    circuit = optimize(circuit)
    ll, _, (x, m) = _em_step(circuit, "bf16")
    assert np.abs(ll - log_likelihood(circuit, x, m)).max() > 1e-5


def test_unknown_precision_is_a_clear_error():
    plan = build_plan(optimize(parse("var X : categorical(2)\na = input(X, categorical, n=2)\ns = sum(a, n=1)\nroot s\n")))
    with pytest.raises(ValueError, match="precision must be one of"):
        generate(plan, "fp8")


def test_compile_and_cli_take_a_precision(tmp_path):
    src = "var X[3] : categorical(2)\nfor v in 0..3 { a[v] = input(X[v], categorical, n=4) }\np = prod(a[0..3])\ns = sum(p, n=1)\nroot s\n"
    model = pcc.compile(src, device="cpu", executor="triton", precision="bf16")
    assert 'PRECISION = "bf16"' in model.executor.source
    assert torch.isfinite(model.log_prob(np.zeros((4, 3), dtype=np.int64))).all()
    (tmp_path / "m.pc").write_text(src)
    np.savetxt(tmp_path / "d.csv", np.random.default_rng(0).integers(0, 2, size=(32, 3)), fmt="%d", delimiter=",")
    from pcc.cli import main
    rc = main(["train", str(tmp_path / "m.pc"), "--data", str(tmp_path / "d.csv"), "--device", "cpu", "--executor",
               "triton", "--precision", "bf16", "--epochs", "1", "-o", str(tmp_path / "m.ckpt")])
    assert rc == 0 and (tmp_path / "m.ckpt").exists()
