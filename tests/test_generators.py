"""The PD, RAT-SPN and HMM generators: their text compiles, verifies and round-trips through .pcir, the
circuit has the sizes counted independently, tiny discrete circuits normalise, bad arguments fail."""
from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest

from pcc.frontend import load_text
from pcc.ir import InputBlock, SumBlock, log_likelihood, node_values, parse_text, scopes, to_text, verify
from pcc.structures.hmm import hmm_source
from pcc.structures.pd import pd_counts, pd_source
from pcc.structures.ratspn import ratspn_counts, ratspn_partitions, ratspn_source


# --- helpers -----------------------------------------------------------------------------------------

def compile_checked(text: str):
    """Compile, verify, and check that the .pcir text is a print -> parse -> print fixed point."""
    circuit = load_text(text)
    verify(circuit)
    printed = to_text(circuit)
    again = parse_text(printed)
    verify(again)
    assert to_text(again) == printed
    return circuit


def kinds(circuit) -> dict[str, int]:
    return {k: sum(1 for b in circuit.blocks if b.kind == k) for k in ("input", "prod", "sum")}


def header_edges(text: str) -> int:
    """The sum-edge count the generated header announces."""
    return int(re.search(r"(\d+) sum edges", text).group(1))


def total_probability(circuit) -> float:
    """Sum of p(x) over every assignment of the (discrete) variables."""
    ks = [v.domain.categories for v in circuit.variables]
    x = np.array(list(itertools.product(*(range(k) for k in ks))), dtype=np.float64)
    return float(np.exp(log_likelihood(circuit, x)).sum())


def name_scopes(circuit) -> dict[str, int]:
    sc = scopes(circuit)
    return {b.name: sc[i] for i, b in enumerate(circuit.blocks)}


def var_mask(circuit, names) -> int:
    index = {v.name: i for i, v in enumerate(circuit.variables)}
    return sum(1 << index[n] for n in names)


# --- PD ----------------------------------------------------------------------------------------------

PD_CASES = [
    ((2, 2), 2, 1, "bernoulli", 2),
    ((2, 3), 2, 4, "categorical", 2),
    ((1, 2, 2), 2, 4, "categorical", 3),
    ((1, 1), 3, 4, "categorical", 4),
    ((1, 1, 2), 2, 4, "bernoulli", 2),
    ((3, 3), 1, 2, "bernoulli", 2),
    ((5, 6), 2, 2, "categorical", 5),
    ((8, 8), 2, (4, 2), "gaussian", 0),
    ((7, 3), 1, 5, "categorical", 3),
    ((6, 5, 3), 2, (2, 3), "gaussian", 0),
]


@pytest.mark.parametrize("shape, latents, interval, dist, k", PD_CASES)
def test_pd_compiles_and_counts(shape, latents, interval, dist, k):
    text = pd_source(shape, latents, interval, dist=dist, num_cats=k, seed=3)
    c = compile_checked(text)
    want = pd_counts(shape, latents, interval)
    assert kinds(c) == {"input": want["input_blocks"], "prod": want["prod_blocks"], "sum": want["sum_blocks"]}
    assert c.num_sum_edges() == want["sum_edges"] == header_edges(text)
    h, w = shape[:2]
    chans = shape[2] if len(shape) == 3 else 1
    assert len(c.variables) == h * w * chans
    assert want["pixels"] == h * w
    assert c.blocks[c.root].n == 1
    assert all(b.n == latents for i, b in enumerate(c.blocks) if i != c.root)
    assert {v.domain.kind for v in c.variables} == {"categorical": {"categorical"}, "bernoulli": {"binary"},
                                                    "gaussian": {"real"}}[dist]


@pytest.mark.parametrize("shape, interval", [((4, 5), 2), ((3, 4, 2), (4, 1)), ((6, 6), 4)])
def test_pd_regions_cover_their_rectangles(shape, interval):
    """Every block r[y0, x0, y1, x1] depends on exactly the pixels of its rectangle (all channels),
    and there is one such block per region that pd_counts finds."""
    c = compile_checked(pd_source(shape, 2, interval, dist="bernoulli"))
    three = len(shape) == 3
    chans = shape[2] if three else 1
    regions = 0
    for name, mask in name_scopes(c).items():
        m = re.fullmatch(r"r\[(\d+), (\d+), (\d+), (\d+)\]", name)
        if not m:
            continue
        y0, x0, y1, x1 = map(int, m.groups())
        cells = itertools.product(range(y0, y1), range(x0, x1), range(chans))
        names = [f"X[{i},{j},{ch}]" if three else f"X[{i},{j}]" for i, j, ch in cells]
        assert mask == var_mask(c, names), name
        regions += 1
    assert regions == pd_counts(shape, 2, interval)["regions"]


def test_pd_cut_rule_by_hand():
    """A 4 x 4 image with interval 2: the root is cut at row 2 and column 2 only; a 2 x 4 half is cut at
    row 1 (inside a cell) and column 2; a 2 x 2 cell at row 1 and column 1."""
    text = pd_source((4, 4), 1, 2, dist="bernoulli")
    c = compile_checked(text)
    names = {b.name for b in c.blocks}
    assert {n for n in names if n.startswith(("ph[0, 0, 4, 4,", "pv[0, 0, 4, 4,"))} == {
        "ph[0, 0, 4, 4, 2]", "pv[0, 0, 4, 4, 2]"}
    assert {n for n in names if n.startswith(("ph[0, 0, 2, 4,", "pv[0, 0, 2, 4,"))} == {
        "ph[0, 0, 2, 4, 1]", "pv[0, 0, 2, 4, 2]"}
    assert {n for n in names if n.startswith(("ph[2, 2, 4, 4,", "pv[2, 2, 4, 4,"))} == {
        "ph[2, 2, 4, 4, 3]", "pv[2, 2, 4, 4, 3]"}
    assert "r[1, 0, 3, 4]" not in names  # rows 1..2 straddle the cell boundary at row 2: never a region
    # 7 extents per axis: [0,4), [0,2), [2,4) and the four single rows (columns)
    assert pd_counts((4, 4), 1, 2)["regions"] == 7 * 7


def test_pd_interval_one_is_all_rectangles():
    """Interval 1 cuts everywhere: every sub-rectangle of the image is a region."""
    h, w = 3, 4
    got = pd_counts((h, w), 2, 1)
    assert got["regions"] == (h * (h + 1) // 2) * (w * (w + 1) // 2)
    # products: every rectangle of a x b is cut (a - 1) + (b - 1) ways
    assert got["products"] == sum((h - a + 1) * (w - b + 1) * (a - 1 + b - 1)
                                  for a in range(1, h + 1) for b in range(1, w + 1))


@pytest.mark.parametrize("shape, latents, interval, dist, k", [
    ((2, 2), 2, 1, "bernoulli", 2),
    ((2, 3), 2, 4, "categorical", 2),
    ((1, 2, 2), 2, 4, "categorical", 3),
    ((1, 1), 3, 4, "categorical", 4),
    ((1, 1, 2), 2, 4, "bernoulli", 2),
])
def test_pd_normalises(shape, latents, interval, dist, k):
    c = compile_checked(pd_source(shape, latents, interval, dist=dist, num_cats=k, seed=11))
    assert total_probability(c) == pytest.approx(1.0, abs=1e-9)


def test_pd_seed_and_determinism():
    a = pd_source((3, 3), 2, 2, seed=5)
    assert a == pd_source((3, 3), 2, 2, seed=5)
    assert "seed 5" in a.splitlines()
    x = np.zeros((1, 9))
    assert log_likelihood(load_text(a), x) != log_likelihood(load_text(pd_source((3, 3), 2, 2, seed=6)), x)


@pytest.mark.parametrize("kwargs, message", [
    (dict(shape=(0, 3), latents=2), "height"),
    (dict(shape=(3, 0), latents=2), "width"),
    (dict(shape=(3, 3, 0), latents=2), "channels"),
    (dict(shape=(3,), latents=2), "shape"),
    (dict(shape=(2, 2, 2, 2), latents=2), "shape"),
    (dict(shape=5, latents=2), "shape"),
    (dict(shape=(2.5, 2), latents=2), "integer"),
    (dict(shape=(2, 2), latents=0), "latents"),
    (dict(shape=(2, 2), latents=True), "latents"),
    (dict(shape=(2, 2), latents=2, split_interval=0), "split_interval"),
    (dict(shape=(2, 2), latents=2, split_interval=(2, 0)), "column split interval"),
    (dict(shape=(2, 2), latents=2, split_interval=(1, 2, 3)), "pair"),
    (dict(shape=(2, 2), latents=2, dist="poisson"), "dist"),
    (dict(shape=(2, 2), latents=2, num_cats=0), "num_cats"),
    (dict(shape=(2, 2), latents=2, seed=-1), "seed"),
])
def test_pd_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        pd_source(**kwargs)


def test_pd_counts_errors():
    with pytest.raises(ValueError, match="split_interval"):
        pd_counts((2, 2), 2, 0)


# --- RAT-SPN -----------------------------------------------------------------------------------------

RAT_CASES = [
    (2, 1, 1, 2, "bernoulli", 2),
    (4, 2, 2, 2, "bernoulli", 2),
    (5, 2, 2, 2, "categorical", 3),
    (3, 1, 3, 2, "categorical", 2),
    (6, 2, 3, 3, "gaussian", 0),
    (9, 3, 2, 2, "categorical", 4),
    (20, 2, 2, 3, "bernoulli", 2),
]


@pytest.mark.parametrize("v, depth, reps, latents, dist, k", RAT_CASES)
def test_ratspn_compiles_and_counts(v, depth, reps, latents, dist, k):
    text = ratspn_source(v, depth, reps, latents, dist=dist, num_cats=k, seed=2)
    c = compile_checked(text)
    want = ratspn_counts(v, depth, reps, latents)
    assert kinds(c) == {"input": want["input_blocks"], "prod": want["prod_blocks"], "sum": want["sum_blocks"]}
    assert c.num_sum_edges() == want["sum_edges"] == header_edges(text)
    assert c.num_nodes() == want["nodes"]
    assert want["leaf_regions"] == 2 ** depth
    assert scopes(c)[c.root] == (1 << v) - 1


@pytest.mark.parametrize("v, depth, reps", [(5, 2, 3), (8, 3, 2), (7, 1, 2)])
def test_ratspn_regions_follow_the_partitions(v, depth, reps):
    """reg[r, k] depends on exactly region k's variables; the leaves of a repetition partition the
    variables into balanced parts."""
    c = compile_checked(ratspn_source(v, depth, reps, 2, dist="bernoulli", seed=4))
    trees = ratspn_partitions(v, depth, reps, seed=4)
    sc = name_scopes(c)
    for r, tree in enumerate(trees):
        leaves = [tree[k] for k in range(2 ** depth, 2 ** (depth + 1))]
        assert sorted(x for leaf in leaves for x in leaf) == list(range(v))
        assert max(map(len, leaves)) - min(map(len, leaves)) <= 1
        for k in range(2, 2 ** (depth + 1)):
            assert sc[f"reg[{r}, {k}]"] == var_mask(c, [f"X[{x}]" for x in tree[k]])


def test_ratspn_cross_product_is_all_pairs():
    """An inner region's product layer has L*L nodes: with one-hot inputs, each pair lights one node."""
    c = compile_checked(ratspn_source(4, 2, 1, 3, dist="bernoulli"))
    prods = [b for b in c.blocks if b.kind == "prod" and b.name.startswith(("cross", "top_cross"))]
    assert prods and all(b.n == 9 for b in prods)
    values = node_values(c, np.array([[0, 1, 1, 0]], dtype=np.float64))
    for b in prods:
        i = c.blocks.index(b)
        left, right = (values[ch][0] for ch in b.children)
        assert np.allclose(values[i][0], (left[:, None] + right[None, :]).reshape(-1))


@pytest.mark.parametrize("v, depth, reps, latents, dist, k", [
    (4, 2, 2, 2, "bernoulli", 2),
    (5, 2, 2, 2, "categorical", 3),
    (3, 1, 3, 2, "categorical", 2),
])
def test_ratspn_normalises(v, depth, reps, latents, dist, k):
    c = compile_checked(ratspn_source(v, depth, reps, latents, dist=dist, num_cats=k, seed=9))
    assert total_probability(c) == pytest.approx(1.0, abs=1e-9)


def test_ratspn_seeded_partitions():
    assert ratspn_source(8, 2, 3, 2, seed=1) == ratspn_source(8, 2, 3, 2, seed=1)
    assert ratspn_partitions(8, 2, 3, seed=1) != ratspn_partitions(8, 2, 3, seed=2)
    trees = ratspn_partitions(16, 3, 4, seed=0)
    assert len({tuple(map(tuple, (t[k] for k in range(8, 16)))) for t in trees}) > 1  # repetitions differ


@pytest.mark.parametrize("args, kwargs, message", [
    ((3, 2, 1, 2), {}, "only 3 variables"),
    ((4, 0, 1, 2), {}, "depth"),
    ((1, 1, 1, 2), {}, "num_vars"),
    ((4, 1, 0, 2), {}, "repetitions"),
    ((4, 1, 1, 0), {}, "latents"),
    ((4, 1, 1, 2), {"dist": "beta"}, "dist"),
    ((4, 1, 1, 2), {"num_cats": 0}, "num_cats"),
    ((4, 1, 1, 2), {"seed": -3}, "seed"),
    ((4.0, 1, 1, 2), {}, "integer"),
])
def test_ratspn_errors(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ratspn_source(*args, **kwargs)


def test_ratspn_counts_errors():
    with pytest.raises(ValueError, match="only 7 variables"):
        ratspn_counts(7, 3, 1, 2)


# --- HMM ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("length, latents, emits, dist", [
    (1, 3, 4, "categorical"), (2, 2, 3, "categorical"), (6, 3, 5, "categorical"),
    (5, 2, 2, "bernoulli"), (4, 3, 0, "gaussian"),
])
def test_hmm_compiles_counts_and_ties(length, latents, emits, dist):
    text = hmm_source(length, latents, emits, dist=dist, seed=1)
    c = compile_checked(text)
    assert c.num_sum_edges() == (length - 1) * latents * latents + latents == header_edges(text)
    assert kinds(c) == {"input": length, "prod": length - 1, "sum": length}
    inputs = [b for b in c.blocks if isinstance(b, InputBlock)]
    sums = [b for i, b in enumerate(c.blocks) if isinstance(b, SumBlock) and i != c.root]
    assert sorted(b.var for b in inputs) == list(range(length))
    assert len({b.params for b in inputs}) == 1  # one emission tensor for every step
    assert len({b.params for b in sums}) == (1 if length > 1 else 0)  # one transition matrix
    assert c.tensors[inputs[0].params].shape[0] == latents
    if sums:
        assert c.tensors[sums[0].params].shape == (latents, latents)
    emissions = {"categorical": (latents, emits), "bernoulli": (latents,), "gaussian": (latents, 2)}[dist]
    assert c.tensors[inputs[0].params].shape == emissions


def test_hmm_normalises():
    c = compile_checked(hmm_source(3, 2, 2, seed=4))
    x = np.array(list(itertools.product(range(2), repeat=3)), dtype=np.float64)
    assert len(x) == 8
    assert float(np.exp(log_likelihood(c, x)).sum()) == pytest.approx(1.0, abs=1e-12)
    assert total_probability(compile_checked(hmm_source(4, 3, 3, seed=2))) == pytest.approx(1.0, abs=1e-12)


def test_hmm_matches_the_example():
    """The generator writes the structure of examples/hmm.pc: same blocks, names and tensors."""
    example = (Path(__file__).resolve().parents[1] / "examples" / "hmm.pc").read_text()
    ex = load_text(example)
    gen = load_text(hmm_source(128, 16, 8, seed=1))
    assert [(b.kind, b.name, b.n, b.children) for b in ex.blocks] == \
        [(b.kind, b.name, b.n, b.children) for b in gen.blocks]
    assert to_text(ex) == to_text(gen)


@pytest.mark.parametrize("args, kwargs, message", [
    ((0, 2, 2), {}, "length"),
    ((3, 0, 2), {}, "latents"),
    ((3, 2, 0), {}, "emits"),
    ((3, 2, 2), {"dist": "poisson"}, "dist"),
    ((3, 2, 2), {"seed": -1}, "seed"),
])
def test_hmm_errors(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        hmm_source(*args, **kwargs)
