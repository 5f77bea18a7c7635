"""The compile-time fast paths keep their contracts (see bench/compile_profile.py for the timings).

* collapse-chains folds long runs of PyJuice-style identity pass-through sums (its users are kept
  current fold by fold) and the distribution stays the same; where it bypasses such a sum without the matrix
  products, the IR is the one the products give, text for text;
* dedupe compares tensor contents only between blocks of equal structure, and hashes each tensor once;
* the verifier reports the same problems: tile tables, and each tied block of bad shared weights;
* ``parent_totals`` sums as ``np.add.at`` did, bit for bit;
* ``pcc.compile``/``parse``/``optimize`` pause Python's cyclic garbage collector and restore its state.
"""
from __future__ import annotations

import gc

import numpy as np
import pytest

import pcc
from pcc.frontend import load_text
from pcc.ir import log_likelihood, verify
from pcc.ir.circuit import SumBlock, Tensor
from pcc.ir.params import parent_totals
from pcc.ir.verify import VerifyError
from pcc.passes import parse_pipeline, run_pipeline
from pcc.ir.printer import to_text
from pcc.passes import collapse_chains as collapse_module
from pcc.passes import dedupe as dedupe_module

IDENTITY = "[[1, 0, 0], [0, 1, 0], [0, 0, 1]]"


def pass_through_chain(length: int) -> str:
    """A mixture whose component sum reaches the root through ``length`` identity sums, as PyJuice inserts."""
    lines = ["var X[2] : categorical(3)", "seed 3",
             "a = input(X[0], categorical, n=3)", "b = input(X[1], categorical, n=3)",
             "p = prod(a, b)", "s0 = sum(p, n=3)"]
    lines += [f"s{i} = sum(s{i - 1}, n=3, params={IDENTITY})" for i in range(1, length + 1)]
    lines += [f"top = sum(s{length}, p, n=1)", "root top"]
    return "\n".join(lines) + "\n"


def _same_distribution(before, after) -> None:
    x = np.array([[a, b] for a in range(3) for b in range(3)])
    np.testing.assert_allclose(log_likelihood(after, x), log_likelihood(before, x), rtol=1e-12)


def test_collapse_chains_folds_a_long_pass_through_chain() -> None:
    c = load_text(pass_through_chain(60))
    folded = run_pipeline(c, parse_pipeline("collapse-chains"))
    assert [b.name for b in folded.blocks if isinstance(b, SumBlock)] == ["top"]  # all 61 folded into the root
    _same_distribution(c, folded)


def test_collapse_chains_keeps_a_sum_with_two_users() -> None:
    """s1 is read by s2 and by t: it is folded into neither, while its own child s0 folds into it."""
    text = pass_through_chain(3).replace("top = sum(s3, p, n=1)", "t = sum(s1, n=3)\ntop = sum(s3, t, n=1)")
    c = load_text(text)
    folded = run_pipeline(c, parse_pipeline("collapse-chains"))
    names = [b.name for b in folded.blocks if isinstance(b, SumBlock)]
    assert "s1" in names and "s0" not in names
    _same_distribution(c, folded)


QUARTER = "[[0.25, 0.25], [0.25, 0.25]]"
EYE2 = "[[1, 0], [0, 1]]"
TILED_EYE = f"t = sum(p, n=4, block=2, tiles=[[1, 1], [0, 0]], params=[{EYE2}, {EYE2}])"
DENSE_EYE = "t = sum(p, n=4, params=[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])"
HEAD = ["var X[2] : categorical(3)", "seed 5", "a = input(X[0], categorical, n=4)", "b = input(X[1], categorical, n=4)",
        "p = prod(a, b)", "q = prod(b, a)"]


def uniform(rows: int, cols: int) -> str:
    return "[" + ", ".join(["[" + ", ".join([str(1 / cols)] * cols) + "]"] * rows) + "]"


def tiled_s(tiles: str, children: str = "q, t") -> str:
    """S over ``children`` at block 2 with tile table ``tiles`` (each parent tile reads two child tiles)."""
    return f"s = sum({children}, n=4, block=2, tiles={tiles}, params=[{', '.join([QUARTER] * (tiles.count('[') - 1))}])"


def pass_through(t_line: str, s_line: str) -> str:
    """T and S (from these lines) over the products p, q. S has two users, so it stays and only its child T is
    folded into it; r is folded into the root by the matrix products."""
    return "\n".join(HEAD + [t_line, s_line, "r = sum(s, n=4)", "top = sum(s, r, n=1)", "root top"]) + "\n"


UNSORTED, SORTED = "[[1, 2], [0, 0], [1, 1], [0, 3]]", "[[0, 0], [0, 3], [1, 1], [1, 2]]"
BYPASS_CASES = {  # name: (text, whether the bypass applies)
    "dense sums": (pass_through(DENSE_EYE, f"s = sum(q, t, n=4, params={uniform(4, 8)})"), True),
    "tiles out of order": (pass_through(TILED_EYE, tiled_s(UNSORTED)), True),
    "tiles in order": (pass_through(TILED_EYE, tiled_s(SORTED)), True),
    "dense identity under tiles": (pass_through(DENSE_EYE, tiled_s(UNSORTED)), False),
    "child already read": (pass_through(TILED_EYE, tiled_s(SORTED, "p, t")), False),
    "tied weights": ("\n".join(HEAD + [DENSE_EYE, DENSE_EYE.replace("t = sum(p", "t2 = sum(q"),
                                       f"s = sum(t, n=4, params={uniform(4, 4)})", "s2 = sum(t2, n=4, tie=s)",
                                       "top = sum(s, s2, n=1)", "root top"]) + "\n", True),
}


@pytest.mark.parametrize("case", sorted(BYPASS_CASES))
def test_collapse_chains_bypass_gives_the_folds_ir(case: str, monkeypatch) -> None:
    """Bypassing an identity pass-through sum writes the same IR text as folding it by matrix products (values,
    tile order, tensor names), and only where :func:`_bypass_keeps` holds."""
    text, applies = BYPASS_CASES[case]
    pipeline = parse_pipeline("collapse-chains")
    bypassed: list[str] = []
    original = collapse_module._bypass
    monkeypatch.setattr(collapse_module, "_bypass", lambda c, s, *a: bypassed.append(s.name) or original(c, s, *a))
    fast = run_pipeline(load_text(text), pipeline)
    assert bool(bypassed) == applies
    monkeypatch.setattr(collapse_module, "_passed_through", lambda circuit, t: None)
    assert to_text(fast) == to_text(run_pipeline(load_text(text), pipeline))
    _same_distribution(load_text(text), fast)


def test_dedupe_merges_equal_values_under_other_names_and_hashes_once(monkeypatch) -> None:
    text = """var X[2] : categorical(2)
a = input(X[0], categorical, n=2, params=[[0.5, 0.5], [0.25, 0.75]])
b = input(X[0], categorical, n=2, params=[[0.5, 0.5], [0.25, 0.75]])
c = input(X[0], categorical, n=2, params=[[0.5, 0.5], [0.75, 0.25]])
d = input(X[1], categorical, n=2, params=[[0.5, 0.5], [0.25, 0.75]])
s = sum(a, b, c, n=2)
p = prod(s, d)
top = sum(p, n=1)
root top
"""
    hashed: list[str] = []
    original = dedupe_module._content
    monkeypatch.setattr(dedupe_module, "_content", lambda circuit, name: hashed.append(name) or original(circuit, name))
    out = run_pipeline(load_text(text), parse_pipeline("dedupe"))
    sums = [b for b in out.blocks if isinstance(b, SumBlock)]
    first = next(b for b in sums if b.name == "s")
    assert len(set(first.children)) == 2  # a and b merged, c kept
    assert sorted(hashed) == sorted(set(hashed)) and "d.p" not in hashed  # d has no look-alike: never hashed


def test_verifier_reports_tile_tables() -> None:
    base = """var X[2] : categorical(2)
a = input(X[0], categorical, n=4)
s = sum(a, n=4, block=2, tiles=[[0, 0], [1, 1]])
p = prod(s, s2)
root top
"""
    c = load_text(base.replace("p = prod(s, s2)\nroot top", "top = sum(s, n=1)\nroot top"))
    s = next(b for b in c.blocks if b.name == "s")
    cases = [([[0, 0], [0, 0]], "lists a tile twice"), ([[0, 0], [0, 1]], "gives parent tile 1 no child tile")]
    for tiles, message in cases:
        c.tensors[s.tiles] = Tensor("i64", (2, 2), data=np.array(tiles, dtype=np.int64))
        with pytest.raises(VerifyError, match=message):
            verify(c)


def test_verifier_reports_every_block_of_bad_tied_weights() -> None:
    c = load_text(pass_through_chain(1).replace("s1 = sum(s0, n=3, params=" + IDENTITY + ")",
                                                "s1 = sum(s0, n=3)\nr = sum(s0, n=3, tie=s1)").replace(
        "top = sum(s1, p, n=1)", "q = sum(r, n=3)\ntop = sum(s1, q, n=1)"))
    c.tensors["s1.w"] = Tensor("f64", (3, 3), data=np.full((3, 3), 0.5))
    with pytest.raises(VerifyError) as e:
        verify(c)
    assert [c.blocks[p.block].name for p in e.value.problems] == ["s1", "r"]


def test_parent_totals_match_add_at_bit_for_bit() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        b, rows_, m = int(rng.integers(1, 6)), int(rng.integers(1, 9)), int(rng.integers(1, 30))
        tiles = np.stack([rng.integers(0, rows_, m), np.arange(m)], 1).astype(np.int64)
        w = rng.exponential(size=(m, b, b)) * 10.0 ** rng.uniform(-6, 6, size=(m, 1, 1))
        c = load_text("var X : binary\na = input(X, categorical, n=1)\nroot a\n")
        c.tensors["t"] = Tensor("i64", tiles.shape, data=tiles)
        block = SumBlock((0,), rows_ * b, "w", tiles="t", block=b)
        expected = np.zeros((rows_, b))
        np.add.at(expected, tiles[:, 0], w.sum(axis=2))
        assert np.array_equal(parent_totals(c, block, w), expected.reshape(-1))


@pytest.mark.parametrize("enabled", [True, False])
def test_compile_pauses_and_restores_the_garbage_collector(enabled: bool) -> None:
    seen = []
    original = pcc.api.run_pipeline
    try:
        pcc.api.run_pipeline = lambda *a, **k: seen.append(gc.isenabled()) or original(*a, **k)
        (gc.enable if enabled else gc.disable)()
        pcc.compile(pass_through_chain(2), device="cpu")
        assert seen == [False] and gc.isenabled() is enabled
    finally:
        pcc.api.run_pipeline = original
        gc.enable()
