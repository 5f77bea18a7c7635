"""``f32`` tensors: float32 parameters read from a tensor file stay float32 in the IR (no float64 copy), and
mean exactly what their values say: every stage gives what the same values in float64 give."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pcc import optimize
from pcc.backend.runtime import CircuitModel
from pcc.frontend import load_file
from pcc.ir import UserError, VerifyError, log_likelihood, parse_text, to_text, verify
from pcc.ir import tensorfile
from pcc.ir.circuit import Tensor
from pcc.ir.params import randomize

# a chain of three sums (collapse-chains folds it) over a product of categorical and bernoulli inputs
SOURCE = """\
var X[3] : categorical(4)
var Y : binary
tensors "w.safetensors"
a = input(X[0], categorical, n=4, params=tensor("a"))
b = input(X[1], categorical, n=4, params=tensor("b"))
c = input(X[2], categorical, n=4, params=tensor("c"))
y = input(Y, bernoulli, n=4, params=tensor("y"))
p = prod(a, b, c, y)
s1 = sum(p, n=4, params=tensor("s1"))
s2 = sum(s1, n=2, params=tensor("s2"))
r = sum(s2, n=1, params=tensor("r"))
root r
"""


def _rows(rng, shape) -> np.ndarray:
    w = rng.exponential(size=shape)
    return w / w.sum(axis=-1, keepdims=True)


def _write(folder, dtype) -> str:
    """The model's ``.pc`` file and its tensor file in ``dtype`` (the same float32-representable values)."""
    rng = np.random.default_rng(7)
    values = {k: _rows(rng, (4, 4)) for k in "abc"} | {"y": rng.uniform(0.1, 0.9, 4), "s1": _rows(rng, (4, 4)),
                                                       "s2": _rows(rng, (2, 4)), "r": _rows(rng, (1, 2))}
    # rounded to float32: both files hold the same values, whose rows sum to 1 within the verifier's 1e-6
    values = {k: v.astype(np.float32).astype(dtype) for k, v in values.items()}
    folder.mkdir(exist_ok=True)
    tensorfile.save(folder / "w.safetensors", values)
    (folder / "m.pc").write_text(SOURCE)
    return str(folder / "m.pc")


@pytest.fixture
def pair(tmp_path):
    """(the circuit from a float32 file, the circuit from a float64 file of the same values)."""
    return load_file(_write(tmp_path / "f32", np.float32)), load_file(_write(tmp_path / "f64", np.float64))


def _data(n=64):
    rng = np.random.default_rng(3)
    return np.concatenate([rng.integers(0, 4, (n, 3)), rng.integers(0, 2, (n, 1))], axis=1).astype(np.float64)


def test_a_float32_file_gives_f32_tensors(pair):
    c32, c64 = pair
    params = [t for t in c32.tensors.values() if t.data is not None and t.data.dtype.kind == "f"]
    assert params and all(t.dtype == "f32" and t.data.dtype == np.float32 for t in params)
    assert all(t.dtype == "f64" for t in c64.tensors.values() if t.data is not None and t.data.dtype.kind == "f")
    verify(c32)


def test_a_float16_file_is_read_as_float64(tmp_path):
    path = _write(tmp_path, np.float32)
    exact = {k: np.full(v.shape, 1.0 / v.shape[-1] if k != "y" else 0.5, np.float16)  # exact in float16
             for k, v in tensorfile.load(tmp_path / "w.safetensors").items()}
    tensorfile.save(tmp_path / "w.safetensors", exact)
    c = load_file(path)
    assert all(t.dtype == "f64" and t.data.dtype == np.float64 for t in c.tensors.values() if t.data is not None
               and t.data.dtype.kind == "f")


def test_every_stage_gives_what_the_same_values_in_float64_give(pair):
    c32, c64 = pair
    x = _data()
    np.testing.assert_array_equal(log_likelihood(c32, x), log_likelihood(c64, x))
    o32, o64 = optimize(c32), optimize(c64)  # collapse-chains folds s2 into the root in float64
    np.testing.assert_array_equal(log_likelihood(o32, x), log_likelihood(o64, x))
    assert any(t.dtype == "f32" for t in o32.tensors.values())  # the inputs' tables are kept as they came
    for dtype in (torch.float32, torch.float64):
        m32 = CircuitModel(o32, "cpu", dtype, executor="torch")
        m64 = CircuitModel(o64, "cpu", dtype, executor="torch")
        for a, b in zip(m32.params.tensors().values(), m64.params.tensors().values()):
            assert torch.equal(a, b)  # the same parameters, bit for bit
        assert torch.equal(m32.log_prob(x), m64.log_prob(x))


def test_f32_tensors_print_and_parse_back(pair):
    c32, _ = pair
    text = to_text(c32)
    assert " : f32[4, 4] = " in text
    back = parse_text(text, "<text>")
    assert to_text(back) == text  # a fixed point: the doubles printed are the float32 values exactly
    for name, t in c32.tensors.items():
        assert back.tensors[name].dtype == t.dtype
        if t.data is not None:
            assert back.tensors[name].data.dtype == t.data.dtype and np.array_equal(back.tensors[name].data, t.data)


def test_f32_resources_and_sidecars_round_trip(tmp_path):
    from pcc.api import write_ir
    from pcc.ir import parse_file
    w = np.full((1, 100), 0.01, np.float32)
    text = ("pcir 1\nvar X : binary\ntensor @a.p : f64[100] = random(seed=1)\n"
            "tensor @s.w : f32[1, 100] = " + repr(w.tolist()) + "\n"
            "%0 = input X bernoulli n=100 params=@a.p\n%1 = sum(%0) n=1 params=@s.w\nroot %1\n")
    c = parse_text(text, "<text>")
    assert c.tensors["s.w"].data.dtype == np.float32
    embedded = to_text(c)
    assert "resources {" in embedded  # 100 entries: written as a base64 resource of 400 bytes
    assert parse_text(embedded, "<text>").tensors["s.w"].data.dtype == np.float32
    write_ir(c, tmp_path / "c.pcir")
    assert tensorfile.load(tmp_path / "c.pcir.safetensors")["s.w"].dtype == np.float32
    back = parse_file(tmp_path / "c.pcir")
    assert back.tensors["s.w"].dtype == "f32" and np.array_equal(back.tensors["s.w"].data, w)
    with pytest.raises(UserError, match="has 400 bytes, expected 800"):  # the width follows the declared type
        parse_text(embedded.replace("f32[1, 100]", "f64[1, 100]"), "<text>")


def test_trained_parameters_are_written_back_as_float64(pair, tmp_path):
    c32, _ = pair
    model = CircuitModel(optimize(c32), "cpu", torch.float32, executor="torch")
    back = model.to_circuit()
    assert all(t.dtype == "f64" and t.data.dtype == np.float64 for t in back.tensors.values()
               if t.data is not None and t.data.dtype.kind == "f")
    verify(back)
    c = c32.copy()
    randomize(c, 1)  # random draws are float64, and say so
    assert all(t.dtype == "f64" for t in c.tensors.values() if t.data is not None and t.data.dtype.kind == "f")
    verify(c)


def test_integer_parameters_are_rejected_by_type(pair):
    c32, _ = pair
    bad = c32.copy()
    bad.tensors["s1.w"] = Tensor("i64", (4, 4), data=np.ones((4, 4), np.int64))
    with pytest.raises(VerifyError, match="must be f64 or f32, not i64"):
        verify(bad)
    bad.tensors["s1.w"] = Tensor("f32", (4, 4), data=np.full((4, 4), 0.25))  # float64 values under f32
    with pytest.raises(VerifyError, match="declared f32 but holds float64 values"):
        verify(bad)
