"""IR essentials: the interpreter on hand-computed cases, tensor files, verifier messages."""
from __future__ import annotations

import numpy as np
import pytest

from pcc.frontend import load_text
from pcc.ir import UserError, VerifyError, log_likelihood, parse_text, to_text, verify
from pcc.ir import tensorfile


def test_gaussian_and_missing():
    c = load_text("var Y : real\ng = input(Y, gaussian, n=2, params=[[0.0, 1.0], [2.0, 0.5]])\n"
                  "s = sum(g, n=1, params=[[0.5, 0.5]])\nroot s\n")
    y = 0.3
    pdf = lambda m, s: np.exp(-0.5 * ((y - m) / s) ** 2) / (s * np.sqrt(2 * np.pi))  # noqa: E731
    expect = np.log(0.5 * pdf(0, 1) + 0.5 * pdf(2, 0.5))
    assert log_likelihood(c, np.array([[y]]))[0] == pytest.approx(expect, abs=1e-12)
    assert log_likelihood(c, np.array([[y]]), np.array([[True]]))[0] == 0.0


def test_zero_weight_and_impossible_evidence_are_exact():
    c = load_text("var X : binary\na = input(X, bernoulli, n=2, params=[0.0, 1.0])\n"
                  "s = sum(a, n=1, params=[[1.0, 0.0]])\nroot s\n")
    ll = log_likelihood(c, np.array([[0.0], [1.0]]))
    assert ll[0] == 0.0 and ll[1] == -np.inf and not np.isnan(ll).any()


def test_tensorfile_round_trip_and_interop(tmp_path):
    data = {"w": np.arange(6, dtype=np.float64).reshape(2, 3), "t": np.array([[1, 2]], dtype=np.int64)}
    tensorfile.save(tmp_path / "a.safetensors", data)
    back = tensorfile.load(tmp_path / "a.safetensors")
    assert all(np.array_equal(back[k], v) for k, v in data.items())
    st = pytest.importorskip("safetensors.numpy")  # the reference implementation, if installed
    theirs = st.load_file(str(tmp_path / "a.safetensors"))
    assert all(np.array_equal(theirs[k], v) for k, v in data.items())
    st.save_file(data, str(tmp_path / "b.safetensors"))
    assert all(np.array_equal(tensorfile.load(tmp_path / "b.safetensors")[k], v) for k, v in data.items())


def test_tensorfile_rejects_damage(tmp_path):
    tensorfile.save(tmp_path / "a.safetensors", {"w": np.ones((4, 4))})
    raw = (tmp_path / "a.safetensors").read_bytes()
    for name, blob in {"short": raw[:4], "cut": raw[:-9], "json": raw[:8] + b"{" * (len(raw) - 8)}.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(UserError, match="malformed tensor file"):
            tensorfile.load(tmp_path / name)


def test_verifier_names_block_and_shows_context():
    c = load_text("var X[2] : binary\na = input(X[0], bernoulli, n=2)\nb = input(X[1], bernoulli, n=2)\n"
                  "p = prod(a, b)\ns = sum(p, n=1)\nroot s\n")
    c.blocks[2].children = (0, 0)
    with pytest.raises(VerifyError) as e:
        verify(c)
    text = str(e.value)
    assert "block %2 (p): not decomposable" in text and "  > %2 = prod(%0, %0) n=2" in text


def test_resource_checksum_is_checked():
    c = load_text("var X : categorical(100)\na = input(X, categorical, n=1, params=[[" +
                  ", ".join(["0.01"] * 100) + "]])\nroot a\n")
    text = to_text(c)
    assert "resources {" in text and "sha256=" in text
    tampered = text.replace("@a.p = \"", "@a.p = \"AAAA", 1)
    with pytest.raises(UserError):
        parse_text(tampered, "t.pcir")


def test_value_checks_are_remembered_by_array_and_only_by_array(monkeypatch):
    """A pass that keeps a tensor does not pay for its value check again; a new array is checked anew."""
    import importlib
    from pcc.ir.circuit import Tensor
    v = importlib.import_module("pcc.ir.verify")  # the package exports the function under the module's name
    calls = []
    real = v.weight_value_problems
    monkeypatch.setattr(v, "weight_value_problems", lambda c, b, w: calls.append(id(w)) or real(c, b, w))
    c = load_text("var X[2] : binary\na = input(X[0], bernoulli, n=2)\nb = input(X[1], bernoulli, n=2)\n"
                  "p = prod(a, b)\ns = sum(p, n=1, params=[[0.25, 0.75]])\nroot s\n")
    verify(c)
    verify(c.copy())  # the copy shares the payloads: nothing is read again
    assert len(calls) == 1
    name = c.blocks[c.root].params
    c.tensors[name] = Tensor("f64", (1, 2), np.array([[0.5, 0.6]]))  # a pass's new (and wrong) weights
    with pytest.raises(VerifyError, match="not normalised"):
        verify(c)
    assert len(calls) == 2
    c.tensors[name] = Tensor("f64", (1, 2), np.array([[0.5, 0.5]]))  # the wrong array is freed; its id may return
    verify(c)
    assert len(calls) == 3


def test_value_checks_forget_freed_arrays():
    from pcc.ir.verify import ValueChecks
    memo = ValueChecks()
    a = np.ones(3)
    assert memo.get((a,), ("k",), lambda: ["bad"]) == ["bad"]
    assert memo.get((a,), ("k",), lambda: []) == ["bad"] and len(memo) == 1
    assert memo.get((a,), ("other",), lambda: []) == [] and len(memo) == 2
    del a
    assert len(memo) == 0


def test_tensorfile_loads_floats_as_asked_and_maps_empty_files(tmp_path):
    data = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "t": np.array([[1, 2]], dtype=np.int64),
            "e": np.zeros((0, 4), dtype=np.float32)}
    tensorfile.save(tmp_path / "a.safetensors", data)
    got = tensorfile.load(tmp_path / "a.safetensors", floats=np.float64)
    assert got["w"].dtype == np.float64 and np.array_equal(got["w"], data["w"])
    assert got["t"].dtype == np.int64 and got["e"].shape == (0, 4)
    assert tensorfile.load(tmp_path / "a.safetensors")["w"].dtype == np.float32
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(UserError, match="shorter than its 8-byte header"):
        tensorfile.load(tmp_path / "empty")


def test_tensorfile_converts_in_chunks_and_keeps_every_dtype(tmp_path, monkeypatch):
    """Tensors are read straight into their arrays; one converted on the way in (``floats``) is read a bounded
    chunk at a time, so a chunk of 3 elements crosses every border of a 10-element tensor."""
    rng = np.random.default_rng(0)
    data = {"w": rng.random(10).astype(np.float32), "h": rng.random((2, 3)).astype(np.float16),
            "b": np.array([True, False, True]), "i": np.arange(7, dtype=np.int16).reshape(7, 1)}
    tensorfile.save(tmp_path / "a.safetensors", data)
    monkeypatch.setattr(tensorfile, "_CHUNK", 3 * 4)
    got = tensorfile.load(tmp_path / "a.safetensors", floats=np.float64)
    assert got["w"].dtype == np.float64 and np.array_equal(got["w"], data["w"].astype(np.float64))
    assert got["h"].dtype == np.float64 and np.array_equal(got["h"], data["h"].astype(np.float64))
    same = tensorfile.load(tmp_path / "a.safetensors")
    assert all(same[k].dtype == v.dtype and np.array_equal(same[k], v) for k, v in data.items())
    assert all(same[k].flags.writeable and same[k].flags.c_contiguous for k in data)
