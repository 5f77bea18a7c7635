"""Queries (marginals, conditionals, MAP, sampling) against brute-force enumeration on small circuits.

Every check enumerates all joint assignments of a random discrete circuit (at most a few thousand) and
compares with the runtime's batched queries:

* marginals and conditionals equal sums over the enumerated joint (1e-6);
* MAP: a general (non-deterministic) circuit's max-product optimum is *not* the joint's maximum, so the
  rigorous check is against an independent brute-force max-product evaluator written here straight from
  the layered IR (not the plan): the upward-pass value equals ``max_x MP(x)`` over all completions of the
  evidence, the returned state attains it (``MP(state) == max``), keeps the evidence, and its reported
  log-probability is the exact joint ``log p(state) >= MP(state)``;
* samples: a chi-square goodness-of-fit test at 10^5 samples (cells with expected count < 5 pooled) at
  the 0.999 quantile (Wilson–Hilferty), unconditioned and given evidence; conditional samples never
  contradict the evidence;
* bad input: wrong mask shapes, evidence outside a domain, zero-probability evidence are UserErrors.
"""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from randgen import all_assignments, random_circuits

from pcc import optimize, parse
from pcc.backend import queries as Q
from pcc.backend.runtime import CircuitModel, save_checkpoint
from pcc.ir import InputBlock, ProdBlock, UserError, log_likelihood
from pcc.ir.params import array, dense_mask, dense_weights, prod_table

N_CIRCUITS = 12


def _model(c):
    layered = optimize(c)
    return layered, CircuitModel(layered, "cpu", dtype=torch.float64, executor="torch")


CASES = [c for c in random_circuits(7, 40, max_vars=7, real_vars=False) if len(all_assignments(c)) <= 3000][:N_CIRCUITS]
CASES += [c for c in random_circuits(11, 20, max_vars=10, real_vars=False)  # 8..10 variables, <= 12k states
          if len(c.variables) >= 8 and len(all_assignments(c)) <= 12000][:4]


@pytest.fixture(scope="module", params=range(len(CASES)), ids=[f"random{i}" for i in range(len(CASES))])
def case(request):
    c = CASES[request.param]
    layered, m = _model(c)
    a = all_assignments(c)
    lp = log_likelihood(c, a)  # the reference interpreter on the source circuit
    return c, layered, m, a, lp


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    mx = a.max(axis=axis, keepdims=True)
    safe = np.where(np.isfinite(mx), mx, 0.0)
    with np.errstate(divide="ignore"):
        return (np.log(np.exp(a - safe).sum(axis=axis, keepdims=True)) + safe).squeeze(axis)


def _consistent(a: np.ndarray, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``[B, N]``: assignment ``n`` agrees with row ``b`` on the masked entries."""
    return ((a[None] == x[:, None]) | ~mask[:, None]).all(-1)


def _brute_marginal(a, lp, x, mask):
    return _logsumexp(np.where(_consistent(a, x, mask), lp[None], -np.inf), 1)


def _draw_rows(a, lp, rng, n):
    """Rows drawn from the joint (so every observed subset has positive probability)."""
    p = np.exp(lp - lp.max())
    return a[rng.choice(len(a), size=n, p=p / p.sum())]


def test_marginals_and_conditionals(case):
    c, _, m, a, lp = case
    rng = np.random.default_rng(1)
    np.testing.assert_allclose(np.exp(lp).sum(), 1.0, atol=1e-9)
    x = _draw_rows(a, lp, rng, 24)
    mask = rng.random(x.shape) < 0.5
    mask[0], mask[1] = True, False
    got = Q.marginal(m, x, mask).numpy()
    np.testing.assert_allclose(got, _brute_marginal(a, lp, x, mask), atol=1e-6, rtol=1e-6)
    x[~mask] = rng.integers(0, 2, size=(~mask).sum())  # values of unobserved entries are ignored
    np.testing.assert_allclose(Q.marginal(m, x, mask).numpy(), got, atol=1e-12)

    x = _draw_rows(a, lp, rng, 24)
    ev = rng.random(x.shape) < 0.4
    q = ~ev & (rng.random(x.shape) < 0.6)
    ev[0], q[0] = False, True  # no evidence: the conditional is the marginal
    want = _brute_marginal(a, lp, x, ev | q) - _brute_marginal(a, lp, x, ev)
    got = m.conditional(x, ev, q).numpy()
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-6)
    full = m.conditional(x, ev).numpy()  # default query: everything else
    np.testing.assert_allclose(full, lp[_index(c, x)] - _brute_marginal(a, lp, x, ev), atol=1e-6)


def _index(c, x: np.ndarray) -> np.ndarray:
    """Row of ``all_assignments`` of each state (mixed radix, first variable most significant)."""
    ks = [v.domain.categories for v in c.variables]
    idx = np.zeros(len(x), dtype=np.int64)
    for j, k in enumerate(ks):
        idx = idx * k + x[:, j].astype(np.int64)
    return idx


def reference_max_product(circuit, x: np.ndarray) -> np.ndarray:
    """Brute-force max-product value of fully observed rows ``x`` straight from the (layered) IR."""
    vals = []
    for b in circuit.blocks:
        if isinstance(b, InputBlock):
            p = array(circuit, b.params)
            col = x[:, b.var].astype(np.int64)
            with np.errstate(divide="ignore"):
                if b.dist == "bernoulli":
                    v = np.where(col[:, None] == 1, np.log(p)[None], np.log1p(-p)[None])
                else:
                    v = np.log(p.T[col])
        elif isinstance(b, ProdBlock):
            t = prod_table(circuit, b)
            v = sum(vals[ch][:, t[:, j]] for j, ch in enumerate(b.children))
        else:
            kids = np.concatenate([vals[ch] for ch in b.children], axis=1)  # [B, C]
            with np.errstate(divide="ignore"):
                logw = np.where(dense_mask(circuit, b), np.log(dense_weights(circuit, b)), -np.inf)  # [n, C]
            v = (kids[:, None, :] + logw[None]).max(-1)
        vals.append(v)
    return vals[circuit.root][:, 0]


def test_map_is_max_product_optimum(case):
    c, layered, m, a, lp = case
    mp = reference_max_product(layered, a)  # [N]: MP(x) of every full assignment
    best = mp.max()
    np.testing.assert_allclose(Q.max_product(m).item(), best, atol=1e-9)
    state, logp = m.map()
    s = state.numpy()
    assert s.shape == (1, len(c.variables))
    np.testing.assert_allclose(reference_max_product(layered, s), best, atol=1e-9)  # the state attains it
    np.testing.assert_allclose(logp.numpy(), lp[_index(c, s)], atol=1e-9)        # exact joint log p(state)
    assert logp.item() >= best - 1e-9

    rng = np.random.default_rng(2)  # MAP given evidence: the max over completions of each row
    x = _draw_rows(a, lp, rng, 16)
    ev = rng.random(x.shape) < 0.5
    ok = _consistent(a, x, ev)
    want = np.where(ok, mp[None], -np.inf).max(1)
    np.testing.assert_allclose(Q.max_product(m, x, ev).numpy(), want, atol=1e-9)
    state, logp = Q.map_state(m, x, ev)
    s = state.numpy()
    assert (s[ev] == x[ev]).all()
    np.testing.assert_allclose(reference_max_product(layered, s), want, atol=1e-9)
    np.testing.assert_allclose(logp.numpy(), lp[_index(c, s)], atol=1e-9)


def chi_square_threshold(df: int, z: float = 3.090232) -> float:
    """0.999 quantile of chi-square(df) by Wilson–Hilferty (z = the standard normal 0.999 quantile)."""
    h = 2.0 / (9.0 * df)
    return df * (1.0 - h + z * math.sqrt(h)) ** 3


def _chi_square(counts: np.ndarray, probs: np.ndarray, n: int) -> tuple[float, int]:
    expected = probs * n
    small = expected < 5
    obs = np.append(counts[~small], counts[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    if exp[-1] == 0:
        assert obs[-1] == 0, "a state of probability zero was sampled"
        obs, exp = obs[:-1], exp[:-1]
    return float(((obs - exp) ** 2 / exp).sum()), len(exp) - 1


SAMPLES = 100_000


@pytest.mark.parametrize("i", [0, 1, 2, 3])
def test_sample_frequencies(i):
    c = CASES[i]
    layered, m = _model(c)
    a = all_assignments(c)
    lp = log_likelihood(c, a)
    g = torch.Generator().manual_seed(10 + i)
    s = m.sample(SAMPLES, generator=g).numpy()
    counts = np.bincount(_index(c, s), minlength=len(a))
    stat, df = _chi_square(counts, np.exp(lp), SAMPLES)
    if df > 0:
        assert stat < chi_square_threshold(df), (stat, df)

    rng = np.random.default_rng(i)  # given evidence: p(x_U | x_E)
    x = _draw_rows(a, lp, rng, 1)[0]
    ev = rng.random(len(x)) < 0.4
    s = m.sample(SAMPLES, x, ev, generator=g).numpy()
    assert (s[:, ev] == x[ev]).all()
    ok = _consistent(a, x[None], ev[None])[0]
    cond = np.where(ok, np.exp(lp - _brute_marginal(a, lp, x[None], ev[None])[0]), 0.0)
    counts = np.bincount(_index(c, s), minlength=len(a))
    assert counts[~ok].sum() == 0
    stat, df = _chi_square(counts, cond, SAMPLES)
    if df > 0:
        assert stat < chi_square_threshold(df), (stat, df)


def test_conditional_samples_keep_evidence(case):
    c, _, m, a, lp = case
    rng = np.random.default_rng(3)
    x = _draw_rows(a, lp, rng, 500)
    ev = rng.random(x.shape) < 0.5
    s = m.sample(500, x, ev, generator=torch.Generator().manual_seed(0)).numpy()
    assert (s[ev] == x[ev]).all()
    assert np.isfinite(lp[_index(c, s)]).all()  # every sample has positive probability
    ks = np.array([v.domain.categories for v in c.variables])
    assert ((s >= 0) & (s < ks) & (s == np.floor(s))).all()


def test_sampling_is_reproducible():
    _, m = _model(CASES[0])
    one = m.sample(50, generator=torch.Generator().manual_seed(5))
    two = m.sample(50, generator=torch.Generator().manual_seed(5))
    assert torch.equal(one, two)


def test_wilson_hilferty_is_close():
    # tabulated 0.999 quantiles of chi-square
    for df, q in [(1, 10.828), (10, 29.588), (100, 149.449)]:
        assert abs(chi_square_threshold(df) - q) / q < 0.035


# ----------------------------------------------------------------------------------------- bad input


ZERO_PC = """var X[2] : binary
a = input(X[0], categorical, n=2, params=[[1.0, 0.0], [0.5, 0.5]])
b = input(X[1], bernoulli, n=2, params=[0.3, 0.6])
p = prod(a, b)
s = sum(p, n=1, params=[[1.0, 0.0]])
root s
"""


@pytest.fixture(scope="module")
def zero_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("zero") / "zero.pc"
    path.write_text(ZERO_PC)
    c = optimize(parse(path))
    return CircuitModel(c, "cpu", dtype=torch.float64, executor="torch")


def test_zero_probability_evidence(zero_model):
    m = zero_model
    x = np.array([[1.0, 0.0], [0.0, 1.0]])
    ev = np.array([[1, 0], [1, 0]])
    lp = Q.marginal(m, x, ev).numpy()
    assert lp[0] == -np.inf and np.isfinite(lp[1])  # marginals: -inf, never NaN
    for call in (lambda: m.conditional(x, ev), lambda: m.map(x, ev), lambda: m.sample(2, x, ev)):
        with pytest.raises(UserError, match="evidence has probability zero in row 0"):
            call()
    ok = np.array([[0.0, 1.0]])
    got = m.conditional(np.array([[1.0, 1.0]]), np.array([[0, 1]]), np.array([[1, 0]])).numpy()
    assert got[0] == -np.inf  # a zero-probability query given positive evidence: -inf, not NaN
    s = m.sample(100, ok[0], np.array([0, 1]))
    assert (s[:, 0] == 0).all() and (s[:, 1] == 1).all()
    state, logp = m.map(ok, np.array([[0, 1]]))
    assert state[0].tolist() == [0.0, 1.0] and np.isfinite(logp.item())


def test_bad_masks_and_evidence(case):
    c, _, m, a, lp = case
    v = len(c.variables)
    x = np.zeros((3, v))
    with pytest.raises(UserError, match="shape"):
        Q.marginal(m, x, np.ones((3, v + 1)))
    with pytest.raises(UserError, match="shape"):
        m.conditional(x, np.ones((2, v)))
    with pytest.raises(UserError, match="shape"):
        m.conditional(x, np.ones((3, v)), np.ones((3, v, 1)))
    with pytest.raises(UserError, match="shape"):
        m.map(np.zeros((3, v + 1)), np.ones((3, v + 1)))
    with pytest.raises(UserError, match="rows"):
        m.sample(5, np.zeros((2, v)), np.ones((2, v)))
    with pytest.raises(UserError, match="only 0 and 1"):
        Q.marginal(m, x, np.full((3, v), 2))
    with pytest.raises(UserError, match="without an evidence mask"):
        m.sample(5, np.zeros(v))
    k = c.variables[0].domain.categories
    for bad in (k, -1, 0.5, np.nan):
        xb = x.copy()
        xb[1, 0] = bad
        with pytest.raises(UserError, match="outside the domain"):
            m.sample(3, xb, np.ones((3, v)))
        with pytest.raises(UserError, match="outside the domain"):
            m.map(xb, np.ones((3, v)))
        with pytest.raises(UserError, match="outside the domain"):
            Q.marginal(m, xb, np.ones((3, v)))
        unobserved = np.ones((3, v), dtype=bool)
        unobserved[1, 0] = False  # an unobserved entry may hold anything
        assert not np.isnan(Q.marginal(m, xb, unobserved).numpy()).any()


# ----------------------------------------------------------------------------------------- CLI


def pcc(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pcc", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_cli_sample_and_query(tmp_path):
    src = tmp_path / "m.pc"
    src.write_text("var X[4] : binary\n"
                   "a = input(X[0], bernoulli, n=2)\nb = input(X[1], bernoulli, n=2)\n"
                   "c = input(X[2], bernoulli, n=2)\nd = input(X[3], bernoulli, n=2)\n"
                   "p = prod(a, b, c, d)\ns = sum(p, n=1)\nroot s\n")
    circuit = optimize(parse(src))
    from pcc.ir.params import randomize
    randomize(circuit, 3)
    ckpt = tmp_path / "m.ckpt"
    save_checkpoint(circuit, ckpt)
    r = pcc("sample", ckpt, "-n", 9, "-o", tmp_path / "s.npy", "--png", tmp_path / "g.png", "--seed", 1)
    assert r.returncode == 0, r.stderr
    s = np.load(tmp_path / "s.npy")
    assert s.shape == (9, 4) and set(np.unique(s)) <= {0.0, 1.0}
    assert (tmp_path / "g.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    ev = np.array([[1, 0, 0, 0], [0, 1, 1, 0]], dtype=float)
    mask = np.array([[1, 0, 0, 0], [0, 1, 1, 0]], dtype=float)
    np.save(tmp_path / "ev.npy", ev)
    np.savetxt(tmp_path / "mask.csv", mask, delimiter=",")
    r = pcc("sample", ckpt, "-n", 50, "-o", tmp_path / "c.npy", "--evidence", tmp_path / "ev.npy", "--mask", tmp_path / "mask.csv")
    assert r.returncode == 0, r.stderr
    s = np.load(tmp_path / "c.npy")
    assert s.shape == (100, 4)
    assert (s[:50, 0] == 1).all() and (s[50:, 1] == 1).all() and (s[50:, 2] == 1).all()

    m = CircuitModel(circuit, "cpu", dtype=torch.float64, executor="torch")
    for kind in ("marginal", "conditional", "map"):
        out = tmp_path / f"{kind}.npy"
        r = pcc("query", ckpt, kind, "--data", tmp_path / "ev.npy", "--mask", tmp_path / "mask.csv", "-o", out)
        assert r.returncode == 0, r.stderr
        got = np.load(out)
        if kind == "marginal":
            np.testing.assert_allclose(got, Q.marginal(m, ev, mask).numpy(), rtol=1e-5)
        elif kind == "conditional":
            np.testing.assert_allclose(got, m.conditional(ev, mask).numpy(), rtol=1e-5)
        else:
            assert got.shape == (2, 4) and (got[mask == 1] == ev[mask == 1]).all()

    r = pcc("query", ckpt, "marginal", "--data", tmp_path / "ev.npy", "--mask", tmp_path / "s.npy", "-o", tmp_path / "x.npy")
    assert r.returncode == 1 and "mask has shape [9, 4], expected [2, 4]" in r.stderr and "Traceback" not in r.stderr
    bad = ev.copy()
    bad[0, 0] = 3
    np.save(tmp_path / "bad.npy", bad)
    r = pcc("sample", ckpt, "-n", 2, "-o", tmp_path / "x.npy", "--evidence", tmp_path / "bad.npy", "--mask", tmp_path / "mask.csv")
    assert r.returncode == 1 and "outside the domain" in r.stderr and "Traceback" not in r.stderr
    r = pcc("query", ckpt, "conditional", "--data", tmp_path / "ev.npy", "-o", tmp_path / "x.npy")
    assert r.returncode == 1 and "need --mask" in r.stderr
    r = pcc("sample", ckpt, "-n", 2, "-o", tmp_path / "x.npy", "--evidence", tmp_path / "ev.npy")
    assert r.returncode == 1 and "--evidence and --mask go together" in r.stderr


def test_cli_png_needs_square(tmp_path):
    src = tmp_path / "m.pc"
    src.write_text("var X[3] : binary\na = input(X[0], bernoulli, n=1)\nb = input(X[1], bernoulli, n=1)\n"
                   "c = input(X[2], bernoulli, n=1)\np = prod(a, b, c)\ns = sum(p, n=1)\nroot s\n")
    r = pcc("sample", src, "-n", 4, "-o", tmp_path / "s.npy", "--png", tmp_path / "g.png")
    assert r.returncode == 1 and "square number of variables" in r.stderr


def test_real_variables_smoke():
    """Gaussian inputs: MAP takes component means, samples are finite and keep the evidence."""
    cs = [c for c in random_circuits(5, 30, max_vars=5) if any(v.domain.kind == "real" for v in c.variables)][:4]
    assert cs
    rng = np.random.default_rng(0)
    for c in cs:
        layered, m = _model(c)
        means = m.params.gauss[:, 0].numpy()
        real = np.array([v.domain.kind == "real" for v in c.variables])
        state, logp = m.map()
        assert np.isfinite(logp.item())
        assert all(np.isclose(means, val).any() for val in state[0].numpy()[real])
        x = m.sample(200, generator=torch.Generator().manual_seed(1)).numpy()
        assert np.isfinite(x).all()
        ev = rng.random(x.shape) < 0.5
        s = m.sample(200, x, ev, generator=torch.Generator().manual_seed(2)).numpy()
        assert np.isfinite(s).all() and (s[ev] == x[ev]).all()
        assert np.isfinite(m.conditional(x, ev).numpy()).all()


@pytest.mark.parametrize("executor", ["torch", "triton"])
def test_queries_on_holed_sums_equal_the_block_sparse_ones(executor):
    """Conditionals and MAP states of sums stored with holes (``block-edges{max-holes=1.25}``) are those of the
    same sums stored block-sparse: a hole's weight is zero, so it adds to no value and no MAP branch takes it."""
    from randgen import random_inputs, shared_halves_circuit
    base = "collapse-chains,dce,dedupe,layerize,block-edges"
    x, _ = random_inputs(shared_halves_circuit(), np.random.default_rng(4), batch=12)
    x = torch.as_tensor(x)
    evidence = torch.ones(12, 4, dtype=torch.bool)
    evidence[:, 2:] = False
    out = []
    for pipeline in (base + "{max-holes=1}", base + "{max-holes=1.25}"):
        model = CircuitModel(optimize(shared_halves_circuit(), pipeline), "cpu", executor=executor)
        state, score = model.map(x, evidence)
        out.append((model.conditional(x, evidence).double(), state, score.double()))
    (c0, s0, v0), (c1, s1, v1) = out
    torch.testing.assert_close(c1, c0, rtol=1e-5, atol=1e-6)
    assert torch.equal(s1, s0)
    torch.testing.assert_close(v1, v0, rtol=1e-5, atol=1e-6)
